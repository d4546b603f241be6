// The roberta text tower and its byte-level BPE tokenizer: the tower's forward against an
// independent PyTorch implementation of RoBERTa (tests/roberta_reference.py), its shape read
// from a file, what a warm start refuses, the tokenizer's identity in checkpoints and exports,
// and a short training run from a tiny RoBERTa warm start that learns retrieval.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "sharding/manifest.h"
#include "sharding/shard_reader.h"
#include "sharding/synth.h"
#include "tests/test_util.h"
#include "worker/batcher.h"
#include "worker/evaluator.h"
#include "worker/export.h"
#include "worker/safetensors.h"
#include "worker/trainer.h"
#include "worker/testing/trainer_test_util.h"
#include "worker/warm_start.h"

namespace flap::worker {
namespace {

const std::string kTests = std::string(FLAP_SOURCE_DIR) + "/tests";

// "" when /usr/bin/python3 imports `module`; otherwise why not (for GTEST_SKIP).
std::string PythonMissing(const std::string& module) {
  if (::access("/usr/bin/python3", X_OK) != 0) return "/usr/bin/python3 is missing";
  const auto probe = testing::RunCommand("/usr/bin/python3 -c 'import " + module + "' 2>&1");
  if (probe.exit_code != 0) return "/usr/bin/python3 cannot import " + module + ": " + probe.output;
  return "";
}

// A roberta tower config of `vocab` ids (RoBERTa's pad 1 and </s> 2), captions of `max_len`.
core::ModelConfig RobertaConfig(int vocab, int max_len) {
  core::ModelConfig c = core::ModelConfig::Small(32, 32, 32, 1, 2, vocab);
  c.text_tower = "roberta";
  c.text_pad_id = 1;
  c.text_end_id = 2;
  c.text_max_len = max_len;
  return c;
}

core::RobertaTextImpl& Tower(core::FlapModel& model) {
  return *model->named_children()["roberta"]->as<core::RobertaText>();
}

TEST(RobertaTower, ForwardEqualsAnIndependentImplementation) {
  if (const std::string why = PythonMissing("torch"); !why.empty()) GTEST_SKIP() << why;
  testing::TempDir dir("roberta_reference");
  const auto run =
      testing::RunCommand("/usr/bin/python3 " + kTests + "/roberta_reference.py --out " + dir.path() + " 2>&1");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const auto ref = nlohmann::json::parse(testing::ReadFile(dir / "reference.json"));
  const std::string file = dir / "roberta.safetensors";

  // The shape comes from the file; the heads from the config.
  core::ModelConfig c = RobertaConfig(ref["shape"]["vocab"].get<int>(), 12);
  c.text_heads = ref["shape"]["heads"].get<int>();
  ASSERT_OK_AND_ASSIGN(core::ModelConfig resolved, ResolveTextTower(c, file, /*heads_given=*/true));
  EXPECT_EQ(resolved.text_width, 32);
  EXPECT_EQ(resolved.text_depth, 2);
  EXPECT_EQ(resolved.text_heads, 4);
  EXPECT_EQ(resolved.text_intermediate, 64);
  EXPECT_EQ(resolved.text_positions, 40);
  // Without model.text_heads, a width that is no multiple of RoBERTa's 64-channel heads is refused.
  auto no_heads = ResolveTextTower(c, file, /*heads_given=*/false);
  ASSERT_FALSE(no_heads.ok());
  EXPECT_NE(no_heads.status().message().find("model.text_heads"), std::string::npos) << no_heads.status().ToString();

  torch::manual_seed(3);
  core::FlapModel model(resolved);
  ASSERT_OK_AND_ASSIGN(WarmStartResult loaded, LoadEncoderFile(model, Encoder::kText, file));
  EXPECT_EQ(loaded.loaded, 5 + 2 * 16);
  // Hugging Face's pooler and masked-LM head are passed over by name.
  std::vector<std::string> ignored = loaded.ignored;
  std::sort(ignored.begin(), ignored.end());
  EXPECT_EQ(ignored, (std::vector<std::string>{"lm_head.bias", "lm_head.dense.bias", "lm_head.dense.weight",
                                               "lm_head.layer_norm.bias", "lm_head.layer_norm.weight",
                                               "roberta.pooler.dense.bias", "roberta.pooler.dense.weight"}));

  std::vector<int64_t> flat;
  const auto& rows = ref["tokens"];
  for (const auto& row : rows) {
    for (const auto& id : row) flat.push_back(id.get<int64_t>());
  }
  const int64_t b = static_cast<int64_t>(rows.size()), l = static_cast<int64_t>(rows[0].size());
  const at::Tensor tokens = at::tensor(flat, at::kLong).view({b, l});
  std::vector<double> want_flat;
  for (const auto& row : ref["hidden"]) {
    for (const auto& pos : row) {
      for (const auto& v : pos) want_flat.push_back(v.get<double>());
    }
  }
  const at::Tensor want = at::tensor(want_flat, at::kDouble).view({b, l, 32});
  model->eval();
  at::NoGradGuard no_grad;
  const at::Tensor got = Tower(model).forward(tokens).to(at::kDouble);
  // Every position of every row, pad positions included, then the pooled <s> states.
  EXPECT_LT((got - want).abs().max().item<double>(), 1e-5);
  EXPECT_LT((got.select(1, 0) - want.select(1, 0)).abs().max().item<double>(), 1e-5);
  EXPECT_GT(want.select(1, 0).abs().max().item<double>(), 0.1);  // not a trivial comparison

  // The model's text embedding is FLAP's projection of that <s> state.
  const at::Tensor e = model->EncodeText(tokens);
  EXPECT_EQ(e.sizes(), (std::vector<int64_t>{b, resolved.embed_dim}));
}

TEST(RobertaTower, PositionsCountFromThePaddingIdOn) {
  core::ModelConfig c = RobertaConfig(16, 6);
  core::FlapModel model(c);
  const at::Tensor tokens = at::tensor({0, 7, 8, 2, 1, 1, 0, 2, 1, 1, 1, 1}, at::kLong).view({2, 6});
  const at::Tensor want = at::tensor({2, 3, 4, 5, 1, 1, 2, 3, 1, 1, 1, 1}, at::kLong).view({2, 6});
  EXPECT_TRUE(Tower(model).PositionIds(tokens).equal(want));
}

TEST(RobertaTower, PadTokensPadsWithThePadIdAndKeepsTheEndToken) {
  const std::vector<int> a = {0, 5, 6, 7, 8, 2}, b = {0, 9, 2};
  const at::Tensor t = PadTokens({&a, &b}, 4, /*pad_id=*/1, /*end_id=*/2);
  const at::Tensor want = at::tensor({0, 5, 6, 2, 0, 9, 2, 1}, at::kLong).view({2, 4});
  EXPECT_TRUE(t.equal(want)) << t;
}

TEST(RobertaTower, WarmStartRefusesAFileOfTheOtherTower) {
  testing::TempDir dir("roberta_refuse");
  core::FlapModel roberta(RobertaConfig(40, 8));
  ASSERT_OK(WriteSafetensors(dir / "roberta.safetensors", ModelTensors(roberta)));
  core::ModelConfig flap_config = RobertaConfig(40, 8);
  flap_config.text_tower = "flap";
  core::FlapModel flap(flap_config);
  ASSERT_OK(WriteSafetensors(dir / "flap.safetensors", ModelTensors(flap)));

  auto into_flap = LoadEncoderFile(flap, Encoder::kText, dir / "roberta.safetensors");
  ASSERT_FALSE(into_flap.ok());
  EXPECT_NE(into_flap.status().message().find("needs model.text_tower = roberta"), std::string::npos)
      << into_flap.status().ToString();
  auto into_roberta = LoadEncoderFile(roberta, Encoder::kText, dir / "flap.safetensors");
  ASSERT_FALSE(into_roberta.ok());
  EXPECT_NE(into_roberta.status().message().find("holds no RoBERTa tensors"), std::string::npos)
      << into_roberta.status().ToString();

  // A vocabulary other than the tokenizer's is named with both sizes.
  core::ModelConfig other = RobertaConfig(41, 8);
  auto resolved = ResolveTextTower(other, dir / "roberta.safetensors", true);
  ASSERT_FALSE(resolved.ok());
  EXPECT_NE(resolved.status().message().find("40-token vocabulary and this run's tokenizer 41 ids"), std::string::npos)
      << resolved.status().ToString();
  // Without a RoBERTa file there is nothing to read the shape from.
  auto from_flap = ResolveTextTower(RobertaConfig(40, 8), dir / "flap.safetensors", true);
  ASSERT_FALSE(from_flap.ok());
  EXPECT_NE(from_flap.status().message().find("not a RoBERTa checkpoint"), std::string::npos);
}

// A synthetic set, a BPE tokenizer trained on its captions (tests/bpe_reference.py) and a tiny
// random RoBERTa over that vocabulary (tests/roberta_reference.py), made once for the tests below.
class RobertaTraining : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    why_skipped_ = new std::string(PythonMissing("torch"));
    if (why_skipped_->empty()) *why_skipped_ = PythonMissing("regex");
    if (!why_skipped_->empty()) return;
    dir_ = new testing::TempDir("roberta_training");
    sharding::SynthOptions synth;
    synth.num_train = 512;
    synth.num_val = 64;
    synth.num_test = 8;
    synth.clip_seconds = 0.7;
    synth.samples_per_shard = 64;
    synth.seed = 11;
    ASSERT_OK(sharding::GenerateSynthetic(synth, Data()));
    // The training captions, one per line: the corpus the merges are learnt from.
    std::ofstream corpus(*dir_ / "captions.txt");
    ASSERT_OK_AND_ASSIGN(sharding::Manifest manifest, sharding::ReadManifest(Data()));
    for (const auto& info : manifest.ShardsOf("train")) {
      ASSERT_OK_AND_ASSIGN(auto samples, sharding::ReadShard(Data() + "/" + info.name));
      for (const auto& s : samples) {
        for (const auto& c : s.captions) corpus << c << "\n";
      }
    }
    corpus.close();
    auto bpe = testing::RunCommand("/usr/bin/python3 " + kTests + "/bpe_reference.py --corpus " +
                                   *dir_ / "captions.txt --merges 300 --out " + Bpe() + " 2>&1");
    ASSERT_EQ(bpe.exit_code, 0) << bpe.output;
    ASSERT_OK_AND_ASSIGN(sharding::TextTokenizer tok, sharding::TextTokenizer::LoadBpe(Bpe()));
    auto roberta = testing::RunCommand("/usr/bin/python3 " + kTests + "/roberta_reference.py --out " +
                                       *dir_ / "roberta --vocab " + std::to_string(tok.vocab_size()) + " 2>&1");
    ASSERT_EQ(roberta.exit_code, 0) << roberta.output;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!why_skipped_->empty()) GTEST_SKIP() << *why_skipped_;
  }
  static std::string Data() { return *dir_ / "data"; }
  static std::string Bpe() { return *dir_ / "bpe"; }
  static std::string RobertaFile() { return *dir_ / "roberta/roberta.safetensors"; }

  // The roberta tower warm-started from the tiny RoBERTa, on the BPE.
  static TrialConfig Config() {
    TrialConfig c = SmallTrialConfig(Data());
    c.model.text_tower = "roberta";
    c.model.text_heads = 4;
    c.text_heads_set = true;
    c.model.text_max_len = 16;
    c.model.init_text = RobertaFile();
    c.text.tokenizer = Bpe();
    c.model.num_mel_bins = 64;
    c.model.target_frames = 64;
    c.model.audio_width = 64;
    c.model.audio_depth = 2;
    c.model.audio_heads = 4;
    c.model.embed_dim = 32;
    c.train.batch_size = 32;
    c.train.epochs = 30;
    c.train.log_every = 80;
    c.train.eval_batch_size = 64;
    c.optim.lr = 1e-3;
    c.optim.warmup_steps = 20;
    return c;
  }

  static testing::TempDir* dir_;
  static std::string* why_skipped_;
};
testing::TempDir* RobertaTraining::dir_ = nullptr;
std::string* RobertaTraining::why_skipped_ = nullptr;

TEST_F(RobertaTraining, LearnsRetrievalAndRecordsItsTokenizer) {
  TrialConfig config = Config();
  config.ckpt.root = *dir_ / "ckpt";
  config.train.trial_id = "roberta";
  std::ostringstream log;
  auto untrained = RunEvaluation(config, "", log);
  ASSERT_OK(untrained) << log.str();
  auto outcome = RunTraining(config, log);
  ASSERT_OK(outcome) << outcome.status().ToString() << "\n" << log.str();
  std::cout << log.str() << FormatMetricsTable(outcome->final_metrics);
  EXPECT_NE(log.str().find("warm start: text encoder loaded from '" + RobertaFile() + "' (37 tensors; ignored 7"),
            std::string::npos);

  const core::RetrievalMetrics& m = outcome->final_metrics;
  ASSERT_EQ(m.num_clips, 64);
  const double chance = core::ChanceT2aRecall(m.num_clips, 1);
  EXPECT_GE(m.t2a_r1, 5 * chance) << "chance " << chance;
  EXPECT_GT(m.t2a_r1, untrained->t2a_r1 + 0.05);

  // The run records the tower's shape from the file and its tokenizer's identity.
  ASSERT_OK_AND_ASSIGN(sharding::TextTokenizer bpe, sharding::TextTokenizer::LoadBpe(Bpe()));
  EXPECT_EQ(outcome->summary["tokenizer"]["identity"], bpe.identity());
  EXPECT_EQ(outcome->summary["tokenizer"]["kind"], "bpe");
  EXPECT_EQ(outcome->summary["config"]["model.text_width"], "32");
  EXPECT_EQ(outcome->summary["config"]["model.text_intermediate"], "64");
  std::string checkpoint;
  for (const auto& e : std::filesystem::recursive_directory_iterator(*dir_ / "ckpt/roberta")) {
    if (e.path().filename() == "state.json") checkpoint = e.path().parent_path().string();
  }
  ASSERT_FALSE(checkpoint.empty());
  const auto state = nlohmann::json::parse(testing::ReadFile(checkpoint + "/state.json"));
  EXPECT_EQ(state["tokenizer"]["identity"], bpe.identity());
  EXPECT_EQ(state["tokenizer"]["vocab_size"], bpe.vocab_size());

  // The export copies vocab.json and merges.txt and records the identity; it loads and embeds
  // what the checkpoint embeds.
  ExportOptions eo;
  eo.model_path = checkpoint + "/model.pt";
  ASSERT_OK_AND_ASSIGN(eo.config, RunConfigOf(eo.model_path, {"--data.path", Data()}));
  std::ostringstream export_log;
  ASSERT_OK(ExportModel(eo, *dir_ / "export", export_log).status());
  EXPECT_EQ(testing::ReadFile(*dir_ / "export/vocab.json"), testing::ReadFile(Bpe() + "/vocab.json"));
  EXPECT_EQ(testing::ReadFile(*dir_ / "export/merges.txt"), testing::ReadFile(Bpe() + "/merges.txt"));
  const auto cfg = nlohmann::json::parse(testing::ReadFile(*dir_ / "export/config.json"));
  EXPECT_EQ(cfg["tokenizer"]["kind"], "bpe");
  EXPECT_EQ(cfg["tokenizer"]["identity"], bpe.identity());
  EXPECT_EQ(cfg["config"]["model.text_tower"], "roberta");
  ASSERT_OK_AND_ASSIGN(SafetensorsIndex index, ReadSafetensorsIndex(*dir_ / "export/model.safetensors"));
  EXPECT_EQ(index.metadata[kTokenizerIdentityKey], bpe.identity());
  ASSERT_OK_AND_ASSIGN(InferenceModel exported,
                       LoadInferenceModel(*dir_ / "export", TrialConfig(), c10::Device("cpu")));
  ASSERT_OK_AND_ASSIGN(InferenceModel original, LoadInferenceModel(eo.model_path, eo.config, c10::Device("cpu")));
  EXPECT_EQ(exported.tokenizer.identity(), bpe.identity());
  ASSERT_OK_AND_ASSIGN(auto ids, exported.tokenizer.Encode("a rising chirp"));
  ASSERT_OK_AND_ASSIGN(auto same, bpe.Encode("a rising chirp"));
  EXPECT_EQ(ids, same);
  {
    const at::Tensor t = PadTokens({&ids}, 16, 1, 2);
    at::NoGradGuard no_grad;
    EXPECT_LT((exported.model->EncodeText(t) - original.model->EncodeText(t)).abs().max().item<double>(), 1e-6);
  }

  // A text warm start from that export under another tokenizer (the dataset's SentencePiece)
  // is refused, naming both identities.
  TrialConfig spm = SmallTrialConfig(Data());
  spm.model.init_text = *dir_ / "export/model.safetensors";
  std::ostringstream spm_log;
  auto refused = RunTraining(spm, spm_log);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Status::Code::kInvalidArgument);
  ASSERT_OK_AND_ASSIGN(sharding::Manifest manifest, sharding::ReadManifest(Data()));
  ASSERT_OK_AND_ASSIGN(auto dataset_tok, sharding::TextTokenizer::ForDataset(Data(), manifest, ""));
  EXPECT_NE(refused.status().message().find("tokenizer bpe " + bpe.identity()), std::string::npos)
      << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("sentencepiece " + dataset_tok.identity()), std::string::npos)
      << refused.status().ToString();
  // Under the same BPE it warm-starts (a run of one step).
  TrialConfig again = Config();
  again.model.init_text = *dir_ / "export/model.safetensors";
  again.train.max_steps = 1;
  std::ostringstream again_log;
  ASSERT_OK(RunTraining(again, again_log).status()) << again_log.str();
}

}  // namespace
}  // namespace flap::worker
