// The worker's in-memory view of one split of a dataset: every clip's normalised log-mel
// spectrogram (its stored length, shard_features.h; computed once, in parallel, at load, or
// taken from the feature caches) and its captions as token ids. Evaluation uses it (it needs every clip at once);
// training streams its split through loader.h instead. Both are built from the same per-shard unit (shard_features.h).
//
// Load verifies each shard's size and checksum against the manifest before reading it, and
// fails naming the shard (and member) for anything missing, damaged or undecodable.
//
// Splits are read by role (sharding/manifest.h): loading "val" from a dataset made before the
// val and test splits existed reads its "eval" split (identity().read_as says so); such a
// dataset has no "test", and loading it fails with NotFound naming the dataset and the split.
//
// Every loaded split has an identity (EvalSetIdentity): clip and caption counts, a hash of its
// sorted clip keys and the chance levels of the retrieval metrics, so evaluation results say
// which set they were measured on. A process-wide observer (SetSplitLoadObserver) sees every
// split Load reads, so tests can prove when a split (the test split) is read.
//
// Thread-safety: immutable after Load; const methods are safe from any thread.
// SetSplitLoadObserver may be called from any thread; the observer runs on the loading thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "sharding/text_tokenizer.h"
#include "worker/core/retrieval.h"
#include "worker/shard_features.h"

namespace flap::worker {

// Which evaluation set a loaded split is: reported with evaluation results, so numbers measured
// on different sets are not compared unawares.
struct EvalSetIdentity {
  std::string split;    // the split asked for, e.g. "val"
  std::string read_as;  // the split read: `split`, or "eval" for "val" of a dataset made before val/test
  int64_t clips = 0;
  int64_t captions = 0;  // original captions (the text->audio queries)
  // The low 48 bits of XXH64 (seed 0) of the clip keys, sorted, each followed by '\n': the same
  // set of clips gives the same hash whatever its shard order. Exact in a double.
  uint64_t key_hash = 0;
  // Chance levels of R@k (k = 1, 5, 10), as fractions in [0, 1]. text->audio: a caption's one
  // clip among `clips` lands in the top k with probability min(1, k / clips). audio->text: the
  // mean over clips of 1 - C(N - m, k) / C(N, k), N = captions, m = the clip's captions (the
  // chance that at least one of its m captions is among k drawn from N).
  double chance_t2a_r1 = 0, chance_t2a_r5 = 0, chance_t2a_r10 = 0;
  double chance_a2t_r1 = 0, chance_a2t_r5 = 0, chance_a2t_r10 = 0;

  // The identity of a set with these clip keys (any order) and captions per clip (in the same
  // order as the keys).
  static EvalSetIdentity Of(std::string split, std::string read_as, const std::vector<std::string>& keys,
                            const std::vector<int64_t>& captions_per_clip);
  // key_hash as 12 lowercase hex digits.
  std::string HashHex() const;
  // "split 'val': 200 clips, 1000 captions, set 0123456789ab", with " (read from 'eval': ...)"
  // after the split when it fell back.
  std::string Describe() const;
  // For metric records (string -> double): set_clips, set_captions, set_hash (key_hash as a
  // number), chance_t2a_r1, chance_t2a_r5, chance_t2a_r10, chance_a2t_r1, chance_a2t_r5,
  // chance_a2t_r10.
  std::map<std::string, double> ToRecord() const;
};


// Called by Dataset::Load each time it reads a split, with the dataset folder and the split
// name actually read ("eval" when "val" fell back to it), before any shard is read.
using SplitLoadObserver = std::function<void(const std::string& dataset_dir, const std::string& split)>;
// Installs the process-wide observer (an empty function: none). Returns the one it replaces.
SplitLoadObserver SetSplitLoadObserver(SplitLoadObserver observer);

class Dataset {
 public:
  // Reads split `split` of the dataset folder `dir` (manifest.json, shards, tokenizer.model),
  // its captions tokenised by options.text_tokenizer's BPE when set;
  // "val" reads "eval" in a dataset made before val and test (Manifest::ResolveSplit). NotFound
  // naming the dataset and the split when it has no such split.
  // options.threads: fbank threads per shard (0: one per core); the caches as options say.
  static StatusOr<Dataset> Load(const std::string& dir, const std::string& split, const FeatureOptions& options);

  // A set of clips that is no dataset's split (the audio files flap-worker embed and zeroshot
  // read): `features` computed by ComputeClipFeatures with at least `target_frames` frames per
  // clip, their keys (and captions, if any) in features.clips; identity().split is `name`.
  static Dataset FromFeatures(sharding::TextTokenizer tokenizer, ShardFeatures features, int target_frames,
                              const std::string& name);

  int64_t size() const { return static_cast<int64_t>(index_.size()); }
  const Clip& clip(int64_t i) const { return Shard(i).clips[Local(i)]; }
  // num_frames(i) x num_mel_bins normalised log-mel values of clip i, row-major.
  const float* spec(int64_t i) const { return Shard(i).spec(static_cast<int64_t>(Local(i))); }
  int num_frames(int64_t i) const { return Shard(i).num_frames(static_cast<int64_t>(Local(i))); }
  int target_frames() const { return frames_; }  // the model's window T (<= every num_frames)
  int num_mel_bins() const { return bins_; }
  const sharding::TextTokenizer& tokenizer() const { return tokenizer_; }
  int64_t num_captions() const;
  // The split asked for, the one read, counts, key hash and chance levels.
  const EvalSetIdentity& identity() const { return identity_; }
  // identity().Describe().
  std::string Describe() const { return identity_.Describe(); }

 private:
  Dataset(sharding::TextTokenizer tokenizer) : tokenizer_(std::move(tokenizer)) {}
  const ShardFeatures& Shard(int64_t i) const { return *shards_[index_[static_cast<size_t>(i)].first]; }
  size_t Local(int64_t i) const { return index_[static_cast<size_t>(i)].second; }
  sharding::TextTokenizer tokenizer_;
  std::vector<std::shared_ptr<const ShardFeatures>> shards_;
  std::vector<std::pair<size_t, size_t>> index_;  // clip -> (shard, clip in shard)
  int frames_ = 0, bins_ = 0;
  EvalSetIdentity identity_;
};

}  // namespace flap::worker
