#include "worker/thread_budget.h"

#include <gtest/gtest.h>

namespace flap::worker {
namespace {

TEST(ThreadBudget, CpuWithCachedFeaturesGivesComputeEveryCore) {
  ThreadPlan p = PlanThreads(2, /*gpu=*/false, /*features_cached=*/true, 0, 0);
  EXPECT_EQ(p.compute, 2);
  EXPECT_EQ(p.loader, 1);
  p = PlanThreads(16, false, true, 0, 0);
  EXPECT_EQ(p.compute, 16);
  EXPECT_EQ(p.loader, 4);
  p = PlanThreads(1, false, true, 0, 0);  // never zero threads on either side
  EXPECT_EQ(p.compute, 1);
  EXPECT_EQ(p.loader, 1);
  EXPECT_FALSE(p.why.empty());
}

TEST(ThreadBudget, CpuWithoutCacheSplitsTheCoresLoaderTakingTheSmallerHalf) {
  ThreadPlan p = PlanThreads(2, /*gpu=*/false, /*features_cached=*/false, 0, 0);
  EXPECT_EQ(p.loader, 1);
  EXPECT_EQ(p.compute, 1);
  p = PlanThreads(16, false, false, 0, 0);
  EXPECT_EQ(p.loader, 8);
  EXPECT_EQ(p.compute, 8);
  p = PlanThreads(7, false, false, 0, 0);
  EXPECT_EQ(p.loader, 3);
  EXPECT_EQ(p.compute, 4);
  p = PlanThreads(1, false, false, 0, 0);
  EXPECT_EQ(p.loader, 1);
  EXPECT_EQ(p.compute, 1);
}

TEST(ThreadBudget, GpuGivesTheLoaderEverySpareCore) {
  for (bool cached : {true, false}) {
    ThreadPlan p = PlanThreads(16, /*gpu=*/true, cached, 0, 0);
    EXPECT_EQ(p.compute, 1);
    EXPECT_EQ(p.loader, 15);
    p = PlanThreads(16, true, cached, 4, 0);
    EXPECT_EQ(p.compute, 4);
    EXPECT_EQ(p.loader, 12);
  }
}

TEST(ThreadBudget, CountsTheUserSetAreKept) {
  ThreadPlan p = PlanThreads(16, false, true, 3, 5);
  EXPECT_EQ(p.compute, 3);
  EXPECT_EQ(p.loader, 5);
  p = PlanThreads(2, false, false, 0, 4);  // loader as set, compute the rest (at least one)
  EXPECT_EQ(p.loader, 4);
  EXPECT_EQ(p.compute, 1);
}

TEST(ThreadBudget, CoresPerRankSharesAnUnboundHostAmongItsRanks) {
  EXPECT_EQ(CoresPerRank(4, 16, ""), 4);        // bound by the launcher: the mask decides
  EXPECT_EQ(CoresPerRank(16, 16, ""), 16);      // one rank
  EXPECT_EQ(CoresPerRank(16, 16, "4"), 4);      // four ranks on the host
  EXPECT_EQ(CoresPerRank(16, 16, "4(x2)"), 4);  // Slurm's per-node form
  EXPECT_EQ(CoresPerRank(2, 2, "8"), 1);        // more ranks than cores: still one
  EXPECT_EQ(CoresPerRank(0, 8, "junk"), 8);     // unreadable: as if one rank
}

}  // namespace
}  // namespace flap::worker
