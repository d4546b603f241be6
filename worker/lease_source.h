// LeaseShardSource: the loader's ShardSource backed by the coordinator's shard leases
// (coordinator/service.h, steps 4 and 5), for a rank of a worker group running a trial that
// the coordinator assigned.
//
// Per epoch: the first ShardAt of an epoch declares the epoch's shards (BeginEpoch with the
// split's shards in manifest order; every rank sends the same list, which is idempotent). The
// coordinator orders them by sharding::EpochShardOrder(trial seed, epoch, their names), the
// order a standalone run of the seed reads them in (FixedShardSource, one rank).
//
// By position (every epoch but one continued, below): rank r of W reads positions r, r + W,
// r + 2W, ... of that order, its k-th shard being position k x W + r, leased by position
// (LeaseShardAt). Which rank reads which shard, and in which order, is a pure function of the
// seed, the epoch, the shards and W, computed here too (PeekShard names a shard without leasing
// it). So a trial resumed from a checkpoint on a group of the same size replays the epoch from
// the checkpoint's cursor: the loader places the checkpoint's step (PlaceStep) and every rank
// leases its shards again from there; the coordinator rescinds the completions of the lost
// attempt past the checkpoint (coordinator/lease.h, AcquireAt). On CPU the resumed trial ends
// with the weights of an uninterrupted one.
//
// Every rank of a group must run the same number of steps per epoch (the collectives are
// matched). StepsPerEpoch is the split's samples / (world size x batch size), and a rank whose
// shards run short of that (uneven shard sizes) tops up with padding: shards of the split
// re-read without a lease, rank-dependent round-robin by index, never counted. The same
// convention as PyTorch's DistributedSampler, which repeats samples to even out ranks.
//
// By slot (ContinueEpoch): a trial resumed on a group of another size cannot replay the epoch
// its checkpoint is in, since the positions of W ranks are not those of W'. For the rest of that
// epoch the rank leases whatever undone shard comes next, first come, first served, one per
// read-ahead slot (the loader's index), up to ceil(undone / W) so that a loader reading a block
// ahead cannot starve the other ranks, then pads; later epochs are read by position again.
//
// Done() completes the lease: the coordinator counts the shard once for the epoch, whatever
// fails afterwards. Calls that fail with UNAVAILABLE or DEADLINE_EXCEEDED (a coordinator
// restarting) are retried with backoff for up to `retry_for_s`. A completion refused because its
// lease expired (the rank stalled past the lease's ttl): by position, the rank leases its
// position again and completes it, since nobody else reads it; by slot, it is noted and skipped
// (the shard counts under its next lease). Other errors (a stale attempt: the trial was taken
// from the group) are returned and end the run.
//
// Thread-safety: as ShardSource (one call at a time, from the loader's assembler thread).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/client.h"
#include "worker/loader.h"

namespace flap::worker {

struct LeaseSourceOptions {
  std::string group_id;
  coordinator::v1::TrialRef trial;
  int rank = 0;
  int world_size = 1;
  int64_t batch_size = 32;     // per rank
  uint64_t seed = 0;           // the trial seed (train.seed): the coordinator's order is drawn from it
  double retry_for_s = 120.0;  // retry transient failures (coordinator::IsTransient) this long
};

// Retries `call` while its failure is transient (coordinator::IsTransient: the coordinator
// away, restarting or shutting down mid-call), with backoff from 100 ms to 2 s, for up to
// `retry_for_s`.
Status RetryTransient(double retry_for_s, const std::function<Status()>& call);

class LeaseShardSource : public ShardSource {
 public:
  // `shards`: the training split in manifest order. InvalidArgument when the split has fewer
  // samples than one global batch.
  static StatusOr<std::unique_ptr<LeaseShardSource>> Create(coordinator::CoordinatorClient* client,
                                                            const std::vector<sharding::ShardInfo>& shards,
                                                            const LeaseSourceOptions& options);

  StatusOr<std::optional<sharding::ShardInfo>> ShardAt(int64_t epoch, int64_t index) override;
  int64_t StepsPerEpoch() const override { return steps_per_epoch_; }
  Status Done(int64_t epoch, const sharding::ShardInfo& shard) override;
  // By position only (no call to the coordinator); FailedPrecondition for a continued epoch.
  StatusOr<std::optional<sharding::ShardInfo>> PeekShard(int64_t epoch, int64_t index) override;
  // Reads `epoch` by slot (see above).
  Status ContinueEpoch(int64_t epoch) override;

  // Counters (for logs and tests).
  int64_t leased() const { return leased_total_; }
  int64_t padded() const { return padded_total_; }
  int64_t completed() const { return completed_total_; }
  const std::vector<std::string>& notes() const { return notes_; }

 private:
  LeaseShardSource() = default;
  Status BeginEpoch(int64_t epoch);
  // The shard this rank reads at `index` of `epoch` by position, and its position (-1: padding).
  std::pair<const sharding::ShardInfo*, int64_t> ByPosition(int64_t epoch, int64_t index);
  StatusOr<std::optional<sharding::ShardInfo>> BySlot(int64_t epoch, int64_t index);
  // Leases `position` (retrying transient failures) and checks that it names `name`.
  StatusOr<uint64_t> LeaseAt(int64_t epoch, int64_t position, const std::string& name);
  Status Complete(int64_t epoch, uint64_t lease_id);

  coordinator::CoordinatorClient* client_ = nullptr;
  LeaseSourceOptions options_;
  std::vector<sharding::ShardInfo> shards_;
  std::map<std::string, size_t> by_name_;
  int64_t steps_per_epoch_ = 0;

  int64_t epoch_ = -1;  // the epoch begun last
  int64_t continued_ = -1;  // the epoch read by slot, if any
  // By slot, in epoch_:
  int64_t share_ = 0;  // leases this rank may take
  int64_t leased_in_epoch_ = 0;
  int64_t padding_next_ = 0;
  bool dry_ = false;  // the coordinator has nothing more for this rank
  // By position: the order of order_epoch_ (indices into shards_).
  int64_t order_epoch_ = -1;
  std::vector<size_t> order_;
  // (epoch, shard name) -> (lease id, position or -1 by slot), for Done(); padding is absent.
  std::map<std::pair<int64_t, std::string>, std::pair<uint64_t, int64_t>> leases_;

  int64_t leased_total_ = 0, padded_total_ = 0, completed_total_ = 0;
  std::vector<std::string> notes_;
};

}  // namespace flap::worker
