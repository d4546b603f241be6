#include "worker/core/retrieval.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/utils.h>

namespace flap::core {
namespace {

TEST(Retrieval, PerfectDiagonalScoresOne) {
  // 3 clips, one caption each, each caption most similar to its clip.
  std::vector<float> sim = {0.9f, 0.1f, 0.0f,  //
                            0.2f, 0.8f, 0.1f,  //
                            0.0f, 0.3f, 0.7f};
  auto m = ComputeRetrieval(sim, 3, 3, {0, 1, 2});
  EXPECT_DOUBLE_EQ(m.t2a_r1, 1.0);
  EXPECT_DOUBLE_EQ(m.a2t_r1, 1.0);
  EXPECT_DOUBLE_EQ(m.map10, 1.0);
  EXPECT_EQ(m.num_clips, 3);
  EXPECT_EQ(m.num_captions, 3);
}

TEST(Retrieval, HandWorkedExampleWithSeveralCaptionsPerClip) {
  // 2 clips; captions 0,1 describe clip 0 and captions 2,3 describe clip 1.
  //            clip0  clip1
  std::vector<float> sim = {0.9f, 0.2f,   // cap0 -> clip0 rank 0
                            0.1f, 0.5f,   // cap1 -> clip0 rank 1
                            0.3f, 0.4f,   // cap2 -> clip1 rank 0
                            0.6f, 0.2f};  // cap3 -> clip1 rank 1
  auto m = ComputeRetrieval(sim, 4, 2, {0, 0, 1, 1});
  // text->audio ranks: 0, 1, 0, 1.
  EXPECT_DOUBLE_EQ(m.t2a_r1, 0.5);
  EXPECT_DOUBLE_EQ(m.t2a_r5, 1.0);
  EXPECT_DOUBLE_EQ(m.t2a_map10, (1.0 + 0.5 + 1.0 + 0.5) / 4.0);
  // audio->text, clip0 column: cap0 .9, cap3 .6, cap2 .3, cap1 .1 -> true ranks 0 and 3.
  //   AP = (1/1 + 2/4) / 2 = 0.75.
  // clip1 column: cap1 .5, cap2 .4, cap0 .2, cap3 .2 -> true ranks: cap2 1, cap3 3 (tie with
  //   cap0 counts against it). AP = (1/2 + 2/4) / 2 = 0.5.
  EXPECT_DOUBLE_EQ(m.a2t_r1, 0.5);
  EXPECT_DOUBLE_EQ(m.a2t_r5, 1.0);
  EXPECT_DOUBLE_EQ(m.a2t_map10, (0.75 + 0.5) / 2.0);
  EXPECT_DOUBLE_EQ(m.map10, 0.5 * (0.75 + 0.625));
}

TEST(Retrieval, RankBeyondTenGivesZeroMap) {
  // 12 clips, caption 0 describes clip 11, which is the least similar.
  std::vector<float> sim(12);
  for (int j = 0; j < 12; ++j) sim[j] = 1.0f - 0.05f * j;
  auto m = ComputeRetrieval(sim, 1, 12, {11});
  EXPECT_DOUBLE_EQ(m.t2a_r10, 0.0);
  EXPECT_DOUBLE_EQ(m.t2a_map10, 0.0);
  m = ComputeRetrieval(sim, 1, 12, {9});  // rank 9: still counted
  EXPECT_DOUBLE_EQ(m.t2a_r10, 1.0);
  EXPECT_DOUBLE_EQ(m.t2a_map10, 0.1);
}

TEST(Retrieval, AllTiesScoreAsBadlyAsPossible) {
  std::vector<float> sim(4 * 4, 0.5f);
  auto m = ComputeRetrieval(sim, 4, 4, {0, 1, 2, 3});
  EXPECT_DOUBLE_EQ(m.t2a_r1, 0.0);
  EXPECT_DOUBLE_EQ(m.a2t_r1, 0.0);
}

TEST(Retrieval, ChanceRecall) {
  EXPECT_DOUBLE_EQ(ChanceRecall(1, 100), 0.01);
  EXPECT_DOUBLE_EQ(ChanceRecall(10, 5), 1.0);
}

void ExpectSameMetrics(const RetrievalMetrics& a, const RetrievalMetrics& b) {
  EXPECT_DOUBLE_EQ(a.t2a_r1, b.t2a_r1);
  EXPECT_DOUBLE_EQ(a.t2a_r5, b.t2a_r5);
  EXPECT_DOUBLE_EQ(a.t2a_r10, b.t2a_r10);
  EXPECT_DOUBLE_EQ(a.a2t_r1, b.a2t_r1);
  EXPECT_DOUBLE_EQ(a.a2t_r5, b.a2t_r5);
  EXPECT_DOUBLE_EQ(a.a2t_r10, b.a2t_r10);
  EXPECT_DOUBLE_EQ(a.t2a_map10, b.t2a_map10);
  EXPECT_DOUBLE_EQ(a.a2t_map10, b.a2t_map10);
  EXPECT_EQ(a.num_clips, b.num_clips);
  EXPECT_EQ(a.num_captions, b.num_captions);
}

// Embeddings with small integer entries: every similarity is exact whatever the blocking, and
// many tie, so the tie rules are exercised.
TEST(RetrievalBlocked, EqualsTheFullMatrixWithManyTiesAndTinyBlocks) {
  torch::manual_seed(11);
  const int64_t clips = 37, dim = 4;
  std::vector<int64_t> caption_clip;
  for (int64_t c = 0; c < clips; ++c) {
    for (int64_t k = 0; k <= c % 5; ++k) caption_clip.push_back(c);  // 1 to 5 captions a clip
  }
  const int64_t captions = static_cast<int64_t>(caption_clip.size());
  at::Tensor audio = at::randint(-1, 2, {clips, dim}).to(at::kFloat);
  at::Tensor text = at::randint(-1, 2, {captions, dim}).to(at::kFloat);
  at::Tensor sim = at::matmul(text, audio.t()).contiguous();
  std::vector<float> full(sim.data_ptr<float>(), sim.data_ptr<float>() + sim.numel());
  const RetrievalMetrics reference = ComputeRetrieval(full, captions, clips, caption_clip);
  for (int64_t block : {int64_t{1}, int64_t{50}, int64_t{333}, int64_t{1} << 24}) {
    SCOPED_TRACE("max_block " + std::to_string(block));
    ExpectSameMetrics(ComputeRetrievalBlocked(text, audio, caption_clip, block), reference);
  }
}

TEST(RetrievalBlocked, AgreesOnRealValuedEmbeddings) {
  torch::manual_seed(12);
  const int64_t clips = 64, dim = 16;
  std::vector<int64_t> caption_clip;
  for (int64_t c = 0; c < clips; ++c) {
    for (int k = 0; k < 3; ++k) caption_clip.push_back(c);
  }
  at::Tensor audio = at::randn({clips, dim});
  at::Tensor text = audio.index_select(0, at::tensor(caption_clip, at::kLong)) +
                    0.8 * at::randn({static_cast<int64_t>(caption_clip.size()), dim});
  at::Tensor sim = at::matmul(text, audio.t()).contiguous();
  std::vector<float> full(sim.data_ptr<float>(), sim.data_ptr<float>() + sim.numel());
  const RetrievalMetrics reference =
      ComputeRetrieval(full, static_cast<int64_t>(caption_clip.size()), clips, caption_clip);
  EXPECT_GT(reference.t2a_r1, 0.1);  // a non-trivial ranking
  ExpectSameMetrics(ComputeRetrievalBlocked(text, audio, caption_clip, 500), reference);
}

TEST(RetrievalBlocked, ClipWithoutCaptionsCountsAsAMiss) {
  at::Tensor audio = at::eye(3);
  at::Tensor text = at::eye(3).narrow(0, 0, 2);
  auto m = ComputeRetrievalBlocked(text, audio, {0, 1});
  EXPECT_EQ(m.num_clips, 3);
  EXPECT_DOUBLE_EQ(m.t2a_r1, 1.0);
  EXPECT_NEAR(m.a2t_r1, 2.0 / 3.0, 1e-12);
}

}  // namespace
}  // namespace flap::core
