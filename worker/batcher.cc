#include "worker/batcher.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "worker/core/draw.h"

namespace flap::worker {

CaptionChoice ChooseCaption(double augment_prob, uint64_t seed, const std::string& key,
                            int64_t epoch, size_t num_original, size_t num_augmented) {
  core::DrawRng rng(core::DrawPurpose::kCaption, seed, key, epoch);
  CaptionChoice c;
  const double u = rng.Uniform();
  c.augmented = num_augmented > 0 && u < augment_prob;
  c.index = static_cast<size_t>(rng.Below(c.augmented ? num_augmented : num_original));
  return c;
}

at::Tensor PadTokens(const std::vector<const std::vector<int>*>& captions, int max_len) {
  // Only as wide as the longest caption: padding columns cost text-encoder time and change
  // nothing (padded keys are masked, positions of real tokens stay the same).
  size_t longest = 1;
  for (const std::vector<int>* c : captions) longest = std::max(longest, c->size());
  const int width = static_cast<int>(std::min<size_t>(longest, static_cast<size_t>(max_len)));
  at::Tensor out = at::zeros({static_cast<int64_t>(captions.size()), width}, at::kLong);
  auto acc = out.accessor<int64_t, 2>();
  for (size_t i = 0; i < captions.size(); ++i) {
    const std::vector<int>& ids = *captions[i];
    const size_t n = std::min<size_t>(ids.size(), static_cast<size_t>(width));
    for (size_t j = 0; j < n; ++j) acc[static_cast<int64_t>(i)][static_cast<int64_t>(j)] = ids[j];
  }
  return out;
}

Batcher::Batcher(const Dataset& dataset, const TrialConfig& config, int rank, int world)
    : dataset_(dataset),
      config_(config),
      geometry_{config.model.freq_patches(), config.model.time_patches()},
      rank_(rank),
      world_(world) {}

int64_t Batcher::steps_per_epoch() const { return dataset_.size() / (config_.train.batch_size * world_); }

size_t Batcher::Position(int64_t step_in_epoch, int64_t i) const {
  const int64_t b = config_.train.batch_size;
  return static_cast<size_t>((step_in_epoch * world_ + rank_) * b + i);
}

std::vector<int64_t> Batcher::EpochOrder(int64_t epoch) const {
  std::vector<int64_t> order(static_cast<size_t>(dataset_.size()));
  std::iota(order.begin(), order.end(), 0);
  core::DrawRng rng(core::DrawPurpose::kOrder, config_.train.seed, "", epoch);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.Below(i)]);
  return order;
}

std::vector<std::string> Batcher::BatchKeys(int64_t epoch, int64_t step_in_epoch) const {
  const std::vector<int64_t> order = EpochOrder(epoch);
  std::vector<std::string> keys;
  const int64_t b = config_.train.batch_size;
  for (int64_t i = 0; i < b; ++i) keys.push_back(dataset_.clip(order[Position(step_in_epoch, i)]).key);
  return keys;
}

core::Batch Batcher::TrainBatch(int64_t epoch, int64_t step_in_epoch) const {
  const std::vector<int64_t> order = EpochOrder(epoch);
  const int64_t b = config_.train.batch_size;
  const int64_t frames = dataset_.target_frames(), bins = dataset_.num_mel_bins();
  const int kept = core::NumKept(config_.mask, geometry_);
  const bool drop = config_.mask.ratio > 0.0;

  core::Batch batch;
  batch.spec = at::empty({b, frames, bins}, at::kFloat);
  if (drop) batch.keep = at::empty({b, kept}, at::kLong);
  std::vector<const std::vector<int>*> captions;
  float* spec_out = batch.spec.data_ptr<float>();
  for (int64_t i = 0; i < b; ++i) {
    const int64_t idx = order[Position(step_in_epoch, i)];
    const Clip& clip = dataset_.clip(idx);
    std::memcpy(spec_out + i * frames * bins, dataset_.spec(idx), sizeof(float) * frames * bins);
    CaptionChoice c = ChooseCaption(config_.augment_prob, config_.train.seed, clip.key, epoch,
                                    clip.captions.size(), clip.captions_augment.size());
    captions.push_back(c.augmented ? &clip.captions_augment[c.index] : &clip.captions[c.index]);
    if (drop) {
      std::vector<int64_t> keep =
          core::KeepIndices(config_.mask, geometry_, config_.train.seed, clip.key, epoch);
      std::memcpy(batch.keep.data_ptr<int64_t>() + i * kept, keep.data(), sizeof(int64_t) * kept);
    }
  }
  batch.tokens = PadTokens(captions, config_.model.text_max_len);
  return batch;
}

}  // namespace flap::worker
