// Training-step benchmark for the tiny preset: samples/s and the forward / backward /
// optimizer split at mask ratios 0, 0.5 and 0.75 for both strategies, the audio encoder's
// forward+backward alone (how much token dropping saves), achieved GFLOP/s against a large
// matrix product measured in the same run, and the same step in plain PyTorch
// (bench/train_step_bench.py, run in the same run) as ratios.
//
//   build/bench/train_step_bench [--batch 32] [--steps 10] [--threads 1] [--no-python]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/utils.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>

#include "worker/core/masking.h"
#include "worker/core/model.h"
#include "worker/core/train_step.h"
#include "worker/batcher.h"

namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Result {
  double step_s = 0, forward_s = 0, backward_s = 0, optimizer_s = 0, encoder_s = 0, flops = 0;
};

double MatmulGflops() {
  auto a = at::randn({2048, 2048});
  auto b = at::randn({2048, 2048});
  at::mm(a, b);
  const int reps = 5;
  auto t = Clock::now();
  for (int i = 0; i < reps; ++i) at::mm(a, b);
  return reps * 2.0 * 2048.0 * 2048.0 * 2048.0 / Since(t) / 1e9;
}

at::Tensor Keep(const flap::core::MaskConfig& mask, const flap::core::MaskGeometry& g, int64_t b, int64_t step) {
  if (mask.ratio == 0) return {};
  std::vector<int64_t> flat;
  for (int64_t i = 0; i < b; ++i) {
    auto k = flap::core::KeepIndices(mask, g, 1, "s" + std::to_string(i), step);
    flat.insert(flat.end(), k.begin(), k.end());
  }
  return at::tensor(flat, at::kLong).reshape({b, flap::core::NumKept(mask, g)});
}

Result RunCpp(const flap::core::MaskConfig& mask, int64_t batch, int steps, int warmup) {
  torch::manual_seed(0);
  flap::core::ModelConfig c;
  flap::core::FlapModel model(c);
  flap::core::LossConfig loss;
  loss.recon_weight = 0.5;
  flap::core::OptimConfig optim;
  optim.lr = 1e-4;
  optim.total_steps = 1000;
  flap::core::TrainStep step(model, loss, optim);
  flap::core::MaskGeometry g{c.freq_patches(), c.time_patches()};
  flap::core::Batch data;
  data.spec = at::randn({batch, c.target_frames, c.num_mel_bins});
  // Captions of 6-16 tokens, like the synthetic ones, batched as the trainer batches them.
  std::vector<std::vector<int>> captions(static_cast<size_t>(batch));
  std::vector<const std::vector<int>*> ptrs;
  for (int64_t i = 0; i < batch; ++i) {
    captions[i].resize(static_cast<size_t>(6 + (i * 7) % 11));
    for (size_t j = 0; j < captions[i].size(); ++j) captions[i][j] = 4 + static_cast<int>((i * 31 + j * 17) % 250);
    ptrs.push_back(&captions[i]);
  }
  data.tokens = flap::worker::PadTokens(ptrs, c.text_max_len);
  Result r;
  for (int i = 0; i < warmup + steps; ++i) {
    data.keep = Keep(mask, g, batch, i);
    auto run = step.Run(data, i);
    if (!run.ok()) {
      std::cerr << "train_step_bench: " << run.status().ToString() << std::endl;
      std::exit(1);
    }
    const flap::core::StepStats& st = *run;
    model->zero_grad();
    auto t = Clock::now();
    model->EncodeAudio(data.spec, data.keep).embedding.sum().backward();
    const double enc = Since(t);
    if (i < warmup) continue;
    r.forward_s += st.forward_s / steps;
    r.backward_s += st.backward_s / steps;
    r.optimizer_s += st.optimizer_s / steps;
    r.encoder_s += enc / steps;
  }
  r.step_s = r.forward_s + r.backward_s + r.optimizer_s;
  r.flops = flap::core::TrainStepFlops(c, batch, flap::core::NumKept(mask, g), data.tokens.size(1), true);
  return r;
}

// Runs the PyTorch baseline for one (strategy, ratio) cell right after the C++ one, so that both
// see the same machine load.
std::map<std::string, Result> RunPython(int64_t batch, int steps, int warmup, int threads, const char* strategy,
                                        double ratio) {
  std::map<std::string, Result> out;
  const std::string cmd = "/usr/bin/python3 " FLAP_BENCH_DIR "/train_step_bench.py --batch " + std::to_string(batch) +
                          " --steps " + std::to_string(steps) + " --warmup " + std::to_string(warmup) +
                          " --threads " + std::to_string(threads) + " --strategies " + strategy +
                          " --ratios " + std::to_string(ratio);
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return out;
  char line[4096];
  while (fgets(line, sizeof(line), pipe)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("strategy")) continue;
    char key[64];
    std::snprintf(key, sizeof(key), "%s %.2f", j["strategy"].get<std::string>().c_str(), j["ratio"].get<double>());
    Result r;
    r.step_s = j["step_s"];
    r.forward_s = j["forward_s"];
    r.backward_s = j["backward_s"];
    r.optimizer_s = j["optimizer_s"];
    r.encoder_s = j["encoder_fwd_bwd_s"];
    out[key] = r;
  }
  if (pclose(pipe) != 0) std::fprintf(stderr, "warning: the PyTorch baseline failed (%s)\n", cmd.c_str());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t batch = 32;
  int steps = 10, warmup = 2, threads = 1;
  bool python = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::atoi(argv[++i]) : 0; };
    if (a == "--batch") batch = next();
    else if (a == "--steps") steps = next();
    else if (a == "--threads") threads = next();
    else if (a == "--no-python") python = false;
    else {
      std::fprintf(stderr, "usage: %s [--batch N] [--steps N] [--threads N] [--no-python]\n", argv[0]);
      return 2;
    }
  }
  at::set_num_threads(threads);
  const double ceiling = MatmulGflops();
  std::printf("tiny preset, batch %lld, %d timed steps after %d warm-up, %d LibTorch thread(s)\n",
              static_cast<long long>(batch), steps, warmup, threads);
  std::printf("matrix product 2048^3: %.1f GFLOP/s (the practical ceiling)\n\n", ceiling);

  std::printf("%-9s %8s %7s %7s %7s %7s %9s %8s %7s | %8s %8s\n", "mask", "samp/s", "fwd_s", "bwd_s", "opt_s",
              "enc_fb", "enc/enc0", "GFLOP/s", "%ceil", "py samp/s", "C++/py");
  for (const char* strategy : {"2d", "1d"}) {
    double enc0 = 0;
    for (double ratio : {0.0, 0.5, 0.75}) {
      flap::core::MaskConfig mask;
      mask.ratio = ratio;
      mask.strategy = std::strcmp(strategy, "1d") == 0 ? flap::core::MaskStrategy::k1d : flap::core::MaskStrategy::k2d;
      Result r = RunCpp(mask, batch, steps, warmup);
      std::map<std::string, Result> py;
      if (python) py = RunPython(batch, steps, warmup, threads, strategy, ratio);
      if (ratio == 0) enc0 = r.encoder_s;
      char key[64];
      std::snprintf(key, sizeof(key), "%s %.2f", strategy, ratio);
      const double gflops = r.flops / r.step_s / 1e9;
      std::printf("%-9s %8.1f %7.3f %7.3f %7.3f %7.3f %9.2f %8.1f %6.1f%%", key, batch / r.step_s, r.forward_s,
                  r.backward_s, r.optimizer_s, r.encoder_s, r.encoder_s / enc0, gflops, 100 * gflops / ceiling);
      auto it = py.find(key);
      if (it != py.end()) std::printf(" | %8.1f %8.2f\n", batch / it->second.step_s, it->second.step_s / r.step_s);
      else std::printf(" | %8s %8s\n", "-", "-");
      std::fflush(stdout);
    }
  }
  std::printf("\nenc_fb: audio encoder forward+backward alone; enc/enc0: its time relative to ratio 0.\n"
              "C++/py: PyTorch step time / C++ step time (above 1: the C++ step is faster).\n");
  return 0;
}
