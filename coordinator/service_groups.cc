// CoordinatorService: the worker-group RPCs: RegisterGroup, Heartbeat, NextTrial (coordinator/service.h has the
// protocol).
#include "coordinator/service.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "coordinator/service_internal.h"

namespace flap::coordinator {
using namespace service_internal;  // NOLINT: this part's own helpers

// ---------------------------------------------------------------------------------------------
// Worker groups

grpc::ServerUnaryReactor* CoordinatorService::RegisterGroup(grpc::CallbackServerContext* ctx,
                                                            const v1::RegisterGroupRequest* req,
                                                            v1::RegisterGroupResponse* resp) {
  return Handle(ctx, [&](StateBatch* batch) REQUIRES(mu_) -> grpc::Status {
    grpc::Status s = CheckId("incarnation", req->incarnation());
    if (s.ok() && !req->group_id().empty()) s = CheckId("group_id", req->group_id());
    if (!s.ok()) return s;
    if (req->host().size() > 256) return Invalid("host", "is longer than 256 bytes");
    if (req->world_size() < 1 || req->world_size() > kMaxWorldSize) {
      return Invalid("world_size", "is " + std::to_string(req->world_size()) + "; must be in [1, 65536]");
    }
    FLAP_RETURN_IF_GRPC_ERROR(CheckEndpoints(*req));
    const std::vector<std::string> endpoints(req->metrics_endpoints().begin(), req->metrics_endpoints().end());
    std::string id = req->group_id();
    if (id.empty()) {
      for (const auto& [gid, g] : groups_) {
        if (g.incarnation == req->incarnation()) id = gid;  // a retry
      }
      while (id.empty() || (groups_.count(id) && groups_[id].incarnation != req->incarnation())) {
        id = "g" + std::to_string(counters_.next_group++);
      }
      batch->PutCounters(counters_);
    }
    const int64_t now = Now();
    auto it = groups_.find(id);
    if (it != groups_.end() && it->second.incarnation != req->incarnation() && !it->second.trial_key.empty()) {
      // The group restarted: the trial it held is lost with its processes.
      const std::string key = it->second.trial_key;
      TrialEntry& t = trials_.at(key);
      EndAttempt(
          key, &t, FailureCause::kNodeFault,
          "group " + id + " restarted (new incarnation) while running attempt " + std::to_string(t.trial.attempt()),
          batch);
      ReleaseGroup(id, "", batch);
    }
    GroupEntry& g = groups_[id];
    const bool changed = g.incarnation != req->incarnation() || g.host != req->host() ||
                         g.world_size != req->world_size() || g.metrics_endpoints != endpoints;
    g.incarnation = req->incarnation();
    g.host = req->host();
    g.world_size = req->world_size();
    g.metrics_endpoints = endpoints;
    g.last_heartbeat_ms = now;
    if (changed) {
      g.revoked.Clear();
      g.revoked_reason.clear();
      batch->PutGroup(id, g);
    }
    resp->set_group_id(id);
    resp->set_heartbeat_interval_ms(options_.heartbeat_interval_ms);
    resp->set_heartbeat_timeout_ms(options_.heartbeat_timeout_ms);
    resp->set_lease_ttl_ms(options_.lease_ttl_ms);
    resp->set_coordinator_id(store_->identity());
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* CoordinatorService::Heartbeat(grpc::CallbackServerContext* ctx,
                                                        const v1::HeartbeatRequest* req, v1::HeartbeatResponse* resp) {
  return Handle(ctx, [&](StateBatch*) REQUIRES(mu_) -> grpc::Status {
    GroupEntry* g = nullptr;
    FLAP_RETURN_IF_GRPC_ERROR(FindGroup(req->group_id(), &g));
    if (req->ranks_size() > kMaxWorldSize) return Invalid("ranks", "lists more than 65536 ranks");
    for (int i = 0; i < req->ranks_size(); ++i) {
      if (req->ranks(i) < 0 || req->ranks(i) >= g->world_size) {
        return Invalid("ranks[" + std::to_string(i) + "]", "is " + std::to_string(req->ranks(i)) + "; the group has " +
                                                               std::to_string(g->world_size) + " ranks");
      }
    }
    const int64_t now = Now();
    g->last_heartbeat_ms = now;
    const std::string& key = g->trial_key;
    if (!key.empty()) {
      const TrialEntry& t = trials_.at(key);
      resp->set_action(v1::CONTINUE);
      resp->mutable_trial()->set_sweep_id(t.sweep);
      resp->mutable_trial()->set_trial_id(t.spec.id);
      resp->mutable_trial()->set_attempt(t.trial.attempt());
      int renewed = 0;
      auto e = epochs_.find(key);
      if (e != epochs_.end()) {
        for (int epoch : e->second) {
          LeaseTable& table = leases_.at(EpochKey(key, epoch));
          if (table.active_leases() == 0) continue;
          for (int rank : req->ranks()) {
            renewed += static_cast<int>(table.RenewRank(RankId(req->group_id(), rank), now).size());
          }
        }
      }
      resp->set_leases_renewed(renewed);
    } else if (!g->revoked_reason.empty()) {
      resp->set_action(v1::STOP);
      *resp->mutable_trial() = g->revoked;
      resp->set_reason(g->revoked_reason);
    } else {
      resp->set_action(v1::IDLE);
    }
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* CoordinatorService::NextTrial(grpc::CallbackServerContext* ctx,
                                                        const v1::NextTrialRequest* req, v1::NextTrialResponse* resp) {
  return Handle(ctx, [&](StateBatch* batch) REQUIRES(mu_) -> grpc::Status {
    GroupEntry* g = nullptr;
    FLAP_RETURN_IF_GRPC_ERROR(FindGroup(req->group_id(), &g));
    g->last_heartbeat_ms = Now();
    if (!g->trial_key.empty()) {  // a retry: the same assignment
      resp->set_assigned(true);
      FillAssignment(g->trial_key, trials_.at(g->trial_key), resp->mutable_assignment());
      return grpc::Status::OK;
    }
    g->revoked.Clear();
    g->revoked_reason.clear();
    std::vector<std::pair<std::pair<int, int64_t>, std::string>> order;
    for (const auto& [id, sw] : sweeps_) {
      if (sw.state == SweepState::kRunning) order.push_back({{-sw.spec.priority, sw.order}, id});
    }
    std::sort(order.begin(), order.end());
    bool any_live = false;
    std::string waiting;  // the first pending trial passed over for its global batch
    for (const auto& [rank, sweep_id] : order) {
      const SweepEntry& sw = sweeps_.at(sweep_id);
      for (const auto& tid : sw.trial_ids) {
        const std::string key = TrialKey(sweep_id, tid);
        TrialEntry& t = trials_.at(key);
        if (!IsTerminal(t.trial.state())) any_live = true;
        if (t.trial.state() != TrialState::kPending) continue;
        // A trial fixes its global batch (its number of negatives): a group whose size does not
        // divide it cannot take it, and the trial waits for one that can.
        const int64_t global_batch = TrialGlobalBatch(sw.base_values, t.spec);
        if (global_batch > 0 && global_batch % g->world_size != 0) {
          if (waiting.empty()) {
            waiting = "trial " + sweep_id + "/" + tid + ": train.global_batch " + std::to_string(global_batch) +
                      " cannot be split evenly over world size " + std::to_string(g->world_size) +
                      "; it waits for a group whose number of ranks divides it";
          }
          continue;
        }
        StatusOr<int> attempt = t.trial.Assign(req->group_id());
        if (!attempt.ok()) return ToGrpc(attempt.status());
        t.rate_step0 = -1;
        g->trial_key = key;
        g->attempt = *attempt;
        batch->PutTrial(key, t.row());
        resp->set_assigned(true);
        FillAssignment(key, t, resp->mutable_assignment());
        return grpc::Status::OK;
      }
    }
    resp->set_assigned(false);
    // With no sweep submitted yet nothing is done: a group started ahead of the first
    // submission waits for it.
    resp->set_all_done(!sweeps_.empty() && !any_live);
    resp->set_retry_after_ms(options_.heartbeat_interval_ms);
    resp->set_waiting(waiting);
    return grpc::Status::OK;
  });
}

}  // namespace flap::coordinator
