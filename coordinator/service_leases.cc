// CoordinatorService: the shard-lease RPCs: BeginEpoch, LeaseShard, CompleteShard (coordinator/service.h has the
// protocol).
#include "coordinator/service.h"

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "coordinator/service_internal.h"

namespace flap::coordinator {
using namespace service_internal;  // NOLINT: this part's own helpers

// ---------------------------------------------------------------------------------------------
// Shard leases

grpc::ServerUnaryReactor* CoordinatorService::BeginEpoch(grpc::CallbackServerContext* ctx,
                                                         const v1::BeginEpochRequest* req,
                                                         v1::BeginEpochResponse* resp) {
  return HandleTrial(ctx, *req, [&](const TrialScope& scope, StateBatch* batch) REQUIRES(mu_) -> grpc::Status {
    if (req->epoch() < 0 || req->epoch() > kMaxEpoch) {
      return Invalid("epoch", "is " + std::to_string(req->epoch()) + "; must be in [0, 1000000]");
    }
    if (req->shards_size() < 1 || req->shards_size() > kMaxShards) {
      return Invalid("shards", "has " + std::to_string(req->shards_size()) + " entries; must have 1 to 100000");
    }
    std::vector<EpochShard> shards;
    std::map<std::string, int> seen;
    for (int i = 0; i < req->shards_size(); ++i) {
      const auto& sh = req->shards(i);
      const std::string field = "shards[" + std::to_string(i) + "]";
      if (sh.name().empty() || sh.name().size() > 256) {
        return Invalid(field + ".name", "must be 1 to 256 bytes");
      }
      if (sh.num_samples() < 0) return Invalid(field + ".num_samples", "is negative");
      auto [it, fresh] = seen.emplace(sh.name(), i);
      if (!fresh) {
        return Invalid(field + ".name", Quote(sh.name()) + " repeats shards[" + std::to_string(it->second) + "]");
      }
      shards.push_back({sh.name(), sh.num_samples()});
    }
    const std::string ekey = EpochKey(scope.key, req->epoch());
    auto existing = leases_.find(ekey);
    if (existing != leases_.end()) {
      const std::vector<EpochShard>& stored = existing->second.shards();
      bool same = stored.size() == shards.size();
      for (size_t i = 0; same && i < shards.size(); ++i) {
        same = stored[i].name == shards[i].name && stored[i].num_samples == shards[i].num_samples;
      }
      if (!same) {
        return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "shards: epoch " + std::to_string(req->epoch()) +
                                                                       " of trial " + scope.key +
                                                                       " was begun with a different shard list");
      }
    } else {
      LeaseOptions lo;
      lo.ttl_ms = options_.lease_ttl_ms;
      // The epoch's shards go out in the order the trial seed and the epoch draw (the seed the
      // trial's config gets: FillAssignment), whatever the trial's other factors.
      lo.order = LeaseOrder{scope.trial->spec.seed, req->epoch()};
      StatusOr<LeaseTable> table = LeaseTable::Create(std::move(shards), lo);
      if (!table.ok()) return ToGrpc(table.status());
      existing = leases_.emplace(ekey, std::move(*table)).first;
      epochs_[scope.key].insert(req->epoch());
      batch->PutEpoch(ekey, existing->second);
    }
    EnsureRunning(scope, batch);
    const LeaseTable& table = existing->second;
    resp->set_num_shards(table.num_shards());
    resp->set_done_shards(table.done_shards());
    resp->set_total_samples(table.total_samples());
    resp->set_done_samples(table.done_samples());
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* CoordinatorService::LeaseShard(grpc::CallbackServerContext* ctx,
                                                         const v1::LeaseShardRequest* req,
                                                         v1::LeaseShardResponse* resp) {
  return HandleTrial(ctx, *req, [&](const TrialScope& scope, StateBatch* batch) REQUIRES(mu_) -> grpc::Status {
    const int world = scope.group->world_size;
    if (req->rank() < 0 || req->rank() >= world) {
      return Invalid("rank",
                     "is " + std::to_string(req->rank()) + "; the group has " + std::to_string(world) + " ranks");
    }
    std::map<std::string, LeaseTable>::iterator it;
    FLAP_RETURN_IF_GRPC_ERROR(BegunEpoch(scope, req->epoch(), &it));
    EnsureRunning(scope, batch);
    const int64_t now = Now();
    LeaseTable& table = it->second;
    ExpireLeases(it->first, &table, now, batch);
    const int attempt = req->trial().attempt();
    StatusOr<AcquireResult> r = AcquireResult();
    if (req->has_position()) {
      // Rank r of W reads positions r, r + W, ...: nobody else's.
      const int position = req->position();
      if (position < 0 || position >= table.num_shards() || position % world != req->rank()) {
        return Invalid("position", "is " + std::to_string(position) + "; rank " + std::to_string(req->rank()) + " of " +
                                       std::to_string(world) + " reads positions " + std::to_string(req->rank()) +
                                       ", " + std::to_string(req->rank() + world) + ", ... of the epoch's " +
                                       std::to_string(table.num_shards()) + " shards");
      }
      if (!table.order_key()) {
        return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                            "position: epoch " + std::to_string(req->epoch()) + " of trial " + scope.key +
                                " was begun without a seeded order; lease by slot");
      }
      std::vector<Lease> changed;
      StatusOr<Lease> lease = table.AcquireAt(
          position, RankId(req->group_id(), req->rank()) + "#p" + std::to_string(position), attempt, now, &changed);
      if (!lease.ok()) return ToGrpc(lease.status());
      changed.push_back(*lease);
      batch->PutLeases(it->first, changed);
      r->kind = AcquireResult::Kind::kGranted;
      r->lease = *lease;
    } else {
      if (req->slot() < 0 || req->slot() > kMaxSlot) {
        return Invalid("slot",
                       "is " + std::to_string(req->slot()) + "; must be in [0, " + std::to_string(kMaxSlot) + "]");
      }
      const std::string rank = RankId(req->group_id(), req->rank()) + "#" + std::to_string(req->slot());
      // A slot holds one lease per epoch: asking again (a retry whose reply was lost) returns it.
      const std::vector<Lease> held = table.RenewRank(rank, now);
      if (!held.empty()) {
        r->kind = AcquireResult::Kind::kGranted;
        r->lease = held.front();
      } else {
        r = table.Acquire(rank, now, attempt);
        if (r.ok() && r->kind == AcquireResult::Kind::kGranted) batch->PutLeases(it->first, {r->lease});
      }
    }
    if (!r.ok()) return ToGrpc(r.status());
    switch (r->kind) {
      case AcquireResult::Kind::kGranted:
        resp->set_kind(v1::LeaseShardResponse::GRANTED);
        resp->set_lease_id(r->lease.id);
        resp->set_shard_name(r->lease.shard_name);
        resp->set_deadline_unix_ms(r->lease.deadline_ms);
        resp->set_num_samples(table.shards()[r->lease.shard].num_samples);
        break;
      case AcquireResult::Kind::kWait:
        resp->set_kind(v1::LeaseShardResponse::WAIT);
        resp->set_retry_after_ms(std::max<int64_t>(1, r->retry_at_ms - now));
        break;
      case AcquireResult::Kind::kEpochDone:
        resp->set_kind(v1::LeaseShardResponse::EPOCH_DONE);
        break;
    }
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* CoordinatorService::CompleteShard(grpc::CallbackServerContext* ctx,
                                                            const v1::CompleteShardRequest* req,
                                                            v1::CompleteShardResponse* resp) {
  return HandleTrial(ctx, *req, [&](const TrialScope& scope, StateBatch* batch) REQUIRES(mu_) -> grpc::Status {
    std::map<std::string, LeaseTable>::iterator it;
    FLAP_RETURN_IF_GRPC_ERROR(BegunEpoch(scope, req->epoch(), &it));
    LeaseTable& table = it->second;
    StatusOr<Lease> lease = table.Get(req->lease_id());
    if (!lease.ok()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "lease_id: no lease " + std::to_string(req->lease_id()) +
                                                           " in epoch " + std::to_string(req->epoch()) + " of trial " +
                                                           scope.key);
    }
    if (lease->rank.compare(0, req->group_id().size() + 1, req->group_id() + "/") != 0) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "lease_id: lease " + std::to_string(req->lease_id()) +
                                                                     " is held by " + lease->rank + ", not by group " +
                                                                     Quote(req->group_id()));
    }
    const bool already = lease->state == LeaseState::kCompleted;
    StatusOr<Lease> done = table.Complete(req->lease_id(), Now());
    if (!done.ok()) return ToGrpc(done.status());
    if (!already) batch->PutLeases(it->first, {*done});
    resp->set_done_shards(table.done_shards());
    resp->set_num_shards(table.num_shards());
    resp->set_epoch_done(table.EpochDone());
    return grpc::Status::OK;
  });
}

}  // namespace flap::coordinator
