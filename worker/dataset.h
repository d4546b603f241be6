// The worker's in-memory view of one split of a dataset: every clip's normalised log-mel
// spectrogram (its stored length, shard_features.h; computed once, in parallel, at load, or
// taken from the feature caches) and its captions as token ids. Evaluation uses it (it needs every clip at once);
// training streams its split through loader.h instead. Both are built from the same per-shard unit (shard_features.h).
//
// Load verifies each shard's size and checksum against the manifest before reading it, and
// fails naming the shard (and member) for anything missing, damaged or undecodable.
// Thread-safety: immutable after Load; const methods are safe from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <string>
#include <vector>

#include "common/status.h"
#include "sharding/tokenizer.h"
#include "worker/shard_features.h"

namespace flap::worker {

class Dataset {
 public:
  // Reads split `split` of the dataset folder `dir` (manifest.json, shards, tokenizer.model).
  // options.threads: fbank threads per shard (0: one per core); the caches as options say.
  static StatusOr<Dataset> Load(const std::string& dir, const std::string& split, const FeatureOptions& options);

  int64_t size() const { return static_cast<int64_t>(index_.size()); }
  const Clip& clip(int64_t i) const { return Shard(i).clips[Local(i)]; }
  // num_frames(i) x num_mel_bins normalised log-mel values of clip i, row-major.
  const float* spec(int64_t i) const { return Shard(i).spec(static_cast<int64_t>(Local(i))); }
  int num_frames(int64_t i) const { return Shard(i).num_frames(static_cast<int64_t>(Local(i))); }
  int target_frames() const { return frames_; }  // the model's window T (<= every num_frames)
  int num_mel_bins() const { return bins_; }
  const sharding::Tokenizer& tokenizer() const { return tokenizer_; }
  int64_t num_captions() const;

 private:
  Dataset(sharding::Tokenizer tokenizer) : tokenizer_(std::move(tokenizer)) {}
  const ShardFeatures& Shard(int64_t i) const { return *shards_[index_[static_cast<size_t>(i)].first]; }
  size_t Local(int64_t i) const { return index_[static_cast<size_t>(i)].second; }
  sharding::Tokenizer tokenizer_;
  std::vector<std::shared_ptr<const ShardFeatures>> shards_;
  std::vector<std::pair<size_t, size_t>> index_;  // clip -> (shard, clip in shard)
  int frames_ = 0, bins_ = 0;
};

}  // namespace flap::worker
