#include "worker/batcher.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>

#include "worker/core/draw.h"

namespace flap::worker {

namespace {

// Position epoch % n of a permutation of [0, n) drawn anew for every n epochs (seeded by the
// cycle epoch / n): each caption of a pool once per cycle, in a different order each cycle.
size_t CycleIndex(uint64_t seed, const std::string& key, int64_t epoch, size_t n, int64_t pool) {
  if (n <= 1) return 0;
  const int64_t cycle = epoch / static_cast<int64_t>(n);
  const size_t pos = static_cast<size_t>(epoch % static_cast<int64_t>(n));
  core::DrawRng rng(core::DrawPurpose::kCaption, seed, key, cycle, pool);
  std::vector<size_t> perm(n);
  for (size_t i = 0; i < n; ++i) perm[i] = i;
  for (size_t i = 0; i <= pos; ++i) std::swap(perm[i], perm[i + rng.Below(n - i)]);
  return perm[pos];
}

}  // namespace

CaptionChoice ChooseCaption(double augment_prob, uint64_t seed, const std::string& key, int64_t epoch,
                            size_t num_original, size_t num_augmented) {
  core::DrawRng rng(core::DrawPurpose::kCaption, seed, key, epoch);
  CaptionChoice c;
  const double u = rng.Uniform();
  c.augmented = num_augmented > 0 && u < augment_prob;
  // Streams 1 and 2 of the caption draw: the originals' and the augmented captions' cycles.
  c.index =
      c.augmented ? CycleIndex(seed, key, epoch, num_augmented, 2) : CycleIndex(seed, key, epoch, num_original, 1);
  return c;
}

at::Tensor PadTokens(const std::vector<const std::vector<int>*>& captions, int max_len, int pad_id, int end_id) {
  // Only as wide as the longest caption: padding columns cost text-encoder time and change
  // nothing (padded keys are masked, positions of real tokens stay the same).
  size_t longest = 1;
  for (const std::vector<int>* c : captions) longest = std::max(longest, c->size());
  const int width = static_cast<int>(std::min<size_t>(longest, static_cast<size_t>(max_len)));
  at::Tensor out = at::full({static_cast<int64_t>(captions.size()), width}, pad_id, at::kLong);
  auto acc = out.accessor<int64_t, 2>();
  for (size_t i = 0; i < captions.size(); ++i) {
    const std::vector<int>& ids = *captions[i];
    const size_t n = std::min<size_t>(ids.size(), static_cast<size_t>(width));
    for (size_t j = 0; j < n; ++j) acc[static_cast<int64_t>(i)][static_cast<int64_t>(j)] = ids[j];
    if (n < ids.size() && end_id >= 0 && ids.back() == end_id) acc[static_cast<int64_t>(i)][width - 1] = end_id;
  }
  return out;
}

int64_t CropStart(const TrialConfig& config, const std::string& key, int64_t epoch, int frames) {
  const int64_t spare = static_cast<int64_t>(frames) - config.model.target_frames;
  if (spare <= 0 || config.data.crop == "first") return 0;
  core::DrawRng rng(core::DrawPurpose::kCrop, config.train.seed, key, epoch);
  return static_cast<int64_t>(rng.Below(static_cast<uint64_t>(spare) + 1));
}

core::Batch AssembleBatch(const std::vector<SampleView>& samples, int64_t epoch, const TrialConfig& config,
                          bool pinned) {
  const int64_t b = static_cast<int64_t>(samples.size());
  const int64_t frames = config.model.target_frames, bins = config.model.num_mel_bins;
  const core::MaskGeometry geometry{config.model.freq_patches(), config.model.time_patches()};
  const int kept = core::NumKept(config.mask, geometry);
  const bool drop = config.mask.ratio > 0.0;

  core::Batch batch;
  const auto host = at::TensorOptions().pinned_memory(pinned);
  batch.spec = at::empty({b, frames, bins}, host.dtype(at::kFloat));
  const int64_t views = drop ? config.mask.views : 1;
  if (drop) batch.keep = at::empty({views * b, kept}, host.dtype(at::kLong));
  std::vector<const std::vector<int>*> captions;
  float* spec_out = batch.spec.data_ptr<float>();
  for (int64_t i = 0; i < b; ++i) {
    const SampleView& sample = samples[static_cast<size_t>(i)];
    const Clip& clip = *sample.clip;
    const int64_t start = CropStart(config, clip.key, epoch, sample.frames);
    std::memcpy(spec_out + i * frames * bins, sample.spec + start * bins, sizeof(float) * frames * bins);
    CaptionChoice c = ChooseCaption(config.text.augment_prob, config.train.seed, clip.key, epoch, clip.captions.size(),
                                    clip.captions_augment.size());
    captions.push_back(c.augmented ? &clip.captions_augment[c.index] : &clip.captions[c.index]);
    for (int64_t v = 0; drop && v < views; ++v) {
      std::vector<int64_t> keep = core::KeepIndices(config.mask, geometry, config.train.seed, clip.key, epoch, v);
      std::memcpy(batch.keep.data_ptr<int64_t>() + (v * b + i) * kept, keep.data(), sizeof(int64_t) * kept);
    }
  }
  batch.tokens = PadTokens(captions, config.model.text_max_len, config.model.text_pad_id, config.model.text_end_id);
  if (pinned) batch.tokens = batch.tokens.pin_memory();
  return batch;
}

}  // namespace flap::worker
