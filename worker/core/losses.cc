#include "worker/core/losses.h"

#include <ATen/ATen.h>

namespace flap::core {

at::Tensor ContrastiveLoss(const at::Tensor& audio, const at::Tensor& text, const at::Tensor& logit_scale,
                           EmbeddingGather& gather) {
  const int64_t b = audio.size(0);
  at::Tensor all_audio = gather.AllGather(audio);
  at::Tensor all_text = gather.AllGather(text);
  at::Tensor scale = logit_scale.exp();
  at::Tensor logits_a2t = scale * at::matmul(audio, all_text.t());  // (B, W*B)
  at::Tensor logits_t2a = scale * at::matmul(text, all_audio.t());
  at::Tensor labels = at::arange(b, audio.options().dtype(at::kLong)) + gather.rank() * b;
  return 0.5 * (at::cross_entropy_loss(logits_a2t, labels) + at::cross_entropy_loss(logits_t2a, labels));
}

at::Tensor NormalizePatches(const at::Tensor& patches) {
  at::Tensor mean = patches.mean(-1, /*keepdim=*/true);
  at::Tensor var = patches.var(-1, /*unbiased=*/true, /*keepdim=*/true);
  return (patches - mean) / (var + 1e-6).sqrt();
}

at::Tensor ReconstructionLoss(const at::Tensor& pred, const at::Tensor& target, const at::Tensor& keep) {
  at::Tensor per_patch = (pred - target).pow(2).mean(-1);  // (B, N)
  if (!keep.defined() || keep.size(1) == pred.size(1)) return per_patch.mean();
  at::Tensor dropped = at::ones_like(per_patch).scatter_(1, keep, 0.0);
  return (per_patch * dropped).sum() / dropped.sum();
}

}  // namespace flap::core
