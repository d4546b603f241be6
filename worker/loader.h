// The streaming loader: feeds training with ready batches from background threads, in an order
// that is a pure function of (trial seed, epoch, the shards assigned to this rank), and resumes
// exactly from a cursor.
//
// The order. A ShardSource says which shards this rank reads in an epoch, in order (the fixed
// source: this rank's share of the split in sharding::EpochShardOrder(seed, epoch, its names),
// the order a coordinator leases a split in; a lease source: the shards in the order their
// leases come). The epoch's shard list is cut into blocks of `shuffle_shards` consecutive
// shards, so the shards mixed together change with every epoch and every seed; the samples of
// all the shards of one block are shuffled together (seeded by the seed, the epoch and the
// block's shard names) and consumed in that order, block after block, B at a time, for
// steps_per_epoch steps (a number every rank of the group shares; samples past it are not used
// that epoch). Thread timing never enters: features are computed per shard into their own
// slots and batches are assembled by a single thread in that order.
//
// The cursor (LoaderCursor): epoch, shards of this epoch whose block is fully consumed, the
// position inside the current block, and the step in the epoch. Every batch carries the cursor
// just after it; a checkpoint stores that cursor, and a loader started from it yields exactly
// the batches an uninterrupted loader would have yielded next (it re-reads the current
// block's shards and skips the consumed positions).
//
// The threads. `threads` feature threads take shards in the order they will be needed (the
// current block and one block ahead, crossing epochs) and compute them through
// FetchShardFeatures (decode, fbank, tokenize; the feature caches). One assembler thread
// cuts batches (spectrograms, captions, masks) into a queue of at most `prefetch_batches`
// ready batches. The training loop only calls Next(), which does no I/O. Memory: at most two
// blocks of features plus the queued batches, besides what the memory cache keeps.
//
// Shards and ranks: the fixed source gives rank r the split's shards r, r + W, r + 2W, ... of
// the manifest order (no overlap, every shard used); with one rank that is the whole split, read
// in the very order a coordinator leases it to a trial of the same seed. A coordinator-backed
// source handing out shards by lease implements the same interface. Or every rank reads the
// whole split from a fixed source of one rank and keeps its slice of each global batch
// (LoaderOptions::slice): the order is then the same for any number of ranks.
//
// Thread-safety: ShardSource implementations are called from the loader's threads one call at
// a time. StreamingLoader's methods are called from one thread (the training loop).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"
#include "sharding/manifest.h"
#include "config/trial_config.h"
#include "worker/core/train_step.h"
#include "worker/shard_features.h"

namespace flap::worker {

// Where a rank's shards come from.
class ShardSource {
 public:
  virtual ~ShardSource() = default;
  // The index-th shard (0-based) this rank reads in `epoch`, or nullopt past the last one.
  // Called with increasing indices within an epoch.
  virtual StatusOr<std::optional<sharding::ShardInfo>> ShardAt(int64_t epoch, int64_t index) = 0;
  // Training steps per epoch, identical on every rank of the group.
  virtual int64_t StepsPerEpoch() const = 0;
  // Every sample of `shard` in `epoch` has been handed to training (a lease-backed source
  // completes the lease here). Default: nothing to do.
  virtual Status Done(int64_t epoch, const sharding::ShardInfo& shard) {
    (void)epoch;
    (void)shard;
    return Status::OK();
  }
  // The shard ShardAt(epoch, index) will give, named without claiming it (no lease), in any
  // order of calls: for placing a step in the epoch (PlaceStep). Default: ShardAt, for sources
  // whose ShardAt claims nothing.
  virtual StatusOr<std::optional<sharding::ShardInfo>> PeekShard(int64_t epoch, int64_t index) {
    return ShardAt(epoch, index);
  }
  // A resumed run goes on with `epoch` at its checkpoint's step without replaying the epoch's
  // order (the checkpoint was made by a group of another size): from here on the source gives
  // only what is left of the epoch, from index 0. FailedPrecondition by default: a source that
  // always replays.
  virtual Status ContinueEpoch(int64_t epoch) {
    return Status::FailedPrecondition("this shard source replays epoch " + std::to_string(epoch) +
                                      " from its start; it cannot continue it");
  }
};

// The fixed list: rank `rank` of `world_size` takes shards rank, rank + W, ... of `shards`
// (manifest order) and reads them in sharding::EpochShardOrder(seed, epoch, their names): a
// new order every epoch, the same for every run of the seed whatever its other settings.
// StepsPerEpoch = min over ranks of (samples of the rank's shards) / batch_size.
class FixedShardSource : public ShardSource {
 public:
  // InvalidArgument if there are fewer shards than ranks or a rank has fewer samples than one
  // batch, naming the split and the counts.
  static StatusOr<std::unique_ptr<FixedShardSource>> Create(const std::vector<sharding::ShardInfo>& shards, int rank,
                                                            int world_size, int64_t batch_size, uint64_t seed);
  StatusOr<std::optional<sharding::ShardInfo>> ShardAt(int64_t epoch, int64_t index) override;
  int64_t StepsPerEpoch() const override { return steps_per_epoch_; }
  // This rank's shards in manifest order.
  const std::vector<sharding::ShardInfo>& shards() const { return mine_; }

 private:
  FixedShardSource() = default;
  std::vector<sharding::ShardInfo> mine_;
  uint64_t seed_ = 0;
  int64_t steps_per_epoch_ = 0;
  int64_t order_epoch_ = -1;
  std::vector<size_t> order_;  // EpochShardOrder of mine_ for order_epoch_
};

struct LoaderCursor {
  int64_t epoch = 0;
  int64_t shards_done = 0;         // shards of the epoch's order in fully consumed blocks; -1:
                                   // unknown, derived from step_in_epoch (needs a source that can
                                   // be read from index 0 again, as the fixed one can)
  int64_t position = 0;            // samples consumed in the current block
  int64_t step_in_epoch = 0;       // batches of the epoch already handed out
  std::vector<std::string> block;  // the current block's shards (a check on restore; may be empty)

  nlohmann::json ToJson() const;
  // Corruption naming `what` and the field for anything missing or out of range.
  static StatusOr<LoaderCursor> FromJson(const nlohmann::json& j, const std::string& what);
  bool operator==(const LoaderCursor& o) const {
    return epoch == o.epoch && shards_done == o.shards_done && position == o.position &&
           step_in_epoch == o.step_in_epoch && block == o.block;
  }
};

// Where step `step_in_epoch` of `epoch` starts in `source`'s order, for loaders that cut
// `batch` samples a step (all slices) from blocks of `shuffle_shards` shards: the cursor with
// its shards_done, position and block (PeekShard; nothing is leased). Internal when the
// epoch's shards run out before the step.
StatusOr<LoaderCursor> PlaceStep(ShardSource& source, int64_t epoch, int64_t step_in_epoch, int64_t batch,
                                 int shuffle_shards);

struct LoaderOptions {
  std::string dataset_dir;   // folder with manifest.json and the shards
  int threads = 1;           // feature threads (>= 1)
  int shuffle_shards = 4;    // shards mixed together in one block (>= 1)
  int prefetch_batches = 4;  // ready batches queued ahead (>= 1)
  bool pin_memory = false;   // batches in pinned host memory (training on a GPU)
  // One order cut for several ranks: each step takes slices x config.train.batch_size samples
  // of the order (the group's global batch) and this loader keeps the contiguous slice
  // [slice x B, (slice + 1) x B) of them. Every rank reads the same source (every shard: its
  // features too) and the order, the steps per epoch and the cursor are those of one loader
  // taking the whole global batch, whatever the number of slices (trainer.h, "Group size").
  // slices = 1: the loader keeps every sample it cuts.
  int slice = 0;
  int slices = 1;
  FeatureOptions features;   // frames, bins, checksums, caches (threads ignored)
};

struct LoadedBatch {
  core::Batch batch;
  std::vector<std::string> keys;  // sample keys in batch order
  int64_t epoch = 0;
  int64_t step_in_epoch = 0;
  LoaderCursor after;  // the cursor once this batch is consumed
};

struct LoaderStats {
  double wait_seconds = 0;         // time Next() spent blocked waiting for a batch
  int64_t batches = 0;             // batches returned by Next()
  int64_t shards_computed = 0;     // shards decoded and featurised
  int64_t shards_cached = 0;       // shards read from the disk cache
  int64_t shards_from_memory = 0;  // shards found in the process's memory cache
  double busy_seconds = 0;         // CPU time of the loader's threads: feature_seconds + assembly_seconds
  double feature_seconds = 0;      // of which fetching or computing shard features
  double assembly_seconds = 0;     // of which assembling batches (crops, masks, captions, tokens)
  std::vector<std::string> notes;  // cache notes (ignored or unwritable cache files)
};

class StreamingLoader {
 public:
  // Starts the threads at `start`. `config` gives the seed, batch size, masking and caption
  // policy; `tokenizer` must outlive the loader. InvalidArgument if the options are out of
  // range or the cursor does not fit this source (its step, position or block disagree).
  static StatusOr<std::unique_ptr<StreamingLoader>> Start(const LoaderOptions& options, const TrialConfig& config,
                                                          const sharding::TextTokenizer& tokenizer,
                                                          std::unique_ptr<ShardSource> source,
                                                          const LoaderCursor& start = {});
  ~StreamingLoader();  // stops and joins the threads
  StreamingLoader(const StreamingLoader&) = delete;
  StreamingLoader& operator=(const StreamingLoader&) = delete;

  int64_t steps_per_epoch() const;
  // The next batch, blocking until it is ready. An error of the data (a damaged shard, a
  // caption without tokens...) is returned here, naming the shard, and is sticky.
  StatusOr<LoadedBatch> Next();
  LoaderStats stats() const;

  struct Impl;

 private:
  explicit StreamingLoader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flap::worker
