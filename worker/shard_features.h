// The features of one shard, ready for batching: every clip's normalised log-mel spectrogram
// (its whole length up to max_frames, see "Stored length") and its captions as token ids. This is the unit of work of
// both data paths: the streaming loader (loader.h) computes shards on its threads, and the
// in-memory Dataset (dataset.h, used for evaluation) concatenates a split's shards.
//
// Stored length. A clip's features keep up to `max_frames` frames of the whole clip (at least
// `target_frames`: shorter clips are zero-padded to it), so that training crops and evaluation
// windows (batcher.h, evaluator.h) are cut from them; max_frames == target_frames stores the
// first T frames only.
//
// Caches. Features are keyed by the shard's checksum in the manifest and the front end
// (FrontEndKey: every fbank parameter, the normalisation, target and max frames, the format
// version): a changed front end never reads features made by another.
//  - In memory (FeatureMemoryCache::Process(), FetchShardFeatures): one per process, shared by
//    every loader, dataset and trial of the process. A shard is kept while the cache holds
//    fewer bytes than the caller's budget; beyond it shards are not admitted (an epoch reads
//    every shard in turn, so a fixed resident set beats evicting what the next read needs).
//    Unused entries of another front end are dropped to make room. Concurrent fetches of one
//    shard compute it once. Entries hold token ids, so the tokenizer's identity is part of
//    their key; the disk cache holds caption text, which any tokenizer reads.
//  - On disk (FeatureOptions::cache_dir): "<cache_dir>/<shard xxh64>-<FrontEndKey>.fbank", so
//    every trial of a sweep and every process naming the folder computes a shard once. A hit
//    skips reading and decoding the shard entirely. Files are written atomically (temporary
//    file + rename) and carry a checksum of their own; a damaged or mismatching file is
//    ignored and rewritten, never trusted. With `disk_overflow_only` (data.fbank_cache =
//    auto), only shards the memory cache did not admit are written.
// Values are float32, bit-identical to a fresh computation.
//
// Thread-safety: free functions and FeatureMemoryCache are safe from any thread; concurrent
// calls (also from several processes sharing one cache folder) are safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "sharding/manifest.h"
#include "sharding/text_tokenizer.h"

namespace flap::worker {

struct Clip {
  std::string key;
  std::vector<std::vector<int>> captions;          // token ids of the original captions
  std::vector<std::vector<int>> captions_augment;  // token ids of the augmented captions
  std::vector<std::string> tags;                   // sound-event tags from the corpus (may be empty)
};

struct FeatureOptions {
  int target_frames = 256;  // the model's window T: shorter clips are padded to it
  int max_frames = 0;       // frames kept per clip (>= target_frames); 0: target_frames
  int num_mel_bins = 128;
  int threads = 1;                  // fbank threads within the shard (>= 1)
  bool verify_checksums = true;     // check the shard's size and XXH64 against the manifest
  std::string cache_dir;            // disk cache folder; empty: none
  bool disk_overflow_only = false;  // write the disk cache only for shards memory did not admit
  int64_t memory_budget_bytes = 0;  // FetchShardFeatures: the memory cache's budget; 0: not used
  // The BPE tokenizer of text.tokenizer (a folder or tokenizer.json) Dataset::Load tokenises
  // with; empty: the dataset's SentencePiece model (sharding/text_tokenizer.h).
  std::string text_tokenizer;
  // Augmented captions from the dataset's side file (sharding::ReadAugmentFile): a listed
  // clip's augmented captions replace those in its shard. Borrowed; null: none.
  const std::map<std::string, std::vector<std::string>>* augment = nullptr;
};

struct ShardFeatures {
  std::string shard;             // the shard's file name
  std::vector<Clip> clips;       // in shard order
  std::vector<float> specs;      // every clip's frames x bins, row-major, clip after clip
  std::vector<int> frames;       // stored frames of each clip (target_frames..max_frames)
  std::vector<int64_t> offsets;  // first frame of each clip in specs (in frames)
  int bins = 0;
  bool from_cache = false;  // true: read from the disk cache
  std::string cache_note;   // why an existing cache file was not used (empty if none)

  int64_t size() const { return static_cast<int64_t>(clips.size()); }
  const float* spec(int64_t i) const { return specs.data() + offsets[static_cast<size_t>(i)] * bins; }
  int num_frames(int64_t i) const { return frames[static_cast<size_t>(i)]; }
  int64_t bytes() const { return static_cast<int64_t>(specs.size() * sizeof(float)); }
};

// Computes (or reads from the cache) the features of shard `info` of the dataset folder
// `dir`. NotFound for a missing shard; Corruption naming the shard (and sample) for a wrong
// checksum or size, a sample count that differs from the manifest, undecodable audio, or a
// caption without tokens; IOError if a cache file cannot be written (the features are still
// valid then, and are returned: a failed cache write is reported in cache_note, not fatal).
StatusOr<ShardFeatures> LoadShardFeatures(const std::string& dir, const sharding::ShardInfo& info,
                                          const sharding::TextTokenizer& tokenizer, const FeatureOptions& options);

// The normalised log-mel features of decoded mono clips (at the dataset's sample rate), as a
// shard's are computed: each clip's stored length (frames, offsets) and values (specs, bins),
// options.threads clips at a time. The clips and shard fields of *f are left as they are.
void ComputeClipFeatures(const std::vector<const std::vector<float>*>& audio, const FeatureOptions& options,
                         ShardFeatures* f);

// The cache file that holds shard `info`'s features for these options.
std::string FeatureCachePath(const sharding::ShardInfo& info, const FeatureOptions& options);

// 16 hex digits naming the front end of `options`: fbank parameters, normalisation, target
// and max frames, feature format version.
std::string FrontEndKey(const FeatureOptions& options);

// The process's in-memory feature cache (see "Caches" above).
class FeatureMemoryCache {
 public:
  struct Stats {
    int64_t hits = 0;          // fetches answered from memory (or from a fetch in flight)
    int64_t loads = 0;         // fetches that read the disk cache or computed
    int64_t not_admitted = 0;  // loaded shards left out for the budget
    int64_t bytes = 0;         // features held
    int64_t entries = 0;
  };
  static FeatureMemoryCache& Process();
  Stats stats() const;
  void Clear();  // drops every entry (tests)

 private:
  friend StatusOr<std::shared_ptr<const ShardFeatures>> FetchShardFeatures(const std::string&,
                                                                           const sharding::ShardInfo&,
                                                                           const sharding::TextTokenizer&,
                                                                           const FeatureOptions&, bool*);
  struct Entry;
  mutable Mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> entries_ GUARDED_BY(mu_);  // key: dir, shard, checksum, front end
  Stats stats_ GUARDED_BY(mu_);
};

// The features of shard `info`: from the process's memory cache when
// options.memory_budget_bytes > 0 (see "Caches"), else as LoadShardFeatures. Errors as
// LoadShardFeatures; a failed load is not cached. *from_memory (optional): whether memory
// answered.
StatusOr<std::shared_ptr<const ShardFeatures>> FetchShardFeatures(const std::string& dir,
                                                                  const sharding::ShardInfo& info,
                                                                  const sharding::TextTokenizer& tokenizer,
                                                                  const FeatureOptions& options,
                                                                  bool* from_memory = nullptr);

}  // namespace flap::worker
