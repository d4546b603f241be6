#include "worker/core/synthetic_batch.h"

#include <ATen/ATen.h>

#include <string>

#include "worker/core/masking.h"

namespace flap::core {

Batch SyntheticBatch(const ModelConfig& c, const MaskConfig& mask, int64_t global, int64_t begin, int64_t count,
                     uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor spec = at::randn({global, c.target_frames, c.num_mel_bins});
  at::Tensor tokens = at::randint(1, c.vocab_size, {global, c.text_max_len}, at::kLong);
  if (c.text_pad_id != 0) tokens.masked_fill_(tokens.eq(c.text_pad_id), 0);  // a draw of the pad id
  at::Tensor lengths = at::randint(2, c.text_max_len + 1, {global}, at::kLong);
  tokens.masked_fill_(at::arange(c.text_max_len, at::kLong).unsqueeze(0) >= lengths.unsqueeze(1), c.text_pad_id);
  Batch b;
  b.spec = spec.narrow(0, begin, count).contiguous();
  b.tokens = tokens.narrow(0, begin, count).contiguous();
  if (mask.ratio > 0.0) {
    const MaskGeometry g{c.freq_patches(), c.time_patches()};
    const int kept = NumKept(mask, g);
    b.keep = at::empty({mask.views * count, kept}, at::kLong);
    int64_t* out = b.keep.data_ptr<int64_t>();
    for (int64_t v = 0; v < mask.views; ++v) {
      for (int64_t i = 0; i < count; ++i) {
        auto idx = KeepIndices(mask, g, seed, "s" + std::to_string(begin + i), 0, v);
        for (int k = 0; k < kept; ++k) out[(v * count + i) * kept + k] = idx[static_cast<size_t>(k)];
      }
    }
  }
  return b;
}

}  // namespace flap::core
