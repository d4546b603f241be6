#include "worker/tagger.h"

#include <ATen/ATen.h>
#include <torch/utils.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <numeric>
#include <ostream>
#include <set>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "worker/batcher.h"
#include "worker/evaluator.h"
#include "worker/trainer.h"

namespace flap::worker {
namespace {

std::string Trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t\r") - a + 1);
}

}  // namespace

StatusOr<std::vector<TagLabel>> ReadTagLabels(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("labels file '" + path + "' cannot be opened");
  std::vector<TagLabel> labels;
  std::set<std::string> seen;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    line = Trim(line);
    if (line.empty() || line[0] == '#') continue;
    TagLabel l;
    const size_t colon = line.find(':');
    l.name = Trim(line.substr(0, colon));
    l.text = colon == std::string::npos ? "" : Trim(line.substr(colon + 1));
    if (l.name.empty()) return Status::InvalidArgument(path + ":" + std::to_string(n) + ": empty label name");
    if (l.text.empty()) {
      l.text = l.name;
      std::replace(l.text.begin(), l.text.end(), '_', ' ');
    }
    if (!seen.insert(l.name).second) {
      return Status::InvalidArgument(path + ":" + std::to_string(n) + ": label '" + l.name + "' appears twice");
    }
    labels.push_back(std::move(l));
  }
  if (labels.empty()) return Status::InvalidArgument("labels file '" + path + "' holds no label");
  return labels;
}

StatusOr<std::vector<ClipTags>> TagClips(core::FlapModel& model, const Dataset& dataset,
                                         const std::vector<TagLabel>& labels, const TagOptions& options) {
  if (options.top_k < 1) return Status::InvalidArgument("top_k must be >= 1");
  std::vector<std::vector<int>> tokens;
  for (const TagLabel& l : labels) {
    auto ids = dataset.tokenizer().Encode(l.text);
    if (!ids.ok()) return ids.status().WithContext("label '" + l.name + "'");
    tokens.push_back(std::move(*ids));
  }
  std::vector<const std::vector<int>*> ptrs;
  for (const auto& t : tokens) ptrs.push_back(&t);
  at::Tensor audio = EmbedClips(model, dataset, options.batch_size, core::Precision::kFp32, options.crop);
  const at::Tensor text = EmbedTexts(model, ptrs, options.batch_size);
  at::Tensor sim = at::matmul(audio, text.t()).to(at::kCPU).contiguous();  // (clips, labels)
  const auto acc = sim.accessor<float, 2>();
  std::vector<ClipTags> out;
  for (int64_t i = 0; i < dataset.size(); ++i) {
    std::vector<int64_t> order(labels.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return acc[i][a] > acc[i][b]; });
    ClipTags c;
    c.key = dataset.clip(i).key;
    for (int64_t j : order) {
      if (static_cast<int>(c.tags.size()) >= options.top_k || acc[i][j] < options.threshold) break;
      c.tags.push_back(labels[static_cast<size_t>(j)].name);
      c.scores.push_back(acc[i][j]);
    }
    out.push_back(std::move(c));
  }
  return out;
}

TagAgreement CompareTags(const Dataset& dataset, const std::vector<ClipTags>& predicted,
                         const std::vector<TagLabel>& labels, int top_k) {
  std::set<std::string> names;
  for (const auto& l : labels) names.insert(l.name);
  const double n_labels = static_cast<double>(labels.size());
  TagAgreement a;
  double hit1 = 0, recall = 0, chance1 = 0, chancek = 0;
  for (int64_t i = 0; i < dataset.size() && i < static_cast<int64_t>(predicted.size()); ++i) {
    std::set<std::string> truth;
    for (const auto& t : dataset.clip(i).tags) {
      if (names.count(t)) truth.insert(t);
    }
    if (truth.empty()) continue;
    ++a.clips;
    const auto& p = predicted[static_cast<size_t>(i)].tags;
    if (!p.empty() && truth.count(p[0])) hit1 += 1;
    int found = 0;
    for (size_t k = 0; k < p.size() && k < static_cast<size_t>(top_k); ++k) found += truth.count(p[k]) ? 1 : 0;
    recall += static_cast<double>(found) / static_cast<double>(truth.size());
    chance1 += static_cast<double>(truth.size()) / n_labels;
    chancek += std::min(1.0, static_cast<double>(top_k) / n_labels);
  }
  if (a.clips > 0) {
    const double n = static_cast<double>(a.clips);
    a.top1_precision = hit1 / n;
    a.topk_recall = recall / n;
    a.chance_top1 = chance1 / n;
    a.chance_topk_recall = chancek / n;
  }
  return a;
}

StatusOr<nlohmann::json> RunTagging(const TrialConfig& config_in, const std::string& model_path,
                                    const std::string& split, const std::string& labels_path, const TagOptions& options,
                                    const std::string& out_path, std::ostream& log) {
  TrialConfig config = config_in;
  FLAP_RETURN_IF_ERROR(config.Validate());
  if (config.data.path.empty()) return Status::InvalidArgument("data.path is not set");
  if (out_path.empty()) return Status::InvalidArgument("--out is not set");
  if (model_path.empty()) return Status::InvalidArgument("--model is not set: tagging needs a trained model");
  SetThreads(config.train.threads);
  FLAP_ASSIGN_OR_RETURN(std::vector<TagLabel> labels, ReadTagLabels(labels_path));
  FLAP_ASSIGN_OR_RETURN(Dataset data, Dataset::Load(config.data.path, split, DataOptions(config)));
  TagOptions tag_options = options;
  FLAP_ASSIGN_OR_RETURN(tag_options.crop, ParseEvalCrop(config.eval.crop));
  FLAP_ASSIGN_OR_RETURN(core::FlapModel model, LoadModel(&config, data.tokenizer(), model_path));
  log << "tagging " << data.size() << " clips of split '" << split << "' with " << labels.size()
      << " labels (threshold " << options.threshold << ", top " << options.top_k << ")" << std::endl;
  FLAP_ASSIGN_OR_RETURN(std::vector<ClipTags> tags, TagClips(model, data, labels, tag_options));
  std::string lines;
  int64_t tagged = 0;
  for (const ClipTags& c : tags) {
    tagged += c.tags.empty() ? 0 : 1;
    lines += nlohmann::json{{"key", c.key}, {"tags", c.tags}, {"scores", c.scores}}.dump() + "\n";
  }
  FLAP_RETURN_IF_ERROR(WriteFileAtomic(out_path, lines));
  nlohmann::json summary = {{"clips", data.size()}, {"tagged", tagged}, {"labels", labels.size()}, {"out", out_path}};
  const TagAgreement a = CompareTags(data, tags, labels, options.top_k);
  if (a.clips > 0) {
    summary["agreement"] = {{"clips_with_tags", a.clips},
                            {"top1_precision", a.top1_precision},
                            {"topk_recall", a.topk_recall},
                            {"chance_top1", a.chance_top1},
                            {"chance_topk_recall", a.chance_topk_recall}};
    char buf[200];
    std::snprintf(buf, sizeof(buf),
                  "against the corpus's tags (%lld clips): best tag right %.1f%% (chance %.1f%%), true tags in the "
                  "top %d %.1f%% (chance %.1f%%)",
                  static_cast<long long>(a.clips), 100 * a.top1_precision, 100 * a.chance_top1, options.top_k,
                  100 * a.topk_recall, 100 * a.chance_topk_recall);
    log << buf << std::endl;
  }
  return summary;
}

}  // namespace flap::worker
