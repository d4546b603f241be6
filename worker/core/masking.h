// Token dropping (DESIGN.md, "Token dropping"): which patches the audio encoder keeps for one
// training sample. Patches are indexed time-major, index = w * F + f for time patch w and
// frequency patch f, so a time column is F consecutive indices.
//
// The draw is a pure function of (seed, key, epoch, view): a resumed run sees the same masks.
// Every sample in a batch keeps the same number of tokens for a given ratio, so a batch's keep
// indices form a dense (B, K) tensor. Thread-safe (pure functions).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/model_config.h"

namespace flap::core {

struct MaskGeometry {
  int freq_patches = 8;   // F
  int time_patches = 16;  // W
  int num_patches() const { return freq_patches * time_patches; }
};

// Number of tokens kept: N - round(r * N) for 2d, F * (W - round(r * W)) for 1d; at least one
// patch (or one column) is always kept.
int NumKept(const MaskConfig& mask, const MaskGeometry& g);

// The sorted indices of the kept patches for one sample.
std::vector<int64_t> KeepIndices(const MaskConfig& mask, const MaskGeometry& g, uint64_t seed, const std::string& key,
                                 int64_t epoch, int64_t view = 0);

}  // namespace flap::core
