// LeaseTable: shard lease accounting for one epoch of one trial. It hands the epoch's shards to
// ranks one at a time under leases with deadlines and counts each shard exactly once. It is
// pure bookkeeping: time is passed in (milliseconds on any monotonic clock the caller chooses),
// and it neither talks to ranks nor persists itself.
//
// How it runs. A rank calls Acquire() for its next shard and gets a lease with a deadline
// (now + ttl). While it works on the shard its heartbeats Renew() the lease (or RenewRank() all
// its leases). When the shard is fully consumed it calls Complete(). A lease whose deadline has
// passed (now >= deadline) is dead: it can no longer be renewed or completed, and Expire() (or
// RevokeAll(), when the trial's group is known lost) returns its shard to the free pool, where
// the next Acquire() hands it out under a new lease.
//
// Invariants.
//   - Each shard is in exactly one of: free, leased (by exactly one active lease), done.
//   - A shard is done at most once per epoch: only an active, unexpired lease can complete it,
//     and completing an already completed lease again is a no-op (an RPC retry), so each
//     sample is counted once per epoch whatever fails. A late completion of an expired lease
//     is refused, because its shard has been (or will be) handed out again and the new lease
//     is the one that counts. A completion is rescinded only when a later attempt of the
//     trial, replaying the epoch from a checkpoint that predates it, reads the shard again
//     (AcquireAt): the samples then count for the training the trial keeps.
//   - Free shards are handed out earliest in the epoch's order first: the permutation
//     sharding::EpochShardOrder draws from (trial seed, epoch, shard names) when the options
//     name one (the coordinator always does: docs/data.md, "Shard order"), else the order given
//     to the constructor. So a returned shard is redone before untouched ones, and the same
//     sequence of calls always produces the same leases.
//   - Lease ids are 1, 2, 3, ... within the table, never reused. They are unique within one
//     table only: the service must scope them by (sweep, trial, epoch).
// The caller must call Expire(now) itself (e.g. before each Acquire, or on a timer): nothing
// here happens implicitly, so every mutation is returned to the caller, who can journal it.
//
// Thread-safety: not thread-safe; the coordinator calls it under its own lock.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"

namespace flap::coordinator {

// One shard of the epoch, as the data plan names it.
struct EpochShard {
  std::string name;         // shard file name (non-empty, unique within the table)
  int64_t num_samples = 0;  // for progress accounting (>= 0)
};

// What draws the epoch's shard order (sharding/shard_order.h).
struct LeaseOrder {
  uint64_t seed = 0;  // the trial seed (train.seed)
  int64_t epoch = 0;  // >= 0
  bool operator==(const LeaseOrder& o) const { return seed == o.seed && epoch == o.epoch; }
};

struct LeaseOptions {
  int64_t ttl_ms = 30000;  // a lease lives this long after its grant or latest renewal (> 0)
  // Set: free shards are handed out in sharding::EpochShardOrder(seed, epoch, the shards'
  // names). Unset: in the order given to Create() (lease tables journaled before the order
  // existed).
  std::optional<LeaseOrder> order;
};

// kRescinded: a completion that no longer counts. The attempt that completed the shard lost its
// progress past its checkpoint, and a later attempt, replaying the epoch from there, leased the
// shard again (AcquireAt).
enum class LeaseState { kActive, kCompleted, kExpired, kRescinded };
const char* LeaseStateName(LeaseState state);  // "active", "completed", "expired", "rescinded"
// And back: InvalidArgument for anything else.
StatusOr<LeaseState> ParseLeaseState(const std::string& name);

struct Lease {
  uint64_t id = 0;  // >= 1
  int shard = 0;    // index into the table's shards
  std::string shard_name;
  std::string rank;  // who holds it
  int64_t granted_ms = 0;
  int64_t deadline_ms = 0;  // dead from this instant on (now >= deadline_ms)
  LeaseState state = LeaseState::kActive;
  int attempt = 0;  // the trial attempt it was granted to (0: not recorded)

  bool operator==(const Lease& o) const {
    return id == o.id && shard == o.shard && shard_name == o.shard_name && rank == o.rank &&
           granted_ms == o.granted_ms && deadline_ms == o.deadline_ms && state == o.state && attempt == o.attempt;
  }
};

// What Acquire() gives.
struct AcquireResult {
  enum class Kind {
    kGranted,    // `lease` is yours
    kWait,       // no free shard now; every undone shard is leased. Ask again after retry_at_ms
                 // (the earliest deadline among active leases, when one may come back)
    kEpochDone,  // every shard of the epoch is done
  };
  Kind kind = Kind::kGranted;
  Lease lease;              // kGranted only
  int64_t retry_at_ms = 0;  // kWait only
};

class LeaseTable {
 public:
  // InvalidArgument for no shards, an empty or duplicate name, negative samples, ttl <= 0 or
  // a negative order epoch.
  static StatusOr<LeaseTable> Create(std::vector<EpochShard> shards, const LeaseOptions& options);
  // A table restored from storage: Create's shards and options (what does not change after
  // Create) and every lease it granted (leases(), in any order); the next id follows the
  // highest. Corruption naming `what` when Create would refuse them or a lease breaks the
  // invariants above (a bad id, shard or rank, a shard leased or completed twice, leased and
  // done).
  static StatusOr<LeaseTable> Restore(std::vector<EpochShard> shards, const LeaseOptions& options,
                                      const std::vector<Lease>& leases, const std::string& what);

  // Leases the free shard earliest in the epoch's order to `rank` (non-empty, else
  // InvalidArgument) until now + ttl, for trial attempt `attempt`. Does not expire anything
  // itself: call Expire(now) first.
  StatusOr<AcquireResult> Acquire(const std::string& rank, int64_t now_ms, int attempt = 0);
  // Leasing by position, where a group's ranks read fixed shares of the order (a rank's k-th
  // shard is position k x W + r: who reads what is a pure function of the seed, the epoch, the
  // shards and the group's size, so a trial resumed from a checkpoint can replay its epoch).
  // Leases the shard at `position` of the order to `holder` for `attempt`, until now + ttl:
  //   - a free shard is granted;
  //   - a shard under an active lease of the same holder and attempt: that lease, renewed (a
  //     retry whose reply was lost);
  //   - a shard under another active lease (an earlier attempt's, a lost group's): that lease
  //     expires and the shard is granted;
  //   - a shard completed by an earlier attempt: that attempt's training past its checkpoint
  //     was lost and this attempt reads the shard again, so the completion is rescinded and the
  //     shard granted. The shard still counts once in the epoch: for the attempt whose training
  //     the trial keeps.
  //   - FailedPrecondition: the shard was completed by this attempt already.
  // InvalidArgument: the position is out of range, the holder empty or the attempt < 1.
  // `changed` (may be null) receives the other leases this expired or rescinded, for the journal.
  StatusOr<Lease> AcquireAt(int position, const std::string& holder, int attempt, int64_t now_ms,
                            std::vector<Lease>* changed);
  // Extends an active lease to now + ttl and returns it. NotFound: unknown id.
  // FailedPrecondition: the lease is completed. Aborted: it expired or is past its deadline.
  StatusOr<Lease> Renew(uint64_t lease_id, int64_t now_ms);
  // Renews every active, unexpired lease held by `rank` or by one of its slots (a holder named
  // `rank` + "#" + slot: a rank that reads several shards at once holds one lease per slot);
  // returns the renewed leases (maybe none). Leases already past their deadline are left for
  // Expire().
  std::vector<Lease> RenewRank(const std::string& rank, int64_t now_ms);
  // Marks the lease's shard done and returns the lease. Idempotent: completing a completed
  // lease returns it again and counts nothing. NotFound: unknown id. Aborted: the lease
  // expired (reaped or past its deadline) or was rescinded: its completion does not count.
  StatusOr<Lease> Complete(uint64_t lease_id, int64_t now_ms);
  // Expires every active lease with deadline <= now, returning their shards to the free pool;
  // returns those leases (state kExpired).
  std::vector<Lease> Expire(int64_t now_ms);
  // Expires every active lease now, whatever its deadline (the trial's group was lost); returns
  // them.
  std::vector<Lease> RevokeAll();
  // Restarts the clock of every active lease, whatever its deadline: deadline = now + ttl.
  // For a restarted coordinator, whose renewals since the last journaled change were not
  // kept (the grace period, see coordinator/service.h); returns how many leases it touched.
  int ExtendAll(int64_t now_ms);

  // True when every shard is done.
  bool EpochDone() const { return done_shards_ == static_cast<int>(shards_.size()); }
  int num_shards() const { return static_cast<int>(shards_.size()); }
  // The epoch's shards, in the order given to Create() (leases name shards by this index).
  const std::vector<EpochShard>& shards() const { return shards_; }
  // The order shards are handed out in: order()[p] is the index in shards() of the p-th.
  const std::vector<int>& order() const { return order_; }
  const std::optional<LeaseOrder>& order_key() const { return options_.order; }
  int done_shards() const { return done_shards_; }
  int free_shards() const { return static_cast<int>(free_.size()); }
  int active_leases() const { return static_cast<int>(active_.size()); }
  int64_t done_samples() const { return done_samples_; }
  int64_t total_samples() const;
  // How many times a shard was completed (0 or 1; the tests check it never exceeds 1).
  int CompletionsOf(int shard) const;
  // A lease by id, or NotFound.
  StatusOr<Lease> Get(uint64_t lease_id) const;
  // Every lease granted, in id order.
  std::vector<Lease> leases() const;
  int64_t ttl_ms() const { return options_.ttl_ms; }

 private:
  LeaseTable() = default;
  Status Dead(const Lease& lease, const char* action) const;
  // Leases the (free or just freed) shard to `holder`.
  Lease Grant(int shard, const std::string& holder, int attempt, int64_t now_ms);
  // Replays a lease's final state onto the shards; Corruption naming `at` when it cannot hold.
  Status Replay(const Lease& l, const std::string& at);
  // Corruption naming `what` when a shard is both leased and done.
  Status CheckShards(const std::string& what) const;

  LeaseOptions options_;
  std::vector<EpochShard> shards_;
  std::vector<int> order_;            // position in the hand-out order -> shard index
  std::vector<int> position_;         // shard index -> position in order_
  std::vector<uint64_t> holder_;      // per shard: the active lease holding it, 0 if none
  std::vector<int> completions_;      // per shard: times completed (0 or 1)
  std::set<int> free_;                // positions (in order_) of shards neither leased nor done
  std::map<uint64_t, Lease> leases_;  // every lease granted, by id
  std::set<uint64_t> active_;         // ids of active leases
  uint64_t next_lease_id_ = 1;
  int done_shards_ = 0;
  int64_t done_samples_ = 0;
};

}  // namespace flap::coordinator
