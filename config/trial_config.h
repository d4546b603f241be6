// A trial's whole configuration (model, masking, losses, optimiser, training loop, data,
// checkpoints, worker group, metrics) as one typed struct, and the one registry of its keys.
// Every process that handles a trial's configuration goes through here: `flap-worker train`
// (a config file plus `--key value` flags), the agent (the sweep's base config text plus the
// trial's overrides, applied in memory), the coordinator and flapctl (a sweep's base config and
// factor values checked at submission). Free of LibTorch; Boost.Program_options only in the
// implementation.
//
// Keys. A key is "<section>.<key>" ("mask.ratio"); in an INI file the section is a header
// ("[mask]" then "ratio = 0.75"). ConfigKeys() lists them in the order they are applied:
// `model.preset` (tiny | base) first, so that every other model.* key overrides a field of
// the preset whatever the order it was written in. Each key carries its flags:
//   operational  does not change what training computes (folders, threads, logging, the
//                worker group, checkpoints): left out of TrialConfig::Hash();
//   local_only   belongs to the machine a worker runs on (its folders, device, metrics
//                endpoint): a sweep may not vary it (the coordinator refuses it as a factor) and
//                a worker ignores it in a trial's overrides, or a submitted sweep could make
//                every worker write where it says.
//
// Aliases. A key renamed to its struct path keeps its earlier name as an alias (ConfigKey::alias:
// recon.weight for loss.recon_weight), read everywhere a config is read, and hashed as before.
//
// Errors. Unknown keys, malformed values and out-of-range values are refused with
// InvalidArgument naming the key (and the file and line), an unknown key with the closest known one
// ("unknown key 'mask.ratoi'; did you mean mask.ratio?"). A value is checked twice: alone
// against its key's domain (CheckConfigValue: mask.ratio in [0, 1)), then with the others
// (TrialConfig::Validate: mask.views > 1 needs mask.ratio > 0).
//
// Values are values: copy freely; not shared between threads. The registry is immutable and
// the free functions are safe from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"
#include "config/model_config.h"

namespace flap {

// [model]: the architecture the LibTorch core builds (core::ModelConfig, whose fields are the
// other model.* keys) and the keys that choose or initialise it without being the core's: the
// preset it starts from and the warm-start files. Assigning a core::ModelConfig replaces the
// architecture and keeps these.
struct ModelSection : core::ModelConfig {
  ModelSection() = default;
  ModelSection& operator=(const core::ModelConfig& architecture) {
    core::ModelConfig::operator=(architecture);
    return *this;
  }
  std::string preset = "tiny";  // tiny | base (core::ModelConfig::Preset), applied first
  // Warm starts (worker/warm_start.h, docs/warm_start.md): safetensors files whose weights
  // initialise the audio / the text encoder; empty: none. In Hash() by path, and only when set
  // (so configs without them keep their hash).
  std::string init_audio;
  std::string init_text;
};

// [text]: the captions.
struct TextConfig {
  std::string augment = "off";  // off | on | probability of the augmented caption
  double augment_prob = 0.0;    // parsed form of `augment`; not a key
  // A byte-level BPE tokenizer (a folder with vocab.json and merges.txt, or a tokenizer.json)
  // the loader tokenises captions with; empty: the dataset's SentencePiece model
  // (sharding/text_tokenizer.h). In Hash() by path, and only when set.
  std::string tokenizer;
};

struct DataConfig {
  std::string path;  // dataset folder (manifest.json, shards, tokenizer.model)
  // The three roles of a dataset's splits (docs/data.md, "Splits"): training; validation, which
  // drives every decision (evaluation during training, early stopping, ckpt.keep_best, the
  // checkpoint a trial ends with, time-to-target); test, evaluated once at the end of a trial on
  // the checkpoint validation selected and read by nothing that decides.
  std::string train_split = "train";
  std::string val_split = "val";
  std::string test_split = "test";
  int loader_threads = 0;    // feature threads of the loader; 0: one per core
  int shuffle_shards = 4;    // shards whose samples are shuffled together (loader.h)
  int prefetch_batches = 4;  // ready batches the loader keeps queued
  // The feature cache (shard_features.h, "Caches"): "auto" keeps features in this process's
  // memory up to feature_memory_mb and writes the shards beyond it to <path>/.fbank-cache;
  // "off" computes every shard each time it is read; a folder: on disk there (shared by the
  // trials and processes that name it) and in memory up to the budget.
  std::string fbank_cache = "auto";
  int64_t feature_memory_mb = 2048;  // memory budget of the feature cache (per process)
  // Longest stored features of a clip, in frames (10 ms each); training crops and evaluation
  // windows are cut from them. Clips shorter than model.target_frames are zero-padded to it.
  int max_frames = 3000;
  std::string crop = "random";  // training window: random (seeded by seed, clip, epoch) | first
};

// Evaluation (worker/evaluator.h).
struct EvalConfig {
  // Which frames of a clip longer than model.target_frames are embedded: first | center |
  // chunks (the mean of the embeddings of consecutive windows covering the whole clip).
  std::string crop = "chunks";
};

struct TrainConfig {
  uint64_t seed = 1;        // trial seed: init, masks, caption choice, sample order
  int64_t batch_size = 32;  // per rank, when global_batch is 0: the global batch is world size x this
  // > 0: the samples of every step over all ranks, whatever the group's size; each rank takes
  // global_batch / world size (PerRankBatch) and batch_size is not used. Such a trial reads the
  // split in one order for any group size, so it may resume on a group of another size
  // (worker/trainer.h, "Group size").
  int64_t global_batch = 0;
  int64_t epochs = 10;
  int64_t max_steps = 0;  // > 0: stop after this many steps, whatever the epochs
  // Compute budgets (worker/trainer.h, "Budgets"): > 0 stops the trial once the training loop
  // has run this many wall seconds (evaluation excluded), seen this many samples (all ranks)
  // or spent this many model FLOPs (all ranks, counted per step from the tokens it kept); the
  // first budget reached (steps, seconds, samples, FLOPs) ends the trial, and the learning-rate
  // schedule is fitted to the one that binds. All carry over a resume.
  double max_seconds = 0;
  int64_t max_samples = 0;
  double max_flops = 0;
  int64_t eval_every = 0;  // steps between evaluations; 0: only at the end
  int64_t eval_batch_size = 64;
  int64_t log_every = 20;  // steps between progress lines
  // LibTorch intra-op threads; 0: automatic (1 on CPU, where OpenBLAS already spreads every
  // matrix product over all cores and a second pool of spinning OpenMP threads only competes
  // with it: bench/README.md has the measurement).
  int threads = 0;
  std::string output_dir;  // where summary.json and model.pt go; empty: nowhere
  // auto | cpu | cuda | cuda:N (config/device_spec.h): auto takes this rank's GPU when one
  // is visible. Where training runs does not change what it computes (not in Hash()): a
  // checkpoint moves between devices.
  std::string device = "auto";
  std::string precision = "fp32";  // fp32 | bf16 (autocast forward; losses and optimizer fp32)
  std::string trial_id;            // names the trial's checkpoints; empty: "trial-<Hash()>"
};

struct CheckpointConfig {
  std::string root;   // checkpoint root folder; empty: no checkpoints
  int64_t every = 0;  // steps between checkpoints; 0: only at the end and on a stop signal
  int keep_last = 3;  // retention: the newest N
  int keep_best = 1;  // and the best K by `metric` (evaluation metrics)
  std::string metric = "map10";
  double stop_deadline = 25.0;  // seconds from a stop signal to exit, whatever is in flight
};

// The worker group (worker/core/worker_group.h): how this rank finds the others and how
// gradients are averaged. None of these change what training computes.
struct DistConfig {
  std::string launcher = "auto";  // auto | none | env | mpi | slurm (worker/core/launcher.h)
  std::string backend = "auto";   // auto (NCCL for CUDA when compiled in, else Gloo) | gloo | nccl
  double timeout = 300.0;  // seconds: rendezvous and every collective; then the run fails naming the missing rank
  double bucket_mb = 4.0;  // gradient all-reduce bucket size in MiB (tiny: ~4 buckets); 0: one per parameter
  bool overlap = true;     // start bucket all-reduces from gradient hooks during backward; false: after it
};

// The worker's Prometheus endpoint (metrics/worker_metrics.h, docs/metrics.md).
struct MetricsConfig {
  std::string listen;  // host:port to serve /metrics on (port 0: any free one); empty: off
  std::string sd_dir;  // folder where the rank writes its file_sd target file while it runs
};

struct TrialConfig {
  TrialConfig() { optim.total_steps = 0; }  // derived from the run's length unless set
  ModelSection model;
  // Whether model.text_heads was given (a roberta tower's heads are not in its file's shapes:
  // worker/warm_start.h, ResolveTextTower). Not a key.
  bool text_heads_set = false;
  TextConfig text;
  core::MaskConfig mask;
  core::LossConfig loss;
  core::OptimConfig optim;  // optim.total_steps 0: derived from epochs and data size
  TrainConfig train;
  DataConfig data;
  EvalConfig eval;
  CheckpointConfig ckpt;
  DistConfig dist;
  MetricsConfig metrics;

  // Every key's own domain (CheckConfigValue), then the checks across keys; the first
  // failure, naming its key.
  Status Validate() const;
  // Every key with its value, as strings (the canonical form used for hashing and summaries).
  std::map<std::string, std::string> ToMap() const;
  nlohmann::json ToJson() const;
  // 16 hex digits identifying everything that changes what training computes: every key
  // that is not operational, except keys added later while they hold the value that means
  // "as before" (so that earlier trials keep their hash, and their checkpoints resume).
  std::string Hash() const;
  // train.trial_id, or "trial-<Hash()>" when it is empty.
  std::string TrialId() const;
};

// The samples each of `world_size` ranks takes per step: train.global_batch / world_size when
// the global batch is set, else train.batch_size. InvalidArgument naming both sizes when the
// global batch is not a multiple of the group's size (the trial must not train with another
// number of negatives). The global batch of a group is PerRankBatch x world_size.
StatusOr<int64_t> PerRankBatch(const TrainConfig& train, int world_size);

// One key of the registry.
struct ConfigKey {
  std::string name;          // "mask.ratio"
  std::string help;          // one line: its meaning and values
  bool operational = false;  // left out of Hash() (see the top of this file)
  bool local_only = false;   // the worker's own: never a sweep factor, never a trial override
  bool numeric = false;      // takes numbers (a random sweep may draw it from a range)
  // The key's earlier name, from before keys were named by their struct paths ("recon.weight"
  // for loss.recon_weight); empty: none. Still read wherever values are read (config files,
  // flags, overrides, the configs recorded in checkpoints, exports and journals), read as
  // `name`; Hash() still uses it, so that a config hashes as it did before the rename. A new
  // sweep file may not name it (the coordinator refuses it at submission, naming `name`).
  std::string alias;
};

// Every key, in the order values are applied (model.preset first).
const std::vector<ConfigKey>& ConfigKeys();
// The key named `name`, or whose alias `name` is; nullptr when there is none.
const ConfigKey* FindConfigKey(const std::string& name);
// The current name of the key `name` names (its alias resolved); `name` itself when it is no
// key's alias.
std::string CanonicalConfigKey(const std::string& name);
// `values` by the current names of their keys (aliases resolved). InvalidArgument naming both
// when a key is set under its alias and its name.
StatusOr<std::map<std::string, std::string>> CanonicalConfigValues(const std::map<std::string, std::string>& values);
// Whether `name` is a key local to each worker (ConfigKey::local_only).
bool IsLocalOnlyKey(const std::string& name);
// The known key closest to `name` by edit distance (a swap of two neighbours counts as one
// edit), when it is close enough to be a likely misspelling; empty otherwise.
std::string ClosestConfigKey(const std::string& name);
// "unknown key 'NAME'", with "; did you mean KEY?" when a key is close (ClosestConfigKey).
std::string UnknownKeyMessage(const std::string& name);

// Checks `value` as a value of `key` on its own: that it parses, and its key's own domain
// (mask.ratio in [0, 1), mask.strategy 1d or 2d), not its relations to other keys.
// InvalidArgument naming the key and the value; for an unknown key, UnknownKeyMessage.
Status CheckConfigValue(const std::string& key, const std::string& value);

// The keys and values of a config file's text, by "<section>.<key>" under their current names
// (aliases resolved). The text is INI as config/ini.h reads it: "[section]" headers (a section
// may appear twice), "key = value" lines, '#' / ';' comments; a key written before any header
// is a whole name ("mask.ratio = 0.5"). InvalidArgument for a syntax error, an unknown key (with
// the closest known one) or a key set twice (also once under its alias), each error as
// "<source>:<line>: [<section>] <key>: <what is wrong>" (several: a summary line, then one a
// line). Values are not checked.
StatusOr<std::map<std::string, std::string>> ParseConfigText(const std::string& text, const std::string& source);

// The INI text of `values` ("<section>.<key>" -> value): a "[section]" header per section, then
// "key = value" lines; ParseConfigText reads it back to the same values.
std::string ConfigText(const std::map<std::string, std::string>& values);

// Sets the keys of `values` (current names or aliases) on *config, in ConfigKeys() order.
// InvalidArgument naming the key for an unknown key, a key set under both its names, or a value
// that does not parse; no Validate().
Status ApplyConfigValues(const std::map<std::string, std::string>& values, TrialConfig* config);

// A config from a config file's text (ParseConfigText) and then `overrides` (which win over
// the text; model.preset is still applied first), validated. Errors name `source`.
StatusOr<TrialConfig> TrialConfigFromText(const std::string& text, const std::string& source,
                                          const std::map<std::string, std::string>& overrides = {});

// Removes the keys local to each worker (ConfigKey::local_only) from *values and returns them.
std::map<std::string, std::string> TakeLocalKeys(std::map<std::string, std::string>* values);

// The config of a trial that a worker runs for a coordinator: `base_text` (the sweep's base
// config), then `local` (the worker's own settings), then `trial` (the trial's overrides, which
// win), applied in memory and validated; errors name `source`. The keys local to the worker
// are taken from `local` only, never from `base_text` or `trial`: nothing a sweep or its
// coordinator sends sets the worker's folders, device or metrics endpoint.
StatusOr<TrialConfig> WorkerTrialConfig(const std::string& base_text, const std::string& source,
                                        const std::map<std::string, std::string>& local,
                                        const std::map<std::string, std::string>& trial);

// Argv-style arguments (`--config FILE` plus `--key value` overrides, no positional arguments),
// parsed but not applied: the file named (not read), the flags' values by key (unchecked), or
// that --help was asked for and the help text. InvalidArgument for an unknown flag (naming the
// closest key) or a malformed command line.
struct ConfigArgs {
  std::string file;                          // --config; "" = none
  std::map<std::string, std::string> flags;  // "<section>.<key>" -> value
  bool help = false;
  std::string help_text;
};
StatusOr<ConfigArgs> ParseConfigArgs(const std::vector<std::string>& args);

// Parses argv-style arguments (ParseConfigArgs), reads the file, applies the flags over it
// and validates, into *config. Returns InvalidArgument naming the key and the file on any error.
// `--help` is reported through *help_requested with the help text in *help_text.
Status ParseTrialConfig(const std::vector<std::string>& args, TrialConfig* config, bool* help_requested,
                        std::string* help_text);

// Reads only a config file (no command line).
StatusOr<TrialConfig> LoadTrialConfigFile(const std::string& path);

// Parses "off" | "on" | a probability in [0, 1].
StatusOr<double> ParseAugmentPolicy(const std::string& value);

}  // namespace flap
