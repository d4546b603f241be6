// LeaseShardSource against a real coordinator served on 127.0.0.1 (coordinator/server.h).
#include "worker/lease_source.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "coordinator/testing/service_test_util.h"

namespace flap::worker {
namespace {

namespace v1 = coordinator::v1;

struct Trial {
  std::unique_ptr<coordinator::testing::TestCoordinator> coordinator;
  std::unique_ptr<coordinator::CoordinatorClient> client;
  v1::TrialRef ref;
  uint64_t seed = 0;  // the trial's train.seed
};

Trial StartTrial(int world_size, const std::string& name) {
  Trial t;
  t.coordinator = std::make_unique<coordinator::testing::TestCoordinator>(name);
  t.client = t.coordinator->Client();
  EXPECT_OK(t.client->SubmitSweep(coordinator::testing::MaskSweep("s", "1"), "s.ini", ""));
  EXPECT_OK(t.client->Register("g", "i1", world_size));
  auto next = t.client->NextTrial("g");
  EXPECT_TRUE(next.ok() && next->assigned);
  if (next.ok()) {
    t.ref = next->assignment.trial;
    t.seed = std::stoull(next->assignment.overrides.at("train.seed"));
  }
  return t;
}

std::vector<std::string> Names(size_t n) {
  std::vector<std::string> names;
  for (size_t i = 0; i < n; ++i) names.push_back("train-" + std::to_string(i) + ".tar");
  return names;
}

std::vector<sharding::ShardInfo> Shards(const std::vector<int64_t>& sizes) {
  std::vector<sharding::ShardInfo> shards;
  const auto names = Names(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    sharding::ShardInfo s;
    s.name = names[i];
    s.num_samples = sizes[i];
    shards.push_back(s);
  }
  return shards;
}

// The split's shards with `sizes` in the order the coordinator leases epoch `epoch` of a trial
// of `seed` in (the k-th leased shard has sizes[k]); names in manifest order, returned in it,
// and the names in lease order in *order.
std::vector<sharding::ShardInfo> ShardsInLeaseOrderOfSizes(uint64_t seed, int64_t epoch,
                                                           const std::vector<int64_t>& sizes,
                                                           std::vector<std::string>* order) {
  const auto names = Names(sizes.size());
  *order = coordinator::testing::ShardsInLeaseOrder(seed, epoch, names);
  std::vector<int64_t> by_name(sizes.size());
  for (size_t k = 0; k < sizes.size(); ++k) by_name[std::stoul((*order)[k].substr(6))] = sizes[k];
  return Shards(by_name);
}

std::unique_ptr<LeaseShardSource> Source(Trial& t, const std::vector<sharding::ShardInfo>& shards, int rank, int world,
                                         int64_t batch) {
  LeaseSourceOptions o;
  o.group_id = "g";
  o.trial = t.ref;
  o.rank = rank;
  o.world_size = world;
  o.batch_size = batch;
  o.retry_for_s = 5;
  auto s = LeaseShardSource::Create(t.client.get(), shards, o);
  EXPECT_OK(s);
  return std::move(*s);
}

// What the loader does: shards in order until the epoch's samples are planned.
std::vector<sharding::ShardInfo> Plan(LeaseShardSource& src, int64_t epoch, int64_t batch) {
  std::vector<sharding::ShardInfo> got;
  int64_t planned = 0;
  for (int64_t i = 0; planned < src.StepsPerEpoch() * batch; ++i) {
    auto s = src.ShardAt(epoch, i);
    EXPECT_TRUE(s.ok() && s->has_value()) << s.status().ToString();
    if (!s.ok() || !s->has_value()) break;
    planned += (*s)->num_samples;
    got.push_back(**s);
  }
  return got;
}

TEST(LeaseShardSource, RanksShareTheEpochsShardsEachCountedOnceAndPadWhenShort) {
  Trial t = StartTrial(2, "lease-source-share");
  // 34 samples, batch 4 x 2 ranks: 4 steps, 16 samples per rank. The shards are sized so that
  // the epoch's lease order reads 10, 10, 10, 2, 2 samples.
  std::vector<std::string> order;
  const auto shards = ShardsInLeaseOrderOfSizes(t.seed, 0, {10, 10, 10, 2, 2}, &order);
  auto r0 = Source(t, shards, 0, 2, 4);
  auto r1 = Source(t, shards, 1, 2, 4);
  EXPECT_EQ(r0->StepsPerEpoch(), 4);
  const auto a = Plan(*r0, 0, 4);  // the first two of the order: 20 samples
  const auto b = Plan(*r1, 0, 4);  // the other three: 14, then one padding shard
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 4u);
  EXPECT_EQ(a[0].name, order[0]);
  EXPECT_EQ(a[1].name, order[1]);
  EXPECT_EQ(b[0].name, order[2]);
  EXPECT_EQ(b[1].name, order[3]);
  EXPECT_EQ(b[2].name, order[4]);
  EXPECT_EQ(r1->leased(), 3);  // its fair share: ceil(5 / 2)
  EXPECT_EQ(r1->padded(), 1);
  for (const auto& s : a) ASSERT_OK(r0->Done(0, s));
  for (const auto& s : b) ASSERT_OK(r1->Done(0, s));
  // Completing again (a retried Done) or a padding shard counts nothing.
  ASSERT_OK(r1->Done(0, b[3]));
  EXPECT_EQ(r0->completed() + r1->completed(), 5);
  std::vector<std::pair<std::string, int64_t>> list;
  for (const auto& s : shards) list.emplace_back(s.name, s.num_samples);
  auto epoch = t.client->BeginEpoch("g", t.ref, 0, list);
  ASSERT_OK(epoch);
  EXPECT_EQ(epoch->done_shards(), 5);
  EXPECT_EQ(epoch->done_samples(), 34);
  // The next epoch starts a new table, in its own order.
  const auto c = Plan(*r0, 1, 4);
  EXPECT_EQ(c.front().name, coordinator::testing::ShardsInLeaseOrder(t.seed, 1, Names(5))[0]);
}

// One rank of a coordinated trial reads each epoch's shards in the order a standalone run of
// the same seed (FixedShardSource, one rank) reads them: the same samples, the same blocks.
TEST(LeaseShardSource, OneRankReadsTheEpochsInTheOrderOfAStandaloneRunOfItsSeed) {
  Trial t = StartTrial(1, "lease-source-standalone");
  const auto shards = Shards({8, 8, 8, 8, 8, 8, 8, 8, 8, 8});
  auto leased = Source(t, shards, 0, 1, 4);
  auto fixed = FixedShardSource::Create(shards, 0, 1, 4, t.seed);
  ASSERT_OK(fixed);
  auto other_seed = FixedShardSource::Create(shards, 0, 1, 4, t.seed + 1);
  ASSERT_OK(other_seed);
  std::vector<std::string> epoch0;
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    const auto got = Plan(*leased, epoch, 4);
    std::vector<std::string> names, standalone, other;
    for (const auto& s : got) names.push_back(s.name);
    for (int64_t i = 0; i < static_cast<int64_t>(shards.size()); ++i) {
      standalone.push_back((*(*fixed)->ShardAt(epoch, i))->name);
      other.push_back((*(*other_seed)->ShardAt(epoch, i))->name);
    }
    EXPECT_EQ(names, standalone) << "epoch " << epoch;
    EXPECT_NE(names, other) << "epoch " << epoch;
    for (const auto& s : got) ASSERT_OK(leased->Done(epoch, s));
    if (epoch == 0) epoch0 = names;
    if (epoch > 0) {
      EXPECT_NE(names, epoch0) << "epoch " << epoch;
    }
  }
  EXPECT_EQ(leased->padded(), 0);
  EXPECT_EQ(leased->completed(), 30);
}

TEST(LeaseShardSource, ALeaseThatExpiredIsNotedAndItsShardLeasedAgain) {
  Trial t = StartTrial(1, "lease-source-expiry");
  const auto shards = Shards({8, 8});
  auto src = Source(t, shards, 0, 1, 4);
  auto first = src->ShardAt(0, 0);
  ASSERT_TRUE(first.ok() && first->has_value());
  // Heartbeats keep the group alive but name no rank, so nothing renews the lease: past the
  // ttl (400 ms here) the coordinator reaps it.
  for (int i = 0; i < 9; ++i) {
    ASSERT_OK(t.client->Heartbeat("g"));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const Status done = src->Done(0, **first);
  EXPECT_OK(done);
  ASSERT_EQ(src->notes().size(), 1u);
  EXPECT_NE(src->notes()[0].find("expired"), std::string::npos) << src->notes()[0];
  EXPECT_EQ(src->completed(), 0);
  auto again = t.client->LeaseShard("g", t.ref, 0, 0, 7);
  ASSERT_OK(again);
  EXPECT_EQ(again->shard_name, (*first)->name);  // back in the pool, earliest in the order first
}

TEST(LeaseShardSource, ASplitSmallerThanOneGlobalBatchIsRefused) {
  Trial t = StartTrial(2, "lease-source-small");
  LeaseSourceOptions o;
  o.group_id = "g";
  o.trial = t.ref;
  o.rank = 0;
  o.world_size = 2;
  o.batch_size = 8;
  auto s = LeaseShardSource::Create(t.client.get(), Shards({5, 5}), o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("fewer than one global batch of 16"), std::string::npos) << s.status().message();
}

}  // namespace
}  // namespace flap::worker
