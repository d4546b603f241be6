// The features of one shard, ready for batching: every clip's normalised log-mel spectrogram
// (padded or cut to target_frames) and its captions as token ids. This is the unit of work of
// both data paths: the streaming loader (loader.h) computes shards on its threads, and the
// in-memory Dataset (dataset.h, used for evaluation) concatenates a split's shards.
//
// Feature cache: with FeatureOptions::cache_dir set, the features and caption strings of a
// shard are kept in "<cache_dir>/<shard xxh64>-T<frames>-M<bins>.fbank", named by the shard's
// checksum in the manifest, so every trial of a sweep (and every dataset folder holding the
// same shard bytes) computes them once. A hit skips reading and decoding the shard entirely.
// Cache files are written atomically (temporary file + rename) and carry a checksum of their
// own; a damaged or mismatching cache file is ignored and rewritten, never trusted. Values
// are float32, bit-identical to a fresh computation.
//
// Thread-safety: free functions; concurrent calls (also from several processes sharing one
// cache folder) are safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "sharding/manifest.h"
#include "sharding/tokenizer.h"

namespace flap::worker {

struct Clip {
  std::string key;
  std::vector<std::vector<int>> captions;          // token ids of the original captions
  std::vector<std::vector<int>> captions_augment;  // token ids of the augmented captions
};

struct FeatureOptions {
  int target_frames = 256;       // frames after pad / crop
  int num_mel_bins = 128;
  int threads = 1;               // fbank threads within the shard (>= 1)
  bool verify_checksums = true;  // check the shard's size and XXH64 against the manifest
  std::string cache_dir;         // empty: no feature cache
  // Augmented captions from the dataset's side file (sharding::ReadAugmentFile): a listed
  // clip's augmented captions replace those in its shard. Borrowed; null: none.
  const std::map<std::string, std::vector<std::string>>* augment = nullptr;
};

struct ShardFeatures {
  std::string shard;           // the shard's file name
  std::vector<Clip> clips;     // in shard order
  std::vector<float> specs;    // clips.size() x frames x bins, row-major
  int frames = 0, bins = 0;
  bool from_cache = false;     // true: read from the feature cache
  std::string cache_note;      // why an existing cache file was not used (empty if none)

  int64_t size() const { return static_cast<int64_t>(clips.size()); }
  const float* spec(int64_t i) const { return specs.data() + i * frames * bins; }
};

// Computes (or reads from the cache) the features of shard `info` of the dataset folder
// `dir`. NotFound for a missing shard; Corruption naming the shard (and sample) for a wrong
// checksum or size, a sample count that differs from the manifest, undecodable audio, or a
// caption without tokens; IOError if a cache file cannot be written (the features are still
// valid then, and are returned: a failed cache write is reported in cache_note, not fatal).
StatusOr<ShardFeatures> LoadShardFeatures(const std::string& dir, const sharding::ShardInfo& info,
                                          const sharding::Tokenizer& tokenizer,
                                          const FeatureOptions& options);

// The cache file that holds shard `info`'s features for these options.
std::string FeatureCachePath(const sharding::ShardInfo& info, const FeatureOptions& options);

}  // namespace flap::worker
