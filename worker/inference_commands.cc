// flap-worker export | embed | search | zeroshot: the command lines of export.h and inference.h.
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <ostream>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "worker/dataset.h"
#include "worker/inference.h"
#include "worker/trainer.h"

namespace flap::worker {
namespace {

// The command's own flags, taken out of `args`; what is left are config flags.
struct Flags {
  std::map<std::string, std::vector<std::string>> values;  // a flag may repeat (--text)
  std::set<std::string> switches;

  bool has(const std::string& f) const { return values.count(f) > 0; }
  std::string get(const std::string& f, const std::string& fallback = "") const {
    auto it = values.find(f);
    return it == values.end() ? fallback : it->second.back();
  }
};

Status TakeFlags(const std::set<std::string>& with_value, const std::set<std::string>& switches,
                 std::vector<std::string>* args, Flags* flags) {
  for (size_t i = 0; i < args->size();) {
    const std::string a = (*args)[i];
    if (switches.count(a)) {
      flags->switches.insert(a);
      args->erase(args->begin() + static_cast<long>(i));
    } else if (with_value.count(a)) {
      if (i + 1 >= args->size()) return Status::InvalidArgument(a + " needs a value");
      flags->values[a].push_back((*args)[i + 1]);
      args->erase(args->begin() + static_cast<long>(i), args->begin() + static_cast<long>(i) + 2);
    } else {
      ++i;
    }
  }
  return Status::OK();
}

StatusOr<int64_t> IntFlag(const Flags& flags, const std::string& name, int64_t fallback) {
  if (!flags.has(name)) return fallback;
  const std::string v = flags.get(name);
  try {
    size_t used = 0;
    const long long x = std::stoll(v, &used);
    if (used != v.size() || x < 1) throw std::invalid_argument(v);
    return static_cast<int64_t>(x);
  } catch (const std::exception&) {
    return Status::InvalidArgument(name + ": expected a positive whole number, got '" + v + "'");
  }
}

// The run config from the config flags: a model.pt's (RunConfigOf) or, for an export, the
// operational settings (device, precision, threads, batch sizes) only.
StatusOr<TrialConfig> CommandConfig(const std::string& model, const std::vector<std::string>& args) {
  std::error_code ec;
  if (!model.empty() && !std::filesystem::is_directory(model, ec)) return RunConfigOf(model, args);
  TrialConfig config;
  bool help = false;
  std::string text;
  FLAP_RETURN_IF_ERROR(ParseTrialConfig(args, &config, &help, &text));
  return config;
}

struct Loaded {
  TrialConfig run;
  InferenceModel model;
  EmbedOptions embed;
};

StatusOr<Loaded> Load(const Flags& flags, const std::vector<std::string>& args) {
  const std::string model = flags.get("--model");
  if (model.empty()) return Status::InvalidArgument("--model is not set (an export folder or a model.pt)");
  FLAP_ASSIGN_OR_RETURN(TrialConfig run, CommandConfig(model, args));
  SetThreads(run.train.threads);
  FLAP_ASSIGN_OR_RETURN(const c10::Device device, TrainingDevice(run));
  FLAP_ASSIGN_OR_RETURN(InferenceModel m, LoadInferenceModel(model, run, device, flags.switches.count("--force") > 0));
  EmbedOptions e;
  FLAP_ASSIGN_OR_RETURN(e.batch_size, IntFlag(flags, "--batch-size", run.train.eval_batch_size));
  FLAP_ASSIGN_OR_RETURN(e.precision, core::ParsePrecision(run.train.precision));
  FLAP_ASSIGN_OR_RETURN(e.crop, ParseEvalCrop(m.config.eval.crop));
  e.feature_threads = run.data.loader_threads > 0 ? run.data.loader_threads
                                                  : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return Loaded{std::move(run), std::move(m), e};
}

int Fail(std::ostream& err, const Status& s) {
  err << "flap-worker: " << s.ToString() << std::endl;
  return s.code() == Status::Code::kInvalidArgument ? 2 : 1;
}

int Export(std::vector<std::string> args, std::ostream& out, std::ostream& err) {
  Flags flags;
  Status s = TakeFlags({"--model", "--out", "--card-extra"}, {"--force"}, &args, &flags);
  if (!s.ok()) return Fail(err, s);
  ExportOptions o;
  o.model_path = flags.get("--model");
  o.force = flags.switches.count("--force") > 0;
  if (o.model_path.empty()) return Fail(err, Status::InvalidArgument("--model is not set (a model.pt)"));
  auto config = RunConfigOf(o.model_path, args);
  if (!config.ok()) return Fail(err, config.status());
  o.config = *config;
  if (flags.has("--card-extra")) {
    auto text = ReadFileToString(flags.get("--card-extra"));
    if (!text.ok()) return Fail(err, text.status());
    o.card_extra = nlohmann::json::parse(*text, nullptr, false);
    if (o.card_extra.is_discarded() || !o.card_extra.is_object()) {
      return Fail(err, Status::InvalidArgument("--card-extra '" + flags.get("--card-extra") + "' is not a JSON object"));
    }
  }
  SetThreads(o.config.train.threads);
  auto card = ExportModel(o, flags.get("--out"), err);
  if (!card.ok()) return Fail(err, card.status());
  out << card->dump(2) << std::endl;
  return 0;
}

int Embed(std::vector<std::string> args, std::ostream& out, std::ostream& err) {
  Flags flags;
  Status s = TakeFlags({"--model", "--out", "--format", "--audio", "--split", "--captions", "--text", "--batch-size"},
                       {"--force"}, &args, &flags);
  if (!s.ok()) return Fail(err, s);
  const int sources = (flags.has("--audio") ? 1 : 0) + (flags.has("--split") ? 1 : 0) +
                      (flags.has("--captions") || flags.has("--text") ? 1 : 0);
  if (sources != 1) {
    return Fail(err, Status::InvalidArgument("embed reads one of --audio PATH, --split NAME (of data.path's shards), "
                                             "--captions FILE or --text TEXT"));
  }
  if (!flags.has("--out")) return Fail(err, Status::InvalidArgument("--out PREFIX is not set"));
  const std::string format = flags.get("--format", "npy");
  if (format != "npy" && format != "safetensors") {
    return Fail(err, Status::InvalidArgument("--format must be npy or safetensors, got '" + format + "'"));
  }
  auto loaded = Load(flags, args);
  if (!loaded.ok()) return Fail(err, loaded.status());
  Loaded& l = *loaded;
  l.embed.progress = &err;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> keys;
  StatusOr<at::Tensor> emb = Status::Internal("nothing embedded");
  std::string what;
  if (flags.has("--audio")) {
    auto files = ListAudioFiles(flags.get("--audio"));
    if (!files.ok()) return Fail(err, files.status());
    for (const auto& f : *files) keys.push_back(f.key);
    what = "audio clips";
    err << "embedding " << files->size() << " audio files with " << l.model.source << std::endl;
    emb = EmbedAudioFiles(l.model, *files, l.embed);
  } else if (flags.has("--split")) {
    if (l.run.data.path.empty()) return Fail(err, Status::InvalidArgument("--split needs --data.path (the dataset)"));
    FeatureOptions fo = DataOptions(l.run);
    fo.target_frames = l.model.config.model.target_frames;
    fo.max_frames = l.model.config.data.max_frames;
    fo.num_mel_bins = l.model.config.model.num_mel_bins;
    auto data = Dataset::Load(l.run.data.path, flags.get("--split"), fo);
    if (!data.ok()) return Fail(err, data.status());
    for (int64_t i = 0; i < data->size(); ++i) keys.push_back(data->clip(i).key);
    what = "audio clips";
    err << "embedding " << data->Describe() << " with " << l.model.source << std::endl;
    emb = EmbedClips(l.model.model, *data, l.embed.batch_size, l.embed.precision, l.embed.crop);
  } else {
    std::vector<std::string> texts;
    if (flags.has("--captions")) {
      auto text = ReadFileToString(flags.get("--captions"));
      if (!text.ok()) return Fail(err, text.status());
      std::istringstream in(*text);
      for (std::string line; std::getline(in, line);) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (!line.empty()) texts.push_back(line);
      }
      if (texts.empty()) {
        return Fail(err, Status::InvalidArgument("captions file '" + flags.get("--captions") + "' holds no caption"));
      }
    }
    auto it = flags.values.find("--text");
    if (it != flags.values.end()) texts.insert(texts.end(), it->second.begin(), it->second.end());
    keys = texts;
    what = "captions";
    emb = EmbedCaptions(l.model, texts, l.embed);
  }
  if (!emb.ok()) return Fail(err, emb.status());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  s = WriteEmbeddings(flags.get("--out"), format, keys, *emb);
  if (!s.ok()) return Fail(err, s);
  const std::string prefix = flags.get("--out");
  err << "wrote " << keys.size() << " " << what << " (" << emb->size(1) << "-d) to " << prefix << "." << format
      << " and " << prefix << ".csv in " << seconds << " s" << std::endl;
  out << nlohmann::json{{"rows", keys.size()},
                        {"dim", emb->size(1)},
                        {"kind", what},
                        {"embeddings", prefix + "." + format},
                        {"index", prefix + ".csv"},
                        {"model", l.model.source},
                        {"seconds", seconds},
                        {"rows_per_second", seconds > 0 ? static_cast<double>(keys.size()) / seconds : 0.0}}
             .dump(2)
      << std::endl;
  return 0;
}

int Search(std::vector<std::string> args, std::ostream& out, std::ostream& err) {
  Flags flags;
  Status s = TakeFlags({"--model", "--index", "--text", "--audio", "--top-k", "--batch-size"}, {"--force"}, &args,
                       &flags);
  if (!s.ok()) return Fail(err, s);
  if (flags.has("--text") == flags.has("--audio")) {
    return Fail(err, Status::InvalidArgument("search takes one query: --text TEXT or --audio FILE"));
  }
  auto top_k = IntFlag(flags, "--top-k", 10);
  if (!top_k.ok()) return Fail(err, top_k.status());
  auto index = ReadEmbeddings(flags.get("--index"));
  if (!index.ok()) return Fail(err, index.status());
  auto loaded = Load(flags, args);
  if (!loaded.ok()) return Fail(err, loaded.status());
  StatusOr<at::Tensor> query = Status::Internal("no query");
  if (flags.has("--text")) {
    query = EmbedCaptions(loaded->model, {flags.get("--text")}, loaded->embed);
  } else {
    const std::string file = flags.get("--audio");
    query = EmbedAudioFiles(loaded->model, {{file, file}}, loaded->embed);
  }
  if (!query.ok()) return Fail(err, query.status());
  if (query->size(1) != index->embeddings.size(1)) {
    return Fail(err, Status::InvalidArgument("the index holds " + std::to_string(index->embeddings.size(1)) +
                                             "-d embeddings, the model makes " + std::to_string(query->size(1)) +
                                             "-d ones: another model's index"));
  }
  const std::vector<SearchHit> hits = SearchIndex(*index, (*query)[0], *top_k);
  nlohmann::json result = nlohmann::json::array();
  char buf[64];
  err << "  rank   score  key" << std::endl;
  for (size_t i = 0; i < hits.size(); ++i) {
    std::snprintf(buf, sizeof(buf), "  %4zu  %6.3f  ", i + 1, hits[i].score);
    err << buf << hits[i].key << std::endl;
    result.push_back({{"rank", i + 1}, {"key", hits[i].key}, {"row", hits[i].row}, {"score", hits[i].score}});
  }
  out << nlohmann::json{{"query", flags.has("--text") ? flags.get("--text") : flags.get("--audio")},
                        {"rows", index->keys.size()},
                        {"hits", result}}
             .dump(2)
      << std::endl;
  return 0;
}

int ZeroShot(std::vector<std::string> args, std::ostream& out, std::ostream& err) {
  Flags flags;
  Status s = TakeFlags({"--model", "--labels", "--audio", "--prompt", "--out", "--batch-size"}, {"--force"}, &args,
                       &flags);
  if (!s.ok()) return Fail(err, s);
  if (!flags.has("--labels") || !flags.has("--audio")) {
    return Fail(err, Status::InvalidArgument("zeroshot needs --labels labels.csv and --audio DIR"));
  }
  const std::string prompt = flags.get("--prompt", "the sound of {}");
  if (flags.has("--out")) {
    s = CheckNewFolder(flags.get("--out"));
    if (!s.ok()) return Fail(err, s);
  }
  auto labels = ReadLabelSet(flags.get("--labels"), flags.get("--audio"));
  if (!labels.ok()) return Fail(err, labels.status());
  std::vector<std::string> texts;
  for (const std::string& c : labels->classes) {
    auto t = PromptText(prompt, c);
    if (!t.ok()) return Fail(err, t.status());
    texts.push_back(*t);
  }
  auto loaded = Load(flags, args);
  if (!loaded.ok()) return Fail(err, loaded.status());
  loaded->embed.progress = &err;
  std::vector<AudioFile> files;
  for (const auto& c : labels->clips) files.push_back(c.file);
  err << "zero-shot: " << files.size() << " clips, " << texts.size() << " classes, prompt '" << prompt << "', "
      << loaded->model.source << std::endl;
  auto class_emb = EmbedCaptions(loaded->model, texts, loaded->embed);
  if (!class_emb.ok()) return Fail(err, class_emb.status());
  auto audio = EmbedAudioFiles(loaded->model, files, loaded->embed);
  if (!audio.ok()) return Fail(err, audio.status());
  const ZeroShotResult r = ScoreZeroShot(at::matmul(*audio, class_emb->t()), *labels);
  err << FormatZeroShot(r);
  nlohmann::json per_class = nlohmann::json::array();
  for (const ClassScore& c : r.classes) {
    per_class.push_back({{"class", c.name}, {"clips", c.clips}, {"top1", c.top1}, {"average_precision", c.average_precision}});
  }
  nlohmann::json summary = {{"clips", r.clips},
                            {"classes", r.classes.size()},
                            {"multi_label", labels->multi_label},
                            {"prompt", prompt},
                            {"model", loaded->model.source},
                            {"top1", r.top1},
                            {"top5", r.top5},
                            {"map", r.map},
                            {"chance_top1", r.chance_top1},
                            {"chance_top5", r.chance_top5},
                            {"chance_map", r.chance_map},
                            {"per_class", per_class}};
  if (flags.has("--out")) {
    s = WriteZeroShot(flags.get("--out"), r, summary);
    if (!s.ok()) return Fail(err, s);
    summary["out"] = flags.get("--out");
  }
  out << summary.dump(2) << std::endl;
  return 0;
}

}  // namespace

int RunInferenceCommand(const std::string& command, const std::vector<std::string>& args, std::ostream& out,
                        std::ostream& err) {
  if (command == "export") return Export(args, out, err);
  if (command == "embed") return Embed(args, out, err);
  if (command == "search") return Search(args, out, err);
  if (command == "zeroshot") return ZeroShot(args, out, err);
  err << "flap-worker: unknown command '" << command << "'" << std::endl;
  return 2;
}

}  // namespace flap::worker
