// FLAP's losses (DESIGN.md, "Contrastive loss", "Reconstruction").
//
// Contrastive: symmetric InfoNCE between L2-normalised audio and text embeddings with a
// learnable logit scale (log 1/tau). With several ranks, each rank scores its own B rows
// against the W*B columns gathered from every rank (labels offset by rank * B); the gather's
// backward sums each rank's gradient slice across ranks, so W ranks x B give the same loss
// (averaged over ranks) and the same gradients as 1 rank x W*B.
//
// Reconstruction: MSE between predicted and per-patch normalised target patches, averaged
// over the dropped patches (over all patches when nothing was dropped).
//
// Thread-safety: pure functions of their tensors; an EmbeddingGather is used by one thread.
#pragma once

#include <ATen/Tensor.h>

#include <stdexcept>

#include "common/status.h"

namespace flap::core {

// Thrown by an EmbeddingGather inside forward or backward, where no Status can be returned,
// when a collective fails; TrainStep catches it and returns the Status it carries.
class CollectiveError : public std::runtime_error {
 public:
  explicit CollectiveError(Status status) : std::runtime_error(status.ToString()), status_(std::move(status)) {}
  const Status& status() const { return status_; }

 private:
  Status status_;
};

// Gathers a (B, D) tensor from every rank into (W*B, D), rank-major, differentiably.
// Implementations: the single-process identity below, and the worker group's gather
// (collectives.h), whose backward sums each rank's gradient slice across ranks. Throws
// CollectiveError when the ranks cannot be reached.
class EmbeddingGather {
 public:
  virtual ~EmbeddingGather() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual at::Tensor AllGather(const at::Tensor& local) = 0;
  // Seconds spent in collectives so far (forward and backward); 0 for a single process.
  virtual double seconds() const { return 0.0; }
};

class LocalGather : public EmbeddingGather {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  at::Tensor AllGather(const at::Tensor& local) override { return local; }
};

// audio, text: (B, D) normalised embeddings of this rank; logit_scale: scalar log-scale.
// Returns this rank's mean loss, 0.5 * (CE(audio->text) + CE(text->audio)).
at::Tensor ContrastiveLoss(const at::Tensor& audio, const at::Tensor& text, const at::Tensor& logit_scale,
                           EmbeddingGather& gather);

// Per-patch normalised targets: (p - mean(p)) / sqrt(var(p) + 1e-6) over each patch's values.
at::Tensor NormalizePatches(const at::Tensor& patches);

// pred, target: (B, N, P); keep: (B, K) kept indices or undefined (nothing dropped).
at::Tensor ReconstructionLoss(const at::Tensor& pred, const at::Tensor& target, const at::Tensor& keep);

}  // namespace flap::core
