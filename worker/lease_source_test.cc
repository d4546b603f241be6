// LeaseShardSource against a real coordinator served on 127.0.0.1 (coordinator/server.h).
#include "worker/lease_source.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "coordinator/service_test_util.h"

namespace flap::worker {
namespace {

namespace v1 = coordinator::v1;

struct Trial {
  std::unique_ptr<coordinator::testing::TestCoordinator> coordinator;
  std::unique_ptr<coordinator::CoordinatorClient> client;
  v1::TrialRef ref;
};

Trial StartTrial(int world_size, const std::string& name) {
  Trial t;
  t.coordinator = std::make_unique<coordinator::testing::TestCoordinator>(name);
  t.client = t.coordinator->Client();
  EXPECT_OK(t.client->SubmitSweep(coordinator::testing::MaskSweep("s", "1"), "s.ini", ""));
  EXPECT_OK(t.client->Register("g", "i1", world_size));
  auto next = t.client->NextTrial("g");
  EXPECT_TRUE(next.ok() && next->assigned);
  if (next.ok()) t.ref = next->assignment.trial;
  return t;
}

std::vector<sharding::ShardInfo> Shards(const std::vector<int64_t>& sizes) {
  std::vector<sharding::ShardInfo> shards;
  for (size_t i = 0; i < sizes.size(); ++i) {
    sharding::ShardInfo s;
    s.name = "train-" + std::to_string(i) + ".tar";
    s.num_samples = sizes[i];
    shards.push_back(s);
  }
  return shards;
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
  // 34 samples, batch 4 x 2 ranks: 4 steps, 16 samples per rank.
  const auto shards = Shards({10, 10, 10, 2, 2});
  auto r0 = Source(t, shards, 0, 2, 4);
  auto r1 = Source(t, shards, 1, 2, 4);
  EXPECT_EQ(r0->StepsPerEpoch(), 4);
  const auto a = Plan(*r0, 0, 4);  // train-0, train-1: 20 samples
  const auto b = Plan(*r1, 0, 4);  // train-2, train-3, train-4: 14, then one padding shard
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 4u);
  EXPECT_EQ(a[0].name, "train-0.tar");
  EXPECT_EQ(a[1].name, "train-1.tar");
  EXPECT_EQ(b[0].name, "train-2.tar");
  EXPECT_EQ(b[2].name, "train-4.tar");
  EXPECT_EQ(r1->leased(), 3);  // its fair share: ceil(5 / 2)
  EXPECT_EQ(r1->padded(), 1);
  for (const auto& s : a) ASSERT_OK(r0->Done(0, s));
  for (const auto& s : b) ASSERT_OK(r1->Done(0, s));
  // Completing again (a retried Done) or a padding shard counts nothing.
  ASSERT_OK(r1->Done(0, b[3]));
  EXPECT_EQ(r0->completed() + r1->completed(), 5);
  auto epoch = t.client->BeginEpoch(
      "g", t.ref, 0,
      {{"train-0.tar", 10}, {"train-1.tar", 10}, {"train-2.tar", 10}, {"train-3.tar", 2}, {"train-4.tar", 2}});
  ASSERT_OK(epoch);
  EXPECT_EQ(epoch->done_shards(), 5);
  EXPECT_EQ(epoch->done_samples(), 34);
  // The next epoch starts a new table.
  const auto c = Plan(*r0, 1, 4);
  EXPECT_EQ(c.front().name, "train-0.tar");
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
  EXPECT_EQ(again->shard_name, (*first)->name);  // back in the pool, lowest index first
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
