// Audio-text retrieval evaluation of a model on a dataset split (DESIGN.md, "Evaluation"):
// every clip is embedded with no token dropping, every original caption is embedded, and
// the metrics of core/retrieval.h are computed over every caption-clip similarity. All of it
// runs on the model's device (features are copied there batch by batch; the similarity
// matrix is computed in blocks, never held whole), in the given precision.
// Not thread-safe with respect to the model (runs it in eval mode, then restores train mode).
#pragma once

#include <nlohmann/json.hpp>

#include "worker/core/device.h"
#include "worker/core/model.h"
#include "worker/core/retrieval.h"
#include "worker/dataset.h"

namespace flap::worker {

core::RetrievalMetrics Evaluate(core::FlapModel& model, const Dataset& dataset, int64_t batch_size,
                               core::Precision precision = core::Precision::kFp32);

// (clips, D) normalised fp32 audio embeddings of every clip of `dataset`, on the model's
// device, no token dropping, no gradient; the model is put in eval mode for the call.
at::Tensor EmbedClips(core::FlapModel& model, const Dataset& dataset, int64_t batch_size,
                      core::Precision precision = core::Precision::kFp32);

// The device that `model`'s parameters live on.
c10::Device ModelDevice(core::FlapModel& model);

nlohmann::json MetricsToJson(const core::RetrievalMetrics& m);
// The retrieval table printed for people: R@1/5/10 both ways, mAP@10, counts.
std::string FormatMetricsTable(const core::RetrievalMetrics& m);

}  // namespace flap::worker
