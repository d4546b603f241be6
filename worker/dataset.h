// The worker's in-memory view of one split of a dataset: every clip's normalised log-mel
// spectrogram (computed once, in parallel, at load, or read from the feature cache) and its
// captions as token ids. Evaluation uses it (it needs every clip at once); training streams its
// split through loader.h instead. Both are built from the same per-shard unit
// (shard_features.h).
//
// Load verifies each shard's size and checksum against the manifest before reading it, and
// fails naming the shard (and member) for anything missing, damaged or undecodable.
// Thread-safety: immutable after Load; const methods are safe from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "sharding/tokenizer.h"
#include "worker/shard_features.h"

namespace flap::worker {

struct DatasetOptions {
  int target_frames = 256;  // frames after pad / crop
  int num_mel_bins = 128;
  int threads = 0;          // feature threads; 0: one per core
  bool verify_checksums = true;
  std::string cache_dir;    // feature cache folder (shard_features.h); empty: none
};

class Dataset {
 public:
  // Reads split `split` of the dataset folder `dir` (manifest.json, shards, tokenizer.model).
  static StatusOr<Dataset> Load(const std::string& dir, const std::string& split,
                                const DatasetOptions& options);

  int64_t size() const { return static_cast<int64_t>(clips_.size()); }
  const Clip& clip(int64_t i) const { return clips_[static_cast<size_t>(i)]; }
  // target_frames x num_mel_bins normalised log-mel values of clip i, row-major.
  const float* spec(int64_t i) const { return specs_.data() + i * frames_ * bins_; }
  int target_frames() const { return frames_; }
  int num_mel_bins() const { return bins_; }
  const sharding::Tokenizer& tokenizer() const { return tokenizer_; }
  int64_t num_captions() const;

 private:
  Dataset(sharding::Tokenizer tokenizer) : tokenizer_(std::move(tokenizer)) {}
  sharding::Tokenizer tokenizer_;
  std::vector<Clip> clips_;
  std::vector<float> specs_;
  int frames_ = 0, bins_ = 0;
};

}  // namespace flap::worker
