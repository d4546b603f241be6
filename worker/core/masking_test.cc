#include "worker/core/masking.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

namespace flap::core {
namespace {

MaskConfig Mask(double ratio, MaskStrategy s) {
  MaskConfig m;
  m.ratio = ratio;
  m.strategy = s;
  return m;
}

const MaskGeometry kTiny{8, 16};  // 128 mel bins x 256 frames in 16x16 patches

TEST(Masking, KeptCountsFor2dAndSeveralRatios) {
  EXPECT_EQ(NumKept(Mask(0.0, MaskStrategy::k2d), kTiny), 128);
  EXPECT_EQ(NumKept(Mask(0.25, MaskStrategy::k2d), kTiny), 96);
  EXPECT_EQ(NumKept(Mask(0.5, MaskStrategy::k2d), kTiny), 64);
  EXPECT_EQ(NumKept(Mask(0.75, MaskStrategy::k2d), kTiny), 32);
  EXPECT_EQ(NumKept(Mask(0.3, MaskStrategy::k2d), kTiny), 128 - 38);  // round(38.4)
  for (double r : {0.0, 0.3, 0.5, 0.75, 0.9}) {
    auto keep = KeepIndices(Mask(r, MaskStrategy::k2d), kTiny, 7, "clip", 0);
    EXPECT_EQ(static_cast<int>(keep.size()), NumKept(Mask(r, MaskStrategy::k2d), kTiny)) << r;
  }
}

TEST(Masking, KeptCountsFor1dAndSeveralRatios) {
  EXPECT_EQ(NumKept(Mask(0.0, MaskStrategy::k1d), kTiny), 128);
  EXPECT_EQ(NumKept(Mask(0.5, MaskStrategy::k1d), kTiny), 8 * 8);
  EXPECT_EQ(NumKept(Mask(0.75, MaskStrategy::k1d), kTiny), 8 * 4);
  EXPECT_EQ(NumKept(Mask(0.3, MaskStrategy::k1d), kTiny), 8 * (16 - 5));  // round(4.8)
  for (double r : {0.0, 0.3, 0.5, 0.75}) {
    auto keep = KeepIndices(Mask(r, MaskStrategy::k1d), kTiny, 7, "clip", 0);
    EXPECT_EQ(static_cast<int>(keep.size()), NumKept(Mask(r, MaskStrategy::k1d), kTiny)) << r;
  }
}

TEST(Masking, AtLeastOneTokenIsAlwaysKept) {
  EXPECT_EQ(NumKept(Mask(0.999, MaskStrategy::k2d), kTiny), 1);
  EXPECT_EQ(NumKept(Mask(0.99, MaskStrategy::k1d), kTiny), 8);
}

TEST(Masking, IndicesAreSortedUniqueAndInRange) {
  auto keep = KeepIndices(Mask(0.6, MaskStrategy::k2d), kTiny, 3, "a", 1);
  std::set<int64_t> unique(keep.begin(), keep.end());
  EXPECT_EQ(unique.size(), keep.size());
  EXPECT_TRUE(std::is_sorted(keep.begin(), keep.end()));
  EXPECT_GE(keep.front(), 0);
  EXPECT_LT(keep.back(), 128);
}

TEST(Masking, OneDimensionalDropsWholeTimeColumns) {
  auto keep = KeepIndices(Mask(0.75, MaskStrategy::k1d), kTiny, 11, "clip-9", 2);
  std::set<int64_t> kept(keep.begin(), keep.end());
  int kept_columns = 0;
  for (int w = 0; w < kTiny.time_patches; ++w) {
    int present = 0;
    for (int f = 0; f < kTiny.freq_patches; ++f) present += kept.count(w * kTiny.freq_patches + f);
    EXPECT_TRUE(present == 0 || present == kTiny.freq_patches) << "column " << w;
    kept_columns += present == kTiny.freq_patches;
  }
  EXPECT_EQ(kept_columns, 4);
}

TEST(Masking, TwoDimensionalDoesNotDropWholeColumnsOnly) {
  // Over many samples a 2-D draw produces partially kept columns; a 1-D draw never does.
  bool partial_seen = false;
  for (int i = 0; i < 20 && !partial_seen; ++i) {
    auto keep = KeepIndices(Mask(0.5, MaskStrategy::k2d), kTiny, 1, "k" + std::to_string(i), 0);
    std::vector<int> per_col(kTiny.time_patches, 0);
    for (int64_t idx : keep) per_col[idx / kTiny.freq_patches]++;
    for (int c : per_col) partial_seen |= (c > 0 && c < kTiny.freq_patches);
  }
  EXPECT_TRUE(partial_seen);
}

TEST(Masking, SameSeedKeyEpochViewGivesSameMask) {
  for (auto s : {MaskStrategy::k1d, MaskStrategy::k2d}) {
    auto a = KeepIndices(Mask(0.5, s), kTiny, 42, "clip-1", 3, 0);
    auto b = KeepIndices(Mask(0.5, s), kTiny, 42, "clip-1", 3, 0);
    EXPECT_EQ(a, b);
  }
}

TEST(Masking, DifferentSeedKeyEpochOrViewGivesDifferentMask) {
  auto m = Mask(0.5, MaskStrategy::k2d);
  auto base = KeepIndices(m, kTiny, 42, "clip-1", 3, 0);
  EXPECT_NE(base, KeepIndices(m, kTiny, 43, "clip-1", 3, 0));
  EXPECT_NE(base, KeepIndices(m, kTiny, 42, "clip-2", 3, 0));
  EXPECT_NE(base, KeepIndices(m, kTiny, 42, "clip-1", 4, 0));
  EXPECT_NE(base, KeepIndices(m, kTiny, 42, "clip-1", 3, 1));
}

TEST(Masking, TwoDimensionalDrawIsRoughlyUniform) {
  std::vector<int> counts(128, 0);
  const int trials = 2000;
  for (int i = 0; i < trials; ++i) {
    for (int64_t idx : KeepIndices(Mask(0.75, MaskStrategy::k2d), kTiny, 5, "u", i)) counts[idx]++;
  }
  // Each patch is kept with probability 0.25: 500 expected, sd ~19.
  for (int c : counts) {
    EXPECT_GT(c, 400);
    EXPECT_LT(c, 600);
  }
}

}  // namespace
}  // namespace flap::core
