// Audio-text retrieval evaluation of a model on a dataset split (DESIGN.md, "Evaluation"):
// every clip is embedded with no token dropping, every original caption is embedded, and
// the metrics of core/retrieval.h are computed over the full similarity matrix.
// Not thread-safe with respect to the model (runs it in eval mode, then restores train mode).
#pragma once

#include <nlohmann/json.hpp>

#include "worker/core/model.h"
#include "worker/core/retrieval.h"
#include "worker/dataset.h"

namespace flap::worker {

core::RetrievalMetrics Evaluate(core::FlapModel& model, const Dataset& dataset, int64_t batch_size);

// (clips, D) normalised audio embeddings of every clip of `dataset`, no token dropping, no
// gradient; the model is put in eval mode for the call.
at::Tensor EmbedClips(core::FlapModel& model, const Dataset& dataset, int64_t batch_size);

nlohmann::json MetricsToJson(const core::RetrievalMetrics& m);
// The retrieval table printed for people: R@1/5/10 both ways, mAP@10, counts.
std::string FormatMetricsTable(const core::RetrievalMetrics& m);

}  // namespace flap::worker
