// CoordinatorService: the trial's reports: ReportMetrics, ReportCheckpoint, FinishTrial, FailTrial
// (coordinator/service.h has the protocol).
#include "coordinator/service.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <sstream>

#include "coordinator/service_internal.h"

namespace flap::coordinator {
using namespace service_internal;  // NOLINT: this part's own helpers

// ---------------------------------------------------------------------------------------------
// Trial reports

grpc::ServerUnaryReactor* CoordinatorService::ReportMetrics(grpc::CallbackServerContext* ctx,
                                                            const v1::ReportMetricsRequest* req,
                                                            v1::ReportMetricsResponse* resp) {
  return Handle(ctx, [&](StateBatch* batch) REQUIRES(mu_) -> grpc::Status {
    if (req->kind() != v1::ReportMetricsRequest::TRAIN && req->kind() != v1::ReportMetricsRequest::EVAL &&
        req->kind() != v1::ReportMetricsRequest::TEST) {
      return Invalid("kind", "must be TRAIN, EVAL or TEST");
    }
    if (req->step() < 0 || req->step() > kMaxStep) {
      return Invalid("step", "is " + std::to_string(req->step()) + "; must be in [0, 1e12]");
    }
    if (req->epoch() < 0) return Invalid("epoch", "is negative");
    if (req->total_steps() < 0 || req->total_steps() > kMaxStep) {
      return Invalid("total_steps", "is " + std::to_string(req->total_steps()) + "; must be in [0, 1e12]");
    }
    if (req->values().empty() || req->values().size() > kMaxMetrics) {
      return Invalid("values", "has " + std::to_string(req->values().size()) + " entries; must have 1 to 64");
    }
    MetricPoint p;
    for (const auto& [name, value] : req->values()) {
      if (!IsMetricName(name)) {
        return Invalid("values", "metric name " + Quote(name) + " is not 1 to 64 characters of [a-z0-9_.@]");
      }
      if (std::isinf(value)) return Invalid("values[" + name + "]", "is infinite");
      p.values[name] = value;
    }
    p.kind = req->kind() == v1::ReportMetricsRequest::TRAIN  ? MetricKind::kTrain
             : req->kind() == v1::ReportMetricsRequest::EVAL ? MetricKind::kEval
                                                             : MetricKind::kTest;
    // A TEST record (the test split, for the checkpoint validation selected) is stored for the
    // report and nothing else: no progress, no rate, no status, no ASHA.
    const bool test = p.kind == MetricKind::kTest;
    p.step = req->step();
    p.epoch = req->epoch();
    TrialScope scope;
    const grpc::Status open = OpenTrial(req->group_id(), req->trial(), &scope);
    if (!open.ok()) {
      if (open.error_code() == grpc::StatusCode::FAILED_PRECONDITION) KeepLateMetric(req->trial(), p, batch);
      return open;
    }
    TrialEntry* t = scope.trial;
    EnsureRunning(scope, batch);
    const Status progress =
        t->trial.ReportProgress(scope.attempt, test ? std::max(req->step(), t->trial.record().step) : req->step());
    if (!progress.ok()) return ToGrpc(progress);
    const int64_t now = Now();
    if (!test) {
      if (req->total_steps() > 0) t->total_steps = req->total_steps();
      if (t->rate_step0 < 0) {
        t->rate_step0 = req->step();
        t->rate_t0_ms = now;
      }
      t->rate_step1 = req->step();
      t->rate_t1_ms = now;
    }
    p.trial_id = t->spec.id;
    p.attempt = scope.attempt;
    p.time_ms = now;
    // The trial's evaluation before this one: ASHA interpolates its value at a rung from the two.
    const std::map<std::string, double> previous_eval = t->latest_eval;
    const int64_t previous_eval_step = t->latest_eval_step;
    if (!test) (p.kind == MetricKind::kTrain ? t->latest_train : t->latest_eval) = p.values;
    if (p.kind == MetricKind::kEval) t->latest_eval_step = p.step;
    batch->PutMetric(scope.key, p);
    resp->set_action(v1::CONTINUE);
    SweepEntry& sw = sweeps_.at(t->sweep);
    // Only validation decides: a TEST record never reaches ASHA.
    if (p.kind == MetricKind::kEval && sw.asha && p.values.count(sw.asha->config().metric)) {
      const AshaConfig& ac = sw.asha->config();
      const std::optional<double> at = RecordPosition(ac.Unit(), p.step, p.values);
      std::optional<int> rung = at ? sw.asha->RungReachedAt(*at) : std::nullopt;
      if (rung && !sw.asha->DecisionFor(t->spec.id, *rung)) {
        std::optional<std::pair<double, double>> before;
        const std::optional<double> before_at =
            previous_eval.count(ac.metric) ? RecordPosition(ac.Unit(), previous_eval_step, previous_eval) : std::nullopt;
        if (before_at) before = std::make_pair(*before_at, previous_eval.at(ac.metric));
        const double value = ValueAtRung(ac.rungs[*rung], before, *at, p.values.at(ac.metric));
        StatusOr<AshaDecision> d = sw.asha->Decide(t->spec.id, *rung, value);
        if (d.ok()) {
          batch->PutAsha(t->sweep, *sw.asha);
          if (d->action == AshaAction::kStop && t->trial.Stop(scope.attempt).ok()) {
            std::ostringstream point;
            point << ac.rungs[*rung];
            const std::string reason = "stopped early by ASHA at rung " + std::to_string(*rung) + " (" +
                                       ac.Unit() + " " + point.str() +
                                       "): " + sw.asha->config().metric + " ranked " + std::to_string(d->rank + 1) +
                                       " of " + std::to_string(d->num_results) + ", " +
                                       std::to_string(d->num_promoted) + " continue";
            ReleaseGroup(req->group_id(), reason, batch);
            resp->set_action(v1::STOP);
            resp->set_reason(reason);
            MaybeFinishSweep(t->sweep, batch);
          }
        }
      }
    }
    batch->PutTrial(scope.key, t->row());
    return grpc::Status::OK;
  });
}

void CoordinatorService::KeepLateMetric(const v1::TrialRef& ref, MetricPoint point, StateBatch* batch) {
  const std::string key = TrialKey(ref.sweep_id(), ref.trial_id());
  auto t = trials_.find(key);
  if (t == trials_.end() || ref.attempt() < 1) return;
  const TrialRecord& r = t->second.trial.record();
  const bool ended_by_requeue_or_failure =
      ref.attempt() < r.attempt ||
      (ref.attempt() == r.attempt && (r.state == TrialState::kPending || r.state == TrialState::kFailed));
  if (!ended_by_requeue_or_failure) return;
  const StatusOr<bool> stored = store_->HasMetric(key, point.kind, point.step);
  if (!stored.ok() || *stored) return;
  point.trial_id = t->second.spec.id;
  point.attempt = ref.attempt();
  point.time_ms = Now();
  batch->PutMetric(key, point);
}

grpc::ServerUnaryReactor* CoordinatorService::ReportCheckpoint(grpc::CallbackServerContext* ctx,
                                                               const v1::ReportCheckpointRequest* req,
                                                               v1::ReportCheckpointResponse*) {
  return HandleTrial(ctx, *req, [&](const TrialScope& scope, StateBatch* batch) REQUIRES(mu_) -> grpc::Status {
    if (req->ref().empty() || req->ref().size() > 1024) return Invalid("ref", "must be 1 to 1024 bytes");
    if (req->step() < 0 || req->step() > kMaxStep) {
      return Invalid("step", "is " + std::to_string(req->step()) + "; must be in [0, 1e12]");
    }
    EnsureRunning(scope, batch);
    const Status r = scope.trial->trial.ReportCheckpoint(scope.attempt, req->ref(), req->step());
    if (!r.ok()) return ToGrpc(r);
    batch->PutTrial(scope.key, scope.trial->row());
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* CoordinatorService::FinishTrial(grpc::CallbackServerContext* ctx,
                                                          const v1::FinishTrialRequest* req, v1::FinishTrialResponse*) {
  return Handle(ctx, [&](StateBatch* batch) REQUIRES(mu_) -> grpc::Status {
    // A retry of a finish that was committed: OK, nothing changes.
    auto done = trials_.find(TrialKey(req->trial().sweep_id(), req->trial().trial_id()));
    if (done != trials_.end() && done->second.trial.state() == TrialState::kCompleted &&
        done->second.trial.attempt() == req->trial().attempt()) {
      return grpc::Status::OK;
    }
    TrialScope scope;
    FLAP_RETURN_IF_GRPC_ERROR(OpenTrial(req->group_id(), req->trial(), &scope));
    TrialEntry* t = scope.trial;
    EnsureRunning(scope, batch);
    const Status r = t->trial.Complete(scope.attempt);
    if (!r.ok()) return ToGrpc(r);
    ReleaseGroup(req->group_id(), "", batch);
    batch->PutTrial(scope.key, t->row());
    MaybeFinishSweep(t->sweep, batch);
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* CoordinatorService::FailTrial(grpc::CallbackServerContext* ctx,
                                                        const v1::FailTrialRequest* req, v1::FailTrialResponse* resp) {
  return HandleTrial(ctx, *req, [&](const TrialScope& scope, StateBatch* batch) REQUIRES(mu_) -> grpc::Status {
    FailureCause cause;
    switch (req->cause()) {
      case v1::FailTrialRequest::PREEMPTION:
        cause = FailureCause::kPreemption;
        break;
      case v1::FailTrialRequest::NODE_FAULT:
        cause = FailureCause::kNodeFault;
        break;
      case v1::FailTrialRequest::TRIAL_ERROR:
        cause = FailureCause::kTrialError;
        break;
      default:
        return Invalid("cause", "must be PREEMPTION, NODE_FAULT or TRIAL_ERROR");
    }
    if (req->error().size() > 4096) return Invalid("error", "is longer than 4096 bytes");
    EndAttempt(scope.key, scope.trial, cause, req->error().empty() ? FailureCauseName(cause) : req->error(), batch);
    ReleaseGroup(req->group_id(), "", batch);
    resp->set_state(TrialStateName(scope.trial->trial.state()));
    return grpc::Status::OK;
  });
}

}  // namespace flap::coordinator
