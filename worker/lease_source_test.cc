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
  o.seed = t.seed;
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

// Two ranks of batch 4 over 34 samples (4 steps, 16 samples per rank), in shards sized so that
// the epoch's order reads 10, 10, 10, 2, 2 samples.
class LeaseShardSourceTwoRanks : public ::testing::Test {
 protected:
  void SetUp() override {
    t = StartTrial(2, std::string("lease-source-") + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    shards = ShardsInLeaseOrderOfSizes(t.seed, 0, {10, 10, 10, 2, 2}, &order);
    r0 = Source(t, shards, 0, 2, 4);
    r1 = Source(t, shards, 1, 2, 4);
  }
  Trial t;
  std::vector<std::string> order;  // the shards' names in epoch 0's order
  std::vector<sharding::ShardInfo> shards;
  std::unique_ptr<LeaseShardSource> r0, r1;
};

// The coordinator's count of an epoch (BeginEpoch again: idempotent).
v1::BeginEpochResponse EpochCount(Trial& t, const std::vector<sharding::ShardInfo>& shards, int epoch) {
  std::vector<std::pair<std::string, int64_t>> list;
  for (const auto& s : shards) list.emplace_back(s.name, s.num_samples);
  auto r = t.client->BeginEpoch("g", t.ref, epoch, list);
  EXPECT_OK(r);
  return r.ok() ? *r : v1::BeginEpochResponse();
}

// By position, rank r of W reads positions r, r + W, ... of the seed's order, whoever asks
// first, pads by index past its share, and names its shards without leasing them (PeekShard).
TEST_F(LeaseShardSourceTwoRanks, RanksReadTheirPositionsOfTheOrderEachCountedOnceAndPadWhenShort) {
  // Rank 0 gets positions 0, 2, 4 (22 samples), rank 1 positions 1, 3 (12) and pads.
  std::vector<std::string> peeked;
  for (int64_t i = 0; i < 3; ++i) {
    auto p = r1->PeekShard(0, i);
    ASSERT_TRUE(p.ok() && p->has_value());
    peeked.push_back((*p)->name);
  }
  EXPECT_EQ(r1->leased(), 0);  // peeking leases nothing
  const auto b = Plan(*r1, 0, 4);  // rank 1 first: still its own positions
  const auto a = Plan(*r0, 0, 4);
  ASSERT_EQ(a.size(), 2u);  // 20 samples cover its 16
  ASSERT_EQ(b.size(), 3u);  // 12, then one padding shard
  EXPECT_EQ(a[0].name, order[0]);
  EXPECT_EQ(a[1].name, order[2]);
  EXPECT_EQ(b[0].name, order[1]);
  EXPECT_EQ(b[1].name, order[3]);
  EXPECT_EQ(b[2].name, shards[1].name);  // padding: the split round-robin from the rank
  EXPECT_EQ(peeked, (std::vector<std::string>{b[0].name, b[1].name, b[2].name}));
  EXPECT_EQ(r1->leased(), 2);
  EXPECT_EQ(r1->padded(), 1);
  for (const auto& s : a) ASSERT_OK(r0->Done(0, s));
  for (const auto& s : b) ASSERT_OK(r1->Done(0, s));
  auto last = r0->ShardAt(0, 2);  // position 4
  ASSERT_TRUE(last.ok() && last->has_value());
  EXPECT_EQ((*last)->name, order[4]);
  ASSERT_OK(r0->Done(0, **last));
  EXPECT_EQ(r0->completed() + r1->completed(), 5);
  const v1::BeginEpochResponse epoch = EpochCount(t, shards, 0);
  EXPECT_EQ(epoch.done_shards(), 5);
  EXPECT_EQ(epoch.done_samples(), 34);
  // A position of the other rank is refused.
  auto wrong = t.client->LeaseShardAt("g", t.ref, 0, 0, 1);
  EXPECT_EQ(wrong.status().code(), Status::Code::kInvalidArgument) << wrong.status().ToString();
}

// A continued epoch (a trial resumed on a group of another size) is read by slot: whoever asks
// first leases the next undone shard, up to a fair share, then pads.
TEST_F(LeaseShardSourceTwoRanks, RanksShareAContinuedEpochsShardsEachCountedOnceAndPadWhenShort) {
  ASSERT_OK(r0->ContinueEpoch(0));
  ASSERT_OK(r1->ContinueEpoch(0));
  EXPECT_EQ(r0->PeekShard(0, 0).status().code(), Status::Code::kFailedPrecondition);
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
  const v1::BeginEpochResponse epoch = EpochCount(t, shards, 0);
  EXPECT_EQ(epoch.done_shards(), 5);
  EXPECT_EQ(epoch.done_samples(), 34);
  // The next epoch starts a new table, in its own order, read by position again.
  const auto c = Plan(*r1, 1, 4);
  EXPECT_EQ(c.front().name, coordinator::testing::ShardsInLeaseOrder(t.seed, 1, Names(5))[1]);
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

// By position, the shard is this rank's alone: Done leases it again and completes it.
TEST(LeaseShardSource, AShardWhoseLeaseExpiredWhileReadIsLeasedAgainAndCompleted) {
  Trial t = StartTrial(1, "lease-source-expiry-position");
  const auto shards = Shards({8, 8});
  auto src = Source(t, shards, 0, 1, 4);
  auto first = src->ShardAt(0, 0);
  ASSERT_TRUE(first.ok() && first->has_value());
  for (int i = 0; i < 9; ++i) {  // past the ttl (400 ms), nothing renewing the lease
    ASSERT_OK(t.client->Heartbeat("g"));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_OK(src->Done(0, **first));
  ASSERT_EQ(src->notes().size(), 1u);
  EXPECT_NE(src->notes()[0].find("expired before completion; leased again as"), std::string::npos)
      << src->notes()[0];
  EXPECT_EQ(src->completed(), 1);
  const v1::BeginEpochResponse epoch = EpochCount(t, shards, 0);
  EXPECT_EQ(epoch.done_shards(), 1);
}

// By slot, the expired lease's shard goes back to the pool and counts under its next lease.
TEST(LeaseShardSource, ALeaseThatExpiredIsNotedAndItsShardLeasedAgain) {
  Trial t = StartTrial(1, "lease-source-expiry");
  const auto shards = Shards({8, 8});
  auto src = Source(t, shards, 0, 1, 4);
  ASSERT_OK(src->ContinueEpoch(0));
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

// Attempt 1 reads positions 0, 1 and 2 and completes them, then gives the trial back (a node
// fault) with a checkpoint taken after position 0. Attempt 2 replays the epoch from there: it
// leases positions 1 and 2 again, the coordinator rescinds attempt 1's completions, and every
// shard ends counted once. A call by the stale attempt is refused.
TEST(LeaseShardSource, AResumedAttemptReplaysItsPositionsAndTheLostCompletionsAreRescinded) {
  Trial t = StartTrial(1, "lease-source-replay");
  const auto shards = Shards({8, 8, 8, 8});
  auto first = Source(t, shards, 0, 1, 4);
  std::vector<sharding::ShardInfo> read;
  for (int64_t i = 0; i < 3; ++i) {
    auto s = first->ShardAt(0, i);
    ASSERT_TRUE(s.ok() && s->has_value());
    read.push_back(**s);
    ASSERT_OK(first->Done(0, **s));
  }
  auto state = t.client->Fail("g", t.ref, coordinator::FailureCause::kNodeFault, "rank lost");
  ASSERT_OK(state);
  ASSERT_EQ(*state, coordinator::TrialState::kPending);
  auto next = t.client->NextTrial("g");
  ASSERT_TRUE(next.ok() && next->assigned);
  const v1::TrialRef stale = t.ref;
  t.ref = next->assignment.trial;
  ASSERT_EQ(t.ref.attempt(), 2);
  auto second = Source(t, shards, 0, 1, 4);
  for (int64_t i = 1; i < 4; ++i) {
    auto s = second->ShardAt(0, i);
    ASSERT_TRUE(s.ok() && s->has_value()) << s.status().ToString();
    if (i < 3) {
      EXPECT_EQ((*s)->name, read[static_cast<size_t>(i)].name);
    }
    ASSERT_OK(second->Done(0, **s));
  }
  EXPECT_EQ(second->completed(), 3);
  const v1::BeginEpochResponse epoch = EpochCount(t, shards, 0);
  EXPECT_EQ(epoch.done_shards(), 4);
  EXPECT_EQ(epoch.done_samples(), 32);
  EXPECT_FALSE(t.client->LeaseShardAt("g", stale, 0, 0, 1).ok());
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
