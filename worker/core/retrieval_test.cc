#include "worker/core/retrieval.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace flap::core
