// Zero-shot sound-event tagging with a trained FLAP model: each label of a vocabulary is
// embedded as text, each clip as audio, and a clip gets the labels whose cosine similarity
// clears a threshold, best first, at most top_k. Caption augmentation uses the tags
// (sharding/augment.h) when a corpus has none of its own.
//
// Labels file: one label per line, "name" or "name: text to embed" (the name is what is
// written; the text, default the name with '_' as spaces, is what the model reads); blank
// lines and lines starting with '#' are skipped. configs/sound_events.txt is the shipped list.
//
// Thread-safety: not thread-safe with respect to the model (puts it in eval mode for the call).
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"
#include "config/trial_config.h"
#include "worker/core/model.h"
#include "worker/dataset.h"
#include "worker/evaluator.h"

namespace flap::worker {

struct TagLabel {
  std::string name;
  std::string text;
};

// InvalidArgument naming the file and line for an empty name or a duplicate; NotFound if the
// file cannot be opened.
StatusOr<std::vector<TagLabel>> ReadTagLabels(const std::string& path);

struct TagOptions {
  double threshold = 0.1;            // minimum cosine similarity of a kept label
  int top_k = 3;                     // labels kept per clip at most (>= 1)
  int64_t batch_size = 64;           // clips per forward pass
  EvalCrop crop = EvalCrop::kFirst;  // which frames of a long clip are embedded (eval.crop)
};

struct ClipTags {
  std::string key;
  std::vector<std::string> tags;  // best first
  std::vector<float> scores;      // their similarities
};

// Tags every clip of `dataset`. InvalidArgument if a label's text has no tokens.
StatusOr<std::vector<ClipTags>> TagClips(core::FlapModel& model, const Dataset& dataset,
                                         const std::vector<TagLabel>& labels, const TagOptions& options);

// Agreement of the predicted tags with the corpus's own tags (clips that have some):
// precision of the best tag, recall of the true tags among the top_k, and what a random
// ranking of the labels would score on each.
struct TagAgreement {
  int64_t clips = 0;
  double top1_precision = 0, topk_recall = 0;
  double chance_top1 = 0, chance_topk_recall = 0;
};
TagAgreement CompareTags(const Dataset& dataset, const std::vector<ClipTags>& predicted,
                         const std::vector<TagLabel>& labels, int top_k);

// `flap-worker tag`: loads split `split` of data.path and the model at `model_path`, tags
// every clip, writes JSON lines {"key", "tags", "scores"} to `out_path` atomically, and
// returns a summary (counts, and the agreement when the corpus has tags).
StatusOr<nlohmann::json> RunTagging(const TrialConfig& config, const std::string& model_path, const std::string& split,
                                    const std::string& labels_path, const TagOptions& options,
                                    const std::string& out_path, std::ostream& log);

}  // namespace flap::worker
