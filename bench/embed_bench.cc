// Embedding throughput of `flap-worker embed` (audio files: decode, resample, features, model)
// against the evaluation path (the split's shards: Dataset::Load without caches, then
// EmbedClips), on the same clips with the same model, in the same run; the two are measured in
// turn, `--rounds` times each, and the best round of each is kept.
//
//   build/bench/embed_bench [--clips 400] [--seconds 2.56] [--preset tiny] [--rounds 3]
//
// Data: synthetic clips written to a temporary folder (split "val"), and the same clips
// extracted from its shards as FLAC files. The model is the preset's, untrained (throughput
// does not depend on the weights).
#include <ATen/Parallel.h>
#include <torch/utils.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <unistd.h>

#include "config/trial_config.h"
#include "sharding/manifest.h"
#include "sharding/synth.h"
#include "worker/dataset.h"
#include "worker/evaluator.h"
#include "worker/inference.h"
#include "worker/trainer.h"

namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

void Check(const flap::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "embed_bench: %s: %s\n", what, s.ToString().c_str());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int clips = 400, rounds = 3;
  double seconds = 2.56;
  std::string preset = "tiny";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--clips") {
      clips = std::atoi(argv[i + 1]);
    } else if (a == "--seconds") {
      seconds = std::atof(argv[i + 1]);
    } else if (a == "--preset") {
      preset = argv[i + 1];
    } else if (a == "--rounds") {
      rounds = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "usage: embed_bench [--clips N] [--seconds S] [--preset tiny|base] [--rounds R]\n");
      return 2;
    }
  }
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const std::string root = std::filesystem::temp_directory_path() / ("embed_bench_" + std::to_string(::getpid()));
  std::filesystem::create_directories(root + "/files");
  flap::sharding::SynthOptions synth = flap::sharding::SmallSynth(8, clips, seconds, 64);
  Check(flap::sharding::GenerateSynthetic(synth, root + "/data"), "synthetic data");
  auto manifest = flap::sharding::ReadManifest(root + "/data");
  Check(manifest.status(), "manifest");
  for (const auto& info : manifest->ShardsOf("val")) {
    const std::string cmd = "tar -xf '" + root + "/data/" + info.name + "' -C '" + root + "/files' --wildcards '*.flac'";
    if (std::system(cmd.c_str()) != 0) Check(flap::Status::IOError("tar failed: " + cmd), "extract");
  }
  auto files = flap::worker::ListAudioFiles(root + "/files");
  Check(files.status(), "files");

  flap::TrialConfig config;
  auto preset_model = flap::core::ModelConfig::Preset(preset);
  Check(preset_model.status(), "preset");
  config.model = *preset_model;
  config.data.path = root + "/data";
  config.data.fbank_cache = "off";
  config.data.loader_threads = cores;
  config.data.max_frames = config.model.target_frames;
  flap::worker::SetThreads(0);
  auto tokenizer = flap::sharding::TextTokenizer::LoadSentencePiece(root + "/data/tokenizer.model");
  Check(tokenizer.status(), "tokenizer");
  auto model = flap::worker::LoadModel(&config, *tokenizer, "");
  Check(model.status(), "model");
  flap::worker::InferenceModel inference{config, *model, *tokenizer, manifest->sample_rate, "untrained " + preset};
  inference.model->eval();
  flap::worker::EmbedOptions options;
  options.batch_size = config.train.eval_batch_size;
  options.crop = flap::worker::EvalCrop::kFirst;
  options.feature_threads = cores;
  flap::worker::FeatureOptions fo = flap::worker::DataOptions(config);
  fo.memory_budget_bytes = 0;

  double best_eval = 1e30, best_embed = 1e30;
  for (int r = 0; r < rounds; ++r) {
    auto t0 = Clock::now();
    auto set = flap::worker::Dataset::Load(config.data.path, "val", fo);
    Check(set.status(), "evaluation set");
    const at::Tensor a =
        flap::worker::EmbedClips(inference.model, *set, options.batch_size, options.precision, options.crop);
    best_eval = std::min(best_eval, Since(t0));
    t0 = Clock::now();
    auto b = flap::worker::EmbedAudioFiles(inference, *files, options);
    Check(b.status(), "embed");
    best_embed = std::min(best_embed, Since(t0));
    if (r == 0) {
      std::printf("max |embed - evaluation| over %lld clips: %.3g\n", static_cast<long long>(a.size(0)),
                  (a - *b).abs().max().item<double>());
    }
  }
  const double n = static_cast<double>(files->size());
  std::printf("preset %s, %zu clips of %.2f s, %d cores, best of %d rounds\n", preset.c_str(), files->size(), seconds,
              cores, rounds);
  std::printf("  evaluation path (shards -> features -> model): %8.1f clips/s\n", n / best_eval);
  std::printf("  flap-worker embed (files -> features -> model): %7.1f clips/s  (%.2fx the evaluation path)\n",
              n / best_embed, best_eval / best_embed);
  std::filesystem::remove_all(root);
  return 0;
}
