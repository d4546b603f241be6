// After training (export.h, inference.h): an export loads back bit for bit and the warm start
// reads it; embeddings of audio files equal the evaluator's of the same clips; the embeddings
// files round-trip (and NumPy reads them); search, zero-shot scoring and the labels file; and
// every bad input named, with its exit status and nothing left behind.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sharding/audio.h"
#include "sharding/manifest.h"
#include "sharding/synth.h"
#include "tests/test_util.h"
#include "worker/dataset.h"
#include "worker/evaluator.h"
#include "worker/export.h"
#include "worker/inference.h"
#include "worker/npy.h"
#include "worker/trainer.h"
#include "worker/testing/trainer_test_util.h"
#include "worker/warm_start.h"

namespace flap::worker {
namespace {

namespace fs = std::filesystem;

bool SameTensor(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes().equals(b.sizes()) && torch::equal(a.to(at::kCPU), b.to(at::kCPU));
}

// One trained run shared by the tests: a small model trained a few steps on a small synthetic
// set, its train.output_dir (model.pt, summary.json) and a checkpoint root.
class AfterTraining : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new flap::testing::TempDir("after_training");
    ASSERT_TRUE(sharding::GenerateSynthetic(sharding::SmallSynth(32, 8, 0.5, 8), Data()).ok());
    TrialConfig c = Config();
    std::ostringstream log;
    auto outcome = RunTraining(c, log);
    ASSERT_TRUE(outcome.ok()) << outcome.status().ToString() << log.str();
    // The val split's audio as files, as the shards hold them.
    fs::create_directories(Path("audio"));
    for (const auto& info : sharding::ReadManifest(Data())->ShardsOf("val")) {
      auto r = flap::testing::RunCommand("tar -xf '" + Data() + "/" + info.name + "' -C '" + Path("audio") +
                                         "' --wildcards '*.flac'");
      ASSERT_EQ(r.exit_code, 0) << r.output;
    }
  }
  static void TearDownTestSuite() { delete dir_; }

  static std::string Path(const std::string& name) { return (*dir_) / name; }
  static std::string Data() { return Path("data"); }
  static TrialConfig Config() {
    TrialConfig c = SmallTrialConfig(Data());
    c.train.max_steps = 6;
    c.optim.lr = 3e-3;
    c.train.output_dir = Path("run");
    c.ckpt.root = Path("ckpt");
    c.eval.crop = "chunks";
    c.data.max_frames = 80;  // clips of 0.5 s: 50 frames, windows of 32
    return c;
  }
  static std::string ModelPt() { return Path("run") + "/model.pt"; }

  // An export of the run into a fresh folder `name`.
  static std::string Export(const std::string& name) {
    ExportOptions o;
    o.model_path = ModelPt();
    o.config = Config();
    std::ostringstream log;
    auto card = ExportModel(o, Path(name), log);
    EXPECT_TRUE(card.ok()) << card.status().ToString();
    return Path(name);
  }

  static flap::testing::TempDir* dir_;
};
flap::testing::TempDir* AfterTraining::dir_ = nullptr;

TEST_F(AfterTraining, AnExportLoadsBackBitForBitAndTheWarmStartReadsIt) {
  TrialConfig config = Config();
  auto original = LoadModel(&config, *sharding::TextTokenizer::LoadSentencePiece(Data() + "/tokenizer.model"), ModelPt());
  ASSERT_OK(original);
  const std::string dir = Export("export-roundtrip");
  for (const char* f : {"model.safetensors", "config.json", "tokenizer.model", "card.json"}) {
    EXPECT_TRUE(fs::exists(dir + "/" + f)) << f;
  }
  // The export needs nothing of the run: the run and its dataset are read from copies moved away.
  auto loaded = LoadInferenceModel(dir, TrialConfig(), c10::Device(c10::DeviceType::CPU));
  ASSERT_OK(loaded);
  auto val = Dataset::Load(Data(), "val", DataOptions(config));
  ASSERT_OK(val);
  const at::Tensor a = EmbedClips(*original, *val, 4, core::Precision::kFp32, EvalCrop::kChunks);
  const at::Tensor b = EmbedClips(loaded->model, *val, 4, core::Precision::kFp32, EvalCrop::kChunks);
  EXPECT_TRUE(SameTensor(a, b));
  std::vector<const std::vector<int>*> captions;
  for (int64_t i = 0; i < val->size(); ++i) captions.push_back(&val->clip(i).captions[0]);
  EXPECT_TRUE(SameTensor(EmbedTexts(*original, captions, 4), EmbedTexts(loaded->model, captions, 4)));
  for (const auto& [name, t] : ModelTensors(*original)) {
    EXPECT_TRUE(SameTensor(t, ModelTensors(loaded->model).at(name))) << name;
  }

  // model.init_audio / model.init_text read the export: a model of another seed gets the
  // encoders exactly (the other tower and the heads are passed over).
  TrialConfig other = config;
  other.train.seed = 99;
  other.model.vocab_size = loaded->tokenizer.vocab_size();
  torch::manual_seed(99);
  core::FlapModel fresh(other.model);
  std::ostringstream log;
  ASSERT_OK(WarmStart(fresh, dir + "/model.safetensors", dir + "/model.safetensors", log));
  const auto want = ModelTensors(*original), got = ModelTensors(fresh);
  int64_t same = 0;
  for (const auto& [name, t] : want) {
    const bool encoder = name.rfind("patch_embed.", 0) == 0 || name.rfind("audio_blocks.", 0) == 0 ||
                         name.rfind("audio_norm.", 0) == 0 || name.rfind("token_embed.", 0) == 0 ||
                         name == "text_pos" || name.rfind("text_blocks.", 0) == 0 || name.rfind("text_norm.", 0) == 0;
    if (encoder) {
      EXPECT_TRUE(SameTensor(t, got.at(name))) << name;
      ++same;
    } else if (name.find("proj") != std::string::npos && name.find(".weight") != std::string::npos) {
      EXPECT_FALSE(SameTensor(t, got.at(name))) << name << ": not an encoder tensor, yet loaded";
    }
  }
  EXPECT_GT(same, 10);

  // The card: where the model came from.
  auto card = nlohmann::json::parse(flap::testing::ReadFile(dir + "/card.json"));
  auto summary = nlohmann::json::parse(flap::testing::ReadFile(Path("run") + "/summary.json"));
  EXPECT_EQ(card["training"]["step"], 6);
  EXPECT_EQ(card["training"]["samples"], summary["samples_seen"]);
  EXPECT_EQ(card["training"]["flops"], summary["budget"]["flops"]);
  EXPECT_EQ(card["data"]["clips"]["train"], 32);
  EXPECT_EQ(card["data"]["manifest_xxh64"], *sharding::FileXxh64(Data() + "/manifest.json"));
  EXPECT_EQ(card["tokenizer"]["xxh64"], *sharding::FileXxh64(Data() + "/tokenizer.model"));
  EXPECT_EQ(card["model"]["seed"], config.train.seed);
  EXPECT_EQ(card["model"]["config_hash"], summary["config_hash"]);
  EXPECT_EQ(card["evaluation"]["validation"]["t2a_r1"], summary["eval"]["t2a_r1"]);
  EXPECT_EQ(card["evaluation"]["test"]["t2a_r1"], summary["test"]["t2a_r1"]);
  EXPECT_NE(std::string(card["code_version"]), "");
}

TEST_F(AfterTraining, AnExportOfACheckpointVerifiesItAndRecordsItsStep) {
  std::string step;
  for (const auto& trial : fs::directory_iterator(Path("ckpt"))) {
    if (trial.path().filename() != "index") step = trial.path().string() + "/000000000006";
  }
  ASSERT_TRUE(fs::exists(step + "/model.pt")) << step;
  ExportOptions o;
  o.model_path = step + "/model.pt";
  o.config = Config();
  o.card_extra = {{"cell", "mask.ratio=0"}, {"trial", "t1"}};
  std::ostringstream log;
  auto card = ExportModel(o, Path("export-ckpt"), log);
  ASSERT_OK(card);
  EXPECT_EQ((*card)["model"]["source_kind"], "checkpoint");
  EXPECT_EQ((*card)["training"]["step"], 6);
  EXPECT_TRUE((*card)["evaluation"]["validation"].contains("map10")) << (*card)["evaluation"].dump();
  EXPECT_EQ((*card)["sweep"]["cell"], "mask.ratio=0");

  // The checkpoint records its config: with none given, export takes it from there.
  auto recorded = RunConfigOf(o.model_path, {});
  ASSERT_OK(recorded);
  EXPECT_EQ(recorded->model.audio_width, Config().model.audio_width);
  EXPECT_EQ(recorded->data.max_frames, Config().data.max_frames);
  // A model key other than the run's that no tensor shape shows (the attention heads): refused,
  // naming it; --force exports anyway. Keys that do not build the model (the seed) may differ.
  o.config.model.audio_heads = 4;
  o.config.train.seed = 5;
  auto refused = ExportModel(o, Path("export-other"), log);
  ASSERT_EQ(refused.status().code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("model.audio_heads = 2 in the run, 4 given"), std::string::npos)
      << refused.status().message();
  EXPECT_FALSE(fs::exists(Path("export-other")));
  o.force = true;
  EXPECT_OK(ExportModel(o, Path("export-forced"), log));

  // A damaged model.pt: its checksum no longer matches the checkpoint's; nothing written.
  const std::string copy = Path("damaged-step");
  fs::copy(step, copy);
  std::string bytes = flap::testing::ReadFile(copy + "/model.pt");
  bytes[bytes.size() / 2] ^= 0x20;
  ASSERT_TRUE(flap::testing::WriteFile(copy + "/model.pt", bytes));
  o.model_path = copy + "/model.pt";
  o.force = false;
  o.config = Config();
  auto damaged = ExportModel(o, Path("export-damaged"), log);
  ASSERT_EQ(damaged.status().code(), Status::Code::kCorruption) << damaged.status().ToString();
  EXPECT_NE(damaged.status().message().find("damaged"), std::string::npos);
  EXPECT_FALSE(fs::exists(Path("export-damaged")));

  // An existing folder is never overwritten.
  auto again = ExportModel(ExportOptions{ModelPt(), Config(), nullptr, false}, Path("export-ckpt"), log);
  EXPECT_EQ(again.status().code(), Status::Code::kAlreadyExists);
  // Nor is a symbolic link followed or replaced, dangling or to an empty folder.
  fs::create_directories(Path("empty-target"));
  fs::create_directory_symlink(Path("empty-target"), Path("link-to-empty"));
  fs::create_directory_symlink(Path("nowhere"), Path("dangling-link"));
  for (const char* link : {"link-to-empty", "dangling-link"}) {
    auto linked = ExportModel(ExportOptions{ModelPt(), Config(), nullptr, false}, Path(link), log);
    EXPECT_EQ(linked.status().code(), Status::Code::kInvalidArgument) << link << ": " << linked.status().ToString();
    EXPECT_TRUE(fs::is_symlink(fs::symlink_status(Path(link)))) << link;
  }
  EXPECT_TRUE(fs::is_empty(Path("empty-target")));
}

TEST_F(AfterTraining, EmbeddingsOfAudioFilesEqualTheEvaluatorsOfTheSameClips) {
  const std::string dir = Export("export-embed");
  auto model = LoadInferenceModel(dir, TrialConfig(), c10::Device(c10::DeviceType::CPU));
  ASSERT_OK(model);
  auto files = ListAudioFiles(Path("audio"));
  ASSERT_OK(files);
  ASSERT_EQ(files->size(), 8u);
  // The same batches as the evaluator's below (4 clips each, in the same order): the same bits.
  EmbedOptions options;
  options.batch_size = 4;
  auto from_files = EmbedAudioFiles(*model, *files, options);
  ASSERT_OK(from_files);
  TrialConfig config = Config();
  auto val = Dataset::Load(Data(), "val", DataOptions(config));
  ASSERT_OK(val);
  const at::Tensor from_split = EmbedClips(model->model, *val, 4, core::Precision::kFp32, EvalCrop::kChunks);
  ASSERT_EQ(from_split.size(0), 8);
  for (int64_t i = 0; i < val->size(); ++i) {
    const std::string key = val->clip(i).key + ".flac";
    int64_t row = -1;
    for (size_t j = 0; j < files->size(); ++j) row = (*files)[j].key == key ? static_cast<int64_t>(j) : row;
    ASSERT_GE(row, 0) << key;
    EXPECT_TRUE(SameTensor((*from_files)[row], from_split[i])) << key;
  }

  // A list file names the same files (relative to the list's folder).
  std::string list = "# val clips\n\n";
  for (const auto& f : *files) list += "audio/" + f.key + "\n";
  ASSERT_TRUE(flap::testing::WriteFile(Path("clips.txt"), list));
  auto listed = ListAudioFiles(Path("clips.txt"));
  ASSERT_OK(listed);
  ASSERT_EQ(listed->size(), files->size());
  EXPECT_EQ((*listed)[0].key, "audio/" + (*files)[0].key);
  auto via_list = EmbedAudioFiles(*model, *listed, options);
  ASSERT_OK(via_list);
  EXPECT_TRUE(SameTensor(*via_list, *from_files));
  // Decoded in chunks of 3 files and embedded 3 at a time: the same values up to the rounding
  // of other matrix shapes.
  options.batch_size = 3;
  options.chunk = 3;
  auto chunked = EmbedAudioFiles(*model, *files, options);
  ASSERT_OK(chunked);
  EXPECT_TRUE(torch::allclose(*chunked, *from_files, 0, 1e-5));

  // The files of embed: written, read back exactly; NumPy reads the .npy.
  std::vector<std::string> keys;
  for (const auto& f : *files) keys.push_back(f.key);
  keys[1] = "with, a comma \"quoted\"";
  for (const char* format : {"npy", "safetensors"}) {
    const std::string prefix = Path(std::string("emb-") + format + "/val");
    ASSERT_OK(WriteEmbeddings(prefix, format, keys, *from_files));
    auto back = ReadEmbeddings(prefix + "." + format);
    ASSERT_OK(back);
    EXPECT_EQ(back->keys, keys);
    EXPECT_TRUE(SameTensor(back->embeddings, *from_files)) << format;
  }
  if (fs::exists("/usr/bin/python3") &&
      flap::testing::RunCommand("/usr/bin/python3 -c 'import numpy'").exit_code == 0) {
    auto r = flap::testing::RunCommand(
        "/usr/bin/python3 -c \"import numpy as np; a = np.load('" + Path("emb-npy/val.npy") +
        "'); print(a.dtype, a.shape, '%.9g' % a[3, 5])\"");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    char want[64];
    std::snprintf(want, sizeof(want), "float32 (8, 16) %.9g", (*from_files)[3][5].item<float>());
    EXPECT_EQ(r.output.substr(0, r.output.find('\n')), want);
  } else {
    std::cout << "NumPy check not run: /usr/bin/python3 with numpy (python3-numpy) is not installed\n";
  }
}

// Search through the commands: an index of the held-out clips but one, plus a near-duplicate
// of it (the same samples but every 97th one step of 16-bit audio higher, as WAV); the left-out
// clip as the query finds it first.
TEST_F(AfterTraining, SearchRanksAPlantedNearDuplicateFirst) {
  const std::string dir = Export("export-search");
  auto files = ListAudioFiles(Path("audio"));
  ASSERT_OK(files);
  fs::create_directories(Path("index-audio"));
  for (size_t i = 1; i < files->size(); ++i) fs::copy_file((*files)[i].path, Path("index-audio/" + (*files)[i].key));
  auto wave = sharding::DecodeAudioFile((*files)[0].path);
  ASSERT_OK(wave);
  for (size_t i = 0; i < wave->size(); i += 97) (*wave)[i] += 1.0f / 32768;
  ASSERT_TRUE(flap::testing::WriteFile(Path("index-audio/planted.wav"),
                                       *sharding::EncodeAudio(*wave, sharding::kSampleRate, sharding::AudioFormat::kWav)));
  auto run = [](const std::vector<std::string>& args, std::string* out) {
    std::ostringstream o, e;
    const int rc = RunInferenceCommand(args[0], std::vector<std::string>(args.begin() + 1, args.end()), o, e);
    *out = o.str() + e.str();
    return rc;
  };
  std::string out;
  ASSERT_EQ(run({"embed", "--model", dir, "--audio", Path("index-audio"), "--out", Path("index/clips")}, &out), 0) << out;
  ASSERT_EQ(run({"search", "--model", dir, "--index", Path("index/clips.npy"), "--audio", (*files)[0].path, "--top-k",
                 "3"},
                &out),
            0)
      << out;
  const auto result = nlohmann::json::parse(out.substr(0, out.rfind('}') + 1));
  ASSERT_EQ(result["hits"].size(), 3u) << out;
  EXPECT_EQ(result["hits"][0]["key"], "planted.wav") << out;
  EXPECT_GT(result["hits"][0]["score"].get<double>(), result["hits"][1]["score"].get<double>()) << out;
  EXPECT_EQ(result["rows"], files->size());
  // A text query against the same index, and an index of another width, refused.
  ASSERT_EQ(run({"search", "--model", dir, "--index", Path("index/clips.npy"), "--text", "a low hum"}, &out), 0) << out;
  const float wide[4] = {1, 0, 0, 0};
  ASSERT_TRUE(flap::testing::WriteFile(Path("wide.npy"), EncodeNpy(wide, 1, 4)));
  ASSERT_TRUE(flap::testing::WriteFile(Path("wide.csv"), "key,row\nx,0\n"));
  EXPECT_EQ(run({"search", "--model", dir, "--index", Path("wide.npy"), "--text", "a low hum"}, &out), 2);
  EXPECT_NE(out.find("another model's index"), std::string::npos) << out;
}

TEST(Search, RanksRowsByCosineBestFirst) {
  EmbeddingIndex index;
  index.keys = {"a", "b", "c", "d"};
  index.embeddings = torch::tensor({{1.0f, 0.0f}, {0.0f, 1.0f}, {0.8f, 0.6f}, {2.0f, 0.0f}});
  const auto hits = SearchIndex(index, torch::tensor({1.0f, 0.1f}), 3);
  ASSERT_EQ(hits.size(), 3u);
  EXPECT_EQ(hits[0].key, "a");  // a and d tie (same direction): the lower row first
  EXPECT_EQ(hits[1].key, "d");
  EXPECT_EQ(hits[2].key, "c");
  EXPECT_NEAR(hits[0].score, 1.0 / std::sqrt(1.01), 1e-6);
  EXPECT_EQ(SearchIndex(index, torch::tensor({0.0f, 1.0f}), 10).size(), 4u);
}

TEST(ZeroShotScore, TopKMapAndConfusionByHand) {
  LabelSet labels;
  labels.classes = {"bark", "meow", "rain"};
  labels.clips = {{{"0", "0"}, {0}}, {{"1", "1"}, {1}}, {{"2", "2"}, {2}}, {{"3", "3"}, {0}}};
  // Clip 0: bark first (right). Clip 1: rain first, meow second. Clip 2: rain first (right).
  // Clip 3: meow first, bark last.
  const at::Tensor scores = torch::tensor({{0.9f, 0.1f, 0.2f}, {0.1f, 0.5f, 0.7f}, {0.0f, 0.3f, 0.8f}, {0.1f, 0.9f, 0.5f}});
  const ZeroShotResult r = ScoreZeroShot(scores, labels);
  EXPECT_EQ(r.clips, 4);
  EXPECT_DOUBLE_EQ(r.top1, 0.5);
  EXPECT_DOUBLE_EQ(r.top5, 1.0);  // 3 classes: everything is in the top 5
  EXPECT_DOUBLE_EQ(r.chance_top1, 1.0 / 3);
  EXPECT_DOUBLE_EQ(r.chance_top5, 1.0);
  // AP: bark ranks clips 0 (0.9), 1/3 (0.1 tie: stable order 1 then 3), 2 -> positives 0 and 3
  // at ranks 1 and 3: (1 + 2/3) / 2. meow: 3 (0.9), 1 (0.5) -> positive 1 at rank 2: 1/2.
  // rain: 2 (0.8), 1 (0.7) -> positive 2 at rank 1: 1.
  EXPECT_NEAR(r.classes[0].average_precision, (1 + 2.0 / 3) / 2, 1e-12);
  EXPECT_NEAR(r.classes[1].average_precision, 0.5, 1e-12);
  EXPECT_NEAR(r.classes[2].average_precision, 1.0, 1e-12);
  EXPECT_NEAR(r.map, ((1 + 2.0 / 3) / 2 + 0.5 + 1.0) / 3, 1e-12);
  EXPECT_NEAR(r.chance_map, (2.0 / 4 + 1.0 / 4 + 1.0 / 4) / 3, 1e-12);
  EXPECT_EQ(r.classes[0].clips, 2);
  EXPECT_DOUBLE_EQ(r.classes[0].top1, 0.5);
  const std::vector<std::vector<int64_t>> confusion = {{1, 1, 0}, {0, 0, 1}, {0, 0, 1}};
  EXPECT_EQ(r.confusion, confusion);
  auto prompt = PromptText("the sound of {}", "dog_bark");
  ASSERT_OK(prompt);
  EXPECT_EQ(*prompt, "the sound of dog bark");
  EXPECT_EQ(PromptText("no slot", "x").status().code(), Status::Code::kInvalidArgument);
}

TEST(ZeroShotLabels, ReadsEsc50AndMultiLabelLayoutsAndNamesBadLines) {
  flap::testing::TempDir dir("labels");
  for (const char* f : {"a.wav", "b.wav", "c.wav"}) ASSERT_TRUE(flap::testing::WriteFile(dir / f, "x"));
  ASSERT_TRUE(flap::testing::WriteFile(dir / "esc50.csv",
                                       "filename,fold,target,category,esc10\na.wav,1,0,dog,True\nb.wav,1,5,cat,False\n"
                                       "c.wav,2,0,dog,True\n"));
  auto esc = ReadLabelSet(dir / "esc50.csv", dir.path());
  ASSERT_OK(esc);
  EXPECT_EQ(esc->classes, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_FALSE(esc->multi_label);
  EXPECT_EQ(esc->clips[1].labels, std::vector<int>{0});
  ASSERT_TRUE(flap::testing::WriteFile(dir / "multi.csv", "file,labels\na.wav,\"dog; bark\"\nb.wav,cat\n"));
  auto multi = ReadLabelSet(dir / "multi.csv", dir.path());
  ASSERT_OK(multi);
  EXPECT_TRUE(multi->multi_label);
  EXPECT_EQ(multi->clips[0].labels.size(), 2u);

  struct Bad {
    std::string text, says;
    Status::Code code;
  };
  const std::vector<Bad> bad = {
      {"", "is empty", Status::Code::kInvalidArgument},
      {"filename,category\n", "holds no labelled clip", Status::Code::kInvalidArgument},
      {"name,category\na.wav,dog\n", "needs a file column", Status::Code::kInvalidArgument},
      {"filename,category\na.wav,dog\nmissing.wav,cat\n", ":3: ", Status::Code::kNotFound},
      {"filename,category\na.wav,dog\na.wav,cat\n", "listed twice", Status::Code::kInvalidArgument},
      {"filename,category\na.wav,\n", "empty label", Status::Code::kInvalidArgument},
      {"filename,category\na.wav,dog\nb.wav,dog\n", "two at least", Status::Code::kInvalidArgument},
  };
  for (const Bad& b : bad) {
    ASSERT_TRUE(flap::testing::WriteFile(dir / "bad.csv", b.text));
    auto r = ReadLabelSet(dir / "bad.csv", dir.path());
    ASSERT_FALSE(r.ok()) << b.text;
    EXPECT_EQ(r.status().code(), b.code) << r.status().ToString();
    EXPECT_NE(r.status().message().find(b.says), std::string::npos) << r.status().message();
  }
}

TEST(Npy, RefusesWhatItCannotRead) {
  const float v[6] = {1, 2, 3, 4, 5, 6};
  const std::string good = EncodeNpy(v, 2, 3);
  EXPECT_EQ(good.size() % 64, 24u);  // a 64-byte aligned header, then 24 bytes of data
  auto m = ParseNpy(good, "x.npy");
  ASSERT_OK(m);
  EXPECT_EQ(m->rows, 2);
  EXPECT_EQ(m->values[5], 6.0f);
  EXPECT_EQ(ParseNpy("not npy", "x.npy").status().code(), Status::Code::kCorruption);
  EXPECT_EQ(ParseNpy(good.substr(0, good.size() - 4), "x.npy").status().code(), Status::Code::kCorruption);
  std::string f8 = good;
  f8.replace(f8.find("<f4"), 3, "<f8");
  EXPECT_EQ(ParseNpy(f8, "x.npy").status().code(), Status::Code::kInvalidArgument);
  std::string fortran = good;
  fortran.replace(fortran.find("False"), 5, "True ");
  EXPECT_EQ(ParseNpy(fortran, "x.npy").status().code(), Status::Code::kInvalidArgument);
}

// The commands, as a user runs them: a bad input is named, exits non-zero and leaves nothing.
TEST_F(AfterTraining, BadInputsAreNamedWithTheirExitStatusAndLeaveNothing) {
  const std::string dir = Export("export-bad");
  auto run = [](std::vector<std::string> args, std::string* err) {
    const std::string command = args[0];
    args.erase(args.begin());
    std::ostringstream out, e;
    const int rc = RunInferenceCommand(command, args, out, e);
    *err = e.str();
    return rc;
  };
  std::string err;
  fs::create_directories(Path("bad-audio"));
  // Undecodable audio.
  ASSERT_TRUE(flap::testing::WriteFile(Path("bad-audio/broken.wav"), "RIFF....WAVEfmt garbage"));
  EXPECT_EQ(run({"embed", "--model", dir, "--audio", Path("bad-audio"), "--out", Path("out-broken/e")}, &err), 1);
  EXPECT_NE(err.find("broken.wav"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(Path("out-broken")));
  // Silent audio.
  fs::remove(Path("bad-audio/broken.wav"));
  ASSERT_TRUE(flap::testing::WriteFile(
      Path("bad-audio/silence.wav"), *sharding::EncodeAudio(std::vector<float>(8000, 0.0f), 16000, sharding::AudioFormat::kWav)));
  EXPECT_EQ(run({"embed", "--model", dir, "--audio", Path("bad-audio"), "--out", Path("out-silent/e")}, &err), 2);
  EXPECT_NE(err.find("silence.wav"), std::string::npos) << err;
  EXPECT_NE(err.find("silent"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(Path("out-silent")));
  // A model of another architecture: config.json says 2 audio blocks, the weights hold 1.
  const std::string other = Path("export-other-arch");
  fs::copy(dir, other);
  std::string cfg = flap::testing::ReadFile(other + "/config.json");
  const std::string depth = "\"model.audio_depth\": \"1\"";
  ASSERT_NE(cfg.find(depth), std::string::npos) << cfg;
  cfg.replace(cfg.find(depth), depth.size(), "\"model.audio_depth\": \"2\"");
  ASSERT_TRUE(flap::testing::WriteFile(other + "/config.json", cfg));
  EXPECT_EQ(run({"embed", "--model", other, "--text", "a dog", "--out", Path("out-arch/e")}, &err), 2);
  EXPECT_NE(err.find("another architecture"), std::string::npos) << err;
  EXPECT_NE(err.find("audio_blocks.1."), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(Path("out-arch")));
  // A tokenizer mismatch: another dataset's tokenizer in the export.
  ASSERT_TRUE(sharding::GenerateSynthetic(sharding::SmallSynth(16, 4, 0.5, 8, 128), Path("data2")).ok());
  const std::string swapped = Path("export-swapped-tok");
  fs::copy(dir, swapped);
  fs::copy_file(Path("data2/tokenizer.model"), swapped + "/tokenizer.model", fs::copy_options::overwrite_existing);
  EXPECT_EQ(run({"embed", "--model", swapped, "--text", "a dog", "--out", Path("out-tok/e")}, &err), 1);
  EXPECT_NE(err.find("tokenizer mismatch"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(Path("out-tok")));
  // An empty labels file.
  ASSERT_TRUE(flap::testing::WriteFile(Path("empty.csv"), ""));
  EXPECT_EQ(run({"zeroshot", "--model", dir, "--labels", Path("empty.csv"), "--audio", Path("audio"), "--out",
                 Path("out-zs")},
                &err),
            2);
  EXPECT_NE(err.find("empty.csv"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(Path("out-zs")));
  // A caption without tokens, an index of another model, a model.pt without its dataset.
  EXPECT_EQ(run({"embed", "--model", dir, "--text", "", "--out", Path("out-empty/e")}, &err), 2);
  EXPECT_NE(err.find("no tokens"), std::string::npos) << err;
  EXPECT_EQ(run({"embed", "--model", ModelPt(), "--config", "/nonexistent.ini", "--text", "a", "--out",
                 Path("out-cfg/e")},
                &err),
            1);
  EXPECT_NE(err.find("/nonexistent.ini"), std::string::npos) << err;

  // And the good path through the commands: zero-shot writes its folder.
  const std::string labels = Path("val-labels.csv");
  std::string csv = "filename,category\n";
  int i = 0;
  for (const auto& e : fs::directory_iterator(Path("audio"))) csv += e.path().filename().string() + (i++ % 2 ? ",low\n" : ",high\n");
  ASSERT_TRUE(flap::testing::WriteFile(labels, csv));
  ASSERT_EQ(run({"zeroshot", "--model", dir, "--labels", labels, "--audio", Path("audio"), "--out", Path("zs")}, &err), 0)
      << err;
  for (const char* f : {"summary.json", "classes.csv", "confusion.csv", "confusion.png"}) {
    EXPECT_TRUE(fs::exists(Path("zs") + "/" + f)) << f;
  }
  EXPECT_EQ(flap::testing::ReadFile(Path("zs/confusion.png")).substr(1, 3), "PNG");
}

}  // namespace
}  // namespace flap::worker
