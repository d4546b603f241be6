// Trains `tiny` on a small synthetic set and checks that audio-text retrieval on the held-out
// split is far above chance and above the untrained model. Labelled slow (a few minutes on
// 2 cores).
#include <gtest/gtest.h>

#include <iostream>
#include <sstream>

#include "sharding/synth.h"
#include "tests/test_util.h"
#include "worker/evaluator.h"
#include "worker/trainer.h"

namespace flap {
namespace {

TEST(TrainIntegration, TinyLearnsSyntheticRetrievalFarAboveChance) {
  testing::TempDir dir("train_integration");
  sharding::SynthOptions synth;
  synth.num_train = 1024;
  synth.num_eval = 100;
  synth.seed = 7;
  ASSERT_TRUE(sharding::GenerateSynthetic(synth, dir / "data").ok());

  auto config = worker::LoadTrialConfigFile(std::string(FLAP_CONFIG_DIR) + "/tiny.ini");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  config->data.path = dir / "data";
  config->mask.ratio = 0.75;
  config->mask.strategy = core::MaskStrategy::k2d;
  config->loss.recon_weight = 0.5;
  config->optim.lr = 1e-3;
  config->optim.warmup_steps = 20;
  config->train.batch_size = 32;
  config->train.epochs = 10;
  config->train.log_every = 80;

  std::ostringstream log;
  auto untrained = worker::RunEvaluation(*config, "", log);
  ASSERT_TRUE(untrained.ok()) << untrained.status().ToString();
  auto outcome = worker::RunTraining(*config, log);
  ASSERT_TRUE(outcome.ok()) << outcome.status().ToString() << "\n" << log.str();
  std::cout << log.str() << "untrained:\n"
            << worker::FormatMetricsTable(*untrained) << "trained:\n"
            << worker::FormatMetricsTable(outcome->final_metrics);

  const core::RetrievalMetrics& m = outcome->final_metrics;
  ASSERT_EQ(m.num_clips, 100);
  EXPECT_GT(m.num_captions, 100);  // several captions per clip
  const double chance_t2a = core::ChanceRecall(1, m.num_clips);
  // audio->text: a clip's R@1 hits when any of its captions ranks first among all captions.
  const double chance_a2t = static_cast<double>(m.num_captions) / m.num_clips / m.num_captions;
  EXPECT_GE(m.t2a_r1, 5 * chance_t2a);
  EXPECT_GE(m.a2t_r1, 5 * chance_a2t);
  EXPECT_GT(m.t2a_r1, untrained->t2a_r1 + 0.02);
  EXPECT_GT(m.a2t_r1, untrained->a2t_r1 + 0.02);
  EXPECT_GT(m.map10, untrained->map10);
  EXPECT_LT(outcome->summary["final_loss"]["contrastive"].get<double>(), 3.0);
}

}  // namespace
}  // namespace flap
