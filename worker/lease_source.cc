#include "worker/lease_source.h"

#include <algorithm>
#include <chrono>
#include <thread>

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
      leases_[{epoch, lease.shard_name}] = lease.lease_id;
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

Status LeaseShardSource::Done(int64_t epoch, const sharding::ShardInfo& shard) {
  auto it = leases_.find({epoch, shard.name});
  if (it == leases_.end()) return Status::OK();  // padding
  const uint64_t id = it->second;
  leases_.erase(it);
  Status s = RetryTransient(options_.retry_for_s, [&]() -> Status {
    return client_->CompleteShard(options_.group_id, options_.trial, static_cast<int>(epoch), id).status();
  });
  if (s.ok()) {
    ++completed_total_;
    return s;
  }
  if (s.code() == Status::Code::kAborted) {  // the lease expired: the shard counts under its next lease
    notes_.push_back("lease " + std::to_string(id) + " of shard '" + shard.name + "' expired before completion");
    return Status::OK();
  }
  return s.WithContext("epoch " + std::to_string(epoch) + ": completing shard '" + shard.name + "'");
}

}  // namespace flap::worker
