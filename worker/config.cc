#include "worker/config.h"

#include <boost/program_options.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>

#include "common/local_keys.h"
#include "common/path_name.h"
#include "worker/core/device.h"
#include "worker/core/draw.h"
#include "worker/core/launcher.h"

namespace po = boost::program_options;

namespace flap::worker {
namespace {

// One configuration key: how to set it from text and how to print it.
struct Field {
  std::string name;
  std::string help;
  std::function<Status(TrialConfig&, const std::string&)> set;
  std::function<std::string(const TrialConfig&)> get;
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

std::string FormatDouble(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

// Accessor returning a reference to a member of TrialConfig.
template <typename T>
using Ref = std::function<T&(TrialConfig&)>;

template <typename T>
Field Number(std::string name, std::string help, Ref<T> ref) {
  Field f;
  f.name = name;
  f.help = std::move(help);
  f.set = [name, ref](TrialConfig& c, const std::string& v) { return ParseNumber(name, v, &ref(c)); };
  f.get = [ref](const TrialConfig& c) {
    T& value = ref(const_cast<TrialConfig&>(c));
    if constexpr (std::is_floating_point<T>::value) return FormatDouble(value);
    else return std::to_string(value);
  };
  return f;
}

Field Text(std::string name, std::string help, Ref<std::string> ref) {
  Field f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.set = [ref](TrialConfig& c, const std::string& v) {
    ref(c) = v;
    return Status::OK();
  };
  f.get = [ref](const TrialConfig& c) { return ref(const_cast<TrialConfig&>(c)); };
  return f;
}

Field Bool(std::string name, std::string help, Ref<bool> ref) {
  Field f;
  f.name = name;
  f.help = std::move(help);
  f.set = [name, ref](TrialConfig& c, const std::string& v) -> Status {
    if (v == "true" || v == "1" || v == "on") ref(c) = true;
    else if (v == "false" || v == "0" || v == "off") ref(c) = false;
    else return BadValue(name, v, "true or false");
    return Status::OK();
  };
  f.get = [ref](const TrialConfig& c) { return std::string(ref(const_cast<TrialConfig&>(c)) ? "true" : "false"); };
  return f;
}

#define FLAP_REF(type, expr) Ref<type>([](TrialConfig& c) -> type& { return c.expr; })

// Every key, in the order they are applied (model.preset first).
const std::vector<Field>& Fields() {
  static const std::vector<Field> fields = [] {
    std::vector<Field> f;
    Field preset = Text("model.preset", "architecture preset: tiny | base", FLAP_REF(std::string, preset));
    preset.set = [](TrialConfig& c, const std::string& v) -> Status {
      FLAP_ASSIGN_OR_RETURN(c.model, core::ModelConfig::Preset(v));
      c.preset = v;
      return Status::OK();
    };
    f.push_back(preset);
    f.push_back(Number("model.num_mel_bins", "mel bins", FLAP_REF(int, model.num_mel_bins)));
    f.push_back(Number("model.target_frames", "frames T after pad/crop", FLAP_REF(int, model.target_frames)));
    f.push_back(Number("model.patch_size", "patch side", FLAP_REF(int, model.patch_size)));
    f.push_back(Number("model.audio_width", "audio encoder width", FLAP_REF(int, model.audio_width)));
    f.push_back(Number("model.audio_depth", "audio encoder depth", FLAP_REF(int, model.audio_depth)));
    f.push_back(Number("model.audio_heads", "audio encoder heads", FLAP_REF(int, model.audio_heads)));
    f.push_back(Number("model.text_max_len", "caption tokens kept", FLAP_REF(int, model.text_max_len)));
    f.push_back(Number("model.text_width", "text encoder width", FLAP_REF(int, model.text_width)));
    f.push_back(Number("model.text_depth", "text encoder depth", FLAP_REF(int, model.text_depth)));
    f.push_back(Number("model.text_heads", "text encoder heads", FLAP_REF(int, model.text_heads)));
    f.push_back(Number("model.mlp_ratio", "MLP hidden = ratio x width", FLAP_REF(int, model.mlp_ratio)));
    f.push_back(Number("model.embed_dim", "joint embedding size D", FLAP_REF(int, model.embed_dim)));
    f.push_back(Number("model.decoder_width", "decoder width", FLAP_REF(int, model.decoder_width)));
    f.push_back(Number("model.decoder_depth", "decoder depth", FLAP_REF(int, model.decoder_depth)));
    f.push_back(Number("model.decoder_heads", "decoder heads", FLAP_REF(int, model.decoder_heads)));
    f.push_back(Text("model.init_audio", "safetensors file initialising the audio encoder (AudioMAE / ViT names, docs/warm_start.md); empty = none",
                     FLAP_REF(std::string, init_audio)));
    f.push_back(Text("model.init_text", "safetensors file initialising the text encoder (CLIP text names, docs/warm_start.md); empty = none",
                     FLAP_REF(std::string, init_text)));
    f.push_back(Number("mask.ratio", "fraction of tokens dropped in training, [0, 1)", FLAP_REF(double, mask.ratio)));
    Field strategy;
    strategy.name = "mask.strategy";
    strategy.help = "token dropping: 2d (random patches) | 1d (whole time columns)";
    strategy.set = [](TrialConfig& c, const std::string& v) -> Status {
      FLAP_ASSIGN_OR_RETURN(c.mask.strategy, core::ParseMaskStrategy(v));
      return Status::OK();
    };
    strategy.get = [](const TrialConfig& c) { return std::string(core::MaskStrategyName(c.mask.strategy)); };
    f.push_back(strategy);
    f.push_back(Number("mask.views", "masked views of each clip per step (independent keep sets, losses averaged); > 1 needs mask.ratio > 0",
                       FLAP_REF(int, mask.views)));
    f.push_back(Number("recon.weight", "reconstruction loss weight lambda; 0 = off", FLAP_REF(double, loss.recon_weight)));
    f.push_back(Number("loss.logit_scale_init", "initial log logit scale", FLAP_REF(double, loss.logit_scale_init)));
    f.push_back(Number("loss.logit_scale_max", "clamp of the log logit scale", FLAP_REF(double, loss.logit_scale_max)));
    Field augment = Text("text.augment", "caption augmentation: off | on | probability", FLAP_REF(std::string, augment));
    augment.set = [](TrialConfig& c, const std::string& v) -> Status {
      FLAP_ASSIGN_OR_RETURN(c.augment_prob, ParseAugmentPolicy(v));
      c.augment = v;
      return Status::OK();
    };
    f.push_back(augment);
    f.push_back(Number("optim.lr", "peak learning rate", FLAP_REF(double, optim.lr)));
    f.push_back(Number("optim.min_lr", "final learning rate", FLAP_REF(double, optim.min_lr)));
    f.push_back(Number("optim.weight_decay", "AdamW weight decay", FLAP_REF(double, optim.weight_decay)));
    f.push_back(Number("optim.beta1", "AdamW beta1", FLAP_REF(double, optim.beta1)));
    f.push_back(Number("optim.beta2", "AdamW beta2", FLAP_REF(double, optim.beta2)));
    f.push_back(Number("optim.eps", "AdamW epsilon", FLAP_REF(double, optim.eps)));
    f.push_back(Number("optim.warmup_steps", "linear warm-up steps", FLAP_REF(int64_t, optim.warmup_steps)));
    f.push_back(Number("optim.total_steps", "schedule length; 0 = the run's length", FLAP_REF(int64_t, optim.total_steps)));
    f.push_back(Number("optim.grad_clip", "max gradient norm; <= 0 = off", FLAP_REF(double, optim.grad_clip)));
    f.push_back(Number("train.seed", "trial seed", FLAP_REF(uint64_t, train.seed)));
    f.push_back(Number("train.batch_size", "samples per step and rank", FLAP_REF(int64_t, train.batch_size)));
    f.push_back(Number("train.epochs", "passes over the training split", FLAP_REF(int64_t, train.epochs)));
    f.push_back(Number("train.max_steps", "stop after this many steps; 0 = epochs decide", FLAP_REF(int64_t, train.max_steps)));
    f.push_back(Number("train.max_seconds", "wall budget in seconds of the training loop (evaluation excluded; kept across resumes); 0 = none",
                       FLAP_REF(double, train.max_seconds)));
    f.push_back(Number("train.max_samples", "stop once this many training samples (all ranks) are seen; 0 = none",
                       FLAP_REF(int64_t, train.max_samples)));
    f.push_back(Number("train.eval_every", "steps between evaluations; 0 = at the end only", FLAP_REF(int64_t, train.eval_every)));
    f.push_back(Number("train.eval_batch_size", "evaluation batch size", FLAP_REF(int64_t, train.eval_batch_size)));
    f.push_back(Number("train.log_every", "steps between progress lines", FLAP_REF(int64_t, train.log_every)));
    f.push_back(Number("train.threads", "LibTorch intra-op threads; 0 = automatic (1 on CPU)", FLAP_REF(int, train.threads)));
    f.push_back(Text("train.output_dir", "folder for summary.json and model.pt", FLAP_REF(std::string, train.output_dir)));
    f.push_back(Text("train.device", "auto | cpu | cuda | cuda:N; auto = this rank's GPU when one is visible, else the CPU",
                     FLAP_REF(std::string, train.device)));
    f.push_back(Text("train.precision", "fp32 | bf16 (bf16 autocast forward; losses and optimizer stay fp32)",
                     FLAP_REF(std::string, train.precision)));
    f.push_back(Text("data.path", "dataset folder (manifest.json)", FLAP_REF(std::string, data.path)));
    f.push_back(Text("data.train_split", "training split name", FLAP_REF(std::string, data.train_split)));
    f.push_back(Text("data.eval_split", "evaluation split name", FLAP_REF(std::string, data.eval_split)));
    f.push_back(Number("data.loader_threads", "loader feature threads; 0 = one per core", FLAP_REF(int, data.loader_threads)));
    f.push_back(Number("data.shuffle_shards", "shards whose samples are shuffled together", FLAP_REF(int, data.shuffle_shards)));
    f.push_back(Number("data.prefetch_batches", "ready batches queued ahead of training", FLAP_REF(int, data.prefetch_batches)));
    f.push_back(Text("data.fbank_cache", "feature cache: auto (memory up to data.feature_memory_mb, the rest under DATA/.fbank-cache) | off | a folder",
                     FLAP_REF(std::string, data.fbank_cache)));
    f.push_back(Number("data.feature_memory_mb", "feature cache memory budget of the process in MiB; 0 = disk only",
                       FLAP_REF(int64_t, data.feature_memory_mb)));
    f.push_back(Number("data.max_frames", "longest stored features of a clip in frames (10 ms); crops are cut from them",
                       FLAP_REF(int, data.max_frames)));
    f.push_back(Text("data.crop", "training window of a longer clip: random (seeded by seed, clip, epoch) | first",
                     FLAP_REF(std::string, data.crop)));
    f.push_back(Text("eval.crop", "evaluation window of a longer clip: first | center | chunks (mean over windows covering it)",
                     FLAP_REF(std::string, eval.crop)));
    f.push_back(Text("ckpt.root", "checkpoint root folder; empty = no checkpoints", FLAP_REF(std::string, ckpt.root)));
    f.push_back(Number("ckpt.every", "steps between checkpoints; 0 = at the end and on stop signals", FLAP_REF(int64_t, ckpt.every)));
    f.push_back(Number("ckpt.keep_last", "retention: newest N checkpoints", FLAP_REF(int, ckpt.keep_last)));
    f.push_back(Number("ckpt.keep_best", "retention: best K by ckpt.metric", FLAP_REF(int, ckpt.keep_best)));
    f.push_back(Text("ckpt.metric", "evaluation metric for keep_best (map10, t2a_r1, ...)", FLAP_REF(std::string, ckpt.metric)));
    f.push_back(Number("ckpt.stop_deadline", "seconds from a stop signal to exit, whatever is in flight", FLAP_REF(double, ckpt.stop_deadline)));
    Field launcher = Text("dist.launcher", "where rank and world size come from: auto | none | env | mpi | slurm",
                          FLAP_REF(std::string, dist.launcher));
    launcher.set = [](TrialConfig& c, const std::string& v) -> Status {
      FLAP_RETURN_IF_ERROR(core::ParseLauncher(v).status());
      c.dist.launcher = v;
      return Status::OK();
    };
    f.push_back(launcher);
    f.push_back(Text("dist.backend", "collectives: auto | gloo | nccl", FLAP_REF(std::string, dist.backend)));
    f.push_back(Number("dist.timeout", "seconds a rank waits for the others (rendezvous, each collective)", FLAP_REF(double, dist.timeout)));
    f.push_back(Number("dist.bucket_mb", "gradient all-reduce bucket in MiB; 0 = one per parameter", FLAP_REF(double, dist.bucket_mb)));
    f.push_back(Bool("dist.overlap", "all-reduce gradient buckets during backward (true) or after it (false)", FLAP_REF(bool, dist.overlap)));
    f.push_back(Text("train.trial_id", "names the trial's checkpoints; empty = trial-<config hash>", FLAP_REF(std::string, trial_id)));
    f.push_back(Text("metrics.listen", "host:port to serve Prometheus /metrics on (port 0: any); empty = off", FLAP_REF(std::string, metrics.listen)));
    f.push_back(Text("metrics.sd_dir", "folder for this rank's Prometheus file_sd target file", FLAP_REF(std::string, metrics.sd_dir)));
    return f;
  }();
  return fields;
}

// Keys that do not change what training computes (excluded from Hash()).
bool IsOperational(const std::string& key) {
  return key == "train.output_dir" || key == "train.log_every" || key == "train.threads" || key == "train.device" ||
         key == "data.loader_threads" || key == "data.prefetch_batches" || key == "data.fbank_cache" ||
         key == "data.feature_memory_mb" ||
         key == "data.path" || key == "train.trial_id" ||
         key.rfind("ckpt.", 0) == 0 || key.rfind("dist.", 0) == 0 || key.rfind("metrics.", 0) == 0;
}

// Keys added after configs were first hashed, at the value that means "as before": left out of
// Hash() at that value, so that the checkpoints of earlier trials keep resuming.
bool AtEarlierDefault(const std::string& key, const std::string& value) {
  static const std::map<std::string, std::string> defaults = {
      {"model.init_audio", ""}, {"model.init_text", ""}, {"mask.views", "1"}, {"train.precision", "fp32"},
      {"train.max_seconds", "0"}, {"train.max_samples", "0"}};
  auto it = defaults.find(key);
  return it != defaults.end() && it->second == value;
}

po::options_description Describe() {
  po::options_description desc("Trial configuration (INI sections map to prefixes: [mask] ratio = 0.5 is mask.ratio)");
  for (const Field& f : Fields()) {
    const std::string help = IsLocalOnlyKey(f.name) ? f.help + " [local to this worker: not a sweep factor]" : f.help;
    desc.add_options()(f.name.c_str(), po::value<std::string>(), help.c_str());
  }
  return desc;
}

Status Apply(const po::variables_map& vm, TrialConfig* config) {
  for (const Field& f : Fields()) {
    auto it = vm.find(f.name);
    if (it == vm.end()) continue;
    FLAP_RETURN_IF_ERROR(f.set(*config, it->second.as<std::string>()));
  }
  return Status::OK();
}

Status ParseFile(const std::string& path, const po::options_description& desc, po::variables_map* vm) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("config file '" + path + "' cannot be opened");
  try {
    po::store(po::parse_config_file(in, desc, /*allow_unregistered=*/false), *vm);
  } catch (const po::unknown_option& e) {
    return Status::InvalidArgument("config file '" + path + "': unknown key '" + e.get_option_name() +
                                   "' (flap-worker train --help lists the keys)");
  } catch (const po::error& e) {
    return Status::InvalidArgument("config file '" + path + "': " + e.what());
  }
  return Status::OK();
}

}  // namespace

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
  FLAP_RETURN_IF_ERROR(model.Validate());
  FLAP_RETURN_IF_ERROR(mask.Validate());
  FLAP_RETURN_IF_ERROR(loss.Validate());
  core::OptimConfig o = optim;
  if (o.total_steps == 0) o.total_steps = 1;  // derived later from the data
  if (o.total_steps < 0) return Status::InvalidArgument("optim.total_steps must be >= 0");
  FLAP_RETURN_IF_ERROR(o.Validate());
  if (train.batch_size < 2) return Status::InvalidArgument("train.batch_size must be >= 2 (contrastive negatives)");
  if (train.epochs < 1) return Status::InvalidArgument("train.epochs must be >= 1");
  if (train.max_steps < 0) return Status::InvalidArgument("train.max_steps must be >= 0");
  if (!(train.max_seconds >= 0)) return Status::InvalidArgument("train.max_seconds must be >= 0 (0: no time budget)");
  if (train.max_samples < 0) return Status::InvalidArgument("train.max_samples must be >= 0 (0: no sample budget)");
  if (train.eval_every < 0) return Status::InvalidArgument("train.eval_every must be >= 0");
  if (train.eval_batch_size < 1) return Status::InvalidArgument("train.eval_batch_size must be >= 1");
  if (train.log_every < 1) return Status::InvalidArgument("train.log_every must be >= 1");
  if (train.threads < 0) return Status::InvalidArgument("train.threads must be >= 0");
  if (!trial_id.empty()) {  // it names the trial's checkpoint folder under ckpt.root
    if (std::string p = PathNameProblem(trial_id, 255); !p.empty()) {
      return Status::InvalidArgument("train.trial_id '" + trial_id + "' " + p);
    }
  }
  FLAP_RETURN_IF_ERROR(core::ParseDeviceSpec(train.device).status());
  FLAP_RETURN_IF_ERROR(core::ParsePrecision(train.precision).status());
  if (data.loader_threads < 0) return Status::InvalidArgument("data.loader_threads must be >= 0");
  if (data.shuffle_shards < 1) return Status::InvalidArgument("data.shuffle_shards must be >= 1");
  if (data.prefetch_batches < 1) return Status::InvalidArgument("data.prefetch_batches must be >= 1");
  if (data.feature_memory_mb < 0) return Status::InvalidArgument("data.feature_memory_mb must be >= 0");
  if (data.max_frames < model.target_frames) {
    return Status::InvalidArgument("data.max_frames (" + std::to_string(data.max_frames) + ") must be >= model.target_frames (" +
                                   std::to_string(model.target_frames) + ")");
  }
  if (data.crop != "random" && data.crop != "first") {
    return Status::InvalidArgument("data.crop must be random or first, got '" + data.crop + "'");
  }
  if (eval.crop != "first" && eval.crop != "center" && eval.crop != "chunks") {
    return Status::InvalidArgument("eval.crop must be first, center or chunks, got '" + eval.crop + "'");
  }
  if (ckpt.every < 0) return Status::InvalidArgument("ckpt.every must be >= 0");
  if (ckpt.keep_last < 1) return Status::InvalidArgument("ckpt.keep_last must be >= 1");
  if (ckpt.keep_best < 0) return Status::InvalidArgument("ckpt.keep_best must be >= 0");
  if (!(ckpt.stop_deadline >= 0)) return Status::InvalidArgument("ckpt.stop_deadline must be >= 0");
  if (dist.backend != "auto" && dist.backend != "gloo" && dist.backend != "nccl") {
    return Status::InvalidArgument("dist.backend must be auto, gloo or nccl, got '" + dist.backend + "'");
  }
  if (!(dist.timeout > 0)) return Status::InvalidArgument("dist.timeout must be > 0 seconds");
  if (!(dist.bucket_mb >= 0)) return Status::InvalidArgument("dist.bucket_mb must be >= 0");
  return Status::OK();
}

std::map<std::string, std::string> TrialConfig::ToMap() const {
  std::map<std::string, std::string> m;
  for (const Field& f : Fields()) m[f.name] = f.get(*this);
  return m;
}

nlohmann::json TrialConfig::ToJson() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : ToMap()) j[k] = v;
  return j;
}

std::string TrialConfig::Hash() const {
  std::string canonical;
  for (const auto& [k, v] : ToMap()) {
    if (IsOperational(k) || AtEarlierDefault(k, v)) continue;
    canonical += k + "=" + v + "\n";
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx",
                static_cast<unsigned long long>(core::Mix64(core::HashString(canonical))));
  return buf;
}

std::string TrialConfig::TrialId() const { return trial_id.empty() ? "trial-" + Hash() : trial_id; }

Status ParseTrialConfig(const std::vector<std::string>& args, TrialConfig* config,
                        bool* help_requested, std::string* help_text) {
  po::options_description general("General");
  general.add_options()("help,h", "show the keys")("config,c", po::value<std::string>(), "INI config file");
  po::options_description keys = Describe();
  po::options_description all;
  all.add(general).add(keys);
  po::variables_map vm;
  try {
    // Command line first: po::store keeps the first value it sees, so flags beat the file.
    po::store(po::command_line_parser(args).options(all).run(), vm);
  } catch (const po::unknown_option& e) {
    return Status::InvalidArgument("unknown flag '" + e.get_option_name() + "' (--help lists the keys)");
  } catch (const po::error& e) {
    return Status::InvalidArgument(std::string("command line: ") + e.what());
  }
  *help_requested = vm.count("help") > 0;
  if (*help_requested) {
    std::ostringstream out;
    out << all;
    *help_text = out.str();
    return Status::OK();
  }
  std::string file;
  if (vm.count("config")) {
    file = vm["config"].as<std::string>();
    FLAP_RETURN_IF_ERROR(ParseFile(file, keys, &vm));
  }
  Status s = Apply(vm, config);
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

}  // namespace flap::worker
