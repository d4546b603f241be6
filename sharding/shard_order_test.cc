// EpochShardOrder (sharding/shard_order.h): a permutation per (seed, epoch, shard list) that
// covers every shard once, differs between seeds and between epochs, and depends on nothing else.
#include "sharding/shard_order.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

namespace flap::sharding {
namespace {

std::vector<std::string> Names(int n, const std::string& prefix = "train-") {
  std::vector<std::string> names;
  for (int i = 0; i < n; ++i) names.push_back(prefix + std::to_string(i) + ".tar");
  return names;
}

bool IsPermutation(const std::vector<size_t>& order, size_t n) {
  if (order.size() != n) return false;
  std::set<size_t> seen(order.begin(), order.end());
  return seen.size() == n && (n == 0 || *seen.rbegin() == n - 1);
}

TEST(EpochShardOrder, EachEpochCoversEveryShardExactlyOnce) {
  for (int n : {0, 1, 2, 7, 64, 1000}) {
    const auto names = Names(n);
    for (uint64_t seed : {0ULL, 1ULL, 42ULL, ~0ULL}) {
      for (int64_t epoch : {0, 1, 5}) {
        EXPECT_TRUE(IsPermutation(EpochShardOrder(seed, epoch, names), static_cast<size_t>(n)))
            << n << " shards, seed " << seed << ", epoch " << epoch;
      }
    }
  }
}

TEST(EpochShardOrder, TwoSeedsGiveDifferentShardOrders) {
  const auto names = Names(16);
  // Every pair of seeds 1..8 differs (16! orders: equal orders would be a broken draw).
  std::set<std::vector<size_t>> orders;
  for (uint64_t seed = 1; seed <= 8; ++seed) orders.insert(EpochShardOrder(seed, 0, names));
  EXPECT_EQ(orders.size(), 8u);
  // Neither is the manifest order.
  std::vector<size_t> identity(names.size());
  for (size_t i = 0; i < identity.size(); ++i) identity[i] = i;
  EXPECT_EQ(orders.count(identity), 0u);
}

TEST(EpochShardOrder, TheOrderChangesEveryEpochAndSoDoTheFirstBlocks) {
  const auto names = Names(16);
  std::set<std::vector<size_t>> orders;
  std::set<std::set<size_t>> first_blocks;  // the shards of the first block of 4, as a set
  for (int64_t epoch = 0; epoch < 6; ++epoch) {
    const auto order = EpochShardOrder(7, epoch, names);
    orders.insert(order);
    first_blocks.insert(std::set<size_t>(order.begin(), order.begin() + 4));
  }
  EXPECT_EQ(orders.size(), 6u);
  EXPECT_GE(first_blocks.size(), 5u);  // blocks of shards shuffled together are not fixed
}

TEST(EpochShardOrder, APureFunctionOfSeedEpochAndTheList) {
  const auto names = Names(32);
  EXPECT_EQ(EpochShardOrder(3, 2, names), EpochShardOrder(3, 2, names));
  // Another list draws its own.
  EXPECT_NE(EpochShardOrder(3, 2, names), EpochShardOrder(3, 2, Names(32, "eval-")));
  // The draw is pinned: a changed draw would change the order every resumed checkpoint and
  // every coordinator journal expects.
  EXPECT_EQ(EpochShardOrder(1, 0, Names(6)), (std::vector<size_t>{5, 3, 1, 2, 0, 4}));
}

}  // namespace
}  // namespace flap::sharding
