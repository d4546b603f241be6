#include "worker/export.h"

#include <ATen/ATen.h>
#include <torch/serialize.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <ostream>
#include <set>
#include <sstream>

#include "common/atomic_file.h"
#include "common/file_util.h"
#include "sharding/manifest.h"
#include "worker/evaluator.h"
#include "worker/safetensors.h"
#include "worker/trainer.h"
#include "worker/warm_start.h"

#ifndef FLAP_CODE_VERSION
#define FLAP_CODE_VERSION "unknown"
#endif

namespace flap::worker {
namespace {

namespace fs = std::filesystem;

// The JSON object in file `path`; NotFound when it is absent.
StatusOr<nlohmann::json> ReadJsonObject(const std::string& path) {
  FLAP_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::Corruption("'" + path + "' is not a JSON object");
  return j;
}

// What a training run recorded beside its model.pt.
struct RunRecord {
  std::string config_hash;  // empty: none recorded
  std::string kind;         // "checkpoint" | "summary" | "" (none)
  nlohmann::json training = nlohmann::json::object();
  nlohmann::json evaluation = nlohmann::json::object();
  std::string trial_id;
  std::map<std::string, std::string> config;  // the config the run recorded; empty: none
};

// The recorded config `j` (TrialConfig::ToJson) of `file` into *out.
Status ReadConfigMap(const nlohmann::json& j, const std::string& file, std::map<std::string, std::string>* out) {
  if (!j.is_object()) return Status::Corruption("'" + file + "': its config is not an object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it.value().is_string()) return Status::Corruption("'" + file + "': config key " + it.key() + " is not a string");
    (*out)[it.key()] = it.value().get<std::string>();
  }
  return Status::OK();
}

std::string DirOf(const std::string& path) {
  const fs::path p(path);
  return p.has_parent_path() ? p.parent_path().string() : ".";
}

StatusOr<RunRecord> ReadRunRecord(const std::string& model_path) {
  RunRecord r;
  const std::string dir = DirOf(model_path);
  const std::string manifest = dir + "/MANIFEST.json", summary = dir + "/summary.json";
  if (fs::exists(manifest)) {
    // A checkpoint folder: the store's manifest names the trial, the step's validation metrics
    // and every file's checksum.
    FLAP_ASSIGN_OR_RETURN(nlohmann::json m, ReadJsonObject(manifest));
    r.kind = "checkpoint";
    r.config_hash = m.value("config_hash", "");
    r.trial_id = m.value("trial", "");
    const std::string name = fs::path(model_path).filename().string();
    bool listed = false;
    if (m.contains("files") && m["files"].is_array()) {
      for (const auto& f : m["files"]) {
        if (!f.is_object() || f.value("name", "") != name) continue;
        listed = true;
        FLAP_ASSIGN_OR_RETURN(std::string got, sharding::FileXxh64(model_path));
        if (got != f.value("xxh64", "")) {
          return Status::Corruption("'" + model_path + "' does not match its checkpoint's checksum (XXH64 " + got +
                                    ", MANIFEST.json says " + f.value("xxh64", "?") + "): the file is damaged");
        }
      }
    }
    if (!listed) return Status::Corruption("'" + manifest + "' does not list '" + name + "'");
    nlohmann::json val = m.contains("metrics") && m["metrics"].is_object() ? m["metrics"] : nlohmann::json::object();
    val["step"] = m.value("step", int64_t{-1});
    r.evaluation["validation"] = val;
    r.training["step"] = m.value("step", int64_t{-1});
    if (fs::exists(dir + "/state.json")) {
      FLAP_ASSIGN_OR_RETURN(nlohmann::json st, ReadJsonObject(dir + "/state.json"));
      if (st.contains("config")) FLAP_RETURN_IF_ERROR(ReadConfigMap(st["config"], dir + "/state.json", &r.config));
      if (st.contains("progress") && st["progress"].is_object()) {
        const nlohmann::json& p = st["progress"];
        for (const char* k : {"samples", "flops", "train_seconds"}) {
          if (p.contains(k)) r.training[k] = p[k];
        }
      }
    }
  } else if (fs::exists(summary)) {
    FLAP_ASSIGN_OR_RETURN(nlohmann::json s, ReadJsonObject(summary));
    r.kind = "summary";
    r.config_hash = s.value("config_hash", "");
    r.trial_id = s.value("trial_id", "");
    if (s.contains("config")) FLAP_RETURN_IF_ERROR(ReadConfigMap(s["config"], summary, &r.config));
    r.training["step"] = s.value("steps", int64_t{0});
    r.training["samples"] = s.value("samples_seen", int64_t{0});
    if (s.contains("budget") && s["budget"].is_object()) {
      r.training["flops"] = s["budget"].value("flops", 0.0);
      r.training["train_seconds"] = s["budget"].value("train_seconds", 0.0);
      r.training["budget_reached"] = s["budget"].value("reached", "");
    }
    // train.output_dir's model.pt holds the final weights: the final validation figures
    // describe them (the test figures, when present, are those of validation's choice).
    if (s.contains("eval")) {
      nlohmann::json val = s["eval"];
      val["split"] = s.value("val_split", "");
      val["step"] = s.value("steps", int64_t{0});
      if (s.contains("eval_history") && s["eval_history"].is_array() && !s["eval_history"].empty()) {
        const nlohmann::json& last = s["eval_history"].back();
        if (last.contains("set")) val["set"] = last["set"];
      }
      r.evaluation["validation"] = val;
    }
    if (s.contains("test") && s["test"].is_object() && !s["test"].empty()) r.evaluation["test"] = s["test"];
  }
  return r;
}

}  // namespace

const char* CodeVersion() { return FLAP_CODE_VERSION; }

Status CheckNewFolder(const std::string& out_dir) {
  std::error_code ec;
  if (fs::is_symlink(fs::symlink_status(out_dir, ec))) {
    return Status::InvalidArgument("'" + out_dir + "' is a symbolic link: name a new folder itself, not a link");
  }
  if (fs::exists(out_dir, ec) && !(fs::is_directory(out_dir, ec) && fs::is_empty(out_dir, ec))) {
    return Status::AlreadyExists("'" + out_dir + "' already exists and is not an empty folder: nothing is overwritten");
  }
  return Status::OK();
}

Status WriteNewFolder(const std::string& out_dir, const std::map<std::string, std::string>& files) {
  FLAP_RETURN_IF_ERROR(CheckNewFolder(out_dir));
  const fs::path out(out_dir);
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) return Status::IOError("cannot create '" + parent.string() + "': " + ec.message());
  std::string staging = (parent / ("." + out.filename().string() + ".tmp-XXXXXX")).string();
  if (::mkdtemp(staging.data()) == nullptr) {
    return Status::IOError("cannot create a folder beside '" + out_dir + "': " + ErrnoMessage(errno));
  }
  auto write_all = [&]() -> Status {
    for (const auto& [name, bytes] : files) FLAP_RETURN_IF_ERROR(flap::WriteFileAtomic(staging + "/" + name, bytes));
    std::error_code rec;
    if (fs::exists(out_dir, rec)) fs::remove(out_dir, rec);  // an empty folder (CheckNewFolder)
    fs::rename(staging, out_dir, rec);
    if (rec) return Status::IOError("cannot move the new folder into '" + out_dir + "': " + rec.message());
    return flap::SyncDir(parent.string());
  };
  Status s = write_all();
  if (!s.ok()) {
    std::error_code rec;
    fs::remove_all(staging, rec);
  }
  return s;
}

std::map<std::string, at::Tensor> ModelTensors(core::FlapModel& model) {
  std::map<std::string, at::Tensor> out;
  at::NoGradGuard no_grad;
  for (const auto& p : model->named_parameters(/*recurse=*/true)) {
    out[p.key()] = p.value().detach().to(at::kCPU, at::kFloat).contiguous();
  }
  for (const auto& b : model->named_buffers(/*recurse=*/true)) {
    out[b.key()] = b.value().detach().to(at::kCPU, at::kFloat).contiguous();
  }
  return out;
}

Status LoadModelTensors(core::FlapModel& model, const std::map<std::string, at::Tensor>& tensors,
                        const std::string& file) {
  std::map<std::string, at::Tensor> targets;
  for (const auto& p : model->named_parameters(true)) targets[p.key()] = p.value();
  for (const auto& b : model->named_buffers(true)) targets[b.key()] = b.value();
  std::vector<std::string> missing, extra, shapes;
  for (const auto& [name, t] : targets) {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      missing.push_back(name);
    } else if (!it->second.sizes().equals(t.sizes())) {
      shapes.push_back(name + " " + ShapeText(it->second.sizes()) + " where the model has " + ShapeText(t.sizes()));
    }
  }
  for (const auto& [name, t] : tensors) {
    if (!targets.count(name)) extra.push_back(name);
  }
  if (!missing.empty() || !extra.empty() || !shapes.empty()) {
    auto list = [](const std::vector<std::string>& v) {
      std::string s;
      for (size_t i = 0; i < v.size() && i < 5; ++i) s += (i ? ", " : "") + v[i];
      if (v.size() > 5) s += ", ... (" + std::to_string(v.size()) + " in all)";
      return s;
    };
    std::string why;
    if (!shapes.empty()) why += "; shape differs: " + list(shapes);
    if (!missing.empty()) why += "; missing: " + list(missing);
    if (!extra.empty()) why += "; not in this model: " + list(extra);
    return Status::InvalidArgument("'" + file + "' is a model of another architecture than its config.json builds" +
                                   why);
  }
  at::NoGradGuard no_grad;
  for (auto& [name, t] : targets) t.copy_(tensors.at(name));
  return Status::OK();
}

std::map<std::string, std::string> ModelConfigValues(const TrialConfig& config) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : config.ToMap()) {
    const bool model_key = k.rfind("model.", 0) == 0 && k != "model.init_audio" && k != "model.init_text";
    if (model_key || k == "data.max_frames" || k == "eval.crop") out[k] = v;
  }
  return out;
}

StatusOr<TrialConfig> RunConfigOf(const std::string& model_path, const std::vector<std::string>& args) {
  TrialConfig config;
  bool has_file = false;
  for (const std::string& a : args) has_file = has_file || a == "--config" || a == "-c" || a.rfind("--config=", 0) == 0;
  if (!has_file) {
    FLAP_ASSIGN_OR_RETURN(RunRecord record, ReadRunRecord(model_path));
    if (!record.config.empty()) {
      FLAP_RETURN_IF_ERROR(ApplyConfigValues(record.config, &config)
                               .WithContext("the config recorded in " + record.kind + " beside '" + model_path + "'"));
    }
  }
  bool help = false;
  std::string help_text;
  FLAP_RETURN_IF_ERROR(ParseTrialConfig(args, &config, &help, &help_text));
  return config;
}

namespace {

// FailedPrecondition naming every key that builds the model (model.*) where
// `config` differs from what the run recorded; OK when the run recorded no config.
Status CheckAgainstRecord(const TrialConfig& config, const RunRecord& record, const std::string& model_path) {
  if (record.config.empty()) return Status::OK();
  TrialConfig recorded;
  FLAP_RETURN_IF_ERROR(ApplyConfigValues(record.config, &recorded).WithContext("'" + model_path + "' record"));
  const auto want = ModelConfigValues(recorded), got = ModelConfigValues(config);
  std::string diff;
  for (const auto& [k, v] : want) {
    if (k == "eval.crop" || k == "data.max_frames") continue;  // how it is fed: the caller's choice
    auto it = got.find(k);
    const std::string g = it == got.end() ? "(unset)" : it->second;
    if (g != v) diff += (diff.empty() ? "" : ", ") + k + " = " + v + " in the run, " + g + " given";
  }
  if (diff.empty()) return Status::OK();
  return Status::FailedPrecondition("'" + model_path + "' was trained with another model config (its " + record.kind +
                                    " says): " + diff + " (give the run's config, or --force)");
}

}  // namespace

StatusOr<nlohmann::json> ExportModel(const ExportOptions& options, const std::string& out_dir, std::ostream& log) {
  TrialConfig config = options.config;
  FLAP_RETURN_IF_ERROR(config.Validate());
  if (options.model_path.empty()) return Status::InvalidArgument("--model is not set: export needs a model.pt");
  if (out_dir.empty()) return Status::InvalidArgument("--out is not set");
  if (config.data.path.empty()) {
    return Status::InvalidArgument("data.path is not set: the export takes its tokenizer from the training dataset");
  }
  FLAP_RETURN_IF_ERROR(CheckNewFolder(out_dir));
  FLAP_ASSIGN_OR_RETURN(RunRecord record, ReadRunRecord(options.model_path));
  if (!options.force) FLAP_RETURN_IF_ERROR(CheckAgainstRecord(config, record, options.model_path));
  FLAP_ASSIGN_OR_RETURN(sharding::Manifest manifest, sharding::ReadManifest(config.data.path));
  FLAP_ASSIGN_OR_RETURN(sharding::TextTokenizer tokenizer,
                        sharding::TextTokenizer::ForDataset(config.data.path, manifest, config.text.tokenizer));
  // The tokenizer's files, copied under their usual names: tokenizer.model; vocab.json and
  // merges.txt; or tokenizer.json.
  std::map<std::string, std::string> tokenizer_files;
  nlohmann::json tokenizer_names = nlohmann::json::array();
  for (const std::string& path : tokenizer.files()) {
    const std::string name =
        tokenizer.kind() == sharding::TextTokenizer::Kind::kSentencePiece ? "tokenizer.model"
                                                                          : fs::path(path).filename().string();
    if (name == "model.safetensors" || name == "config.json" || name == "card.json") {
      return Status::InvalidArgument("text.tokenizer '" + path + "': an export cannot hold a tokenizer file named '" +
                                     name + "'");
    }
    FLAP_ASSIGN_OR_RETURN(tokenizer_files[name], ReadFileToString(path));
    tokenizer_names.push_back(name);
  }
  FLAP_ASSIGN_OR_RETURN(std::string manifest_xxh64,
                        sharding::FileXxh64(config.data.path + "/" + sharding::kManifestFileName));
  auto model = LoadModel(&config, tokenizer, options.model_path);
  if (!model.ok()) return Status::InvalidArgument(model.status().message());
  const std::map<std::string, at::Tensor> tensors = ModelTensors(*model);
  // The layout the model was built with (an "auto" resolved against its warm-start file).
  std::map<std::string, std::string> model_values = ModelConfigValues(config);
  model_values["model.audio_pos_layout"] = (*model)->config().audio_pos_layout;
  int64_t parameters = 0;
  for (const auto& p : (*model)->parameters()) parameters += p.numel();

  nlohmann::json cfg = {{"format", kExportFormat},
                        {"format_version", kExportFormatVersion},
                        {"config", model_values},
                        {"sample_rate", manifest.sample_rate},
                        {"tokenizer",
                         {{"kind", tokenizer.kind_name()},
                          {"files", tokenizer_names},
                          {"identity", tokenizer.identity()},
                          {"vocab_size", tokenizer.vocab_size()}}}};
  if (tokenizer.kind() == sharding::TextTokenizer::Kind::kSentencePiece) {
    // The fields of the format's first exports, which named one SentencePiece file.
    cfg["tokenizer"]["file"] = "tokenizer.model";
    cfg["tokenizer"]["xxh64"] = tokenizer.identity();
  }
  nlohmann::json splits = nlohmann::json::object();
  for (const std::string& split : manifest.Splits()) splits[split] = manifest.NumSamples(split);
  nlohmann::json card = {
      {"format", "flap-model-card"},
      {"format_version", 1},
      {"model",
       {{"source", options.model_path},
        {"source_kind", record.kind.empty() ? "model.pt" : record.kind},
        {"config_hash", record.config_hash.empty() ? config.Hash() : record.config_hash},
        {"trial_id", record.trial_id.empty() ? config.TrialId() : record.trial_id},
        {"seed", config.train.seed},
        {"parameters", parameters},
        {"tensors", tensors.size()}}},
      {"data",
       {{"name", manifest.name},
        {"path", config.data.path},
        {"clips", splits},
        {"manifest_xxh64", manifest_xxh64},
        {"train_split", config.data.train_split},
        {"val_split", config.data.val_split},
        {"test_split", config.data.test_split}}},
      {"tokenizer", cfg["tokenizer"]},
      {"training", record.training},
      {"evaluation", record.evaluation},
      {"code_version", CodeVersion()}};
  if (!options.card_extra.is_null()) card["sweep"] = options.card_extra;

  FLAP_ASSIGN_OR_RETURN(std::string weights,
                        EncodeSafetensors(tensors, {{"format", kExportFormat},
                                                    {"format_version", std::to_string(kExportFormatVersion)},
                                                    {kTokenizerKindKey, tokenizer.kind_name()},
                                                    {kTokenizerIdentityKey, tokenizer.identity()}}));
  std::map<std::string, std::string> files = std::move(tokenizer_files);
  files["model.safetensors"] = std::move(weights);
  files["config.json"] = cfg.dump(2) + "\n";
  files["card.json"] = card.dump(2) + "\n";
  FLAP_RETURN_IF_ERROR(WriteNewFolder(out_dir, files));
  log << "exported '" << options.model_path << "' (" << parameters << " parameters, tokenizer "
      << tokenizer.kind_name() << " " << tokenizer.identity() << ") to '" << out_dir << "'" << std::endl;
  return card;
}

StatusOr<InferenceModel> LoadInferenceModel(const std::string& model, const TrialConfig& config_in,
                                            const c10::Device& device, bool force) {
  if (model.empty()) return Status::InvalidArgument("--model is not set");
  std::error_code ec;
  if (!fs::exists(model, ec)) return Status::NotFound("model '" + model + "' does not exist");
  TrialConfig config;
  std::optional<sharding::TextTokenizer> tokenizer;
  std::string source;
  int sample_rate = sharding::kSampleRate;
  core::FlapModel net{nullptr};
  if (fs::is_directory(model, ec)) {
    const std::string config_path = model + "/config.json";
    if (!fs::exists(config_path, ec)) {
      return Status::InvalidArgument("'" + model + "' is a folder without config.json: not an export (flap-worker export)");
    }
    FLAP_ASSIGN_OR_RETURN(nlohmann::json cfg, ReadJsonObject(config_path));
    if (cfg.value("format", "") != kExportFormat) {
      return Status::InvalidArgument("'" + config_path + "' is not a flap-export config (format '" +
                                     cfg.value("format", "") + "')");
    }
    if (cfg.value("format_version", 0) != kExportFormatVersion) {
      return Status::InvalidArgument("'" + config_path + "' has format_version " +
                                     std::to_string(cfg.value("format_version", 0)) + "; this build reads " +
                                     std::to_string(kExportFormatVersion));
    }
    std::map<std::string, std::string> values;
    if (cfg.contains("config") && cfg["config"].is_object()) {
      for (auto it = cfg["config"].begin(); it != cfg["config"].end(); ++it) {
        if (!it.value().is_string()) return Status::Corruption("'" + config_path + "': config." + it.key() + " is not a string");
        values[it.key()] = it.value().get<std::string>();
      }
    }
    FLAP_RETURN_IF_ERROR(ApplyConfigValues(values, &config).WithContext("'" + config_path + "'"));
    FLAP_RETURN_IF_ERROR(config.Validate().WithContext("'" + config_path + "'"));
    const nlohmann::json tok = cfg.value("tokenizer", nlohmann::json::object());
    const std::string kind = tok.value("kind", "sentencepiece");
    // sentencepiece: one model file ("file"; the first exports name it alone); bpe: vocab.json
    // and merges.txt, or tokenizer.json ("files").
    std::vector<std::string> tok_files;
    if (tok.contains("files") && tok["files"].is_array()) {
      for (const auto& f : tok["files"]) tok_files.push_back(f.is_string() ? f.get<std::string>() : "");
    } else {
      tok_files.push_back(tok.value("file", "tokenizer.model"));
    }
    for (const std::string& f : tok_files) {
      if (f.empty() || f.find('/') != std::string::npos) {
        return Status::Corruption("'" + config_path + "': the tokenizer's files must be file names in the folder");
      }
    }
    const std::string want = tok.value("identity", tok.value("xxh64", ""));
    if (kind == "sentencepiece" && tok_files.size() == 1) {
      FLAP_ASSIGN_OR_RETURN(tokenizer, sharding::TextTokenizer::LoadSentencePiece(model + "/" + tok_files[0]));
    } else if (kind == "bpe" && (tok_files.size() == 1 || tok_files.size() == 2)) {
      // A tokenizer.json file, or the folder holding vocab.json and merges.txt.
      FLAP_ASSIGN_OR_RETURN(
          tokenizer, sharding::TextTokenizer::LoadBpe(tok_files.size() == 1 ? model + "/" + tok_files[0] : model));
    } else {
      return Status::Corruption("'" + config_path + "': tokenizer kind '" + kind + "' with " +
                                std::to_string(tok_files.size()) + " files is not one this build reads");
    }
    if (tokenizer->identity() != want) {
      return Status::FailedPrecondition("tokenizer mismatch: " + tokenizer->Describe() +
                                        " in the folder, the model was trained with " + kind + " " +
                                        (want.empty() ? "?" : want) + " ('" + config_path + "')");
    }
    if (tokenizer->vocab_size() != tok.value("vocab_size", -1)) {
      return Status::FailedPrecondition("tokenizer mismatch: '" + tokenizer->path() + "' has " +
                                        std::to_string(tokenizer->vocab_size()) + " ids, config.json says " +
                                        std::to_string(tok.value("vocab_size", -1)));
    }
    sample_rate = cfg.value("sample_rate", sharding::kSampleRate);
    FLAP_ASSIGN_OR_RETURN(net, LoadModel(&config, *tokenizer, ""));  // the text tower's ids from the tokenizer
    const std::string weights = model + "/model.safetensors";
    FLAP_ASSIGN_OR_RETURN(auto tensors, ReadSafetensors(weights));
    FLAP_RETURN_IF_ERROR(LoadModelTensors(net, tensors, weights));
    source = "export '" + model + "'";
  } else {
    config = config_in;
    FLAP_RETURN_IF_ERROR(config.Validate());
    if (config.data.path.empty()) {
      return Status::InvalidArgument("data.path is not set: a model.pt needs its training dataset's tokenizer "
                                     "(or export it: flap-worker export)");
    }
    FLAP_ASSIGN_OR_RETURN(RunRecord record, ReadRunRecord(model));
    if (!force) FLAP_RETURN_IF_ERROR(CheckAgainstRecord(config, record, model));
    FLAP_ASSIGN_OR_RETURN(sharding::Manifest manifest, sharding::ReadManifest(config.data.path));
    FLAP_ASSIGN_OR_RETURN(tokenizer,
                          sharding::TextTokenizer::ForDataset(config.data.path, manifest, config.text.tokenizer));
    sample_rate = manifest.sample_rate;
    auto loaded = LoadModel(&config, *tokenizer, model);
    if (!loaded.ok()) return Status::InvalidArgument(loaded.status().message());
    net = *loaded;
    source = "'" + model + "'";
  }
  net->to(device);
  net->eval();
  return InferenceModel{std::move(config), net, std::move(*tokenizer), sample_rate, source};
}

}  // namespace flap::worker
