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

namespace flap::core {

// Gathers a (B, D) tensor from every rank into (W*B, D), rank-major, differentiably.
// Implementations: the single-process identity below, and the worker group's c10d gather.
class EmbeddingGather {
 public:
  virtual ~EmbeddingGather() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual at::Tensor AllGather(const at::Tensor& local) = 0;
};

class LocalGather : public EmbeddingGather {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  at::Tensor AllGather(const at::Tensor& local) override { return local; }
};

// audio, text: (B, D) normalised embeddings of this rank; logit_scale: scalar log-scale.
// Returns this rank's mean loss, 0.5 * (CE(audio->text) + CE(text->audio)).
at::Tensor ContrastiveLoss(const at::Tensor& audio, const at::Tensor& text,
                           const at::Tensor& logit_scale, EmbeddingGather& gather);

// Per-patch normalised targets: (p - mean(p)) / sqrt(var(p) + 1e-6) over each patch's values.
at::Tensor NormalizePatches(const at::Tensor& patches);

// pred, target: (B, N, P); keep: (B, K) kept indices or undefined (nothing dropped).
at::Tensor ReconstructionLoss(const at::Tensor& pred, const at::Tensor& target,
                              const at::Tensor& keep);

}  // namespace flap::core
