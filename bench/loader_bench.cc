// Streaming-loader benchmark: loader throughput (clips/s, one feature thread, with and without
// the fbank cache) against what the training step consumes (samples/s), for the tiny and base
// presets, and the time a real training loop waits for data, all measured in this run.
//
//   build/bench/loader_bench [--presets tiny,base] [--threads 1] [--tiny-steps 30] [--base-steps 4]
//
// Data: synthetic clips written to a temporary folder first (2.56 s clips for tiny, 10.24 s
// for base, so that each fills the preset's T frames), shards of 64 clips.
#include <ATen/Parallel.h>
#include <torch/utils.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <unistd.h>

#include "sharding/manifest.h"
#include "sharding/synth.h"
#include "config/trial_config.h"
#include "worker/core/train_step.h"
#include "worker/loader.h"

namespace {

using Clock = std::chrono::steady_clock;
using flap::worker::LoaderOptions;
using flap::worker::StreamingLoader;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

void Check(const flap::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "loader_bench: %s: %s\n", what, s.ToString().c_str());
    std::exit(1);
  }
}

struct Setup {
  std::string data;
  flap::TrialConfig config;
  flap::sharding::Manifest manifest;
  std::unique_ptr<flap::sharding::TextTokenizer> tokenizer;
};

std::unique_ptr<StreamingLoader> StartLoader(const Setup& s, int threads, const std::string& cache) {
  auto src = flap::worker::FixedShardSource::Create(s.manifest.ShardsOf("train"), 0, 1, s.config.train.batch_size,
                                                    s.config.train.seed);
  Check(src.status(), "shard source");
  LoaderOptions lo;
  lo.dataset_dir = s.data;
  lo.threads = threads;
  lo.shuffle_shards = 4;
  lo.prefetch_batches = 4;
  lo.features.target_frames = s.config.model.target_frames;
  lo.features.num_mel_bins = s.config.model.num_mel_bins;
  lo.features.cache_dir = cache;
  auto l = StreamingLoader::Start(lo, s.config, *s.tokenizer, std::move(*src));
  Check(l.status(), "loader");
  return std::move(*l);
}

// Clips per second drained from a fresh loader over one epoch (start-up included).
double LoaderRate(const Setup& s, int threads, const std::string& cache) {
  auto l = StartLoader(s, threads, cache);
  const int64_t n = l->steps_per_epoch();
  const auto t = Clock::now();
  for (int64_t i = 0; i < n; ++i) Check(l->Next().status(), "next batch");
  return static_cast<double>(n * s.config.train.batch_size) / Since(t);
}

void RunPreset(const std::string& preset, int threads, int steps, const std::string& root) {
  Setup s;
  s.data = root + "/" + preset;
  const bool base = preset == "base";
  const int64_t batch = base ? 4 : 32;
  flap::sharding::SynthOptions so;
  so.num_train = base ? 128 : 768;
  so.num_val = 1;
  so.num_test = 0;
  so.clip_seconds = base ? 10.24 : 2.56;
  so.samples_per_shard = base ? 16 : 64;
  auto t0 = Clock::now();
  Check(flap::sharding::GenerateSynthetic(so, s.data), "synthetic data");
  std::printf("\n== %s: %d clips of %.2f s in shards of %d (written in %.1f s), batch %lld, mask 0.75 2d\n",
              preset.c_str(), so.num_train, so.clip_seconds, so.samples_per_shard, Since(t0),
              static_cast<long long>(batch));
  bool help = false;
  std::string help_text;
  Check(flap::ParseTrialConfig({"--model.preset", preset, "--train.batch_size", std::to_string(batch), "--mask.ratio",
                                "0.75", "--mask.strategy", "2d"},
                               &s.config, &help, &help_text),
        "config");
  auto m = flap::sharding::ReadManifest(s.data);
  Check(m.status(), "manifest");
  s.manifest = *m;
  auto tok = flap::sharding::TextTokenizer::LoadSentencePiece(s.data + "/tokenizer.model");
  Check(tok.status(), "tokenizer");
  s.tokenizer = std::make_unique<flap::sharding::TextTokenizer>(*tok);
  s.config.model.vocab_size = s.tokenizer->vocab_size();

  // Loader alone.
  const std::string cache = s.data + "-cache";
  const double cold = LoaderRate(s, threads, "");
  (void)LoaderRate(s, threads, cache);  // fills the cache
  const double warm = LoaderRate(s, threads, cache);

  // Training alone, on one real batch.
  torch::manual_seed(0);
  flap::core::FlapModel model(s.config.model, s.config.loss.logit_scale_init);
  flap::core::OptimConfig optim = s.config.optim;
  optim.total_steps = 1000;
  flap::core::TrainStep step(model, s.config.loss, optim);
  flap::core::Batch one;
  {
    auto l = StartLoader(s, threads, cache);
    auto b = l->Next();
    Check(b.status(), "first batch");
    one = b->batch;
  }
  Check(step.Run(one, 0).status(), "warm-up step");
  t0 = Clock::now();
  for (int i = 0; i < steps; ++i) Check(step.Run(one, i + 1).status(), "step");
  const double train_alone = static_cast<double>(steps * batch) / Since(t0);

  // Training fed by the loader: without the cache every clip is decoded and featurised
  // while training runs (the loader's thread competes for the cores); with it, read.
  struct Fed {
    double rate = 0, wait = 0, loop = 0, first = 0;
  };
  auto fed = [&](const std::string& cache_dir) {
    Fed f;
    auto l = StartLoader(s, threads, cache_dir);
    const auto first = Clock::now();
    Check(l->Next().status(), "first batch");
    f.first = Since(first);
    const double wait_before = l->stats().wait_seconds;
    const auto start = Clock::now();
    for (int i = 0; i < steps; ++i) {
      auto b = l->Next();
      Check(b.status(), "batch");
      Check(step.Run(b->batch, i + 1).status(), "step");
    }
    f.loop = Since(start);
    f.wait = l->stats().wait_seconds - wait_before;
    f.rate = static_cast<double>(steps * batch) / f.loop;
    return f;
  };
  const Fed plain = fed(""), cached = fed(cache);

  std::printf("loader, %d thread%s, no cache     %9.1f clips/s   %6.1fx training\n", threads, threads > 1 ? "s" : "",
              cold, cold / train_alone);
  std::printf("loader, %d thread%s, fbank cache  %9.1f clips/s   %6.1fx training\n", threads, threads > 1 ? "s" : "",
              warm, warm / train_alone);
  std::printf("training step alone             %9.2f samples/s (%d steps)\n", train_alone, steps);
  for (const auto& [name, f] : {std::pair<const char*, Fed>{"no cache", plain}, {"fbank cache", cached}}) {
    std::printf(
        "training fed by the loader, %-11s %7.2f samples/s (%.2fx alone); data wait %.2f%% of step time "
        "(%.3f s of %.1f s); first batch %.2f s\n",
        name, f.rate, f.rate / train_alone, 100.0 * f.wait / f.loop, f.wait, f.loop, f.first);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string presets = "tiny,base";
  int threads = 1, tiny_steps = 30, base_steps = 4;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--presets"))
      presets = argv[i + 1];
    else if (!std::strcmp(argv[i], "--threads"))
      threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--tiny-steps"))
      tiny_steps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--base-steps"))
      base_steps = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr,
                   "usage: loader_bench [--presets tiny,base] [--threads 1] [--tiny-steps 30] [--base-steps 4]\n");
      return 2;
    }
  }
  at::set_num_threads(1);  // the trainer's CPU default (config/trial_config.h, train.threads)
  const std::string root =
      std::filesystem::temp_directory_path().string() + "/flap_loader_bench_" + std::to_string(getpid());
  std::printf("loader_bench: %u cores, training with 1 intra-op thread, loader with %d feature thread%s\n",
              std::thread::hardware_concurrency(), threads, threads > 1 ? "s" : "");
  size_t pos = 0;
  while (pos <= presets.size()) {
    const size_t comma = presets.find(',', pos);
    const std::string p = presets.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (!p.empty()) RunPreset(p, threads, p == "base" ? base_steps : tiny_steps, root);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  std::filesystem::remove_all(root);
  return 0;
}
