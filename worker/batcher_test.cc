#include "worker/batcher.h"

#include <gtest/gtest.h>

#include <set>

namespace flap::worker {
namespace {

TEST(ChooseCaption, DeterministicPerSeedKeyEpoch) {
  auto a = ChooseCaption(0.5, 1, "k", 3, 3, 2);
  auto b = ChooseCaption(0.5, 1, "k", 3, 3, 2);
  EXPECT_EQ(a.augmented, b.augmented);
  EXPECT_EQ(a.index, b.index);
}

TEST(ChooseCaption, PolicyOffOnAndMix) {
  int augmented = 0;
  std::set<size_t> originals_used;
  const int n = 4000;
  for (int e = 0; e < n; ++e) {
    auto off = ChooseCaption(0.0, 7, "clip", e, 3, 1);
    EXPECT_FALSE(off.augmented);
    EXPECT_LT(off.index, 3u);
    originals_used.insert(off.index);
    auto on = ChooseCaption(1.0, 7, "clip", e, 3, 1);
    EXPECT_TRUE(on.augmented);
    EXPECT_EQ(on.index, 0u);
    augmented += ChooseCaption(0.3, 7, "clip", e, 3, 1).augmented;
  }
  EXPECT_EQ(originals_used.size(), 3u);  // every original caption is used over the epochs
  EXPECT_NEAR(static_cast<double>(augmented) / n, 0.3, 0.03);
}

TEST(ChooseCaption, OnWithoutAugmentedCaptionsFallsBackToOriginals) {
  auto c = ChooseCaption(1.0, 1, "k", 0, 2, 0);
  EXPECT_FALSE(c.augmented);
  EXPECT_LT(c.index, 2u);
}

TEST(PadTokens, PadsAndTruncates) {
  std::vector<int> a = {5, 6}, b = {1, 2, 3, 4, 5};
  auto t = PadTokens({&a, &b}, 4);
  ASSERT_EQ(t.sizes(), (at::IntArrayRef{2, 4}));
  EXPECT_EQ(t[0][0].item<int64_t>(), 5);
  EXPECT_EQ(t[0][2].item<int64_t>(), 0);
  EXPECT_EQ(t[1][3].item<int64_t>(), 4);
  // Only as wide as the longest caption.
  std::vector<int> c = {7, 8, 9};
  auto narrow = PadTokens({&a, &c}, 32);
  ASSERT_EQ(narrow.sizes(), (at::IntArrayRef{2, 3}));
  EXPECT_EQ(narrow[0][2].item<int64_t>(), 0);
  EXPECT_EQ(narrow[1][2].item<int64_t>(), 9);
}

TEST(ChooseCaption, EveryCaptionOfAFiveCaptionClipWithinFiveEpochs) {
  for (uint64_t seed : {1u, 2u, 3u}) {
    for (const char* key : {"a", "clip-7", "Clotho/x.wav"}) {
      for (int64_t cycle = 0; cycle < 3; ++cycle) {
        std::set<size_t> seen;
        for (int64_t e = 5 * cycle; e < 5 * cycle + 5; ++e) {
          auto c = ChooseCaption(0.0, seed, key, e, 5, 0);
          EXPECT_FALSE(c.augmented);
          seen.insert(c.index);
        }
        EXPECT_EQ(seen.size(), 5u) << "seed " << seed << " key " << key << " cycle " << cycle;
      }
    }
  }
  // The order differs between cycles (for some key), and repeats exactly for the same inputs.
  bool differs = false;
  for (int k = 0; k < 10 && !differs; ++k) {
    const std::string key = "k" + std::to_string(k);
    for (int64_t e = 0; e < 5; ++e) {
      differs |= ChooseCaption(0.0, 1, key, e, 5, 0).index != ChooseCaption(0.0, 1, key, e + 5, 5, 0).index;
      EXPECT_EQ(ChooseCaption(0.0, 1, key, e, 5, 0).index, ChooseCaption(0.0, 1, key, e, 5, 0).index);
    }
  }
  EXPECT_TRUE(differs);
}

}  // namespace
}  // namespace flap::worker
