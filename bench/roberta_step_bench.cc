// A training step of a preset with the roberta text tower warm-started from a RoBERTa-base
// shaped file: the time to read the file and load the tower, the step time, samples/s and the
// process's peak resident memory (VmHWM). The file (Hugging Face names, hidden 768, 12 layers,
// intermediate 3072, vocabulary 50265, 514 positions, random N(0, 0.02) weights, float32, about
// 500 MB) is written by this program in a child process of its own (--make-file), so that
// writing it does not count in the measured peak; without --keep it is removed at the end.
// Batches are random (core::SyntheticBatch), captions of --text-len ids padded with RoBERTa's
// <pad> (1).
//
//   roberta_step_bench [--preset base|tiny] [--batch 4] [--steps 3] [--warmup 1] [--ratio 0.75]
//                      [--recon 0] [--text-len 32] [--file F.safetensors] [--keep]
#include <ATen/ATen.h>
#include <torch/utils.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>

#include "config/trial_config.h"
#include "worker/core/roberta.h"
#include "worker/core/synthetic_batch.h"
#include "worker/core/train_step.h"
#include "worker/safetensors.h"
#include "worker/trainer.h"
#include "worker/warm_start.h"

namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// RoBERTa-base's shape (Hugging Face's roberta-base config.json).
flap::core::RobertaShape RobertaBase() {
  flap::core::RobertaShape s;
  s.vocab_size = 50265;
  s.hidden = 768;
  s.layers = 12;
  s.heads = 12;
  s.intermediate = 3072;
  s.positions = 514;
  s.type_vocab = 1;
  s.pad_id = 1;
  return s;
}

int MakeFile(const std::string& path) {
  torch::manual_seed(0);
  flap::core::RobertaText tower(RobertaBase());
  std::map<std::string, at::Tensor> tensors;
  for (const auto& p : tower->named_parameters()) tensors["roberta." + p.key()] = p.value().detach();
  const flap::Status s = flap::worker::WriteSafetensors(path, tensors);
  if (!s.ok()) {
    std::cerr << s.ToString() << std::endl;
    return 1;
  }
  return 0;
}

// kB of the process's peak resident set (VmHWM), -1 if unknown.
long PeakRssKb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> a = {{"--preset", "base"}, {"--batch", "4"},    {"--steps", "3"},
                                          {"--warmup", "1"},    {"--ratio", "0.75"}, {"--recon", "0"},
                                          {"--text-len", "32"}, {"--file", ""},      {"--make-file", ""}};
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--keep") {
      keep = true;
    } else if (a.count(k) && i + 1 < argc) {
      a[k] = argv[++i];
    } else {
      std::cerr << "unknown or incomplete argument '" << k << "' (see the top of bench/roberta_step_bench.cc)\n";
      return 2;
    }
  }
  if (!a["--make-file"].empty()) return MakeFile(a["--make-file"]);

  std::string file = a["--file"];
  bool made = false;
  if (file.empty()) {
    file = (std::filesystem::temp_directory_path() / ("roberta_base_" + std::to_string(::getpid()) + ".safetensors"))
               .string();
    const auto t = Clock::now();
    const std::string cmd = "'/proc/" + std::to_string(::getpid()) + "/exe' --make-file '" + file + "'";
    if (std::system(cmd.c_str()) != 0) {
      std::cerr << "writing the RoBERTa-base shaped file failed" << std::endl;
      return 1;
    }
    made = true;
    std::printf("wrote %s (%.0f MB) in %.1f s\n", file.c_str(),
                static_cast<double>(std::filesystem::file_size(file)) / 1e6, Since(t));
  }

  flap::TrialConfig config;
  flap::Status s = flap::ApplyConfigValues({{"model.preset", a["--preset"]},
                                            {"model.text_tower", "roberta"},
                                            {"model.text_max_len", a["--text-len"]},
                                            {"mask.ratio", a["--ratio"]},
                                            {"loss.recon_weight", a["--recon"]}},
                                           &config);
  flap::core::ModelConfig& m = config.model;
  m.vocab_size = 50265;  // RoBERTa's tokenizer: <s> 0, <pad> 1, </s> 2
  m.text_pad_id = 1;
  m.text_end_id = 2;
  auto resolved = flap::worker::ResolveTextTower(m, file, /*heads_given=*/false);
  if (!s.ok() || !resolved.ok()) {
    std::cerr << (s.ok() ? resolved.status() : s).ToString() << std::endl;
    return 1;
  }
  m = *resolved;
  flap::worker::SetThreads(0);  // as flap-worker train does on the CPU: OpenBLAS spreads each product

  torch::manual_seed(1);
  const auto t_build = Clock::now();
  flap::core::FlapModel model(m, config.loss.logit_scale_init);
  std::ostringstream log;
  s = flap::worker::WarmStart(model, "", file, log);
  if (!s.ok()) {
    std::cerr << s.ToString() << std::endl;
    return 1;
  }
  const double load_s = Since(t_build);
  std::cout << log.str();
  int64_t params = 0, text_params = 0;
  for (const auto& p : model->named_parameters()) {
    params += p.value().numel();
    if (p.key().rfind("roberta.", 0) == 0) text_params += p.value().numel();
  }
  flap::core::OptimConfig optim;
  optim.total_steps = 100;
  flap::core::TrainStep step(model, config.loss, optim, nullptr, nullptr, flap::core::Precision::kFp32);
  const int64_t batch = std::stol(a["--batch"]);
  const int warmup = std::stoi(a["--warmup"]), steps = std::stoi(a["--steps"]);
  double total = 0;
  for (int i = 0; i < warmup + steps; ++i) {
    const flap::core::Batch b = flap::core::SyntheticBatch(m, config.mask, batch, 0, batch, 100 + i);
    const auto t = Clock::now();
    auto r = step.Run(b, i);
    if (!r.ok()) {
      std::cerr << r.status().ToString() << std::endl;
      return 1;
    }
    const double dt = Since(t);
    if (i >= warmup) total += dt;
    std::printf("step %d: %.2f s, loss %.4f\n", i, dt, r->loss);
  }
  const double mean = total / std::max(1, steps);
  std::printf(
      "preset %s + roberta tower (hidden %d, %d layers, %d heads, MLP %d, vocabulary %d, %d positions): %.1f M "
      "parameters (text tower %.1f M)\n",
      a["--preset"].c_str(), m.text_width, m.text_depth, m.text_heads, m.text_mlp(), m.vocab_size,
      m.text_position_rows(), params / 1e6, text_params / 1e6);
  std::printf("batch %lld, mask ratio %s, recon %s, captions of %d ids, %d threads\n", static_cast<long long>(batch),
              a["--ratio"].c_str(), a["--recon"].c_str(), m.text_max_len, at::get_num_threads());
  std::printf(
      "model built and text tower loaded in %.1f s; step %.2f s (mean of %d), %.2f samples/s; peak RSS %.2f GiB\n",
      load_s, mean, steps, static_cast<double>(batch) / mean, PeakRssKb() / (1024.0 * 1024.0));
  if (made && !keep) std::filesystem::remove(file);
  return 0;
}
