// Training-step benchmark: samples/s, the step's time split (forward, backward, embedding
// gather, gradient all-reduce wait, optimizer, host-to-device copy), peak memory and model
// FLOPs utilisation (MFU) for a preset on a device in a precision, over mask ratios,
// strategies and reconstruction on/off. MFU is the model's matrix-product FLOPs per second
// (core::TrainStepFlops: forward + backward = 3x forward) over the peak of a large matrix
// product in the same precision on the same device, measured first in the same run.
// On the CPU the same step in plain PyTorch (bench/train_step_bench.py) can run beside each
// cell for a ratio (--python). Builds with the LibTorch-only core (FLAP_CORE_ONLY).
//
//   train_step_bench [--preset tiny|base] [--device auto|cpu|cuda|cuda:N] [--precision fp32|bf16]
//                    [--batch N] [--steps N] [--warmup N] [--threads N] [--ratios 0,0.5,0.75]
//                    [--strategies 2d,1d] [--recon on,off] [--views V] [--python] [--out FILE]
//
// --out appends one JSON line per cell (and one for the peak) to FILE.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/utils.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "worker/core/device.h"
#include "worker/core/masking.h"
#include "worker/core/model.h"
#include "worker/core/synthetic_batch.h"
#include "worker/core/train_step.h"

namespace {

using flap::core::Precision;
using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Result {
  double step_s = 0, forward_s = 0, backward_s = 0, gather_s = 0, sync_s = 0, optimizer_s = 0, copy_s = 0;
  double encoder_s = 0, flops = 0;
  int64_t peak_bytes = 0;
};

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// Peak TFLOP/s of an n x n x n matrix product in `dtype` on `device` (best of a few reps).
double MatmulPeak(const c10::Device& device, at::ScalarType dtype, int64_t n) {
  const auto opts = at::TensorOptions().device(device).dtype(dtype);
  at::Tensor a = at::randn({n, n}, opts), b = at::randn({n, n}, opts);
  at::mm(a, b);
  flap::core::SynchronizeDevice(device);
  double best = 0;
  const int reps = device.is_cuda() ? 20 : 3;
  for (int trial = 0; trial < 3; ++trial) {
    const auto t = Clock::now();
    for (int i = 0; i < reps; ++i) at::mm(a, b);
    flap::core::SynchronizeDevice(device);
    best = std::max(best, reps * 2.0 * static_cast<double>(n) * n * n / Since(t) / 1e12);
  }
  return best;
}

Result RunCell(const flap::core::ModelConfig& c, const flap::core::MaskConfig& mask, bool recon,
               const c10::Device& device, Precision precision, int64_t batch, int steps, int warmup) {
  torch::manual_seed(0);
  flap::core::FlapModel model(c);
  model->to(device);
  flap::core::LossConfig loss;
  loss.recon_weight = recon ? 0.5 : 0.0;
  flap::core::OptimConfig optim;
  optim.lr = 1e-4;
  optim.total_steps = 1000;
  flap::core::TrainStep step(model, loss, optim, nullptr, nullptr, precision);
  // A few host batches (pinned for a GPU), cycled: their making is not the step's cost.
  std::vector<flap::core::Batch> host;
  for (int i = 0; i < 4; ++i) {
    flap::core::Batch b = flap::core::SyntheticBatch(c, mask, batch, 0, batch, 100 + i);
    if (device.is_cuda()) {
      b.spec = b.spec.pin_memory();
      b.tokens = b.tokens.pin_memory();
      if (b.keep.defined()) b.keep = b.keep.pin_memory();
    }
    host.push_back(b);
  }
  Result r;
  flap::core::ResetPeakMemory(device);
  for (int i = 0; i < warmup + steps; ++i) {
    const auto t = Clock::now();
    flap::core::Batch data = flap::core::ToDevice(host[static_cast<size_t>(i) % host.size()], device);
    flap::core::SynchronizeDevice(device);
    const double copy = Since(t);
    auto run = step.Run(data, i);
    if (!run.ok()) {
      std::cerr << "train_step_bench: " << run.status().ToString() << std::endl;
      std::exit(1);
    }
    const flap::core::StepStats& st = *run;
    model->zero_grad();
    const auto te = Clock::now();
    {
      at::Tensor e;
      {
        flap::core::AutocastGuard autocast(device, precision);
        const at::Tensor spec = data.views() > 1 ? data.spec.repeat({data.views(), 1, 1}) : data.spec;
        e = model->EncodeAudio(spec, data.keep).embedding;
      }
      e.sum().backward();
    }
    flap::core::SynchronizeDevice(device);
    const double enc = Since(te);
    if (i < warmup) continue;
    r.forward_s += st.forward_s / steps;
    r.backward_s += (st.backward_s - st.sync_s) / steps;
    r.gather_s += st.gather_s / steps;
    r.sync_s += st.sync_s / steps;
    r.optimizer_s += st.optimizer_s / steps;
    r.copy_s += copy / steps;
    r.encoder_s += enc / steps;
  }
  r.step_s = r.forward_s + r.backward_s + r.sync_s + r.optimizer_s;
  const flap::core::MaskGeometry g{c.freq_patches(), c.time_patches()};
  r.flops =
      flap::core::TrainStepFlops(c, batch, flap::core::NumKept(mask, g), host[0].tokens.size(1), recon, mask.views);
  r.peak_bytes = flap::core::PeakMemoryBytes(device);
  return r;
}

// The value of "key": <number> in one JSON line (the PyTorch baseline's output).
double JsonNumber(const std::string& line, const std::string& key) {
  const auto at = line.find("\"" + key + "\":");
  return at == std::string::npos ? 0.0 : std::atof(line.c_str() + at + key.size() + 3);
}

// The PyTorch step for one cell, run right after the C++ one so both see the same load.
double PythonStepSeconds(int64_t batch, int steps, int warmup, int threads, const std::string& strategy, double ratio) {
  const std::string cmd = "/usr/bin/python3 " FLAP_BENCH_DIR "/train_step_bench.py --batch " + std::to_string(batch) +
                          " --steps " + std::to_string(steps) + " --warmup " + std::to_string(warmup) + " --threads " +
                          std::to_string(threads) + " --strategies " + strategy + " --ratios " + std::to_string(ratio);
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return 0;
  char line[4096];
  double step_s = 0;
  while (fgets(line, sizeof(line), pipe)) {
    if (std::strstr(line, "\"step_s\"")) step_s = JsonNumber(line, "step_s");
  }
  if (pclose(pipe) != 0) std::fprintf(stderr, "warning: the PyTorch baseline failed (%s)\n", cmd.c_str());
  return step_s;
}

std::string MiB(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.0f", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

int Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--preset tiny|base] [--device auto|cpu|cuda|cuda:N] [--precision fp32|bf16]\n"
               "          [--batch N] [--steps N] [--warmup N] [--threads N] [--ratios 0,0.5,0.75]\n"
               "          [--strategies 2d,1d] [--recon on,off] [--views V] [--python] [--out FILE]\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string preset = "tiny", device_spec = "auto", precision_name = "fp32", out_path;
  std::string ratios = "0,0.5,0.75", strategies = "2d,1d", recons = "on";
  int64_t batch = 0;
  int steps = 10, warmup = 2, threads = 1, views = 1;
  bool python = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto text = [&]() -> std::string {
      if (i + 1 >= argc) std::exit(Usage(argv[0]));
      return argv[++i];
    };
    if (a == "--preset")
      preset = text();
    else if (a == "--device")
      device_spec = text();
    else if (a == "--precision")
      precision_name = text();
    else if (a == "--batch")
      batch = std::atoll(text().c_str());
    else if (a == "--steps")
      steps = std::atoi(text().c_str());
    else if (a == "--warmup")
      warmup = std::atoi(text().c_str());
    else if (a == "--threads")
      threads = std::atoi(text().c_str());
    else if (a == "--ratios")
      ratios = text();
    else if (a == "--strategies")
      strategies = text();
    else if (a == "--recon")
      recons = text();
    else if (a == "--views")
      views = std::atoi(text().c_str());
    else if (a == "--python")
      python = true;
    else if (a == "--no-python")
      python = false;
    else if (a == "--out")
      out_path = text();
    else
      return Usage(argv[0]);
  }
  auto config = flap::core::ModelConfig::Preset(preset);
  auto device_or = flap::core::SelectDevice(device_spec, flap::core::ProcessEnvironment());
  auto precision_or = flap::core::ParsePrecision(precision_name);
  for (const flap::Status& s : {config.status(), device_or.status(), precision_or.status()}) {
    if (!s.ok()) {
      std::fprintf(stderr, "train_step_bench: %s\n", s.ToString().c_str());
      return 2;
    }
  }
  const c10::Device device = *device_or;
  const Precision precision = *precision_or;
  if (batch <= 0) batch = preset == "base" ? (device.is_cuda() ? 128 : 4) : 32;
  if (steps < 1 || warmup < 0) return Usage(argv[0]);
  at::set_num_threads(threads);
  python = python && device.is_cpu() && preset == "tiny";

  const flap::core::DeviceInfo info = flap::core::DescribeDevice(device);
  const at::ScalarType dtype = precision == Precision::kBf16 ? at::kBFloat16 : at::kFloat;
  const double peak = MatmulPeak(device, dtype, device.is_cuda() ? 8192 : 2048);
  std::ofstream out;
  if (!out_path.empty()) out.open(out_path, std::ios::app);
  std::printf(
      "%s preset, batch %lld, %d timed steps after %d warm-up, on %s (%s, %.1f GiB), %s, %d LibTorch thread(s)\n",
      preset.c_str(), static_cast<long long>(batch), steps, warmup, info.device.c_str(), info.name.c_str(),
      static_cast<double>(info.memory_bytes) / (1024.0 * 1024.0 * 1024.0), flap::core::PrecisionName(precision),
      threads);
  std::printf("matrix product peak (%s, measured): %.2f TFLOP/s\n\n", flap::core::PrecisionName(precision), peak);
  if (out) {
    out << "{\"kind\":\"peak\",\"device\":\"" << info.device << "\",\"name\":\"" << info.name << "\",\"precision\":\""
        << flap::core::PrecisionName(precision) << "\",\"tflops\":" << peak << "}\n";
  }

  std::printf("%-14s %9s %7s %7s %7s %7s %7s %7s %7s %8s %7s %7s %6s%s\n", "mask recon", "samp/s", "fwd_ms", "bwd_ms",
              "gath_ms", "sync_ms", "opt_ms", "h2d_ms", "enc_fb", "enc/enc0", "TFLOP/s", "MFU", "peakMB",
              python ? " | py samp/s C++/py" : "");
  for (const std::string& recon_name : Split(recons)) {
    const bool recon = recon_name == "on";
    for (const std::string& strategy : Split(strategies)) {
      double enc0 = 0;
      for (const std::string& ratio_text : Split(ratios)) {
        flap::core::MaskConfig mask;
        mask.ratio = std::atof(ratio_text.c_str());
        mask.views = mask.ratio > 0 ? views : 1;
        auto parsed = flap::core::ParseMaskStrategy(strategy);
        if (!parsed.ok() || !mask.Validate().ok()) {
          std::fprintf(stderr, "train_step_bench: bad mask %s %s\n", strategy.c_str(), ratio_text.c_str());
          return 2;
        }
        mask.strategy = *parsed;
        const Result r = RunCell(*config, mask, recon, device, precision, batch, steps, warmup);
        if (enc0 == 0) enc0 = r.encoder_s;
        const double tflops = r.flops / r.step_s / 1e12;
        char key[40];
        std::snprintf(key, sizeof(key), "%s %.2f%s %s", strategy.c_str(), mask.ratio,
                      mask.views > 1 ? ("x" + std::to_string(mask.views)).c_str() : "", recon ? "on" : "off");
        std::printf("%-14s %9.1f %7.1f %7.1f %7.2f %7.2f %7.1f %7.2f %7.1f %8.2f %7.2f %6.1f%% %6s", key,
                    batch / r.step_s, 1e3 * r.forward_s, 1e3 * r.backward_s, 1e3 * r.gather_s, 1e3 * r.sync_s,
                    1e3 * r.optimizer_s, 1e3 * r.copy_s, 1e3 * r.encoder_s, r.encoder_s / enc0, tflops,
                    100 * tflops / peak, MiB(r.peak_bytes).c_str());
        if (python) {
          const double py = PythonStepSeconds(batch, steps, warmup, threads, strategy, mask.ratio);
          if (py > 0)
            std::printf(" | %8.1f %6.2f", batch / py, py / r.step_s);
          else
            std::printf(" | %8s %6s", "-", "-");
        }
        std::printf("\n");
        std::fflush(stdout);
        if (out) {
          out << "{\"kind\":\"cell\",\"preset\":\"" << preset << "\",\"device\":\"" << info.device
              << "\",\"precision\":\"" << flap::core::PrecisionName(precision) << "\",\"batch\":" << batch
              << ",\"strategy\":\"" << strategy << "\",\"ratio\":" << mask.ratio << ",\"views\":" << mask.views
              << ",\"recon\":" << (recon ? "true" : "false") << ",\"samples_per_second\":" << batch / r.step_s
              << ",\"step_s\":" << r.step_s << ",\"forward_s\":" << r.forward_s << ",\"backward_s\":" << r.backward_s
              << ",\"gather_s\":" << r.gather_s << ",\"allreduce_s\":" << r.sync_s
              << ",\"optimizer_s\":" << r.optimizer_s << ",\"h2d_s\":" << r.copy_s << ",\"tflops\":" << tflops
              << ",\"mfu\":" << tflops / peak << ",\"peak_memory_bytes\":" << r.peak_bytes << "}\n";
          out.flush();
        }
      }
    }
  }
  std::printf(
      "\nfwd/bwd/opt: the step's parts (bwd without the all-reduce wait, sync); gath/sync: collectives\n"
      "(zero for one rank); h2d: copying the batch to the device; enc_fb: the audio encoder's forward +\n"
      "backward alone, enc/enc0 relative to the first ratio; MFU: model FLOP/s over the matrix-product\n"
      "peak above; peakMB: peak device allocation (GPU) or peak resident memory (CPU).\n");
  return 0;
}
