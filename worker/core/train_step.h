// One FLAP training step: forward, losses, backward, gradient synchronisation across ranks,
// clipping, AdamW with the warm-up + cosine schedule, and the logit-scale clamp.
//
// The step is the unit that later parts (distributed groups, checkpoints) build on: it owns
// the optimiser, takes a ready batch, and reports losses and a time breakdown.
// Not thread-safe: one TrainStep per training thread.
#pragma once

#include <torch/optim/adamw.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/core/device.h"
#include "worker/core/losses.h"
#include "worker/core/model.h"
#include "config/model_config.h"

namespace flap::core {

// A batch ready for the model, on the model's device.
struct Batch {
  at::Tensor spec;    // (B, T, M) float, normalised log-mel
  at::Tensor tokens;  // (B, L) int64 caption ids, 0 = padding
  // (V*B, K) int64 sorted kept patch indices, view-major (row v*B + i: view v of sample i;
  // V = 1: (B, K)); undefined: keep all.
  at::Tensor keep;
  int64_t views() const { return keep.defined() && tokens.size(0) > 0 ? keep.size(0) / tokens.size(0) : 1; }
};

// Model FLOPs of one training step on `batch` (TrainStepFlops of its clips, the audio tokens
// each view kept, its caption width and its views): what train.max_flops counts.
double StepFlops(const ModelConfig& c, const Batch& batch, bool with_decoder);

// `batch` on `device`: the same tensors for the CPU; for CUDA, asynchronous copies from
// pinned host memory (tensors that are not pinned yet are pinned first), ordered on the
// current stream before the kernels that read them.
Batch ToDevice(const Batch& batch, const c10::Device& device);

// Averages parameter gradients across the ranks of a group after backward. The single-process
// implementation does nothing; collectives.h has the worker group's (bucketed, overlapped).
class GradientSync {
 public:
  virtual ~GradientSync() = default;
  // Called once before the first backward with every trainable parameter.
  virtual void Attach(const std::vector<at::Tensor>& params) { (void)params; }
  // Called after backward; on success every parameter's .grad() holds the cross-rank mean.
  // A failure (a rank missing) leaves the gradients undefined for this step.
  virtual Status Finish() { return Status::OK(); }
};

struct StepStats {
  double loss = 0, contrastive = 0, recon = 0;
  double logit_scale = 0;  // exp(log scale) after the step's clamp
  double lr = 0;
  double grad_norm = 0;                                   // global L2 norm before clipping
  double forward_s = 0, backward_s = 0, optimizer_s = 0;  // backward_s includes sync_s
  double gather_s = 0;  // in the embedding gather's collectives (within forward and backward)
  double sync_s = 0;    // waiting for the gradient all-reduce after backward (not overlapped)
};

class TrainStep {
 public:
  // `gather` and `sync` may be null (single process); otherwise they must outlive the step.
  // The model's parameters must already be on their device (the batch's). With bf16 the
  // forward pass runs under autocast (device.h); the embeddings, the reconstruction and
  // every loss are then computed in fp32.
  TrainStep(FlapModel model, const LossConfig& loss, const OptimConfig& optim, EmbeddingGather* gather = nullptr,
            GradientSync* sync = nullptr, Precision precision = Precision::kFp32);

  // Runs step number `step` (0-based) on `batch`: ComputeGradients, then clipping, AdamW and
  // the logit-scale clamp, at learning rate `lr`, or LearningRate(optim, step) without one. A
  // failed collective (a rank of the group missing) comes back as its Status; the parameters
  // are then unchanged.
  StatusOr<StepStats> Run(const Batch& batch, int64_t step, std::optional<double> lr = std::nullopt);

  // Forward, losses, backward and gradient averaging only: on success every parameter's
  // .grad() holds this step's (cross-rank mean) gradient. Fills the losses and timings.
  StatusOr<StepStats> ComputeGradients(const Batch& batch);

  FlapModel& model() { return model_; }
  torch::optim::AdamW& optimizer() { return *optimizer_; }

 private:
  FlapModel model_;
  LossConfig loss_;
  OptimConfig optim_;
  LocalGather local_gather_;
  EmbeddingGather* gather_;
  GradientSync* sync_;
  Precision precision_;
  std::vector<at::Tensor> params_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
};

// Parameter classes (FlapModel's names): the token embedding and the text positions, or the
// roberta tower's word, position and token-type embeddings (never weight-decayed), and the reconstruction decoder (kept out of the gradient sync when
// loss.recon_weight is 0, since it then gets no gradient).
bool IsEmbeddingParameter(const std::string& name);
bool IsDecoderParameter(const std::string& name);

// Waits for queued device work (CUDA) so that wall-clock timings are honest; no-op on CPU.
void SynchronizeDevice(const at::Device& device);

}  // namespace flap::core
