// Trains `tiny` on a small synthetic set and checks that audio-text retrieval on the held-out
// split is far above chance and above the untrained model, in fp32 and then in bf16; with the
// fp32 model, zero-shot tagging and classification are far above chance. Labelled slow (a few minutes on
// 2 cores).
#include <gtest/gtest.h>
#include <torch/serialize.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "sharding/manifest.h"
#include "sharding/synth.h"
#include "tests/test_util.h"
#include "worker/evaluator.h"
#include "worker/export.h"
#include "worker/inference.h"
#include "worker/tagger.h"
#include "worker/trainer.h"

namespace flap {
namespace {

TEST(TrainIntegration, TinyLearnsSyntheticRetrievalFarAboveChance) {
  testing::TempDir dir("train_integration");
  sharding::SynthOptions synth;
  synth.num_train = 1024;
  synth.num_val = 100;
  synth.num_test = 100;
  synth.seed = 7;
  ASSERT_OK(sharding::GenerateSynthetic(synth, dir / "data"));

  auto config = LoadTrialConfigFile(std::string(FLAP_CONFIG_DIR) + "/tiny.ini");
  ASSERT_OK(config);
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
  ASSERT_OK(untrained);
  auto outcome = worker::RunTraining(*config, log);
  ASSERT_OK(outcome) << outcome.status().ToString() << "\n" << log.str();
  std::cout << log.str() << "untrained:\n"
            << worker::FormatMetricsTable(*untrained) << "trained:\n"
            << worker::FormatMetricsTable(outcome->final_metrics);

  const core::RetrievalMetrics& m = outcome->final_metrics;
  ASSERT_EQ(m.num_clips, 100);
  EXPECT_GT(m.num_captions, 100);  // several captions per clip
  const double chance_t2a = core::ChanceT2aRecall(m.num_clips, 1);
  // audio->text: a clip's R@1 hits when any of its captions ranks first among all captions.
  const double chance_a2t = static_cast<double>(m.num_captions) / m.num_clips / m.num_captions;
  EXPECT_GE(m.t2a_r1, 5 * chance_t2a);
  EXPECT_GE(m.a2t_r1, 5 * chance_a2t);
  EXPECT_GT(m.t2a_r1, untrained->t2a_r1 + 0.02);
  EXPECT_GT(m.a2t_r1, untrained->a2t_r1 + 0.02);
  EXPECT_GT(m.map10, untrained->map10);
  EXPECT_LT(outcome->summary["final_loss"]["contrastive"].get<double>(), 3.0);

  // Zero-shot tagging with the trained model: the generator's 11 event kinds as labels,
  // scored against the tags the generator recorded for each held-out clip.
  config->train.output_dir = dir / "out";
  const std::string model_path = dir / "model.pt";
  torch::save(outcome->model, model_path);
  testing::WriteFile(dir / "labels.txt",
                     "tone_low: a low hum\ntone_mid: a steady beep\ntone_high: a high-pitched whistle\n"
                     "chirp_up: a rising chirp\nchirp_down: a falling chirp\nnoise_white: white noise\n"
                     "noise_pink: pink noise\nnoise_brown: a deep rumble\nclicks: a series of clicks\n"
                     "tremolo: a warbling tone\nchord: a musical chord\n");
  worker::TagOptions tag_options;
  tag_options.threshold = -1.0;  // rank every label; top 3 kept
  std::ostringstream tag_log;
  auto tagged =
      worker::RunTagging(*config, model_path, "val", dir / "labels.txt", tag_options, dir / "tags.jsonl", tag_log);
  ASSERT_OK(tagged);
  std::cout << tag_log.str();
  const auto& a = (*tagged)["agreement"];
  ASSERT_EQ(a["clips_with_tags"].get<int64_t>(), 100);
  EXPECT_GE(a["top1_precision"].get<double>(), 2.0 * a["chance_top1"].get<double>());
  EXPECT_GE(a["topk_recall"].get<double>(), 1.5 * a["chance_topk_recall"].get<double>());

  // After training: the model exported and its zero-shot classification of the held-out clips
  // (as audio files, labelled with the generator's events), through the command a user runs.
  {
    worker::ExportOptions eo;
    eo.model_path = model_path;
    eo.config = *config;
    std::ostringstream export_log;
    ASSERT_OK(worker::ExportModel(eo, dir / "export", export_log));
    std::filesystem::create_directories(dir / "val-audio");
    for (const auto& info : sharding::ReadManifest(dir / "data")->ShardsOf("val")) {
      auto r = testing::RunCommand("tar -xf '" + dir / "data" + "/" + info.name + "' -C '" + dir / "val-audio" + "'");
      ASSERT_EQ(r.exit_code, 0) << r.output;
    }
    const std::map<std::string, std::string> event_text = {
        {"tone_low", "a low hum"},          {"tone_mid", "a steady beep"},      {"tone_high", "a high-pitched whistle"},
        {"chirp_up", "a rising chirp"},     {"chirp_down", "a falling chirp"},  {"noise_white", "white noise"},
        {"noise_pink", "pink noise"},       {"noise_brown", "a deep rumble"},   {"clicks", "a series of clicks"},
        {"tremolo", "a warbling tone"},     {"chord", "a musical chord"}};
    std::string csv = "filename,labels\n";
    std::vector<std::string> clips;
    for (const auto& e : std::filesystem::directory_iterator(dir / "val-audio")) {
      if (e.path().extension() != ".json") continue;
      const auto meta = nlohmann::json::parse(testing::ReadFile(e.path().string()));
      std::string labels;
      for (const auto& t : meta["tags"]) labels += (labels.empty() ? "" : ";") + event_text.at(t.get<std::string>());
      csv += e.path().stem().string() + ".flac,\"" + labels + "\"\n";
      clips.push_back(e.path().stem().string());
    }
    ASSERT_EQ(clips.size(), 100u);
    ASSERT_TRUE(testing::WriteFile(dir / "val-labels.csv", csv));
    auto command = [](const std::vector<std::string>& args, std::string* out) {
      std::ostringstream o, e;
      const int rc = worker::RunInferenceCommand(args[0], std::vector<std::string>(args.begin() + 1, args.end()), o, e);
      std::cout << e.str();
      *out = o.str();
      return rc;
    };
    std::string out;
    ASSERT_EQ(command({"zeroshot", "--model", dir / "export", "--labels", dir / "val-labels.csv", "--audio",
                       dir / "val-audio", "--prompt", "{}", "--out", dir / "zeroshot"},
                      &out),
              0);
    const auto zs = nlohmann::json::parse(out);
    EXPECT_TRUE(zs["multi_label"].get<bool>());
    EXPECT_GE(zs["top1"].get<double>(), 2.0 * zs["chance_top1"].get<double>()) << out;
    EXPECT_GE(zs["map"].get<double>(), 1.5 * zs["chance_map"].get<double>()) << out;
  }

  // The same run in bf16 (autocast forward, fp32 losses and optimizer): it learns as well, its
  // retrieval within the tolerance docs/gpu.md states of fp32's at the same steps (there: 2.4
  // points of mAP@10 below fp32 for this seed, 1.9 above for another).
  config->train.precision = "bf16";
  config->train.output_dir.clear();
  std::ostringstream bf16_log;
  auto bf16 = worker::RunTraining(*config, bf16_log);
  ASSERT_OK(bf16) << bf16.status().ToString() << "\n" << bf16_log.str();
  std::cout << "bf16:\n" << worker::FormatMetricsTable(bf16->final_metrics);
  EXPECT_EQ(bf16->summary["device"]["precision"], "bf16");
  const core::RetrievalMetrics& h = bf16->final_metrics;
  // R@1 over 248 captions moves by about 2.7 points between runs that learn equally well (its
  // 95% bootstrap interval over the queries is that wide): above chance beyond that spread, and
  // mAP@10 and R@10 as fp32's.
  EXPECT_GE(h.t2a_r1_lo, 2 * chance_t2a) << "t2a R@1 " << h.t2a_r1 << " [" << h.t2a_r1_lo << ", " << h.t2a_r1_hi << "]";
  EXPECT_GT(h.map10, untrained->map10 + 0.05);
  EXPECT_NEAR(h.map10, m.map10, 0.06);
  EXPECT_NEAR(h.t2a_r10, m.t2a_r10, 0.15);
}

}  // namespace
}  // namespace flap
