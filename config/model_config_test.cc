#include "config/model_config.h"
#include "common/testing/testing.h"

#include <gtest/gtest.h>

namespace flap::core {
namespace {

TEST(ModelConfig, PresetsMatchTheDesign) {
  auto tiny = ModelConfig::Preset("tiny");
  ASSERT_OK(tiny);
  EXPECT_EQ(tiny->audio_width, 192);
  EXPECT_EQ(tiny->audio_depth, 4);
  EXPECT_EQ(tiny->audio_heads, 3);
  EXPECT_EQ(tiny->text_width, 192);
  EXPECT_EQ(tiny->text_depth, 2);
  EXPECT_EQ(tiny->embed_dim, 128);
  EXPECT_EQ(tiny->decoder_width, 128);
  EXPECT_EQ(tiny->decoder_depth, 1);
  EXPECT_EQ(tiny->target_frames, 256);
  EXPECT_OK(tiny->Validate());
  auto base = ModelConfig::Preset("base");
  ASSERT_OK(base);
  EXPECT_EQ(base->audio_width, 768);
  EXPECT_EQ(base->audio_depth, 12);
  EXPECT_EQ(base->text_depth, 12);
  EXPECT_EQ(base->embed_dim, 512);
  EXPECT_EQ(base->decoder_width, 512);
  EXPECT_EQ(base->decoder_depth, 8);
  EXPECT_EQ(base->target_frames, 1024);
  EXPECT_EQ(base->num_patches(), 512);
  EXPECT_OK(base->Validate());
}

TEST(ModelConfig, UnknownPresetIsRefusedByName) {
  auto p = ModelConfig::Preset("huge");
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("huge"), std::string::npos);
}

TEST(ModelConfig, InconsistentShapesAreRefusedNamingTheField) {
  ModelConfig c;
  c.audio_heads = 5;  // 192 is not a multiple of 5
  auto s = c.Validate();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("model.audio_width"), std::string::npos);
  c = ModelConfig();
  c.target_frames = 250;
  s = c.Validate();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("model.target_frames"), std::string::npos);
}

TEST(MaskConfig, RatioMustLieInHalfOpenUnitInterval) {
  MaskConfig m;
  for (double ok : {0.0, 0.5, 0.95}) {
    m.ratio = ok;
    EXPECT_OK(m.Validate()) << ok;
  }
  for (double bad : {-0.1, 1.0, 1.5}) {
    m.ratio = bad;
    auto s = m.Validate();
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_NE(s.message().find("mask.ratio"), std::string::npos);
  }
}

TEST(MaskConfig, StrategyNamesParse) {
  EXPECT_EQ(*ParseMaskStrategy("1d"), MaskStrategy::k1d);
  EXPECT_EQ(*ParseMaskStrategy("2d"), MaskStrategy::k2d);
  auto bad = ParseMaskStrategy("3d");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("mask.strategy"), std::string::npos);
}

TEST(Schedule, WarmupThenCosine) {
  OptimConfig c;
  c.lr = 1.0;
  c.min_lr = 0.0;
  c.warmup_steps = 10;
  c.total_steps = 110;
  EXPECT_DOUBLE_EQ(LearningRate(c, 0), 0.1);
  EXPECT_DOUBLE_EQ(LearningRate(c, 9), 1.0);
  EXPECT_DOUBLE_EQ(LearningRate(c, 10), 1.0);
  EXPECT_NEAR(LearningRate(c, 60), 0.5, 1e-12);
  EXPECT_NEAR(LearningRate(c, 110), 0.0, 1e-12);
  EXPECT_NEAR(LearningRate(c, 500), 0.0, 1e-12);  // stays at the floor past the end
}

TEST(Schedule, FittedToABudgetItFollowsTheFractionSpent) {
  OptimConfig c;
  c.lr = 1.0;
  c.min_lr = 0.1;
  c.warmup_steps = 10;
  // The warm-up counts steps, whatever the budget.
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(c, 0, 0.0, 0.2), 0.1);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(c, 9, 0.19, 0.2), 1.0);
  // The warm-up ended at progress 0.2: the cosine spans 0.2 to 1.
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(c, 10, 0.2, 0.2), 1.0);
  EXPECT_NEAR(ScheduledLearningRate(c, 40, 0.6, 0.2), 0.55, 1e-12);
  // The floor exactly when the budget is spent, and after.
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(c, 80, 1.0, 0.2), 0.1);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(c, 90, 1.3, 0.2), 0.1);
  // With the progress of a step budget it is LearningRate's schedule.
  c.total_steps = 110;
  for (int64_t step : {10, 35, 60, 109, 110}) {
    EXPECT_NEAR(ScheduledLearningRate(c, step, step / 110.0, 10 / 110.0), LearningRate(c, step), 1e-12) << step;
  }
}

}  // namespace
}  // namespace flap::core
