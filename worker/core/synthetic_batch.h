// A deterministic random batch for tests and benchmarks of the training step (not data: no
// dataset, no tokenizer): spectrograms ~ N(0, 1), captions of random ids and lengths padded
// with model.text_pad_id (no other id equals it), token
// masks from core/masking.h (mask.views views, view-major). Rows [begin, begin + count) of the global batch of `global`
// samples drawn from `seed`, so W ranks taking their contiguous slices see exactly the batch
// one rank of W*B sees. Thread-safety: uses LibTorch's global CPU generator (re-seeded).
#pragma once

#include <cstdint>

#include "config/model_config.h"
#include "worker/core/train_step.h"

namespace flap::core {

Batch SyntheticBatch(const ModelConfig& model, const MaskConfig& mask, int64_t global, int64_t begin, int64_t count,
                     uint64_t seed);

}  // namespace flap::core
