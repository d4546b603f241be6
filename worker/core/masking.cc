#include "worker/core/masking.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "worker/core/draw.h"

namespace flap::core {
namespace {

int NumDropped(double ratio, int n) {
  const int dropped = static_cast<int>(std::lround(ratio * n));
  return std::clamp(dropped, 0, n - 1);
}

// The first `k` entries of a seeded Fisher-Yates shuffle of [0, n), sorted.
std::vector<int64_t> ChooseSorted(DrawRng& rng, int n, int k) {
  std::vector<int64_t> perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  for (int i = 0; i < k; ++i) {
    const int j = i + static_cast<int>(rng.Below(static_cast<uint64_t>(n - i)));
    std::swap(perm[i], perm[j]);
  }
  perm.resize(k);
  std::sort(perm.begin(), perm.end());
  return perm;
}

}  // namespace

int NumKept(const MaskConfig& mask, const MaskGeometry& g) {
  if (mask.strategy == MaskStrategy::k1d) {
    return g.freq_patches * (g.time_patches - NumDropped(mask.ratio, g.time_patches));
  }
  return g.num_patches() - NumDropped(mask.ratio, g.num_patches());
}

std::vector<int64_t> KeepIndices(const MaskConfig& mask, const MaskGeometry& g, uint64_t seed, const std::string& key,
                                 int64_t epoch, int64_t view) {
  DrawRng rng(DrawPurpose::kMask, seed, key, epoch, view);
  if (mask.strategy == MaskStrategy::k1d) {
    const int kept_cols = g.time_patches - NumDropped(mask.ratio, g.time_patches);
    std::vector<int64_t> cols = ChooseSorted(rng, g.time_patches, kept_cols);
    std::vector<int64_t> keep;
    keep.reserve(static_cast<size_t>(kept_cols) * g.freq_patches);
    for (int64_t w : cols) {
      for (int f = 0; f < g.freq_patches; ++f) keep.push_back(w * g.freq_patches + f);
    }
    return keep;
  }
  return ChooseSorted(rng, g.num_patches(), NumKept(mask, g));
}

}  // namespace flap::core
