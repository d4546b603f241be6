// LeaseShardSource: the loader's ShardSource backed by the coordinator's shard leases
// (coordinator/service.h, steps 4 and 5), for a rank of a worker group running a trial that
// the coordinator assigned.
//
// Per epoch: the first ShardAt of an epoch declares the epoch's shards (BeginEpoch with the
// split's shards in manifest order; every rank sends the same list, which is idempotent) and
// learns how many are still undone. The coordinator hands them out in
// sharding::EpochShardOrder(trial seed, epoch, their names), the order a standalone run of the
// seed reads them in (FixedShardSource, one rank). The rank then leases shards one per
// read-ahead slot (the loader's index in the epoch is the slot), up to its fair share:
// ceil(undone / world size), so that a loader reading a block ahead cannot starve the other
// ranks. Done() completes the lease: the coordinator counts the shard once for the epoch,
// whatever fails afterwards.
//
// Every rank of a group must run the same number of steps per epoch (the collectives are
// matched), while leases hand out shards first come, first served. StepsPerEpoch is therefore
// the split's samples / (world size x batch size), and a rank whose leased shards run short of
// that (uneven shard sizes, shards left over by a lost attempt, the pool empty or every undone
// shard leased by another rank) tops up with padding: shards of the split re-read without a
// lease, rank-dependent round-robin, never counted. The same convention as PyTorch's
// DistributedSampler, which repeats samples to even out ranks.
//
// Which rank reads which shard is not a pure function of the seed (it depends on which rank asks
// first, and on leases that expire), so a trial resumed from a checkpoint continues the epoch at
// the checkpoint's step with the shards still undone (TrainingHooks::exact_resume = false), not
// with the same samples.
//
// Calls that fail with UNAVAILABLE or DEADLINE_EXCEEDED (a coordinator restarting) are retried
// with backoff for up to `retry_for_s`; a completion refused because its lease expired is
// noted and skipped (the shard counts under its next lease). Other errors (a stale attempt: the
// trial was taken from the group) are returned and end the run.
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

  // Counters (for logs and tests).
  int64_t leased() const { return leased_total_; }
  int64_t padded() const { return padded_total_; }
  int64_t completed() const { return completed_total_; }
  const std::vector<std::string>& notes() const { return notes_; }

 private:
  LeaseShardSource() = default;
  Status BeginEpoch(int64_t epoch);

  coordinator::CoordinatorClient* client_ = nullptr;
  LeaseSourceOptions options_;
  std::vector<sharding::ShardInfo> shards_;
  std::map<std::string, size_t> by_name_;
  int64_t steps_per_epoch_ = 0;

  int64_t epoch_ = -1;  // the epoch begun last
  int64_t share_ = 0;   // leases this rank may take in epoch_
  int64_t leased_in_epoch_ = 0;
  int64_t padding_next_ = 0;
  bool dry_ = false;  // the coordinator has nothing more for this rank in epoch_
  // (epoch, shard name) -> lease id, for Done(); padding shards are absent.
  std::map<std::pair<int64_t, std::string>, uint64_t> leases_;

  int64_t leased_total_ = 0, padded_total_ = 0, completed_total_ = 0;
  std::vector<std::string> notes_;
};

}  // namespace flap::worker
