// LeaseTable (lease.h): shard lease bookkeeping for one epoch, and its state restored from
// storage.
#include "coordinator/lease.h"

#include <algorithm>
#include <utility>

#include "sharding/shard_order.h"

namespace flap::coordinator {

const char* LeaseStateName(LeaseState state) {
  switch (state) {
    case LeaseState::kActive:
      return "active";
    case LeaseState::kCompleted:
      return "completed";
    case LeaseState::kExpired:
      return "expired";
    case LeaseState::kRescinded:
      return "rescinded";
  }
  return "unknown";
}

StatusOr<LeaseState> ParseLeaseState(const std::string& name) {
  for (LeaseState s : {LeaseState::kActive, LeaseState::kCompleted, LeaseState::kExpired, LeaseState::kRescinded}) {
    if (name == LeaseStateName(s)) return s;
  }
  return Status::InvalidArgument("unknown lease state '" + name + "'");
}

StatusOr<LeaseTable> LeaseTable::Create(std::vector<EpochShard> shards, const LeaseOptions& options) {
  if (shards.empty()) return Status::InvalidArgument("lease table: an epoch needs shards");
  if (options.ttl_ms <= 0) {
    return Status::InvalidArgument("lease table: ttl_ms must be > 0, got " + std::to_string(options.ttl_ms));
  }
  if (options.order && options.order->epoch < 0) {
    return Status::InvalidArgument("lease table: the order's epoch must be >= 0, got " +
                                   std::to_string(options.order->epoch));
  }
  std::set<std::string> names;
  for (size_t i = 0; i < shards.size(); ++i) {
    const EpochShard& s = shards[i];
    if (s.name.empty() || !names.insert(s.name).second || s.num_samples < 0) {
      return Status::InvalidArgument("lease table: shard " + std::to_string(i) + " ('" + s.name +
                                     "') has an empty or duplicate name or negative samples");
    }
  }
  LeaseTable t;
  t.options_ = options;
  t.shards_ = std::move(shards);
  const int n = static_cast<int>(t.shards_.size());
  t.order_.resize(static_cast<size_t>(n));
  if (options.order) {
    std::vector<std::string> names;
    for (const EpochShard& s : t.shards_) names.push_back(s.name);
    const std::vector<size_t> order = sharding::EpochShardOrder(options.order->seed, options.order->epoch, names);
    for (int p = 0; p < n; ++p) t.order_[p] = static_cast<int>(order[p]);
  } else {
    for (int p = 0; p < n; ++p) t.order_[p] = p;
  }
  t.position_.assign(static_cast<size_t>(n), 0);
  for (int p = 0; p < n; ++p) t.position_[t.order_[p]] = p;
  t.holder_.assign(t.shards_.size(), 0);
  t.completions_.assign(t.shards_.size(), 0);
  for (int p = 0; p < n; ++p) t.free_.insert(p);
  return t;
}

int64_t LeaseTable::total_samples() const {
  int64_t n = 0;
  for (const EpochShard& s : shards_) n += s.num_samples;
  return n;
}

int LeaseTable::CompletionsOf(int shard) const {
  if (shard < 0 || shard >= static_cast<int>(completions_.size())) return 0;
  return completions_[shard];
}

StatusOr<Lease> LeaseTable::Get(uint64_t lease_id) const {
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) {
    return Status::NotFound("unknown lease " + std::to_string(lease_id));
  }
  return it->second;
}

int LeaseTable::ExtendAll(int64_t now_ms) {
  for (uint64_t id : active_) leases_.at(id).deadline_ms = now_ms + options_.ttl_ms;
  return static_cast<int>(active_.size());
}

Status LeaseTable::Dead(const Lease& lease, const char* action) const {
  return Status::Aborted("lease " + std::to_string(lease.id) + " of shard '" + lease.shard_name + "' held by " +
                         lease.rank + " expired at " + std::to_string(lease.deadline_ms) + " ms; cannot " + action +
                         " it (the shard goes back to the pool and counts under its next lease)");
}

StatusOr<AcquireResult> LeaseTable::Acquire(const std::string& rank, int64_t now_ms, int attempt) {
  if (rank.empty()) return Status::InvalidArgument("lease table: empty rank id");
  AcquireResult r;
  if (EpochDone()) {
    r.kind = AcquireResult::Kind::kEpochDone;
    return r;
  }
  if (free_.empty()) {
    r.kind = AcquireResult::Kind::kWait;
    r.retry_at_ms = now_ms;
    bool first = true;
    for (uint64_t id : active_) {
      int64_t d = leases_.at(id).deadline_ms;
      r.retry_at_ms = first ? d : std::min(r.retry_at_ms, d);
      first = false;
    }
    return r;
  }
  r.kind = AcquireResult::Kind::kGranted;
  r.lease = Grant(order_[*free_.begin()], rank, attempt, now_ms);
  return r;
}

Lease LeaseTable::Grant(int shard, const std::string& holder, int attempt, int64_t now_ms) {
  free_.erase(position_[shard]);
  Lease l;
  l.id = next_lease_id_++;
  l.shard = shard;
  l.shard_name = shards_[shard].name;
  l.rank = holder;
  l.granted_ms = now_ms;
  l.deadline_ms = now_ms + options_.ttl_ms;
  l.state = LeaseState::kActive;
  l.attempt = attempt;
  holder_[shard] = l.id;
  active_.insert(l.id);
  leases_.emplace(l.id, l);
  return l;
}

StatusOr<Lease> LeaseTable::AcquireAt(int position, const std::string& holder, int attempt, int64_t now_ms,
                                      std::vector<Lease>* changed) {
  if (position < 0 || position >= num_shards()) {
    return Status::InvalidArgument("lease table: position " + std::to_string(position) + " is outside the epoch's " +
                                   std::to_string(num_shards()) + " shards");
  }
  if (holder.empty()) return Status::InvalidArgument("lease table: empty rank id");
  if (attempt < 1) return Status::InvalidArgument("lease table: attempt " + std::to_string(attempt) + " (must be >= 1)");
  const int shard = order_[position];
  if (holder_[shard] != 0) {
    Lease& held = leases_.at(holder_[shard]);
    if (held.rank == holder && held.attempt == attempt && now_ms < held.deadline_ms) {
      held.deadline_ms = now_ms + options_.ttl_ms;
      return held;
    }
    held.state = LeaseState::kExpired;
    active_.erase(held.id);
    holder_[shard] = 0;
    if (changed != nullptr) changed->push_back(held);
  } else if (completions_[shard] != 0) {
    auto done = std::find_if(leases_.begin(), leases_.end(), [&](const auto& e) {
      return e.second.shard == shard && e.second.state == LeaseState::kCompleted;
    });
    if (done == leases_.end()) return Status::Internal("lease table: shard '" + shards_[shard].name + "' done without a lease");
    Lease& was = done->second;
    if (was.attempt >= attempt) {
      return Status::FailedPrecondition("shard '" + was.shard_name + "' (position " + std::to_string(position) +
                                        ") was completed by attempt " + std::to_string(was.attempt) +
                                        " already; attempt " + std::to_string(attempt) + " cannot read it again");
    }
    was.state = LeaseState::kRescinded;
    completions_[shard] -= 1;
    done_shards_ -= 1;
    done_samples_ -= shards_[shard].num_samples;
    if (changed != nullptr) changed->push_back(was);
  }
  return Grant(shard, holder, attempt, now_ms);
}

StatusOr<Lease> LeaseTable::Renew(uint64_t lease_id, int64_t now_ms) {
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return Status::NotFound("unknown lease " + std::to_string(lease_id));
  Lease& l = it->second;
  if (l.state == LeaseState::kCompleted || l.state == LeaseState::kRescinded) {
    return Status::FailedPrecondition("lease " + std::to_string(lease_id) + " of shard '" + l.shard_name + "' is " +
                                      LeaseStateName(l.state));
  }
  if (l.state == LeaseState::kExpired || now_ms >= l.deadline_ms) return Dead(l, "renew");
  l.deadline_ms = now_ms + options_.ttl_ms;
  return l;
}

std::vector<Lease> LeaseTable::RenewRank(const std::string& rank, int64_t now_ms) {
  std::vector<Lease> renewed;
  for (uint64_t id : active_) {
    Lease& l = leases_.at(id);
    const bool held = l.rank == rank || (l.rank.size() > rank.size() && l.rank.compare(0, rank.size(), rank) == 0 &&
                                         l.rank[rank.size()] == '#');
    if (!held || now_ms >= l.deadline_ms) continue;
    l.deadline_ms = now_ms + options_.ttl_ms;
    renewed.push_back(l);
  }
  return renewed;
}

StatusOr<Lease> LeaseTable::Complete(uint64_t lease_id, int64_t now_ms) {
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return Status::NotFound("unknown lease " + std::to_string(lease_id));
  Lease& l = it->second;
  if (l.state == LeaseState::kCompleted) return l;  // a retry: counted already
  if (l.state == LeaseState::kRescinded) {
    return Status::Aborted("lease " + std::to_string(lease_id) + " of shard '" + l.shard_name +
                           "' was rescinded: a later attempt of the trial reads the shard again");
  }
  if (l.state == LeaseState::kExpired || now_ms >= l.deadline_ms) return Dead(l, "complete");
  l.state = LeaseState::kCompleted;
  active_.erase(l.id);
  holder_[l.shard] = 0;
  completions_[l.shard] += 1;
  done_shards_ += 1;
  done_samples_ += shards_[l.shard].num_samples;
  return l;
}

std::vector<Lease> LeaseTable::Expire(int64_t now_ms) {
  std::vector<Lease> expired;
  for (auto it = active_.begin(); it != active_.end();) {
    Lease& l = leases_.at(*it);
    if (now_ms < l.deadline_ms) {
      ++it;
      continue;
    }
    l.state = LeaseState::kExpired;
    holder_[l.shard] = 0;
    free_.insert(position_[l.shard]);
    expired.push_back(l);
    it = active_.erase(it);
  }
  return expired;
}

std::vector<Lease> LeaseTable::RevokeAll() {
  std::vector<Lease> revoked;
  for (uint64_t id : active_) {
    Lease& l = leases_.at(id);
    l.state = LeaseState::kExpired;
    holder_[l.shard] = 0;
    free_.insert(position_[l.shard]);
    revoked.push_back(l);
  }
  active_.clear();
  return revoked;
}

std::vector<Lease> LeaseTable::leases() const {
  std::vector<Lease> out;
  for (const auto& [id, l] : leases_) out.push_back(l);
  return out;
}

Status LeaseTable::Replay(const Lease& l, const std::string& at) {
  if (l.id == 0 || l.id >= next_lease_id_ || leases_.count(l.id) != 0 || l.shard < 0 || l.shard >= num_shards() ||
      l.shard_name != shards_[l.shard].name || l.rank.empty()) {
    return Status::Corruption(at + ": bad id, shard or rank");
  }
  if (l.state == LeaseState::kActive) {
    if (holder_[l.shard] != 0 || completions_[l.shard] != 0) {
      return Status::Corruption(at + ": shard '" + l.shard_name + "' is leased twice or leased after it was done");
    }
    holder_[l.shard] = l.id;
    active_.insert(l.id);
    free_.erase(position_[l.shard]);
  } else if (l.state == LeaseState::kCompleted) {
    if (completions_[l.shard] != 0) {
      return Status::Corruption(at + ": shard '" + l.shard_name + "' completed twice");
    }
    completions_[l.shard] = 1;
    done_shards_ += 1;
    done_samples_ += shards_[l.shard].num_samples;
    free_.erase(position_[l.shard]);
  }
  leases_.emplace(l.id, l);
  return Status::OK();
}

Status LeaseTable::CheckShards(const std::string& what) const {
  for (int s = 0; s < num_shards(); ++s) {
    if (holder_[s] != 0 && completions_[s] != 0) {
      return Status::Corruption(what + ": shard '" + shards_[s].name + "' is both leased and done");
    }
  }
  return Status::OK();
}

StatusOr<LeaseTable> LeaseTable::Restore(std::vector<EpochShard> shards, const LeaseOptions& options,
                                         const std::vector<Lease>& leases, const std::string& what) {
  auto created = Create(std::move(shards), options);
  if (!created.ok()) return Status::Corruption(what + ": " + created.status().message());
  LeaseTable t = std::move(created).value();
  std::vector<Lease> by_id = leases;
  std::sort(by_id.begin(), by_id.end(), [](const Lease& a, const Lease& b) { return a.id < b.id; });
  for (const Lease& l : by_id) t.next_lease_id_ = std::max(t.next_lease_id_, l.id + 1);
  for (const Lease& l : by_id) FLAP_RETURN_IF_ERROR(t.Replay(l, what + ": lease " + std::to_string(l.id)));
  FLAP_RETURN_IF_ERROR(t.CheckShards(what));
  return t;
}

}  // namespace flap::coordinator
