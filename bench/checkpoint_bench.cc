// Checkpoint benchmark.
//  1. Save and restore throughput of a `base`-sized training state (parameters, AdamW's two
//     moments) through checkpoint::Store, against a raw sequential write (+ fsync) and read
//     of the same bytes on the same disk, as ratios.
//  2. The tiny training step with asynchronous checkpoints every few steps against no
//     checkpoints, in the same run.
//
//   build/bench/checkpoint_bench [--dir DIR] [--mb N] [--steps N] [--every N]
#include <fcntl.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/utils.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "checkpoint/store.h"
#include "worker/checkpointer.h"
#include "worker/core/model.h"
#include "worker/core/train_step.h"

namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

void DropCaches() {
  sync();
  std::ofstream("/proc/sys/vm/drop_caches") << "3\n";  // needs root; otherwise reads may be cached
}

double RawWrite(const std::string& path, const std::string& bytes) {
  auto t = Clock::now();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, std::min<size_t>(bytes.size() - done, 8 << 20));
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
  return Since(t);
}

double RawRead(const std::string& path, size_t size) {
  std::string buf(size, '\0');
  auto t = Clock::now();
  const int fd = ::open(path.c_str(), O_RDONLY);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd, buf.data() + done, size - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return Since(t);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "/tmp/flap_checkpoint_bench";
  int64_t megabytes = 0;  // 0: the base preset's state size
  int steps = 30, every = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--dir" && i + 1 < argc)
      dir = argv[++i];
    else if (a == "--mb" && i + 1 < argc)
      megabytes = std::atoll(argv[++i]);
    else if (a == "--steps" && i + 1 < argc)
      steps = std::atoi(argv[++i]);
    else if (a == "--every" && i + 1 < argc)
      every = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--dir DIR] [--mb N] [--steps N] [--every N]\n", argv[0]);
      return 2;
    }
  }
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);

  // 1. Throughput on base-sized state.
  auto base = flap::core::ModelConfig::Preset("base");
  int64_t params = 0;
  {
    torch::NoGradGuard no_grad;
    flap::core::FlapModel model(*base);
    for (const auto& p : model->parameters()) params += p.numel();
  }
  const size_t model_bytes = megabytes > 0 ? static_cast<size_t>(megabytes) << 20 : static_cast<size_t>(params) * 4;
  std::printf("base preset: %.1f M parameters; state = model + 2 AdamW moments = %.2f GB\n", params / 1e6,
              3.0 * model_bytes / 1e9);
  std::mt19937_64 rng(1);
  std::map<std::string, std::string> files;
  for (const char* name : {"model.pt", "optimizer_m.pt", "optimizer_v.pt"}) {
    std::string b(model_bytes, '\0');
    for (size_t i = 0; i + 8 <= b.size(); i += 8) {
      const uint64_t x = rng();
      std::memcpy(&b[i], &x, 8);
    }
    files[name] = std::move(b);
  }
  size_t total = 0;
  for (auto& [n, b] : files) total += b.size();

  double raw_w = 0, raw_r = 0;
  for (auto& [n, b] : files) raw_w += RawWrite(dir + "/raw_" + n, b);
  DropCaches();
  for (auto& [n, b] : files) raw_r += RawRead(dir + "/raw_" + n, b.size());
  for (auto& [n, b] : files) std::filesystem::remove(dir + "/raw_" + n);

  auto store = flap::checkpoint::Store::Open(dir + "/root");
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    return 1;
  }
  flap::checkpoint::Metadata meta;
  meta.config_hash = "bench";
  auto t = Clock::now();
  auto entry = (*store)->Save("bench", 1, files, meta);
  const double save_s = Since(t);
  if (!entry.ok()) {
    std::fprintf(stderr, "%s\n", entry.status().ToString().c_str());
    return 1;
  }
  // Raw write again after the save, so that both orders count (the first write on a fresh
  // file system can be slower or faster than later ones).
  double raw_w2 = 0;
  for (auto& [n, b] : files) raw_w2 += RawWrite(dir + "/raw_" + n, b);
  for (auto& [n, b] : files) std::filesystem::remove(dir + "/raw_" + n);
  raw_w = 0.5 * (raw_w + raw_w2);
  DropCaches();
  t = Clock::now();
  auto loaded = (*store)->Load(*entry);
  const double load_s = Since(t);
  if (!loaded.ok()) return 1;
  std::printf("\n%-28s %9s %9s\n", "", "GB/s", "vs raw");
  std::printf("%-28s %9.2f %9s\n", "raw sequential write+fsync", total / raw_w / 1e9, "1.00");  // mean of 2
  std::printf("%-28s %9.2f %9.2f\n", "checkpoint save", total / save_s / 1e9, raw_w / save_s);
  std::printf("%-28s %9.2f %9s\n", "raw sequential read", total / raw_r / 1e9, "1.00");
  std::printf("%-28s %9.2f %9.2f\n", "checkpoint restore+verify", total / load_s / 1e9, raw_r / load_s);
  files.clear();
  loaded->clear();

  // 2. Training with asynchronous saves against none (tiny, batch 32, ratio 0.75).
  at::set_num_threads(1);
  auto run = [&](bool with_ckpt) {
    torch::manual_seed(0);
    flap::core::ModelConfig c;
    flap::core::FlapModel model(c);
    flap::core::LossConfig loss;
    loss.recon_weight = 0.5;
    flap::core::OptimConfig optim;
    optim.total_steps = steps;
    flap::core::TrainStep step(model, loss, optim);
    std::unique_ptr<flap::worker::Checkpointer> ckpt;
    if (with_ckpt) {
      flap::CheckpointConfig cc;
      cc.root = dir + "/train_root";
      cc.keep_last = 2;
      cc.keep_best = 0;
      auto opened = flap::worker::Checkpointer::Open(cc, "bench", "bench");
      if (!opened.ok()) {
        std::fprintf(stderr, "%s\n", opened.status().ToString().c_str());
        std::exit(1);
      }
      ckpt = std::move(opened).value();
    }
    flap::core::Batch b;
    b.spec = at::randn({32, c.target_frames, c.num_mel_bins});
    b.tokens = at::randint(1, c.vocab_size, {32, 12}, at::kLong);
    b.keep = at::arange(32, at::kLong).unsqueeze(0).expand({32, 32}).contiguous();
    auto run_step = [&](int64_t i) {
      auto stats = step.Run(b, i);
      if (!stats.ok()) {
        std::fprintf(stderr, "step %lld: %s\n", static_cast<long long>(i), stats.status().ToString().c_str());
        std::exit(1);
      }
    };
    run_step(0);  // warm-up
    auto t0 = Clock::now();
    for (int i = 1; i <= steps; ++i) {
      run_step(i);
      if (ckpt && i % every == 0) (void)ckpt->SaveAsync(model, step.optimizer(), i, 1000, {});
    }
    const double s = Since(t0) / steps;
    if (ckpt) (void)ckpt->Wait();
    return std::make_pair(s, ckpt ? ckpt->last_save_bytes() : 0);
  };
  auto none = run(false);
  auto with = run(true);
  auto none2 = run(false);
  const double baseline = 0.5 * (none.first + none2.first);
  std::printf("\ntiny training step, %d steps, checkpoint (%.1f MB) every %d steps:\n", steps, with.second / 1e6,
              every);
  std::printf("  no checkpoints    %.4f s/step (mean of two runs around the other)\n", baseline);
  std::printf("  async checkpoints %.4f s/step  (%.1f%% slower)\n", with.first, 100.0 * (with.first / baseline - 1.0));
  std::filesystem::remove_all(dir);
  return 0;
}
