// A trial's whole configuration (model, masking, losses, optimiser, training loop, data),
// read from a Boost.Program_options INI file plus command-line overrides of the same keys
// (`--mask.ratio 0.75` beats `ratio = 0.75` under `[mask]`). Every key is listed by
// `flap-worker train --help`; unknown keys, malformed values and out-of-range values are
// refused with a message naming the key (and the file).
//
// `model.preset` (tiny | base) is applied first; every other model.* key overrides a field of
// the preset. Values are values: copy freely; not shared between threads.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "worker/core/model_config.h"

namespace flap::worker {

struct DataConfig {
  std::string path;                  // dataset folder (manifest.json, shards, tokenizer.model)
  std::string train_split = "train";
  std::string eval_split = "eval";
  int loader_threads = 0;            // feature threads of the loader; 0: one per core
  int shuffle_shards = 4;            // shards whose samples are shuffled together (loader.h)
  int prefetch_batches = 4;          // ready batches the loader keeps queued
  // The feature cache (shard_features.h, "Caches"): "auto" keeps features in this process's
  // memory up to feature_memory_mb and writes the shards beyond it to <path>/.fbank-cache;
  // "off" computes every shard each time it is read; a folder: on disk there (shared by the
  // trials and processes that name it) and in memory up to the budget.
  std::string fbank_cache = "auto";
  int64_t feature_memory_mb = 2048;  // memory budget of the feature cache (per process)
  // Longest stored features of a clip, in frames (10 ms each); training crops and evaluation
  // windows are cut from them. Clips shorter than model.target_frames are zero-padded to it.
  int max_frames = 3000;
  std::string crop = "random";       // training window: random (seeded by seed, clip, epoch) | first
};

// Evaluation (evaluator.h).
struct EvalConfig {
  // Which frames of a clip longer than model.target_frames are embedded: first | center |
  // chunks (the mean of the embeddings of consecutive windows covering the whole clip).
  std::string crop = "chunks";
};

struct TrainConfig {
  uint64_t seed = 1;             // trial seed: init, masks, caption choice, sample order
  int64_t batch_size = 32;       // per rank; the global batch is world size x this
  int64_t epochs = 10;
  int64_t max_steps = 0;         // > 0: stop after this many steps, whatever the epochs
  // Compute budgets (trainer.h, "Budgets"): > 0 stops the trial once the training loop has run
  // this many wall seconds (evaluation excluded) or seen this many samples (all ranks); the
  // first budget reached (steps, seconds, samples) ends the trial. Both carry over a resume.
  double max_seconds = 0;
  int64_t max_samples = 0;
  int64_t eval_every = 0;        // steps between evaluations; 0: only at the end
  int64_t eval_batch_size = 64;
  int64_t log_every = 20;        // steps between progress lines
  // LibTorch intra-op threads; 0: automatic (1 on CPU, where OpenBLAS already spreads every
  // matrix product over all cores and a second pool of spinning OpenMP threads only competes
  // with it: bench/README.md has the measurement).
  int threads = 0;
  std::string output_dir;        // where summary.json and model.pt go; empty: nowhere
  // auto | cpu | cuda | cuda:N (core/device.h): auto takes this rank's GPU when one is visible.
  // Where training runs does not change what it computes (not in Hash()): a checkpoint moves
  // between devices.
  std::string device = "auto";
  std::string precision = "fp32";  // fp32 | bf16 (autocast forward; losses and optimizer fp32)
};

struct CheckpointConfig {
  std::string root;           // checkpoint root folder; empty: no checkpoints
  int64_t every = 0;          // steps between checkpoints; 0: only at the end and on a stop signal
  int keep_last = 3;          // retention: the newest N
  int keep_best = 1;          // and the best K by `metric` (evaluation metrics)
  std::string metric = "map10";
  double stop_deadline = 25.0;  // seconds from a stop signal to exit, whatever is in flight
};

// The worker group (worker/core/worker_group.h): how this rank finds the others and how
// gradients are averaged. None of these change what training computes.
struct DistConfig {
  std::string launcher = "auto";  // auto | none | env | mpi | slurm (worker/core/launcher.h)
  std::string backend = "auto";   // auto (NCCL for CUDA when compiled in, else Gloo) | gloo | nccl
  double timeout = 300.0;         // seconds: rendezvous and every collective; then the run fails naming the missing rank
  double bucket_mb = 4.0;         // gradient all-reduce bucket size in MiB (tiny: ~4 buckets); 0: one per parameter
  bool overlap = true;            // start bucket all-reduces from gradient hooks during backward; false: after it
};

// The worker's Prometheus endpoint (metrics/worker_metrics.h, docs/metrics.md).
struct MetricsConfig {
  std::string listen;   // host:port to serve /metrics on (port 0: any free one); empty: off
  std::string sd_dir;   // folder where the rank writes its file_sd target file while it runs
};

struct TrialConfig {
  TrialConfig() { optim.total_steps = 0; }  // derived from the run's length unless set
  std::string preset = "tiny";
  core::ModelConfig model;
  // Warm starts (model.init_audio, model.init_text; worker/warm_start.h, docs/warm_start.md):
  // safetensors files whose weights initialise the audio / the text encoder; empty: none.
  // In Hash() by path, and only when set (so configs without them keep their hash).
  std::string init_audio;
  std::string init_text;
  core::MaskConfig mask;
  core::LossConfig loss;
  core::OptimConfig optim;       // optim.total_steps 0: derived from epochs and data size
  TrainConfig train;
  DataConfig data;
  EvalConfig eval;
  CheckpointConfig ckpt;
  DistConfig dist;
  MetricsConfig metrics;
  std::string trial_id;          // names the trial's checkpoints; empty: "trial-<Hash()>"
  std::string augment = "off";   // text.augment: off | on | probability of the augmented caption
  double augment_prob = 0.0;     // parsed form of `augment`

  // All checks across sections; the first failure, naming its key.
  Status Validate() const;
  // Every key with its value, as strings (the canonical form used for hashing and summaries).
  std::map<std::string, std::string> ToMap() const;
  nlohmann::json ToJson() const;
  // 16 hex digits identifying everything that changes what training computes.
  std::string Hash() const;
  // trial_id, or "trial-<Hash()>" when it is empty.
  std::string TrialId() const;
};

// Parses argv-style arguments (`--config FILE` plus `--key value` overrides, no positional
// arguments) into *config. Returns InvalidArgument naming the key and the file on any error.
// `--help` is reported through *help_requested with the help text in *help_text.
Status ParseTrialConfig(const std::vector<std::string>& args, TrialConfig* config,
                        bool* help_requested, std::string* help_text);

// Reads only a config file (no command line).
StatusOr<TrialConfig> LoadTrialConfigFile(const std::string& path);

// Parses "off" | "on" | a probability in [0, 1].
StatusOr<double> ParseAugmentPolicy(const std::string& value);

}  // namespace flap::worker
