#include "worker/batcher.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <set>

#include "sharding/synth.h"

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

}  // namespace
}  // namespace flap::worker

namespace flap::worker {
namespace {

TEST(Batcher, RanksTakeContiguousSlicesOfTheGlobalBatch) {
  const std::string dir = ::testing::TempDir() + "/flap_batcher_ranks_" + std::to_string(::getpid());
  sharding::SynthOptions o;
  o.num_train = 20;
  o.num_eval = 1;
  o.clip_seconds = 0.5;
  o.vocab_size = 40;
  ASSERT_TRUE(sharding::GenerateSynthetic(o, dir).ok());
  DatasetOptions d;
  d.target_frames = 48;
  auto data = Dataset::Load(dir, "train", d);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  TrialConfig one, per_rank;
  one.train.batch_size = 6;
  per_rank.train.batch_size = 3;
  Batcher whole(*data, one);
  Batcher r0(*data, per_rank, 0, 2), r1(*data, per_rank, 1, 2);
  EXPECT_EQ(whole.steps_per_epoch(), 3);
  EXPECT_EQ(r0.steps_per_epoch(), 3);  // 20 / (2 x 3)
  for (int64_t step = 0; step < 3; ++step) {
    auto keys = r0.BatchKeys(1, step);
    auto second = r1.BatchKeys(1, step);
    keys.insert(keys.end(), second.begin(), second.end());
    EXPECT_EQ(keys, whole.BatchKeys(1, step)) << "step " << step;
  }
  core::Batch a = r1.TrainBatch(1, 2), b = whole.TrainBatch(1, 2);
  EXPECT_TRUE(at::equal(a.spec, b.spec.narrow(0, 3, 3)));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace flap::worker
