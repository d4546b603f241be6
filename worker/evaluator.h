// Audio-text retrieval evaluation of a model on a dataset split (DESIGN.md, "Evaluation"):
// every clip is embedded with no token dropping, every original caption is embedded, and
// the metrics of core/retrieval.h are computed over every caption-clip similarity. All of it
// runs on the model's device (features are copied there batch by batch; the similarity
// matrix is computed in blocks, never held whole), in the given precision.
// Not thread-safe with respect to the model (runs it in eval mode, then restores train mode).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "worker/core/device.h"
#include "worker/core/model.h"
#include "worker/core/retrieval.h"
#include "worker/dataset.h"

namespace flap::worker {

// Which frames of a clip longer than the model's window T are embedded (eval.crop): the first
// T, the centre T, or every window of consecutive T-frame chunks covering the clip (the last
// one ending at the clip's end), the clip's embedding being the normalised mean of theirs.
enum class EvalCrop { kFirst, kCenter, kChunks };
// "first" | "center" | "chunks"; InvalidArgument naming eval.crop otherwise.
StatusOr<EvalCrop> ParseEvalCrop(const std::string& name);
// The first frames of clip windows of `frames` stored frames for a window of `window` frames.
std::vector<int64_t> EvalWindows(EvalCrop crop, int64_t frames, int64_t window);

core::RetrievalMetrics Evaluate(core::FlapModel& model, const Dataset& dataset, int64_t batch_size,
                                core::Precision precision = core::Precision::kFp32, EvalCrop crop = EvalCrop::kFirst);

// (clips, D) normalised fp32 audio embeddings of every clip of `dataset` (its windows by
// `crop`), on the model's device, no token dropping, no gradient; the model is put in eval
// mode for the call.
at::Tensor EmbedClips(core::FlapModel& model, const Dataset& dataset, int64_t batch_size,
                      core::Precision precision = core::Precision::kFp32, EvalCrop crop = EvalCrop::kFirst);

// (texts, D) normalised fp32 text embeddings of token-id lists (each non-empty; truncated to
// the model's text_max_len), on the model's device, no gradient, `batch_size` at a time.
at::Tensor EmbedTexts(core::FlapModel& model, const std::vector<const std::vector<int>*>& texts, int64_t batch_size,
                      core::Precision precision = core::Precision::kFp32);

// The device that `model`'s parameters live on.
c10::Device ModelDevice(core::FlapModel& model);

// The metrics (t2a_r1 ... map10, num_clips, num_captions), their 95% bootstrap bounds over the
// queries (t2a_r1_lo, t2a_r1_hi, ..., map10_lo, map10_hi) and the chance levels (chance_t2a_r1
// ... chance_a2t_r10): retrieval.h has their definitions.
nlohmann::json MetricsToJson(const core::RetrievalMetrics& m);
// The retrieval table printed for people: R@1/5/10 both ways, mAP@10, counts.
std::string FormatMetricsTable(const core::RetrievalMetrics& m);

}  // namespace flap::worker
