// Tests for coordinator/lease.h with a clock the test controls: acquire, renew, complete,
// expire, late completion, and every shard counted exactly once per epoch whatever fails.
#include "coordinator/lease.h"
#include "common/testing/testing.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <set>
#include <string>
#include <vector>

#include "sharding/shard_order.h"

namespace flap::coordinator {
namespace {

constexpr int64_t kTtl = 1000;

std::vector<EpochShard> MakeShards(int num_shards, int64_t samples_per_shard = 10) {
  std::vector<EpochShard> shards;
  for (int i = 0; i < num_shards; ++i) {
    shards.push_back({"train-" + std::to_string(i) + ".tar", samples_per_shard});
  }
  return shards;
}

// `order` unset: shards go out in the order given; set: in the permutation of (seed, epoch).
LeaseTable MakeTable(int num_shards, int64_t samples_per_shard = 10, std::optional<LeaseOrder> order = {}) {
  auto t = LeaseTable::Create(MakeShards(num_shards, samples_per_shard), LeaseOptions{kTtl, order});
  EXPECT_OK(t);
  return std::move(t).value();
}

// The shard names of a whole epoch, leased and completed one at a time by one rank.
std::vector<std::string> LeaseWholeEpoch(LeaseTable& t) {
  std::vector<std::string> names;
  for (int64_t now = 0;; ++now) {
    auto r = t.Acquire("r0", now);
    EXPECT_OK(r);
    if (!r.ok() || r->kind != AcquireResult::Kind::kGranted) break;
    names.push_back(r->lease.shard_name);
    EXPECT_OK(t.Complete(r->lease.id, now));
  }
  return names;
}

Lease Grant(LeaseTable& t, const std::string& rank, int64_t now) {
  auto r = t.Acquire(rank, now);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->kind, AcquireResult::Kind::kGranted);
  return r->lease;
}

TEST(LeaseTable, AcquireHandsShardsInOrderWithDeadlines) {
  LeaseTable t = MakeTable(3);
  Lease a = Grant(t, "r0", 100);
  Lease b = Grant(t, "r1", 150);
  EXPECT_EQ(a.id, 1u);
  EXPECT_EQ(b.id, 2u);
  EXPECT_EQ(a.shard, 0);
  EXPECT_EQ(a.shard_name, "train-0.tar");
  EXPECT_EQ(b.shard, 1);
  EXPECT_EQ(a.rank, "r0");
  EXPECT_EQ(a.granted_ms, 100);
  EXPECT_EQ(a.deadline_ms, 100 + kTtl);
  EXPECT_EQ(b.deadline_ms, 150 + kTtl);
  EXPECT_EQ(a.state, LeaseState::kActive);
  EXPECT_EQ(t.free_shards(), 1);
  EXPECT_EQ(t.active_leases(), 2);
}

TEST(LeaseTable, WaitWhenEverythingIsLeasedThenEpochDone) {
  LeaseTable t = MakeTable(2);
  Lease a = Grant(t, "r0", 0);
  Lease b = Grant(t, "r1", 300);
  auto wait = t.Acquire("r2", 400);
  ASSERT_OK(wait);
  EXPECT_EQ(wait->kind, AcquireResult::Kind::kWait);
  EXPECT_EQ(wait->retry_at_ms, kTtl);  // a's deadline, the earliest
  ASSERT_OK(t.Complete(a.id, 500));
  ASSERT_OK(t.Complete(b.id, 600));
  EXPECT_TRUE(t.EpochDone());
  auto done = t.Acquire("r2", 700);
  ASSERT_OK(done);
  EXPECT_EQ(done->kind, AcquireResult::Kind::kEpochDone);
  EXPECT_EQ(t.done_samples(), 20);
  EXPECT_EQ(t.total_samples(), 20);
}

TEST(LeaseTable, RenewExtendsTheDeadline) {
  LeaseTable t = MakeTable(1);
  Lease a = Grant(t, "r0", 0);
  auto r = t.Renew(a.id, 900);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->deadline_ms, 900 + kTtl);
  EXPECT_TRUE(t.Expire(1500).empty());  // would have expired at 1000 without the renewal
  EXPECT_OK(t.Complete(a.id, 1800));
}

TEST(LeaseTable, RenewRankRenewsOnlyThatRanksLiveLeases) {
  LeaseTable t = MakeTable(4);
  Lease a = Grant(t, "r0", 0);
  Lease b = Grant(t, "r0", 500);
  Lease c = Grant(t, "r1", 0);
  Lease done = Grant(t, "r0", 0);
  ASSERT_OK(t.Complete(done.id, 10));
  std::vector<Lease> renewed = t.RenewRank("r0", 999);
  ASSERT_EQ(renewed.size(), 2u);
  EXPECT_EQ(renewed[0].id, a.id);
  EXPECT_EQ(renewed[1].id, b.id);
  EXPECT_EQ(t.Get(a.id)->deadline_ms, 999 + kTtl);
  EXPECT_EQ(t.Get(c.id)->deadline_ms, kTtl);  // r1's lease untouched
  // At 1000 a lease granted at 0 and not renewed is dead: RenewRank leaves it for Expire.
  EXPECT_TRUE(t.RenewRank("r1", 1000).empty());
}

TEST(LeaseTable, RenewRankCoversTheRanksSlotsButNoOtherRank) {
  LeaseTable t = MakeTable(4);
  Lease s0 = Grant(t, "g/1#0", 0);
  Lease s1 = Grant(t, "g/1#1", 0);
  Lease other = Grant(t, "g/10#0", 0);  // rank 10 shares the prefix "g/1" but is not rank 1
  std::vector<Lease> renewed = t.RenewRank("g/1", 100);
  ASSERT_EQ(renewed.size(), 2u);
  EXPECT_EQ(renewed[0].id, s0.id);
  EXPECT_EQ(renewed[1].id, s1.id);
  EXPECT_EQ(t.Get(other.id)->deadline_ms, kTtl);
  // A slot's own name renews only that slot.
  ASSERT_EQ(t.RenewRank("g/1#1", 200).size(), 1u);
  EXPECT_EQ(t.Get(s0.id)->deadline_ms, 100 + kTtl);
  EXPECT_EQ(t.Get(s1.id)->deadline_ms, 200 + kTtl);
}

TEST(LeaseTable, RenewRefusedAfterDeadlineOrCompletion) {
  LeaseTable t = MakeTable(2);
  Lease a = Grant(t, "r0", 0);
  Lease b = Grant(t, "r1", 0);
  auto late = t.Renew(a.id, kTtl);  // now == deadline: dead
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().code(), Status::Code::kAborted);
  EXPECT_NE(late.status().message().find("train-0.tar"), std::string::npos);
  ASSERT_OK(t.Complete(b.id, 10));
  EXPECT_EQ(t.Renew(b.id, 20).status().code(), Status::Code::kFailedPrecondition);
  EXPECT_EQ(t.Renew(99, 20).status().code(), Status::Code::kNotFound);
}

TEST(LeaseTable, CompleteIsIdempotent) {
  LeaseTable t = MakeTable(2);
  Lease a = Grant(t, "r0", 0);
  auto first = t.Complete(a.id, 10);
  ASSERT_OK(first);
  EXPECT_EQ(first->state, LeaseState::kCompleted);
  auto again = t.Complete(a.id, 20);
  ASSERT_OK(again);
  EXPECT_EQ(again->state, LeaseState::kCompleted);
  // Even a retry that arrives after the deadline: the completion already counted.
  ASSERT_OK(t.Complete(a.id, 5 * kTtl));
  EXPECT_EQ(t.done_shards(), 1);
  EXPECT_EQ(t.done_samples(), 10);
  EXPECT_EQ(t.CompletionsOf(0), 1);
  EXPECT_EQ(t.Complete(42, 10).status().code(), Status::Code::kNotFound);
}

TEST(LeaseTable, ExpireReturnsShardsToThePool) {
  LeaseTable t = MakeTable(3);
  Lease a = Grant(t, "r0", 0);
  Lease b = Grant(t, "r1", 400);
  EXPECT_TRUE(t.Expire(kTtl - 1).empty());
  std::vector<Lease> expired = t.Expire(kTtl);  // a's deadline is reached
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].id, a.id);
  EXPECT_EQ(expired[0].state, LeaseState::kExpired);
  EXPECT_EQ(t.Get(a.id)->state, LeaseState::kExpired);
  EXPECT_EQ(t.free_shards(), 2);
  // The returned shard (index 0) goes out before the untouched one (index 2).
  Lease again = Grant(t, "r2", kTtl + 1);
  EXPECT_EQ(again.shard, 0);
  EXPECT_NE(again.id, a.id);
  EXPECT_EQ(t.Get(b.id)->state, LeaseState::kActive);
}

TEST(LeaseTable, LateCompletionOfAnExpiredLeaseIsRefusedAndCountsOnce) {
  LeaseTable t = MakeTable(1, 25);
  Lease slow = Grant(t, "r0", 0);
  ASSERT_EQ(t.Expire(kTtl + 5).size(), 1u);
  Lease retry = Grant(t, "r1", kTtl + 10);
  EXPECT_EQ(retry.shard, slow.shard);
  // The slow rank finally finishes: refused, the shard now belongs to r1's lease.
  auto late = t.Complete(slow.id, kTtl + 20);
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().code(), Status::Code::kAborted);
  EXPECT_NE(late.status().message().find("expired"), std::string::npos);
  EXPECT_EQ(t.done_shards(), 0);
  ASSERT_OK(t.Complete(retry.id, kTtl + 30));
  EXPECT_EQ(t.done_shards(), 1);
  EXPECT_EQ(t.done_samples(), 25);
  EXPECT_EQ(t.CompletionsOf(0), 1);
  EXPECT_TRUE(t.EpochDone());
}

TEST(LeaseTable, CompletionPastTheDeadlineIsRefusedEvenBeforeExpireRuns) {
  LeaseTable t = MakeTable(1);
  Lease a = Grant(t, "r0", 0);
  EXPECT_EQ(t.Complete(a.id, kTtl).status().code(), Status::Code::kAborted);
  EXPECT_EQ(t.done_shards(), 0);
  // Nothing changed until Expire reaps it; then the shard is free again.
  EXPECT_EQ(t.Get(a.id)->state, LeaseState::kActive);
  ASSERT_EQ(t.Expire(kTtl).size(), 1u);
  EXPECT_EQ(t.free_shards(), 1);
}

TEST(LeaseTable, RevokeAllReturnsEveryActiveLeaseAtOnce) {
  LeaseTable t = MakeTable(3);
  Lease a = Grant(t, "r0", 0);
  Lease b = Grant(t, "r1", 0);
  Lease c = Grant(t, "r2", 0);
  ASSERT_OK(t.Complete(c.id, 5));
  std::vector<Lease> revoked = t.RevokeAll();
  ASSERT_EQ(revoked.size(), 2u);
  EXPECT_EQ(t.active_leases(), 0);
  EXPECT_EQ(t.free_shards(), 2);
  EXPECT_EQ(t.Complete(a.id, 6).status().code(), Status::Code::kAborted);
  EXPECT_EQ(t.Renew(b.id, 6).status().code(), Status::Code::kAborted);
  EXPECT_EQ(t.done_shards(), 1);
}

// A long, deterministic run with ranks that stall, die and retry: at the end every shard is
// done exactly once and the samples add up, whatever failed along the way.
// Both with the order given to Create() and with a seed's permutation.
TEST(LeaseTable, EveryShardCountedOncePerEpochThroughFailures) {
  for (std::optional<LeaseOrder> order : {std::optional<LeaseOrder>(), std::optional<LeaseOrder>(LeaseOrder{5, 2})}) {
    SCOPED_TRACE(order ? "permuted order" : "order given");
    constexpr int kShards = 40;
    constexpr int kRanks = 6;
    LeaseTable t = MakeTable(kShards, 7, order);
    std::vector<std::vector<uint64_t>> held(kRanks);  // lease ids each rank works on
    int64_t now = 0;
    int refused_late = 0;
    uint64_t x = 12345;  // a tiny LCG: the same "random" failures every run
    auto next = [&x]() { return (x = x * 6364136223846793005ULL + 1442695040888963407ULL) >> 33; };
    for (int tick = 0; tick < 5000 && !t.EpochDone(); ++tick) {
      now += 50;
      t.Expire(now);
      const int r = static_cast<int>(next() % kRanks);
      const std::string rank = "r" + std::to_string(r);
      const uint64_t roll = next() % 10;
      if (held[r].empty() || roll < 2) {
        auto a = t.Acquire(rank, now);
        ASSERT_OK(a);
        if (a->kind == AcquireResult::Kind::kGranted) held[r].push_back(a->lease.id);
      } else if (roll < 6) {
        // Finish the oldest shard, sometimes twice (a retried RPC), sometimes too late.
        const uint64_t id = held[r].front();
        held[r].erase(held[r].begin());
        auto c = t.Complete(id, now);
        if (c.ok()) {
          if (roll == 5) {
            ASSERT_OK(t.Complete(id, now + 1));
          }
        } else {
          EXPECT_EQ(c.status().code(), Status::Code::kAborted);
          ++refused_late;
        }
      } else if (roll < 8) {
        t.RenewRank(rank, now);
      } else if (roll == 8) {
        held[r].clear();  // the rank dies silently; its leases expire
      }                   // roll 9: the rank stalls this tick
      for (int s = 0; s < kShards; ++s) ASSERT_LE(t.CompletionsOf(s), 1) << "shard " << s;
    }
    ASSERT_TRUE(t.EpochDone());
    EXPECT_GT(refused_late, 0);  // the scenario did exercise late completions
    EXPECT_EQ(t.done_shards(), kShards);
    EXPECT_EQ(t.done_samples(), 7 * kShards);
    for (int s = 0; s < kShards; ++s) EXPECT_EQ(t.CompletionsOf(s), 1) << "shard " << s;
    // And the completed leases, as they are journaled, say the same: one per shard.
    std::vector<int> completed(kShards, 0);
    for (const Lease& l : t.leases()) {
      if (l.state == LeaseState::kCompleted) ++completed[l.shard];
    }
    for (int s = 0; s < kShards; ++s) EXPECT_EQ(completed[s], 1) << "shard " << s;
  }
}

TEST(LeaseTable, CreateRefusesBadInput) {
  EXPECT_EQ(LeaseTable::Create({}, LeaseOptions{}).status().code(), Status::Code::kInvalidArgument);
  EXPECT_FALSE(LeaseTable::Create({{"a.tar", 1}, {"a.tar", 1}}, LeaseOptions{}).ok());
  EXPECT_FALSE(LeaseTable::Create({{"", 1}}, LeaseOptions{}).ok());
  EXPECT_FALSE(LeaseTable::Create({{"a.tar", -1}}, LeaseOptions{}).ok());
  EXPECT_FALSE(LeaseTable::Create({{"a.tar", 1}}, LeaseOptions{0, {}}).ok());
  LeaseTable t = MakeTable(1);
  EXPECT_EQ(t.Acquire("", 0).status().code(), Status::Code::kInvalidArgument);
}

// `t` restored from what storage keeps of it: its shards, options and leases.
StatusOr<LeaseTable> Restored(const LeaseTable& t, const std::vector<Lease>& leases, const std::string& what) {
  return LeaseTable::Restore(t.shards(), LeaseOptions{t.ttl_ms(), t.order_key()}, leases, what);
}

TEST(LeaseTable, RestoreRebuildsTheTable) {
  LeaseTable t = MakeTable(4);
  Lease a = Grant(t, "r0", 0);
  Lease b = Grant(t, "r1", 0);
  Lease c = Grant(t, "r2", 500);
  ASSERT_OK(t.Complete(b.id, 100));
  t.Expire(kTtl);  // a expires; c (deadline 1500) stays
  std::vector<Lease> leases = t.leases();
  std::reverse(leases.begin(), leases.end());  // any order
  auto u = Restored(t, leases, "epoch 0");
  ASSERT_OK(u);
  EXPECT_EQ(u->leases(), t.leases());
  EXPECT_EQ(u->done_shards(), 1);
  EXPECT_EQ(u->free_shards(), 2);
  EXPECT_EQ(u->active_leases(), 1);
  EXPECT_EQ(u->Get(a.id)->state, LeaseState::kExpired);
  // It carries on as the original would: same next lease, late completion still refused.
  Lease next = Grant(*u, "r3", kTtl + 1);
  EXPECT_EQ(next.id, 4u);
  EXPECT_EQ(next.shard, 0);
  EXPECT_FALSE(u->Complete(a.id, kTtl + 2).ok());
  EXPECT_OK(u->Complete(c.id, kTtl + 2));
}

TEST(LeaseTable, RestoreRefusesBrokenInvariants) {
  LeaseTable t = MakeTable(2);
  Lease a = Grant(t, "r0", 0);
  ASSERT_OK(t.Complete(a.id, 1));

  std::vector<Lease> twice = t.leases();  // the same shard completed under two leases
  twice.push_back(twice[0]);
  twice.back().id = 2;
  auto r = Restored(t, twice, "epoch 0");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kCorruption);
  EXPECT_NE(r.status().message().find("completed twice"), std::string::npos) << r.status().message();

  std::vector<Lease> same_id = t.leases();
  same_id.push_back(same_id[0]);
  same_id.back().shard = 1;
  same_id.back().shard_name = t.shards()[1].name;
  EXPECT_FALSE(Restored(t, same_id, "epoch 0").ok());

  std::vector<Lease> wrong_name = t.leases();
  wrong_name[0].shard_name = "other.tar";
  EXPECT_FALSE(Restored(t, wrong_name, "epoch 0").ok());

  std::vector<Lease> no_id = t.leases();
  no_id[0].id = 0;
  EXPECT_FALSE(Restored(t, no_id, "epoch 0").ok());
}

TEST(LeaseTable, NamesOfStatesReadBack) {
  for (LeaseState state :
       {LeaseState::kActive, LeaseState::kCompleted, LeaseState::kExpired, LeaseState::kRescinded}) {
    EXPECT_EQ(*ParseLeaseState(LeaseStateName(state)), state);
  }
  EXPECT_EQ(ParseLeaseState("lost").status().code(), Status::Code::kInvalidArgument);
}

TEST(LeaseTable, ExtendAllRestartsTheClockOfActiveLeasesOnly) {
  auto t = LeaseTable::Create({{"a.tar", 10}, {"b.tar", 10}}, LeaseOptions{1000, {}});
  ASSERT_OK(t);
  auto a = t->Acquire("r0", 0);
  auto b = t->Acquire("r1", 0);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_OK(t->Complete(b->lease.id, 10));
  // Long past the deadline (a coordinator that was down): the grace period revives it.
  EXPECT_EQ(t->ExtendAll(5000), 1);
  auto renewed = t->Get(a->lease.id);
  ASSERT_OK(renewed);
  EXPECT_EQ(renewed->deadline_ms, 6000);
  EXPECT_TRUE(t->Expire(5999).empty());
  EXPECT_OK(t->Complete(a->lease.id, 5999));
  EXPECT_TRUE(t->EpochDone());
}

TEST(LeaseTable, AnOrderedEpochLeasesEveryShardOnceInItsSeedsPermutation) {
  LeaseTable t = MakeTable(12, 10, LeaseOrder{3, 1});
  const std::vector<std::string> got = LeaseWholeEpoch(t);
  std::vector<std::string> names;
  for (const EpochShard& s : t.shards()) names.push_back(s.name);
  std::vector<std::string> want;
  for (size_t i : sharding::EpochShardOrder(3, 1, names)) want.push_back(names[i]);
  EXPECT_EQ(got, want);
  EXPECT_EQ(std::set<std::string>(got.begin(), got.end()).size(), 12u);  // each shard once
  EXPECT_TRUE(t.EpochDone());
  EXPECT_EQ(t.done_samples(), 120);
  ASSERT_EQ(t.order().size(), 12u);
  for (size_t p = 0; p < got.size(); ++p) EXPECT_EQ(t.shards()[t.order()[p]].name, got[p]);
  // Not the order given: the permutation is in effect.
  EXPECT_NE(got, names);
}

TEST(LeaseTable, TwoSeedsGiveDifferentShardOrdersAndEachEpochItsOwn) {
  LeaseTable seed1 = MakeTable(16, 10, LeaseOrder{1, 0});
  LeaseTable seed2 = MakeTable(16, 10, LeaseOrder{2, 0});
  LeaseTable seed1_epoch1 = MakeTable(16, 10, LeaseOrder{1, 1});
  LeaseTable seed1_again = MakeTable(16, 10, LeaseOrder{1, 0});
  const auto a = LeaseWholeEpoch(seed1), b = LeaseWholeEpoch(seed2), c = LeaseWholeEpoch(seed1_epoch1),
             d = LeaseWholeEpoch(seed1_again);
  EXPECT_NE(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(a, d);
  for (const auto* order : {&a, &b, &c}) {
    EXPECT_EQ(std::set<std::string>(order->begin(), order->end()).size(), 16u);
  }
}

TEST(LeaseTable, AShardReturnedToAnOrderedPoolIsLeasedBeforeUntouchedOnes) {
  LeaseTable t = MakeTable(8, 10, LeaseOrder{9, 0});
  Lease first = Grant(t, "r0", 0);
  Lease second = Grant(t, "r1", 500);
  ASSERT_OK(t.Complete(second.id, 600));
  EXPECT_EQ(t.Expire(kTtl).size(), 1u);  // the first lease dies
  Lease again = Grant(t, "r2", kTtl + 1);
  EXPECT_EQ(again.shard, first.shard);
  Lease third = Grant(t, "r2", kTtl + 2);
  EXPECT_EQ(third.shard, t.order()[2]);
  // RevokeAll returns its shards in the epoch's order as well.
  t.RevokeAll();
  EXPECT_EQ(Grant(t, "r3", kTtl + 3).shard, first.shard);
  EXPECT_EQ(Grant(t, "r3", kTtl + 4).shard, t.order()[2]);
}

TEST(LeaseTable, TheOrderSurvivesTheJournalAndBadOrdersAreRefused) {
  LeaseTable t = MakeTable(10, 10, LeaseOrder{4, 3});
  Lease a = Grant(t, "r0", 0);
  Lease b = Grant(t, "r1", 0);
  ASSERT_OK(t.Complete(b.id, 1));
  auto u = Restored(t, {a, *t.Get(b.id)}, "epoch 3");
  ASSERT_OK(u);
  EXPECT_EQ(u->leases(), t.leases());
  EXPECT_EQ(u->order(), t.order());
  ASSERT_TRUE(u->order_key().has_value());
  EXPECT_EQ(*u->order_key(), (LeaseOrder{4, 3}));
  // The restored table goes on where the original would.
  EXPECT_EQ(Grant(*u, "r2", 2).shard, t.order()[2]);
  // A table journaled without an order hands out in the order given.
  auto old = Restored(MakeTable(3), {}, "epoch 0");
  ASSERT_OK(old);
  EXPECT_FALSE(old->order_key().has_value());
  EXPECT_EQ(LeaseWholeEpoch(*old), (std::vector<std::string>{"train-0.tar", "train-1.tar", "train-2.tar"}));

  auto bad = LeaseTable::Restore(MakeShards(2), LeaseOptions{kTtl, LeaseOrder{1, -2}}, {}, "epoch 3");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Status::Code::kCorruption);
  EXPECT_NE(bad.status().message().find("epoch 3"), std::string::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("epoch must be >= 0"), std::string::npos) << bad.status().message();
  auto negative = LeaseTable::Create(MakeShards(2), LeaseOptions{kTtl, LeaseOrder{1, -1}});
  ASSERT_FALSE(negative.ok());
  EXPECT_EQ(negative.status().code(), Status::Code::kInvalidArgument);
}

// A table in the (seed 7, epoch 0) order, and that order's shard names.
LeaseTable OrderedTable(int num_shards, std::vector<std::string>* names_in_order) {
  LeaseTable t = MakeTable(num_shards, 10, LeaseOrder{7, 0});
  names_in_order->clear();
  for (int p = 0; p < num_shards; ++p) names_in_order->push_back(t.shards()[t.order()[p]].name);
  return t;
}

TEST(LeaseTable, AcquireAtLeasesTheShardAtThatPositionOfTheOrder) {
  std::vector<std::string> order;
  LeaseTable t = OrderedTable(5, &order);
  // Rank 1 of 2 asks for its first two shards before rank 0 asks at all: positions 1 and 3.
  auto a = t.AcquireAt(1, "g/1#p1", 1, 0, nullptr);
  auto b = t.AcquireAt(3, "g/1#p3", 1, 0, nullptr);
  ASSERT_OK(a);
  ASSERT_OK(b);
  EXPECT_EQ(a->shard_name, order[1]);
  EXPECT_EQ(b->shard_name, order[3]);
  EXPECT_EQ(a->attempt, 1);
  // The pool's next free shard is still position 0.
  EXPECT_EQ(Grant(t, "g/0#0", 0).shard_name, order[0]);
  // Asking again (a retry whose reply was lost) returns the same lease, renewed.
  auto again = t.AcquireAt(1, "g/1#p1", 1, 500, nullptr);
  ASSERT_OK(again);
  EXPECT_EQ(again->id, a->id);
  EXPECT_EQ(again->deadline_ms, 500 + kTtl);
  EXPECT_EQ(t.active_leases(), 3);
  EXPECT_EQ(t.AcquireAt(5, "g/1#p5", 1, 0, nullptr).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(t.AcquireAt(-1, "g/1#p5", 1, 0, nullptr).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(t.AcquireAt(0, "", 1, 0, nullptr).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(t.AcquireAt(0, "g/0#p0", 0, 0, nullptr).status().code(), Status::Code::kInvalidArgument);
}

// A trial's attempt 1 completes positions 0..3 and holds 4; it is lost, and attempt 2 resumes from
// a checkpoint taken after position 1: it reads positions 2, 3 and 4 again. The completions of 2
// and 3 are rescinded, 4's lease expires, and every shard ends counted once, for attempt 2
// where attempt 2 read it. A late completion by attempt 1 counts nothing.
TEST(LeaseTable, AResumedAttemptReadingPositionsAgainRescindsTheLostAttemptsCompletions) {
  std::vector<std::string> order;
  LeaseTable t = OrderedTable(5, &order);
  std::vector<Lease> first;
  for (int p = 0; p < 5; ++p) {
    auto l = t.AcquireAt(p, "g/0#p" + std::to_string(p), 1, 10, nullptr);
    ASSERT_OK(l);
    first.push_back(*l);
    if (p < 4) {
      ASSERT_OK(t.Complete(l->id, 20));
    }
  }
  EXPECT_EQ(t.done_shards(), 4);
  // Completing position 2 again in attempt 1 is refused.
  EXPECT_EQ(t.AcquireAt(2, "g/0#p2", 1, 30, nullptr).status().code(), Status::Code::kFailedPrecondition);

  std::vector<Lease> changed;
  std::vector<Lease> second;
  for (int p = 2; p < 5; ++p) {
    auto l = t.AcquireAt(p, "h/0#p" + std::to_string(p), 2, 40, &changed);
    ASSERT_OK(l);
    EXPECT_EQ(l->shard_name, order[static_cast<size_t>(p)]);
    EXPECT_EQ(l->attempt, 2);
    second.push_back(*l);
  }
  ASSERT_EQ(changed.size(), 3u);
  EXPECT_EQ(changed[0].id, first[2].id);
  EXPECT_EQ(changed[0].state, LeaseState::kRescinded);
  EXPECT_EQ(changed[1].state, LeaseState::kRescinded);
  EXPECT_EQ(changed[2].id, first[4].id);
  EXPECT_EQ(changed[2].state, LeaseState::kExpired);
  EXPECT_EQ(t.done_shards(), 2);
  EXPECT_EQ(t.done_samples(), 20);
  // The lost attempt's late completion of its held lease, and of a rescinded one, count nothing.
  EXPECT_EQ(t.Complete(first[4].id, 50).status().code(), Status::Code::kAborted);
  EXPECT_EQ(t.Complete(first[2].id, 50).status().code(), Status::Code::kAborted);
  for (const Lease& l : second) ASSERT_OK(t.Complete(l.id, 60));
  EXPECT_TRUE(t.EpochDone());
  EXPECT_EQ(t.done_samples(), 50);
  for (int s = 0; s < 5; ++s) EXPECT_EQ(t.CompletionsOf(s), 1) << s;

  // The journal's view: every lease's final state rebuilds the same table.
  auto restored = LeaseTable::Restore(MakeShards(5), LeaseOptions{kTtl, LeaseOrder{7, 0}}, t.leases(), "epoch");
  ASSERT_OK(restored);
  EXPECT_EQ(restored->done_shards(), 5);
  EXPECT_EQ(restored->leases(), t.leases());
  // A position under another holder's live lease of the same attempt (a group that lost the
  // trial and got it back) is taken over: the old lease expires.
  LeaseTable u = OrderedTable(3, &order);
  auto held = u.AcquireAt(0, "g/0#p0", 1, 0, nullptr);
  ASSERT_OK(held);
  changed.clear();
  auto taken = u.AcquireAt(0, "g2/0#p0", 1, 10, &changed);
  ASSERT_OK(taken);
  ASSERT_EQ(changed.size(), 1u);
  EXPECT_EQ(changed[0].id, held->id);
  EXPECT_EQ(u.active_leases(), 1);
}

}  // namespace
}  // namespace flap::coordinator
