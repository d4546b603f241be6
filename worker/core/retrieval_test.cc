#include "worker/core/retrieval.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/utils.h>

#include <array>
#include <utility>

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
  EXPECT_DOUBLE_EQ(ChanceT2aRecall(100, 1), 0.01);
  EXPECT_DOUBLE_EQ(ChanceT2aRecall(5, 10), 1.0);
  EXPECT_DOUBLE_EQ(ChanceT2aRecall(0, 1), 0.0);
  // Audio->text: captions {1, 2, 3} (N = 6): R@1 is the mean of 1/6, 2/6 and 3/6.
  EXPECT_NEAR(ChanceA2tRecall({1, 2, 3}, 1), 1.0 / 3, 1e-12);
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

// ---------------------------------------------------------------------------------------------
// Bootstrap bounds over the queries.

RetrievalRanks T2aRanks(const std::vector<int64_t>& t2a, int64_t clips_ranked_first = 0) {
  RetrievalRanks r;
  r.t2a = t2a;
  // One clip per caption; clip c's caption at rank t2a[c] unless told otherwise.
  for (size_t c = 0; c < t2a.size(); ++c) r.a2t.push_back({static_cast<int64_t>(c) < clips_ranked_first ? 0 : 20});
  return r;
}

void ExpectBoundsHoldThePoint(const RetrievalMetrics& m) {
  const std::vector<std::array<double, 3>> v = {
      {m.t2a_r1_lo, m.t2a_r1, m.t2a_r1_hi}, {m.t2a_r5_lo, m.t2a_r5, m.t2a_r5_hi}, {m.t2a_r10_lo, m.t2a_r10, m.t2a_r10_hi},
      {m.a2t_r1_lo, m.a2t_r1, m.a2t_r1_hi}, {m.a2t_r5_lo, m.a2t_r5, m.a2t_r5_hi}, {m.a2t_r10_lo, m.a2t_r10, m.a2t_r10_hi},
      {m.map10_lo, m.map10, m.map10_hi}};
  for (const auto& [lo, point, hi] : v) {
    EXPECT_LE(0.0, lo);
    EXPECT_LE(lo, point);
    EXPECT_LE(point, hi);
    EXPECT_LE(hi, 1.0);
  }
}

TEST(RetrievalBootstrap, HandCheckedSmallCases) {
  // Two captions, one found first: a resample holds 0, 1 or 2 hits (probabilities 1/4, 1/2,
  // 1/4), so the 2.5% and 97.5% percentiles of R@1 are 0 and 1.
  RetrievalMetrics m = MetricsFromRanks(T2aRanks({0, 30}));
  EXPECT_DOUBLE_EQ(m.t2a_r1, 0.5);
  EXPECT_DOUBLE_EQ(m.t2a_r1_lo, 0.0);
  EXPECT_DOUBLE_EQ(m.t2a_r1_hi, 1.0);
  // Four captions, three found first: resampled R@1 is k/4 with k ~ Binomial(4, 3/4):
  // P(0) = 0.4%, P(1/4) = 4.7%, P(1) = 31.6%: percentiles 0.25 and 1.
  m = MetricsFromRanks(T2aRanks({0, 0, 0, 20}));
  EXPECT_DOUBLE_EQ(m.t2a_r1, 0.75);
  EXPECT_DOUBLE_EQ(m.t2a_r1_lo, 0.25);
  EXPECT_DOUBLE_EQ(m.t2a_r1_hi, 1.0);
  // All hits or all misses: no spread at all.
  m = MetricsFromRanks(T2aRanks({0, 0, 0}, 3));
  EXPECT_DOUBLE_EQ(m.t2a_r1_lo, 1.0);
  EXPECT_DOUBLE_EQ(m.t2a_r1_hi, 1.0);
  EXPECT_DOUBLE_EQ(m.a2t_r1_lo, 1.0);
  EXPECT_DOUBLE_EQ(m.map10_lo, 1.0);
  EXPECT_DOUBLE_EQ(m.map10_hi, 1.0);
  EXPECT_DOUBLE_EQ(m.a2t_r10_lo, 1.0);
  m = MetricsFromRanks(T2aRanks({50, 50}));
  EXPECT_DOUBLE_EQ(m.t2a_r10_lo, 0.0);
  EXPECT_DOUBLE_EQ(m.t2a_r10_hi, 0.0);
  // One query: its own value.
  m = MetricsFromRanks(T2aRanks({3}));
  EXPECT_DOUBLE_EQ(m.t2a_r5_lo, 1.0);
  EXPECT_DOUBLE_EQ(m.t2a_r1_hi, 0.0);
  EXPECT_DOUBLE_EQ(m.map10_lo, m.map10);
  // No queries: the bounds are the (zero) points.
  m = MetricsFromRanks(RetrievalRanks{});
  EXPECT_DOUBLE_EQ(m.t2a_r1_lo, 0.0);
  EXPECT_DOUBLE_EQ(m.t2a_r1_hi, 0.0);
}

// Ranks of a middling model: caption i of clip i % clips at rank (i * 7) % 23.
RetrievalRanks Middling(int64_t captions, int64_t clips) {
  RetrievalRanks r;
  r.a2t.resize(static_cast<size_t>(clips));
  for (int64_t i = 0; i < captions; ++i) {
    const int64_t rank = (i * 7) % 23;
    r.t2a.push_back(rank);
    r.a2t[static_cast<size_t>(i % clips)].push_back((i * 5) % 17);
  }
  for (auto& a : r.a2t) std::sort(a.begin(), a.end());
  return r;
}

TEST(RetrievalBootstrap, BoundsHoldThePointStayInTheUnitIntervalAndAreDeterministic) {
  for (auto [captions, clips] : {std::pair<int64_t, int64_t>{10, 2}, {50, 10}, {230, 46}, {1000, 200}}) {
    SCOPED_TRACE(std::to_string(captions) + " captions");
    const RetrievalMetrics a = MetricsFromRanks(Middling(captions, clips));
    ExpectBoundsHoldThePoint(a);
    EXPECT_LT(a.t2a_r5_lo, a.t2a_r5);  // a real spread
    EXPECT_GT(a.map10_hi, a.map10);
    const RetrievalMetrics b = MetricsFromRanks(Middling(captions, clips));
    EXPECT_EQ(a.t2a_r1_lo, b.t2a_r1_lo);
    EXPECT_EQ(a.t2a_r10_hi, b.t2a_r10_hi);
    EXPECT_EQ(a.a2t_r5_lo, b.a2t_r5_lo);
    EXPECT_EQ(a.map10_lo, b.map10_lo);
    EXPECT_EQ(a.map10_hi, b.map10_hi);
  }
  // Another seed gives other (but close) bounds.
  const RetrievalRanks r = Middling(230, 46);
  RetrievalMetrics a = MetricsFromRanks(r), b = a;
  BootstrapRetrieval(r, kBootstrapResamples, kBootstrapSeed + 1, &b);
  EXPECT_NEAR(a.map10_lo, b.map10_lo, 0.03);
}

TEST(RetrievalBootstrap, NarrowsAsQueriesGrow) {
  // The same rates over 4x and 16x the queries: the width shrinks about 2x and 4x.
  double previous_t2a = 2, previous_a2t = 2, previous_map = 2;
  for (int64_t scale : {1, 4, 16}) {
    const RetrievalMetrics m = MetricsFromRanks(Middling(230 * scale, 46 * scale));
    const double t2a = m.t2a_r5_hi - m.t2a_r5_lo, a2t = m.a2t_r5_hi - m.a2t_r5_lo, map = m.map10_hi - m.map10_lo;
    EXPECT_LT(t2a, 0.7 * previous_t2a) << scale;
    EXPECT_LT(a2t, 0.7 * previous_a2t) << scale;
    EXPECT_LT(map, 0.7 * previous_map) << scale;
    previous_t2a = t2a;
    previous_a2t = a2t;
    previous_map = map;
  }
}

TEST(RetrievalBootstrap, BlockedAndFullComputationsGiveTheSameBoundsAndChance) {
  torch::manual_seed(13);
  const int64_t clips = 40, dim = 8;
  std::vector<int64_t> caption_clip;
  for (int64_t c = 0; c < clips; ++c) {
    for (int k = 0; k < 5; ++k) caption_clip.push_back(c);
  }
  at::Tensor audio = at::randn({clips, dim});
  at::Tensor text = audio.index_select(0, at::tensor(caption_clip, at::kLong)) +
                    at::randn({static_cast<int64_t>(caption_clip.size()), dim});
  at::Tensor sim = at::matmul(text, audio.t()).contiguous();
  std::vector<float> full(sim.data_ptr<float>(), sim.data_ptr<float>() + sim.numel());
  const RetrievalMetrics a =
      ComputeRetrieval(full, static_cast<int64_t>(caption_clip.size()), clips, caption_clip);
  const RetrievalMetrics b = ComputeRetrievalBlocked(text, audio, caption_clip, 300);
  ExpectBoundsHoldThePoint(a);
  EXPECT_EQ(a.t2a_r1_lo, b.t2a_r1_lo);
  EXPECT_EQ(a.a2t_r10_hi, b.a2t_r10_hi);
  EXPECT_EQ(a.map10_lo, b.map10_lo);
  // Chance: 1/40 text->audio; audio->text, 5 true captions of 200: 1 - (195/200) at k = 1.
  EXPECT_DOUBLE_EQ(a.chance_t2a_r1, 1.0 / 40);
  EXPECT_DOUBLE_EQ(a.chance_t2a_r10, 10.0 / 40);
  EXPECT_NEAR(a.chance_a2t_r1, 5.0 / 200, 1e-12);
  double none = 1;
  for (int i = 0; i < 5; ++i) none *= (195.0 - i) / (200.0 - i);
  EXPECT_NEAR(a.chance_a2t_r5, 1 - none, 1e-12);
  EXPECT_DOUBLE_EQ(b.chance_a2t_r5, a.chance_a2t_r5);
}

}  // namespace
}  // namespace flap::core
