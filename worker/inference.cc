#include "worker/inference.h"

#include <ATen/ATen.h>
#include <png.h>
#include <torch/utils.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>
#include <ostream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/atomic_file.h"
#include "common/file_util.h"
#include "sharding/audio.h"
#include "sharding/ingest.h"
#include "worker/dataset.h"
#include "worker/npy.h"
#include "worker/safetensors.h"
#include "worker/shard_features.h"

namespace flap::worker {
namespace {

namespace fs = std::filesystem;

bool IsAudioExtension(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  static const std::set<std::string> kinds = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au"};
  return kinds.count(e) > 0;
}

std::string Trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t\r") - a + 1);
}

// One CSV field, quoted when it must be (RFC 4180).
std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// Average precision of the ranking of `score` (higher first) for the positives `positive`.
double AveragePrecision(const std::vector<float>& score, const std::vector<bool>& positive) {
  std::vector<size_t> order(score.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return score[a] > score[b]; });
  double hits = 0, sum = 0;
  for (size_t r = 0; r < order.size(); ++r) {
    if (!positive[order[r]]) continue;
    hits += 1;
    sum += hits / static_cast<double>(r + 1);
  }
  return hits > 0 ? sum / hits : 0.0;
}

// Encodes an RGB image as PNG bytes with libpng's simplified API.
StatusOr<std::string> EncodePng(const std::vector<unsigned char>& rgb, int width, int height) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(width);
  image.height = static_cast<png_uint_32>(height);
  image.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&image, nullptr, &size, 0, rgb.data(), 0, nullptr)) {
    return Status::Internal(std::string("libpng: ") + image.message);
  }
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&image, out.data(), &size, 0, rgb.data(), 0, nullptr)) {
    return Status::Internal(std::string("libpng: ") + image.message);
  }
  out.resize(size);
  return out;
}

}  // namespace

StatusOr<std::vector<AudioFile>> ListAudioFiles(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return Status::NotFound("'" + path + "' does not exist");
  std::vector<AudioFile> out;
  if (fs::is_directory(path, ec)) {
    for (auto it = fs::recursive_directory_iterator(path, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      if (it->is_regular_file(ec) && IsAudioExtension(it->path())) {
        out.push_back({fs::relative(it->path(), path, ec).string(), it->path().string()});
      }
    }
    if (ec) return Status::IOError("cannot list '" + path + "': " + ec.message());
    std::sort(out.begin(), out.end(), [](const AudioFile& a, const AudioFile& b) { return a.key < b.key; });
    if (out.empty()) return Status::InvalidArgument("folder '" + path + "' holds no audio file (wav, flac, ogg, ...)");
    return out;
  }
  if (IsAudioExtension(path)) return std::vector<AudioFile>{{fs::path(path).filename().string(), path}};
  FLAP_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  const fs::path base = fs::path(path).parent_path();
  std::istringstream in(text);
  std::string line;
  std::set<std::string> seen;
  for (int n = 1; std::getline(in, line); ++n) {
    line = Trim(line);
    if (line.empty() || line[0] == '#') continue;
    const fs::path p = fs::path(line).is_absolute() ? fs::path(line) : base / line;
    if (!fs::is_regular_file(p, ec)) {
      return Status::NotFound(path + ":" + std::to_string(n) + ": '" + p.string() + "' is not a file");
    }
    if (!seen.insert(line).second) {
      return Status::InvalidArgument(path + ":" + std::to_string(n) + ": '" + line + "' is listed twice");
    }
    out.push_back({line, p.string()});
  }
  if (out.empty()) return Status::InvalidArgument("list '" + path + "' names no audio file");
  return out;
}

StatusOr<at::Tensor> EmbedAudioFiles(InferenceModel& model, const std::vector<AudioFile>& files,
                                     const EmbedOptions& options) {
  FeatureOptions fo;
  fo.target_frames = model.config.model.target_frames;
  fo.max_frames = model.config.data.max_frames;
  fo.num_mel_bins = model.config.model.num_mel_bins;
  fo.threads = std::max(1, options.feature_threads);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<at::Tensor> parts;
  const int64_t n = static_cast<int64_t>(files.size());
  const int64_t chunk = std::max<int64_t>(1, options.chunk);
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t end = std::min(n, start + chunk);
    std::vector<std::vector<float>> audio;
    ShardFeatures features;
    for (int64_t i = start; i < end; ++i) {
      const AudioFile& f = files[static_cast<size_t>(i)];
      FLAP_ASSIGN_OR_RETURN(std::vector<float> a, sharding::DecodeAudioFile(f.path, model.sample_rate));
      float peak = 0;
      for (float x : a) peak = std::max(peak, std::abs(x));
      if (!(peak >= 1.0f / 32768)) {
        return Status::InvalidArgument("audio file '" + f.path + "' is silent (no sample reaches 2^-15): nothing to embed");
      }
      audio.push_back(std::move(a));
      Clip clip;
      clip.key = f.key;
      features.clips.push_back(std::move(clip));
    }
    std::vector<const std::vector<float>*> ptrs;
    for (const auto& a : audio) ptrs.push_back(&a);
    ComputeClipFeatures(ptrs, fo, &features);
    const Dataset set = Dataset::FromFeatures(model.tokenizer, std::move(features), fo.target_frames, "files");
    parts.push_back(EmbedClips(model.model, set, options.batch_size, options.precision, options.crop));
    if (options.progress != nullptr && n > chunk) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      *options.progress << "embedded " << end << "/" << n << " clips (" << static_cast<int64_t>(end / std::max(s, 1e-9))
                        << " clips/s)" << std::endl;
    }
  }
  if (parts.empty()) {
    return at::empty({0, model.config.model.embed_dim}, at::TensorOptions().dtype(at::kFloat));
  }
  return at::cat(parts, 0);
}

StatusOr<at::Tensor> EmbedCaptions(InferenceModel& model, const std::vector<std::string>& texts,
                                   const EmbedOptions& options) {
  std::vector<std::vector<int>> tokens;
  tokens.reserve(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    auto ids = model.tokenizer.Encode(texts[i]);
    if (!ids.ok()) return ids.status().WithContext("caption " + std::to_string(i + 1));
    tokens.push_back(std::move(*ids));
  }
  std::vector<const std::vector<int>*> ptrs;
  for (const auto& t : tokens) ptrs.push_back(&t);
  return EmbedTexts(model.model, ptrs, options.batch_size, options.precision);
}

Status WriteEmbeddings(const std::string& prefix, const std::string& format, const std::vector<std::string>& keys,
                       const at::Tensor& embeddings) {
  if (format != "npy" && format != "safetensors") {
    return Status::InvalidArgument("--format must be npy or safetensors, got '" + format + "'");
  }
  const at::Tensor e = embeddings.detach().to(at::kCPU, at::kFloat).contiguous();
  if (e.dim() != 2 || e.size(0) != static_cast<int64_t>(keys.size())) {
    return Status::InvalidArgument("embeddings of " + std::to_string(e.size(0)) + " rows for " +
                                   std::to_string(keys.size()) + " keys");
  }
  std::string index = "key,row\n";
  for (size_t i = 0; i < keys.size(); ++i) index += CsvField(keys[i]) + "," + std::to_string(i) + "\n";
  const std::string data_path = prefix + "." + format;
  std::string bytes;
  if (format == "npy") {
    bytes = EncodeNpy(e.data_ptr<float>(), e.size(0), e.size(1));
  } else {
    FLAP_ASSIGN_OR_RETURN(bytes, EncodeSafetensors({{"embeddings", e}}, {{"index", fs::path(prefix).filename().string() + ".csv"}}));
  }
  const std::string dir = fs::path(prefix).parent_path().string();
  if (!dir.empty()) FLAP_RETURN_IF_ERROR(MakeDirs(dir));
  FLAP_RETURN_IF_ERROR(flap::WriteFileAtomic(data_path, bytes));
  Status s = flap::WriteFileAtomic(prefix + ".csv", index);
  if (!s.ok()) {
    std::error_code ec;
    fs::remove(data_path, ec);
  }
  return s;
}

StatusOr<EmbeddingIndex> ReadEmbeddings(const std::string& path) {
  const fs::path p(path);
  const std::string ext = p.extension().string();
  if (ext != ".npy" && ext != ".safetensors") {
    return Status::InvalidArgument("--index must name a .npy or .safetensors file of flap-worker embed, got '" + path +
                                   "'");
  }
  EmbeddingIndex out;
  if (ext == ".npy") {
    FLAP_ASSIGN_OR_RETURN(NpyMatrix m, ReadNpy(path));
    out.embeddings = at::from_blob(m.values.data(), {m.rows, m.cols}, at::kFloat).clone();
  } else {
    FLAP_ASSIGN_OR_RETURN(auto tensors, ReadSafetensors(path));
    auto it = tensors.find("embeddings");
    if (it == tensors.end() || it->second.dim() != 2) {
      return Status::Corruption("'" + path + "' holds no (rows, D) tensor named 'embeddings'");
    }
    out.embeddings = it->second;
  }
  const std::string csv = (p.parent_path() / p.stem()).string() + ".csv";
  FLAP_ASSIGN_OR_RETURN(std::string text, ReadFileToString(csv));
  FLAP_ASSIGN_OR_RETURN(std::vector<sharding::CsvRow> rows, sharding::ParseCsv(text, csv));
  if (rows.empty() || rows[0].fields != std::vector<std::string>{"key", "row"}) {
    return Status::Corruption("'" + csv + "' is not an embeddings index (header key,row)");
  }
  for (size_t r = 1; r < rows.size(); ++r) {
    const auto& f = rows[r].fields;
    if (f.size() != 2 || f[1] != std::to_string(r - 1)) {
      return Status::Corruption(csv + ":" + std::to_string(rows[r].line) + ": expected row " + std::to_string(r - 1));
    }
    out.keys.push_back(f[0]);
  }
  if (static_cast<int64_t>(out.keys.size()) != out.embeddings.size(0)) {
    return Status::Corruption("'" + csv + "' indexes " + std::to_string(out.keys.size()) + " rows, '" + path +
                              "' holds " + std::to_string(out.embeddings.size(0)));
  }
  return out;
}

std::vector<SearchHit> SearchIndex(const EmbeddingIndex& index, const at::Tensor& query, int64_t top_k) {
  at::NoGradGuard no_grad;
  const at::Tensor q = query.detach().to(at::kCPU, at::kFloat).reshape({-1});
  const at::Tensor rows = index.embeddings.to(at::kFloat);
  const at::Tensor scores =
      (at::matmul(rows, q) / (rows.norm(2, {1}).clamp_min(1e-12) * q.norm().clamp_min(1e-12))).contiguous();
  const int64_t n = scores.size(0);
  const float* s = scores.data_ptr<float>();
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  const int64_t k = std::min<int64_t>(std::max<int64_t>(top_k, 0), n);
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int64_t a, int64_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); });
  std::vector<SearchHit> hits;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t r = order[static_cast<size_t>(i)];
    hits.push_back({r, index.keys[static_cast<size_t>(r)], s[r]});
  }
  return hits;
}

StatusOr<LabelSet> ReadLabelSet(const std::string& csv_path, const std::string& audio_dir) {
  FLAP_ASSIGN_OR_RETURN(std::string text, ReadFileToString(csv_path));
  FLAP_ASSIGN_OR_RETURN(std::vector<sharding::CsvRow> rows, sharding::ParseCsv(text, csv_path));
  if (rows.empty()) return Status::InvalidArgument("labels file '" + csv_path + "' is empty (no header, no clip)");
  int file_col = -1, label_col = -1;
  bool multi = false;
  for (size_t c = 0; c < rows[0].fields.size(); ++c) {
    const std::string h = Lower(Trim(rows[0].fields[c]));
    if (file_col < 0 && (h == "filename" || h == "file" || h == "path")) file_col = static_cast<int>(c);
    if (label_col < 0 && (h == "category" || h == "label" || h == "labels")) {
      label_col = static_cast<int>(c);
      multi = h == "labels";
    }
  }
  if (file_col < 0 || label_col < 0) {
    return Status::InvalidArgument(csv_path + ":" + std::to_string(rows[0].line) +
                                   ": the header needs a file column (filename, file or path) and a label column "
                                   "(category, label or labels)");
  }
  std::vector<std::pair<AudioFile, std::vector<std::string>>> named;
  std::set<std::string> classes, seen;
  for (size_t r = 1; r < rows.size(); ++r) {
    const auto& f = rows[r].fields;
    const std::string where = csv_path + ":" + std::to_string(rows[r].line);
    if (f.size() == 1 && Trim(f[0]).empty()) continue;  // a blank line
    if (static_cast<int>(f.size()) <= std::max(file_col, label_col)) {
      return Status::InvalidArgument(where + ": " + std::to_string(f.size()) + " fields, the header has " +
                                     std::to_string(rows[0].fields.size()));
    }
    const std::string file = Trim(f[static_cast<size_t>(file_col)]);
    if (file.empty()) return Status::InvalidArgument(where + ": empty file name");
    std::vector<std::string> labels;
    std::string rest = f[static_cast<size_t>(label_col)];
    size_t at = 0;
    while (true) {
      const size_t semi = multi ? rest.find(';', at) : std::string::npos;
      const std::string l = Trim(rest.substr(at, semi == std::string::npos ? std::string::npos : semi - at));
      if (l.empty()) return Status::InvalidArgument(where + ": empty label for '" + file + "'");
      if (std::find(labels.begin(), labels.end(), l) == labels.end()) labels.push_back(l);
      if (semi == std::string::npos) break;
      at = semi + 1;
    }
    const fs::path p = fs::path(audio_dir) / file;
    std::error_code ec;
    if (!fs::is_regular_file(p, ec)) return Status::NotFound(where + ": '" + p.string() + "' is not a file");
    if (!seen.insert(file).second) return Status::InvalidArgument(where + ": '" + file + "' is listed twice");
    for (const auto& l : labels) classes.insert(l);
    named.push_back({AudioFile{file, p.string()}, labels});
  }
  if (named.empty()) return Status::InvalidArgument("labels file '" + csv_path + "' holds no labelled clip");
  if (classes.size() < 2) {
    return Status::InvalidArgument("labels file '" + csv_path + "' has " + std::to_string(classes.size()) +
                                   " class; classification needs two at least");
  }
  LabelSet out;
  out.classes.assign(classes.begin(), classes.end());
  std::map<std::string, int> id;
  for (size_t i = 0; i < out.classes.size(); ++i) id[out.classes[i]] = static_cast<int>(i);
  for (auto& [file, labels] : named) {
    LabelledClip c;
    c.file = file;
    for (const auto& l : labels) c.labels.push_back(id[l]);
    out.multi_label = out.multi_label || c.labels.size() > 1;
    out.clips.push_back(std::move(c));
  }
  return out;
}

StatusOr<std::string> PromptText(const std::string& prompt, const std::string& class_name) {
  const size_t at = prompt.find("{}");
  if (at == std::string::npos) return Status::InvalidArgument("--prompt must hold {} (where the class name goes)");
  std::string name = class_name;
  std::replace(name.begin(), name.end(), '_', ' ');
  return prompt.substr(0, at) + name + prompt.substr(at + 2);
}

ZeroShotResult ScoreZeroShot(const at::Tensor& scores_in, const LabelSet& labels) {
  const at::Tensor scores = scores_in.detach().to(at::kCPU, at::kFloat).contiguous();
  const int64_t n = scores.size(0), c = scores.size(1);
  const auto acc = scores.accessor<float, 2>();
  ZeroShotResult r;
  r.clips = n;
  r.confusion.assign(static_cast<size_t>(c), std::vector<int64_t>(static_cast<size_t>(c), 0));
  std::vector<int64_t> hits1(static_cast<size_t>(c), 0), count(static_cast<size_t>(c), 0);
  double top1 = 0, top5 = 0, chance1 = 0, chance5 = 0;
  const int64_t k5 = std::min<int64_t>(5, c);
  for (int64_t i = 0; i < n; ++i) {
    const auto& truth = labels.clips[static_cast<size_t>(i)].labels;
    std::vector<int64_t> order(static_cast<size_t>(c));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return acc[i][a] > acc[i][b]; });
    const auto is_true = [&](int64_t j) { return std::find(truth.begin(), truth.end(), j) != truth.end(); };
    if (is_true(order[0])) top1 += 1;
    for (int64_t k = 0; k < k5; ++k) {
      if (is_true(order[static_cast<size_t>(k)])) {
        top5 += 1;
        break;
      }
    }
    // A random ranking: one of m true classes first with probability m / C; among the first
    // five with 1 - C(C - m, 5) / C(C, 5).
    const double m = static_cast<double>(truth.size()), cc = static_cast<double>(c);
    chance1 += m / cc;
    double none = 1;
    for (int64_t k = 0; k < k5; ++k) none *= std::max(0.0, (cc - m - static_cast<double>(k)) / (cc - static_cast<double>(k)));
    chance5 += 1 - none;
    for (int t : truth) {
      count[static_cast<size_t>(t)] += 1;
      if (order[0] == t) hits1[static_cast<size_t>(t)] += 1;
    }
    r.confusion[static_cast<size_t>(truth.front())][static_cast<size_t>(order[0])] += 1;
  }
  const double nn = std::max<double>(1, static_cast<double>(n));
  r.top1 = top1 / nn;
  r.top5 = top5 / nn;
  r.chance_top1 = chance1 / nn;
  r.chance_top5 = chance5 / nn;
  double ap_sum = 0;
  int64_t with_clips = 0;
  for (int64_t j = 0; j < c; ++j) {
    ClassScore cs;
    cs.name = labels.classes[static_cast<size_t>(j)];
    cs.clips = count[static_cast<size_t>(j)];
    std::vector<float> col(static_cast<size_t>(n));
    std::vector<bool> pos(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      col[static_cast<size_t>(i)] = acc[i][j];
      const auto& truth = labels.clips[static_cast<size_t>(i)].labels;
      pos[static_cast<size_t>(i)] = std::find(truth.begin(), truth.end(), j) != truth.end();
    }
    if (cs.clips > 0) {
      cs.top1 = static_cast<double>(hits1[static_cast<size_t>(j)]) / static_cast<double>(cs.clips);
      cs.average_precision = AveragePrecision(col, pos);
      ap_sum += cs.average_precision;
      r.chance_map += static_cast<double>(cs.clips) / nn;
      ++with_clips;
    }
    r.classes.push_back(cs);
  }
  r.map = with_clips > 0 ? ap_sum / static_cast<double>(with_clips) : 0.0;
  r.chance_map = with_clips > 0 ? r.chance_map / static_cast<double>(with_clips) : 0.0;
  return r;
}

Status WriteZeroShot(const std::string& out_dir, const ZeroShotResult& result, const nlohmann::json& summary) {
  FLAP_RETURN_IF_ERROR(CheckNewFolder(out_dir));
  std::string classes = "class,clips,top1,average_precision\n";
  char buf[64];
  for (const ClassScore& c : result.classes) {
    std::snprintf(buf, sizeof(buf), ",%lld,%.6f,%.6f\n", static_cast<long long>(c.clips), c.top1, c.average_precision);
    classes += CsvField(c.name) + buf;
  }
  const size_t n = result.classes.size();
  std::string confusion = "true\\predicted";
  for (const ClassScore& c : result.classes) confusion += "," + CsvField(c.name);
  confusion += "\n";
  for (size_t i = 0; i < n; ++i) {
    confusion += CsvField(result.classes[i].name);
    for (size_t j = 0; j < n; ++j) confusion += "," + std::to_string(result.confusion[i][j]);
    confusion += "\n";
  }
  // The plot: a cell per (true, predicted) pair, shaded by its share of the true class's
  // clips (white 0, dark blue 1), a grey grid line between cells.
  const int cell = std::max(4, std::min(32, 640 / std::max<int>(1, static_cast<int>(n))));
  const int side = static_cast<int>(n) * cell + 1;
  std::vector<unsigned char> rgb(static_cast<size_t>(side) * static_cast<size_t>(side) * 3, 160);
  for (size_t i = 0; i < n; ++i) {
    int64_t row_total = 0;
    for (size_t j = 0; j < n; ++j) row_total += result.confusion[i][j];
    for (size_t j = 0; j < n; ++j) {
      const double share = row_total > 0 ? static_cast<double>(result.confusion[i][j]) / static_cast<double>(row_total) : 0;
      const unsigned char r = static_cast<unsigned char>(255 - share * (255 - 8));
      const unsigned char g = static_cast<unsigned char>(255 - share * (255 - 48));
      const unsigned char b = static_cast<unsigned char>(255 - share * (255 - 107));
      for (int y = 1; y < cell; ++y) {
        for (int x = 1; x < cell; ++x) {
          const size_t px = (static_cast<size_t>(static_cast<int>(i) * cell + y) * static_cast<size_t>(side) +
                             static_cast<size_t>(static_cast<int>(j) * cell + x)) * 3;
          rgb[px] = r;
          rgb[px + 1] = g;
          rgb[px + 2] = b;
        }
      }
    }
  }
  FLAP_ASSIGN_OR_RETURN(std::string png, EncodePng(rgb, side, side));
  return WriteNewFolder(out_dir, {{"summary.json", summary.dump(2) + "\n"},
                                  {"classes.csv", classes},
                                  {"confusion.csv", confusion},
                                  {"confusion.png", png}});
}

std::string FormatZeroShot(const ZeroShotResult& r) {
  std::ostringstream out;
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "zero-shot on %lld clips, %zu classes: top-1 %.1f%% (chance %.1f%%), top-5 %.1f%% (chance %.1f%%), "
                "mAP %.1f%% (chance %.1f%%)\n  %-28s %6s %8s %8s\n",
                static_cast<long long>(r.clips), r.classes.size(), 100 * r.top1, 100 * r.chance_top1, 100 * r.top5,
                100 * r.chance_top5, 100 * r.map, 100 * r.chance_map, "class", "clips", "top-1", "AP");
  out << buf;
  for (const ClassScore& c : r.classes) {
    std::snprintf(buf, sizeof(buf), "  %-28s %6lld %7.1f%% %7.1f%%\n", c.name.c_str(), static_cast<long long>(c.clips),
                  100 * c.top1, 100 * c.average_precision);
    out << buf;
  }
  return out.str();
}

}  // namespace flap::worker
