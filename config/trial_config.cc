#include "config/trial_config.h"

#include <boost/program_options.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <type_traits>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "common/draw.h"
#include "common/path_name.h"
#include "config/device_spec.h"
#include "config/ini.h"

namespace po = boost::program_options;

namespace flap {
namespace {

// One key: its flags, how to set it from text, how to print it, and its own domain.
struct Field {
  ConfigKey key;
  std::function<Status(TrialConfig&, const std::string&)> set;
  std::function<std::string(const TrialConfig&)> get;
  // The value as quoted in errors (numbers shorter than get's canonical form).
  std::function<std::string(const TrialConfig&)> show;
  // The key's own domain; null: any value that parses. `must` says what it demands
  // ("in [0, 1)"), for "<key> must be <must>, got '<value>'".
  std::function<bool(const TrialConfig&)> holds;
  std::string must;
  // Keys added after configs were first hashed: the value that means "as before", left out of
  // Hash() so that the checkpoints of earlier trials keep resuming. Null: always hashed.
  const char* earlier_default = nullptr;

  Status Problem(const std::string& value) const {
    return Status::InvalidArgument(key.name + " must be " + must + ", got '" + value + "'");
  }
};

Status BadValue(const std::string& key, const std::string& value, const char* expected) {
  return Status::InvalidArgument(key + ": expected " + expected + ", got '" + value + "'");
}

template <typename T>
Status ParseNumber(const std::string& key, const std::string& text, T* out) {
  std::istringstream in(text);
  T v{};
  in >> v;
  if (in.fail() || !(in >> std::ws).eof()) {
    return BadValue(key, text, std::is_integral<T>::value ? "an integer" : "a number");
  }
  if constexpr (std::is_floating_point<T>::value) {
    if (!std::isfinite(v)) return BadValue(key, text, "a finite number");
  }
  *out = v;
  return Status::OK();
}

std::string FormatDouble(double v, const char* format = "%.17g") {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

template <typename T>
std::string Show(T v) {
  if constexpr (std::is_floating_point<T>::value)
    return FormatDouble(v, "%.10g");
  else
    return std::to_string(v);
}

// What a number must satisfy by itself.
template <typename T>
struct Domain {
  std::string must;
  std::function<bool(T)> holds;
};
template <typename T>
Domain<T> AtLeast(T lo, const std::string& why = "") {
  return {">= " + Show(lo) + why, [lo](T v) { return v >= lo; }};
}
template <typename T>
Domain<T> Above(T lo) {
  return {"> " + Show(lo), [lo](T v) { return v > lo; }};
}
Domain<double> HalfOpen(double lo, double hi) {
  return {"in [" + Show(lo) + ", " + Show(hi) + ")", [lo, hi](double v) { return v >= lo && v < hi; }};
}
Domain<int> Between(int lo, int hi) {
  return {"in [" + Show(lo) + ", " + Show(hi) + "]", [lo, hi](int v) { return v >= lo && v <= hi; }};
}
Domain<int> MultipleOf(int n) {
  return {"a multiple of " + Show(n), [n](int v) { return v % n == 0; }};
}

// Accessor returning a reference to a member of TrialConfig.
template <typename T>
using Ref = std::function<T&(TrialConfig&)>;

template <typename T>
T& Get(const Ref<T>& ref, const TrialConfig& c) {
  return ref(const_cast<TrialConfig&>(c));
}

template <typename T>
Field Number(std::string name, std::string help, Ref<T> ref, Domain<T> domain = {}) {
  Field f;
  f.key.name = name;
  f.key.help = std::move(help);
  f.key.numeric = true;
  f.set = [name, ref](TrialConfig& c, const std::string& v) { return ParseNumber(name, v, &ref(c)); };
  f.get = [ref](const TrialConfig& c) {
    if constexpr (std::is_floating_point<T>::value)
      return FormatDouble(Get(ref, c));
    else
      return std::to_string(Get(ref, c));
  };
  f.show = [ref](const TrialConfig& c) { return Show(Get(ref, c)); };
  if (domain.holds) {
    f.must = domain.must;
    f.holds = [ref, holds = domain.holds](const TrialConfig& c) { return holds(Get(ref, c)); };
  }
  return f;
}

Field Text(std::string name, std::string help, Ref<std::string> ref) {
  Field f;
  f.key.name = std::move(name);
  f.key.help = std::move(help);
  f.set = [ref](TrialConfig& c, const std::string& v) {
    ref(c) = v;
    return Status::OK();
  };
  f.get = [ref](const TrialConfig& c) { return Get(ref, c); };
  f.show = f.get;
  return f;
}

// A word of a fixed list: "must be a, b or c".
Field Choice(std::string name, std::string help, Ref<std::string> ref, std::vector<std::string> words) {
  Field f = Text(std::move(name), std::move(help), ref);
  for (size_t i = 0; i < words.size(); ++i) {
    f.must += (i == 0 ? "" : i + 1 == words.size() ? " or " : ", ") + words[i];
  }
  f.holds = [ref, words](const TrialConfig& c) {
    return std::find(words.begin(), words.end(), Get(ref, c)) != words.end();
  };
  return f;
}

Field Bool(std::string name, std::string help, Ref<bool> ref) {
  Field f;
  f.key.name = name;
  f.key.help = std::move(help);
  f.set = [name, ref](TrialConfig& c, const std::string& v) -> Status {
    if (v == "true" || v == "1" || v == "on")
      ref(c) = true;
    else if (v == "false" || v == "0" || v == "off")
      ref(c) = false;
    else
      return BadValue(name, v, "true or false");
    return Status::OK();
  };
  f.get = [ref](const TrialConfig& c) { return std::string(Get(ref, c) ? "true" : "false"); };
  f.show = f.get;
  return f;
}

// Flags.
Field Operational(Field f) {
  f.key.operational = true;
  return f;
}
Field Local(Field f) {  // local keys are all operational: where a trial runs, not what it computes
  f.key.local_only = true;
  f.key.operational = true;
  return f;
}
Field Since(const char* earlier_default, Field f) {
  f.earlier_default = earlier_default;
  return f;
}
// A key renamed to its struct path: `earlier` is still read, and names it in Hash().
Field Renamed(const char* earlier, Field f) {
  f.key.alias = earlier;
  return f;
}

#define FLAP_REF(type, expr) Ref<type>([](TrialConfig& c) -> type& { return c.expr; })

std::vector<Field> ModelFields() {
  std::vector<Field> f;
  Field preset =
      Choice("model.preset", "architecture preset: tiny | base", FLAP_REF(std::string, model.preset), {"tiny", "base"});
  preset.set = [](TrialConfig& c, const std::string& v) -> Status {
    FLAP_ASSIGN_OR_RETURN(const core::ModelConfig architecture, core::ModelConfig::Preset(v));
    c.model = architecture;
    c.model.preset = v;
    return Status::OK();
  };
  f.push_back(preset);
  f.push_back(Number("model.num_mel_bins", "mel bins", FLAP_REF(int, model.num_mel_bins), Above(0)));
  f.push_back(Number("model.target_frames", "frames T after pad/crop", FLAP_REF(int, model.target_frames), Above(0)));
  f.push_back(Number("model.patch_size", "patch side", FLAP_REF(int, model.patch_size), Above(0)));
  // 2-D sin-cos positions split the width in four (sin/cos for each axis).
  f.push_back(Number("model.audio_width", "audio encoder width", FLAP_REF(int, model.audio_width), MultipleOf(4)));
  f.push_back(Number("model.audio_depth", "audio encoder depth", FLAP_REF(int, model.audio_depth), Above(0)));
  f.push_back(Number("model.audio_heads", "audio encoder heads", FLAP_REF(int, model.audio_heads), Above(0)));
  f.push_back(Number("model.text_max_len", "caption tokens kept", FLAP_REF(int, model.text_max_len), Above(0)));
  f.push_back(Number("model.text_width", "text encoder width", FLAP_REF(int, model.text_width), Above(0)));
  f.push_back(Number("model.text_depth", "text encoder depth", FLAP_REF(int, model.text_depth), Above(0)));
  Field text_heads = Number("model.text_heads", "text encoder heads", FLAP_REF(int, model.text_heads), Above(0));
  text_heads.set = [set = text_heads.set](TrialConfig& c, const std::string& v) {
    c.text_heads_set = true;
    return set(c, v);
  };
  f.push_back(text_heads);
  f.push_back(Since("flap", Choice("model.text_tower",
                                   "text encoder: flap (pre-LN, mean-pooled) | roberta (RoBERTa, pooled at <s>; "
                                   "its shape from model.init_text when set)",
                                   FLAP_REF(std::string, model.text_tower), {"flap", "roberta"})));
  f.push_back(Since("0", Number("model.text_intermediate", "roberta text tower MLP width; 0 = mlp_ratio x text_width",
                                FLAP_REF(int, model.text_intermediate), AtLeast(0))));
  f.push_back(Since("0", Number("model.text_positions",
                                "roberta text tower position rows; 0 = text_max_len + the tokenizer's pad id + 1",
                                FLAP_REF(int, model.text_positions), AtLeast(0))));
  f.push_back(Number("model.mlp_ratio", "MLP hidden = ratio x width", FLAP_REF(int, model.mlp_ratio), Above(0)));
  f.push_back(Number("model.embed_dim", "joint embedding size D", FLAP_REF(int, model.embed_dim), Above(0)));
  f.push_back(Number("model.decoder_width", "decoder width", FLAP_REF(int, model.decoder_width), MultipleOf(4)));
  f.push_back(Number("model.decoder_depth", "decoder depth", FLAP_REF(int, model.decoder_depth), Above(0)));
  f.push_back(Number("model.decoder_heads", "decoder heads", FLAP_REF(int, model.decoder_heads), Above(0)));
  f.push_back(Renamed("recon.source",
                      Since("pooled", Choice("model.recon_source",
                                             "what the decoder reconstructs from: embedding (the projected, normalised "
                                             "per-sample audio embedding, as the paper) | pooled (the encoder's pooled "
                                             "output)",
                                             FLAP_REF(std::string, model.recon_source), {"embedding", "pooled"}))));
  f.push_back(Since(
      "",
      Text("model.init_audio",
           "safetensors file initialising the audio encoder (AudioMAE / ViT names, docs/warm_start.md); empty = none",
           FLAP_REF(std::string, model.init_audio))));
  f.push_back(Since("", Text("model.init_text",
                             "safetensors file initialising the text encoder (RoBERTa or CLIP text names, "
                             "docs/warm_start.md); empty = none",
                             FLAP_REF(std::string, model.init_text))));
  f.push_back(Since("auto", Choice("model.audio_pos_layout",
                                   "audio position channels: auto (audiomae when model.init_audio is an AudioMAE "
                                   "file, else flap) | flap (time first) | audiomae (frequency first)",
                                   FLAP_REF(std::string, model.audio_pos_layout), {"auto", "flap", "audiomae"})));
  return f;
}

std::vector<Field> MaskLossOptimFields() {
  std::vector<Field> f;
  f.push_back(Number("mask.ratio", "fraction of tokens dropped in training, [0, 1)", FLAP_REF(double, mask.ratio),
                     HalfOpen(0, 1)));
  Field strategy;  // an enum: set refuses anything but its names
  strategy.key.name = "mask.strategy";
  strategy.key.help = "token dropping: 2d (random patches) | 1d (whole time columns)";
  strategy.set = [](TrialConfig& c, const std::string& v) -> Status {
    FLAP_ASSIGN_OR_RETURN(c.mask.strategy, core::ParseMaskStrategy(v));
    return Status::OK();
  };
  strategy.get = [](const TrialConfig& c) { return std::string(core::MaskStrategyName(c.mask.strategy)); };
  strategy.show = strategy.get;
  f.push_back(strategy);
  f.push_back(Since(
      "1",
      Number("mask.views",
             "masked views of each clip per step (independent keep sets, losses averaged); > 1 needs mask.ratio > 0",
             FLAP_REF(int, mask.views), Between(1, 16))));
  f.push_back(Renamed("recon.weight", Number("loss.recon_weight", "reconstruction loss weight lambda; 0 = off",
                                              FLAP_REF(double, loss.recon_weight), AtLeast(0.0))));
  f.push_back(Number("loss.logit_scale_init", "initial log logit scale", FLAP_REF(double, loss.logit_scale_init)));
  f.push_back(Number("loss.logit_scale_max", "clamp of the log logit scale", FLAP_REF(double, loss.logit_scale_max)));
  Field augment =
      Text("text.augment", "caption augmentation: off | on | probability", FLAP_REF(std::string, text.augment));
  augment.key.numeric = true;  // a probability
  augment.set = [](TrialConfig& c, const std::string& v) -> Status {
    FLAP_ASSIGN_OR_RETURN(c.text.augment_prob, ParseAugmentPolicy(v));
    c.text.augment = v;
    return Status::OK();
  };
  f.push_back(augment);
  f.push_back(Since("", Text("text.tokenizer",
                             "byte-level BPE tokenizer (folder with vocab.json + merges.txt, or a tokenizer.json); "
                             "empty = the dataset's SentencePiece model",
                             FLAP_REF(std::string, text.tokenizer))));
  f.push_back(Number("optim.lr", "peak learning rate", FLAP_REF(double, optim.lr), Above(0.0)));
  f.push_back(Number("optim.min_lr", "final learning rate", FLAP_REF(double, optim.min_lr), AtLeast(0.0)));
  f.push_back(Number("optim.weight_decay", "AdamW weight decay", FLAP_REF(double, optim.weight_decay), AtLeast(0.0)));
  f.push_back(Number("optim.beta1", "AdamW beta1", FLAP_REF(double, optim.beta1), HalfOpen(0, 1)));
  f.push_back(Number("optim.beta2", "AdamW beta2", FLAP_REF(double, optim.beta2), HalfOpen(0, 1)));
  f.push_back(Number("optim.eps", "AdamW epsilon", FLAP_REF(double, optim.eps), Above(0.0)));
  f.push_back(
      Number("optim.warmup_steps", "linear warm-up steps", FLAP_REF(int64_t, optim.warmup_steps), AtLeast<int64_t>(0)));
  f.push_back(Number("optim.total_steps", "schedule length; 0 = the run's length", FLAP_REF(int64_t, optim.total_steps),
                     AtLeast<int64_t>(0)));
  f.push_back(Number("optim.grad_clip", "max gradient norm; <= 0 = off", FLAP_REF(double, optim.grad_clip)));
  return f;
}

std::vector<Field> TrainDataFields() {
  std::vector<Field> f;
  f.push_back(Number("train.seed", "trial seed", FLAP_REF(uint64_t, train.seed)));
  f.push_back(Number("train.batch_size", "samples per step and rank", FLAP_REF(int64_t, train.batch_size),
                     AtLeast<int64_t>(2, " (contrastive negatives)")));
  f.push_back(Since(
      "0", Number("train.global_batch",
                  "samples per step over all ranks, for any group size (each rank takes global_batch / ranks); "
                  "0 = ranks x train.batch_size",
                  FLAP_REF(int64_t, train.global_batch),
                  Domain<int64_t>{"0 or >= 2 (contrastive negatives)", [](int64_t v) { return v == 0 || v >= 2; }})));
  f.push_back(
      Number("train.epochs", "passes over the training split", FLAP_REF(int64_t, train.epochs), AtLeast<int64_t>(1)));
  f.push_back(Number("train.max_steps", "stop after this many steps; 0 = epochs decide",
                     FLAP_REF(int64_t, train.max_steps), AtLeast<int64_t>(0)));
  f.push_back(Since(
      "0", Number("train.max_seconds",
                  "wall budget in seconds of the training loop (evaluation excluded; kept across resumes); 0 = none",
                  FLAP_REF(double, train.max_seconds), AtLeast(0.0, " (0: no time budget)"))));
  f.push_back(
      Since("0", Number("train.max_samples", "stop once this many training samples (all ranks) are seen; 0 = none",
                        FLAP_REF(int64_t, train.max_samples), AtLeast<int64_t>(0, " (0: no sample budget)"))));
  f.push_back(Since("0", Number("train.max_flops",
                                "stop once the training steps (all ranks) have spent this many model FLOPs; 0 = none",
                                FLAP_REF(double, train.max_flops), AtLeast(0.0, " (0: no FLOPs budget)"))));
  f.push_back(Number("train.eval_every", "steps between evaluations; 0 = at the end only",
                     FLAP_REF(int64_t, train.eval_every), AtLeast<int64_t>(0)));
  f.push_back(Number("train.eval_batch_size", "evaluation batch size", FLAP_REF(int64_t, train.eval_batch_size),
                     AtLeast<int64_t>(1)));
  f.push_back(Operational(Number("train.log_every", "steps between progress lines", FLAP_REF(int64_t, train.log_every),
                                 AtLeast<int64_t>(1))));
  f.push_back(Operational(Number("train.threads", "LibTorch intra-op threads; 0 = automatic (1 on CPU)",
                                 FLAP_REF(int, train.threads), AtLeast(0))));
  f.push_back(
      Local(Text("train.output_dir", "folder for summary.json and model.pt", FLAP_REF(std::string, train.output_dir))));
  Field device =
      Local(Text("train.device", "auto | cpu | cuda | cuda:N; auto = this rank's GPU when one is visible, else the CPU",
                 FLAP_REF(std::string, train.device)));
  device.must = "auto, cpu, cuda or cuda:N";
  device.holds = [](const TrialConfig& c) { return core::ParseDeviceSpec(c.train.device).ok(); };
  f.push_back(device);
  f.push_back(
      Since("fp32", Choice("train.precision", "fp32 | bf16 (bf16 autocast forward; losses and optimizer stay fp32)",
                           FLAP_REF(std::string, train.precision), {"fp32", "bf16"})));
  f.push_back(Local(Text("data.path", "dataset folder (manifest.json)", FLAP_REF(std::string, data.path))));
  f.push_back(Text("data.train_split", "training split name", FLAP_REF(std::string, data.train_split)));
  f.push_back(Text("data.val_split",
                   "validation split: evaluations during training and everything they decide (old manifests: eval)",
                   FLAP_REF(std::string, data.val_split)));
  f.push_back(Text("data.test_split", "test split: evaluated once, at the end, on the checkpoint validation selected",
                   FLAP_REF(std::string, data.test_split)));
  f.push_back(Operational(Number("data.loader_threads", "loader feature threads; 0 = one per core",
                                 FLAP_REF(int, data.loader_threads), AtLeast(0))));
  f.push_back(Number("data.shuffle_shards", "shards whose samples are shuffled together",
                     FLAP_REF(int, data.shuffle_shards), AtLeast(1)));
  f.push_back(Operational(Number("data.prefetch_batches", "ready batches queued ahead of training",
                                 FLAP_REF(int, data.prefetch_batches), AtLeast(1))));
  f.push_back(Local(Text(
      "data.fbank_cache",
      "feature cache: auto (memory up to data.feature_memory_mb, the rest under DATA/.fbank-cache) | off | a folder",
      FLAP_REF(std::string, data.fbank_cache))));
  f.push_back(
      Operational(Number("data.feature_memory_mb", "feature cache memory budget of the process in MiB; 0 = disk only",
                         FLAP_REF(int64_t, data.feature_memory_mb), AtLeast<int64_t>(0))));
  f.push_back(Number("data.max_frames", "longest stored features of a clip in frames (10 ms); crops are cut from them",
                     FLAP_REF(int, data.max_frames)));
  f.push_back(Choice("data.crop", "training window of a longer clip: random (seeded by seed, clip, epoch) | first",
                     FLAP_REF(std::string, data.crop), {"random", "first"}));
  f.push_back(Choice("eval.crop",
                     "evaluation window of a longer clip: first | center | chunks (mean over windows covering it)",
                     FLAP_REF(std::string, eval.crop), {"first", "center", "chunks"}));
  return f;
}

std::vector<Field> OperationFields() {
  std::vector<Field> f;
  f.push_back(
      Local(Text("ckpt.root", "checkpoint root folder; empty = no checkpoints", FLAP_REF(std::string, ckpt.root))));
  f.push_back(Operational(Number("ckpt.every", "steps between checkpoints; 0 = at the end and on stop signals",
                                 FLAP_REF(int64_t, ckpt.every), AtLeast<int64_t>(0))));
  f.push_back(Operational(
      Number("ckpt.keep_last", "retention: newest N checkpoints", FLAP_REF(int, ckpt.keep_last), AtLeast(1))));
  f.push_back(Operational(
      Number("ckpt.keep_best", "retention: best K by ckpt.metric", FLAP_REF(int, ckpt.keep_best), AtLeast(0))));
  f.push_back(Operational(
      Text("ckpt.metric", "evaluation metric for keep_best (map10, t2a_r1, ...)", FLAP_REF(std::string, ckpt.metric))));
  f.push_back(Operational(Number("ckpt.stop_deadline", "seconds from a stop signal to exit, whatever is in flight",
                                 FLAP_REF(double, ckpt.stop_deadline), AtLeast(0.0))));
  Field launcher =
      Operational(Text("dist.launcher", "where rank and world size come from: auto | none | env | mpi | slurm",
                       FLAP_REF(std::string, dist.launcher)));
  launcher.set = [](TrialConfig& c, const std::string& v) -> Status {
    FLAP_RETURN_IF_ERROR(core::ParseLauncher(v).status());
    c.dist.launcher = v;
    return Status::OK();
  };
  f.push_back(launcher);
  f.push_back(Operational(Choice("dist.backend", "collectives: auto | gloo | nccl", FLAP_REF(std::string, dist.backend),
                                 {"auto", "gloo", "nccl"})));
  f.push_back(Operational(Number("dist.timeout", "seconds a rank waits for the others (rendezvous, each collective)",
                                 FLAP_REF(double, dist.timeout), Above(0.0))));
  f.push_back(Operational(Number("dist.bucket_mb", "gradient all-reduce bucket in MiB; 0 = one per parameter",
                                 FLAP_REF(double, dist.bucket_mb), AtLeast(0.0))));
  f.push_back(Operational(Bool("dist.overlap", "all-reduce gradient buckets during backward (true) or after it (false)",
                               FLAP_REF(bool, dist.overlap))));
  // It names the trial's checkpoint folder under ckpt.root.
  Field trial_id = Operational(Text("train.trial_id", "names the trial's checkpoints; empty = trial-<config hash>",
                                    FLAP_REF(std::string, train.trial_id)));
  trial_id.must = "empty or a name of [A-Za-z0-9_.-] (at most 255 characters, not starting with a dot)";
  trial_id.holds = [](const TrialConfig& c) {
    return c.train.trial_id.empty() || PathNameProblem(c.train.trial_id, 255).empty();
  };
  f.push_back(trial_id);
  f.push_back(Local(Text("metrics.listen", "host:port to serve Prometheus /metrics on (port 0: any); empty = off",
                         FLAP_REF(std::string, metrics.listen))));
  f.push_back(Local(Text("metrics.sd_dir", "folder for this rank's Prometheus file_sd target file",
                         FLAP_REF(std::string, metrics.sd_dir))));
  return f;
}

// Every key, in the order they are applied (model.preset first).
const std::vector<Field>& Fields() {
  static const std::vector<Field> fields = [] {
    std::vector<Field> f;
    for (auto part : {ModelFields, MaskLossOptimFields, TrainDataFields, OperationFields}) {
      for (Field& field : part()) f.push_back(std::move(field));
    }
    return f;
  }();
  return fields;
}

const Field* FindField(const std::string& name) {
  static const std::map<std::string, const Field*> index = [] {
    std::map<std::string, const Field*> m;
    for (const Field& f : Fields()) {
      m[f.key.name] = &f;
      if (!f.key.alias.empty()) m[f.key.alias] = &f;
    }
    return m;
  }();
  auto it = index.find(name);
  return it == index.end() ? nullptr : it->second;
}

std::string AfterDot(const std::string& name) {
  const size_t dot = name.find('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

po::options_description Describe() {
  po::options_description desc("Trial configuration (INI sections map to prefixes: [mask] ratio = 0.5 is mask.ratio)");
  for (const Field& f : Fields()) {
    const std::string help = f.key.local_only ? f.key.help + " [local to this worker: not a sweep factor]" : f.key.help;
    desc.add_options()(f.key.name.c_str(), po::value<std::string>(), help.c_str());
    if (!f.key.alias.empty()) {
      desc.add_options()(f.key.alias.c_str(), po::value<std::string>(), ("earlier name of " + f.key.name).c_str());
    }
  }
  return desc;
}

constexpr char kKeysHint[] = " (flap-worker train --help lists the keys)";

// Sets `over` on *values (both by current key names once `over`'s aliases are resolved):
// InvalidArgument when `over` sets a key under both its names.
Status Overlay(const std::map<std::string, std::string>& over, std::map<std::string, std::string>* values) {
  FLAP_ASSIGN_OR_RETURN(auto canonical, CanonicalConfigValues(over));
  for (auto& [key, value] : canonical) (*values)[key] = std::move(value);
  return Status::OK();
}

}  // namespace

const std::vector<ConfigKey>& ConfigKeys() {
  static const std::vector<ConfigKey> keys = [] {
    std::vector<ConfigKey> k;
    for (const Field& f : Fields()) k.push_back(f.key);
    return k;
  }();
  return keys;
}

const ConfigKey* FindConfigKey(const std::string& name) {
  const Field* f = FindField(name);
  return f == nullptr ? nullptr : &f->key;
}

std::string CanonicalConfigKey(const std::string& name) {
  const Field* f = FindField(name);
  return f == nullptr ? name : f->key.name;
}

StatusOr<std::map<std::string, std::string>> CanonicalConfigValues(const std::map<std::string, std::string>& values) {
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : values) {
    const std::string name = CanonicalConfigKey(key);
    if (name != key && values.count(name) != 0) {
      return Status::InvalidArgument(key + " and " + name + " are both set (" + key + " is the earlier name of " + name +
                                     "): keep " + name);
    }
    out[name] = value;
  }
  return out;
}

bool IsLocalOnlyKey(const std::string& name) {
  const ConfigKey* k = FindConfigKey(name);
  return k != nullptr && k->local_only;
}

std::string ClosestConfigKey(const std::string& name) {
  std::vector<std::string> names;
  for (const Field& f : Fields()) names.push_back(f.key.name);
  std::string best = ini::ClosestName(name, names);
  if (!best.empty()) return best;
  // The right key under another section ("train.lr" for optim.lr), when only one has it.
  for (const Field& f : Fields()) {
    if (AfterDot(f.key.name) != AfterDot(name)) continue;
    if (!best.empty()) return "";
    best = f.key.name;
  }
  return best;
}

std::string UnknownKeyMessage(const std::string& name) { return ini::UnknownKeyMessage(name, ClosestConfigKey(name)); }

Status CheckConfigValue(const std::string& key, const std::string& value) {
  const Field* f = FindField(key);
  if (f == nullptr) return Status::InvalidArgument(UnknownKeyMessage(key));
  TrialConfig c;
  FLAP_RETURN_IF_ERROR(f->set(c, value));
  if (f->holds && !f->holds(c)) return f->Problem(value);
  return Status::OK();
}

StatusOr<double> ParseAugmentPolicy(const std::string& value) {
  if (value == "off") return 0.0;
  if (value == "on") return 1.0;
  double p = 0;
  if (!ParseNumber("text.augment", value, &p).ok() || p < 0.0 || p > 1.0) {
    return Status::InvalidArgument("text.augment must be off, on or a probability in [0, 1], got '" + value + "'");
  }
  return p;
}

Status TrialConfig::Validate() const {
  for (const Field& f : Fields()) {
    if (f.holds && !f.holds(*this)) return f.Problem(f.show(*this));
  }
  // Across keys (and again each key's own domain, as the core states it).
  FLAP_RETURN_IF_ERROR(model.Validate());
  FLAP_RETURN_IF_ERROR(mask.Validate());
  FLAP_RETURN_IF_ERROR(loss.Validate());
  core::OptimConfig o = optim;
  if (o.total_steps == 0) o.total_steps = 1;  // derived later from the data
  FLAP_RETURN_IF_ERROR(o.Validate());
  if (data.max_frames < model.target_frames) {
    return Status::InvalidArgument("data.max_frames (" + std::to_string(data.max_frames) +
                                   ") must be >= model.target_frames (" + std::to_string(model.target_frames) + ")");
  }
  return Status::OK();
}

std::map<std::string, std::string> TrialConfig::ToMap() const {
  std::map<std::string, std::string> m;
  for (const Field& f : Fields()) m[f.key.name] = f.get(*this);
  return m;
}

nlohmann::json TrialConfig::ToJson() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : ToMap()) j[k] = v;
  return j;
}

std::string TrialConfig::Hash() const {
  // Each key under the name it was first hashed with (its alias when renamed), in name order.
  std::map<std::string, std::string> hashed;
  for (const Field& f : Fields()) {
    const std::string v = f.get(*this);
    if (f.key.operational || (f.earlier_default != nullptr && v == f.earlier_default)) continue;
    hashed[f.key.alias.empty() ? f.key.name : f.key.alias] = v;
  }
  std::string canonical;
  for (const auto& [k, v] : hashed) canonical += k + "=" + v + "\n";
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(Mix64(HashString(canonical))));
  return buf;
}

StatusOr<int64_t> PerRankBatch(const TrainConfig& train, int world_size) {
  if (world_size < 1) return Status::InvalidArgument("a group of " + std::to_string(world_size) + " ranks");
  if (train.global_batch <= 0) return train.batch_size;
  if (train.global_batch % world_size != 0) {
    const std::string g = std::to_string(train.global_batch), w = std::to_string(world_size);
    return Status::InvalidArgument("train.global_batch " + g + " cannot be split evenly over world size " + w + " (" +
                                   g + " is not a multiple of " + w +
                                   "): it needs a group whose number of ranks divides " + g);
  }
  return train.global_batch / world_size;
}

std::string TrialConfig::TrialId() const { return train.trial_id.empty() ? "trial-" + Hash() : train.trial_id; }

StatusOr<std::map<std::string, std::string>> ParseConfigText(const std::string& text, const std::string& source) {
  std::vector<ini::Section> sections;
  ini::Errors errors(source, "the config", ini::LocateIn(&sections), /*summary_for_one=*/false);
  sections = ini::Lex(text, ini::Options{/*repeated_sections=*/true, /*top_level_keys=*/true}, &errors);
  std::map<std::string, std::string> values;
  std::map<std::string, std::pair<std::string, int>> written;  // current name -> (name as written, line)
  for (const ini::Section& sec : sections) {
    for (const ini::Key& k : sec.keys) {
      const std::string name = sec.name.empty() ? k.name : sec.name + "." + k.name;
      const Field* f = FindField(name);
      if (f == nullptr) {
        errors.AddAt(k.line, sec.name, k.name, UnknownKeyMessage(name) + kKeysHint);
        continue;
      }
      auto [first, added] = written.emplace(f->key.name, std::make_pair(name, k.line));
      if (!added) {  // the lexer refuses a key twice in a section; this is the same key under two names
        errors.AddAt(k.line, sec.name, k.name,
                     "the key repeats " + f->key.name + " (first as " + first->second.first + " at line " +
                         std::to_string(first->second.second) + ")");
        continue;
      }
      values[f->key.name] = k.value;
    }
  }
  FLAP_RETURN_IF_ERROR(errors.ToStatus());
  return values;
}

std::string ConfigText(const std::map<std::string, std::string>& values) {
  std::string text, section;
  for (const auto& [name, value] : values) {  // sorted: a section's keys are together
    const size_t dot = name.find('.');
    const std::string s = name.substr(0, dot);
    if (text.empty() || s != section) text += (text.empty() ? "[" : "\n[") + s + "]\n";
    section = s;
    text += name.substr(dot + 1) + " = " + value + "\n";
  }
  return text;
}

Status ApplyConfigValues(const std::map<std::string, std::string>& given, TrialConfig* config) {
  for (const auto& [key, value] : given) {
    if (FindField(key) == nullptr) return Status::InvalidArgument(UnknownKeyMessage(key) + kKeysHint);
  }
  FLAP_ASSIGN_OR_RETURN(const auto values, CanonicalConfigValues(given));
  for (const Field& f : Fields()) {
    auto it = values.find(f.key.name);
    if (it != values.end()) FLAP_RETURN_IF_ERROR(f.set(*config, it->second));
  }
  return Status::OK();
}

StatusOr<TrialConfig> TrialConfigFromText(const std::string& text, const std::string& source,
                                          const std::map<std::string, std::string>& overrides) {
  using Values = std::map<std::string, std::string>;
  FLAP_ASSIGN_OR_RETURN(Values values, ParseConfigText(text, source));
  FLAP_RETURN_IF_ERROR(Overlay(overrides, &values).WithContext(source + " with overrides"));
  TrialConfig config;
  Status s = ApplyConfigValues(values, &config);
  if (s.ok()) s = config.Validate();
  FLAP_RETURN_IF_ERROR(s.WithContext(source + (overrides.empty() ? "" : " with overrides")));
  return config;
}

std::map<std::string, std::string> TakeLocalKeys(std::map<std::string, std::string>* values) {
  std::map<std::string, std::string> local;
  for (auto it = values->begin(); it != values->end();) {
    if (IsLocalOnlyKey(it->first)) {
      local.insert(*it);
      it = values->erase(it);
    } else {
      ++it;
    }
  }
  return local;
}

StatusOr<TrialConfig> WorkerTrialConfig(const std::string& base_text, const std::string& source,
                                        const std::map<std::string, std::string>& local,
                                        const std::map<std::string, std::string>& trial) {
  using Values = std::map<std::string, std::string>;
  FLAP_ASSIGN_OR_RETURN(Values values, ParseConfigText(base_text, source));
  TakeLocalKeys(&values);
  FLAP_ASSIGN_OR_RETURN(Values from_trial, CanonicalConfigValues(trial));
  TakeLocalKeys(&from_trial);
  FLAP_RETURN_IF_ERROR(Overlay(local, &values).WithContext(source + " with the worker's own settings"));
  for (const auto& [key, value] : from_trial) values[key] = value;
  return TrialConfigFromText("", source, values);
}

StatusOr<ConfigArgs> ParseConfigArgs(const std::vector<std::string>& args) {
  po::options_description general("General");
  general.add_options()("help,h", "show the keys")("config,c", po::value<std::string>(), "INI config file");
  po::options_description all;
  all.add(general).add(Describe());
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(all).run(), vm);
  } catch (const po::unknown_option& e) {
    std::string flag = e.get_option_name();
    flag.erase(0, flag.find_first_not_of('-'));
    const std::string close = ClosestConfigKey(flag);
    return Status::InvalidArgument("unknown flag '--" + flag + "'" +
                                   (close.empty() ? "" : "; did you mean --" + close + "?") +
                                   " (--help lists the keys)");
  } catch (const po::error& e) {
    return Status::InvalidArgument(std::string("command line: ") + e.what());
  }
  ConfigArgs out;
  out.help = vm.count("help") > 0;
  if (out.help) {
    std::ostringstream text;
    text << all;
    out.help_text = text.str();
    return out;
  }
  if (vm.count("config")) out.file = vm["config"].as<std::string>();
  for (const auto& [key, value] : vm) {
    if (key != "config" && key != "help") out.flags[key] = value.as<std::string>();
  }
  return out;
}

Status ParseTrialConfig(const std::vector<std::string>& args, TrialConfig* config, bool* help_requested,
                        std::string* help_text) {
  FLAP_ASSIGN_OR_RETURN(ConfigArgs parsed, ParseConfigArgs(args));
  *help_requested = parsed.help;
  if (parsed.help) {
    *help_text = parsed.help_text;
    return Status::OK();
  }
  std::map<std::string, std::string> values;
  const std::string& file = parsed.file;
  if (!file.empty()) {
    StatusOr<std::string> text = ReadFileToString(file);
    if (!text.ok()) {
      return text.status().WithContext("config file '" + file + "' cannot be read");
    }
    FLAP_ASSIGN_OR_RETURN(values, ParseConfigText(*text, file));
  }
  FLAP_RETURN_IF_ERROR(Overlay(parsed.flags, &values).WithContext("command line"));  // flags beat the file
  Status s = ApplyConfigValues(values, config);
  if (!s.ok() && !file.empty()) s = s.WithContext("config '" + file + "' with overrides");
  FLAP_RETURN_IF_ERROR(s);
  return config->Validate();
}

StatusOr<TrialConfig> LoadTrialConfigFile(const std::string& path) {
  TrialConfig config;
  bool help = false;
  std::string text;
  FLAP_RETURN_IF_ERROR(ParseTrialConfig({"--config", path}, &config, &help, &text));
  return config;
}

}  // namespace flap
