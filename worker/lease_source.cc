#include "worker/lease_source.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "sharding/shard_order.h"

namespace flap::worker {

Status RetryTransient(double retry_for_s, const std::function<Status()>& call) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(retry_for_s);
  auto backoff = std::chrono::milliseconds(100);
  for (;;) {
    Status s = call();
    if (!coordinator::IsTransient(s) || std::chrono::steady_clock::now() + backoff > until) return s;
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
  }
}

StatusOr<std::unique_ptr<LeaseShardSource>> LeaseShardSource::Create(coordinator::CoordinatorClient* client,
                                                                     const std::vector<sharding::ShardInfo>& shards,
                                                                     const LeaseSourceOptions& options) {
  if (client == nullptr) return Status::InvalidArgument("lease source: no coordinator client");
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return Status::InvalidArgument("lease source: rank " + std::to_string(options.rank) + " of " +
                                   std::to_string(options.world_size));
  }
  if (options.batch_size < 1) return Status::InvalidArgument("lease source: batch size must be >= 1");
  std::unique_ptr<LeaseShardSource> src(new LeaseShardSource());
  src->client_ = client;
  src->options_ = options;
  src->shards_ = shards;
  int64_t total = 0;
  for (size_t i = 0; i < shards.size(); ++i) {
    if (!src->by_name_.emplace(shards[i].name, i).second) {
      return Status::InvalidArgument("lease source: shard '" + shards[i].name + "' is listed twice");
    }
    total += shards[i].num_samples;
  }
  src->steps_per_epoch_ = total / (options.batch_size * options.world_size);
  if (src->steps_per_epoch_ < 1) {
    return Status::InvalidArgument("the split has " + std::to_string(total) +
                                   " samples, fewer than one global batch of " +
                                   std::to_string(options.batch_size * options.world_size));
  }
  return src;
}

Status LeaseShardSource::BeginEpoch(int64_t epoch) {
  std::vector<std::pair<std::string, int64_t>> list;
  list.reserve(shards_.size());
  for (const auto& s : shards_) list.emplace_back(s.name, s.num_samples);
  coordinator::v1::BeginEpochResponse resp;
  FLAP_RETURN_IF_ERROR(RetryTransient(options_.retry_for_s, [&]() -> Status {
                         auto r = client_->BeginEpoch(options_.group_id, options_.trial, static_cast<int>(epoch), list);
                         if (!r.ok()) return r.status();
                         resp = *r;
                         return Status::OK();
                       }).WithContext("epoch " + std::to_string(epoch) + ": declaring its shards"));
  epoch_ = epoch;
  const int64_t undone = resp.num_shards() - resp.done_shards();
  share_ = (undone + options_.world_size - 1) / options_.world_size;
  leased_in_epoch_ = 0;
  padding_next_ = 0;
  dry_ = undone == 0;
  return Status::OK();
}

StatusOr<std::optional<sharding::ShardInfo>> LeaseShardSource::ShardAt(int64_t epoch, int64_t index) {
  if (epoch != epoch_) FLAP_RETURN_IF_ERROR(BeginEpoch(epoch));
  if (epoch == continued_) return BySlot(epoch, index);
  const auto [shard, position] = ByPosition(epoch, index);
  if (position < 0) {
    ++padded_total_;
  } else {
    FLAP_ASSIGN_OR_RETURN(const uint64_t id, LeaseAt(epoch, position, shard->name));
    ++leased_total_;
    leases_[{epoch, shard->name}] = {id, position};
  }
  return std::optional<sharding::ShardInfo>(*shard);
}

StatusOr<std::optional<sharding::ShardInfo>> LeaseShardSource::PeekShard(int64_t epoch, int64_t index) {
  if (epoch == continued_) {
    return Status::FailedPrecondition("epoch " + std::to_string(epoch) +
                                      " is read by slot: its shards are not known before they are leased");
  }
  return std::optional<sharding::ShardInfo>(*ByPosition(epoch, index).first);
}

Status LeaseShardSource::ContinueEpoch(int64_t epoch) {
  continued_ = epoch;
  epoch_ = -1;  // the next ShardAt begins the epoch afresh, with the slot counts
  return Status::OK();
}

std::pair<const sharding::ShardInfo*, int64_t> LeaseShardSource::ByPosition(int64_t epoch, int64_t index) {
  if (epoch != order_epoch_) {
    std::vector<std::string> names;
    names.reserve(shards_.size());
    for (const auto& s : shards_) names.push_back(s.name);
    order_ = sharding::EpochShardOrder(options_.seed, epoch, names);
    order_epoch_ = epoch;
  }
  const int64_t n = static_cast<int64_t>(shards_.size()), w = options_.world_size, r = options_.rank;
  const int64_t position = index * w + r;
  if (position < n) return {&shards_[order_[static_cast<size_t>(position)]], position};
  // Padding past this rank's positions r, r + W, ... < n: the split round-robin from rank.
  const int64_t mine = (n - r + w - 1) / w;
  return {&shards_[static_cast<size_t>((r + index - mine) % n)], -1};
}

StatusOr<uint64_t> LeaseShardSource::LeaseAt(int64_t epoch, int64_t position, const std::string& name) {
  coordinator::ShardLease lease;
  FLAP_RETURN_IF_ERROR(RetryTransient(options_.retry_for_s, [&]() -> Status {
                         auto r = client_->LeaseShardAt(options_.group_id, options_.trial, static_cast<int>(epoch),
                                                        options_.rank, static_cast<int>(position));
                         if (!r.ok()) return r.status();
                         lease = *r;
                         return Status::OK();
                       }).WithContext("epoch " + std::to_string(epoch) + ": leasing position " +
                                      std::to_string(position)));
  if (lease.kind != coordinator::ShardLease::Kind::kGranted || lease.shard_name != name) {
    return Status::Corruption("epoch " + std::to_string(epoch) + ": the coordinator leased '" + lease.shard_name +
                              "' at position " + std::to_string(position) + " where the trial seed's order has '" +
                              name + "'");
  }
  return lease.lease_id;
}

StatusOr<std::optional<sharding::ShardInfo>> LeaseShardSource::BySlot(int64_t epoch, int64_t index) {
  if (!dry_ && leased_in_epoch_ < share_) {
    coordinator::ShardLease lease;
    FLAP_RETURN_IF_ERROR(RetryTransient(options_.retry_for_s, [&]() -> Status {
                           auto r = client_->LeaseShard(options_.group_id, options_.trial, static_cast<int>(epoch),
                                                        options_.rank, static_cast<int>(index % 4096));
                           if (!r.ok()) return r.status();
                           lease = *r;
                           return Status::OK();
                         }).WithContext("epoch " + std::to_string(epoch) + ": leasing a shard"));
    if (lease.kind == coordinator::ShardLease::Kind::kGranted) {
      auto it = by_name_.find(lease.shard_name);
      if (it == by_name_.end()) {
        return Status::Corruption("the coordinator leased shard '" + lease.shard_name +
                                  "', which is not in this rank's split");
      }
      ++leased_in_epoch_;
      ++leased_total_;
      leases_[{epoch, lease.shard_name}] = {lease.lease_id, -1};
      return std::optional<sharding::ShardInfo>(shards_[it->second]);
    }
    dry_ = true;  // WAIT (every undone shard is leased by someone) or EPOCH_DONE
  }
  // Padding: re-read shards of the split, unleased and uncounted, until the loader has enough.
  const size_t n = shards_.size();
  const size_t pick = (static_cast<size_t>(options_.rank) + static_cast<size_t>(padding_next_++)) % n;
  ++padded_total_;
  return std::optional<sharding::ShardInfo>(shards_[pick]);
}

Status LeaseShardSource::Complete(int64_t epoch, uint64_t lease_id) {
  return RetryTransient(options_.retry_for_s, [&]() -> Status {
    return client_->CompleteShard(options_.group_id, options_.trial, static_cast<int>(epoch), lease_id).status();
  });
}

Status LeaseShardSource::Done(int64_t epoch, const sharding::ShardInfo& shard) {
  auto it = leases_.find({epoch, shard.name});
  if (it == leases_.end()) return Status::OK();  // padding
  const auto [id, position] = it->second;
  leases_.erase(it);
  Status s = Complete(epoch, id);
  if (s.code() == Status::Code::kAborted && position >= 0) {
    // The lease expired while the rank read the shard (a stall past the ttl). The position is
    // this rank's alone: lease it again and complete it.
    auto again = LeaseAt(epoch, position, shard.name);
    s = again.ok() ? Complete(epoch, *again) : again.status();
    if (s.ok()) {
      notes_.push_back("lease " + std::to_string(id) + " of shard '" + shard.name +
                       "' expired before completion; leased again as " + std::to_string(*again) + " and completed");
    }
  } else if (s.code() == Status::Code::kAborted) {  // by slot: the shard counts under its next lease
    notes_.push_back("lease " + std::to_string(id) + " of shard '" + shard.name + "' expired before completion");
    return Status::OK();
  }
  if (s.ok()) {
    ++completed_total_;
    return s;
  }
  return s.WithContext("epoch " + std::to_string(epoch) + ": completing shard '" + shard.name + "'");
}

}  // namespace flap::worker
