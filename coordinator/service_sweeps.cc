// CoordinatorService: the user RPCs: SubmitSweep, GetSweep, ListSweeps, CancelSweep, GetMetrics,
// GetReport, GetBest (coordinator/service.h has the protocol).
#include "coordinator/service.h"

#include <cmath>
#include <utility>
#include <vector>

#include "coordinator/service_internal.h"

namespace flap::coordinator {
using namespace service_internal;  // NOLINT: this part's own helpers

// ---------------------------------------------------------------------------------------------
// Users

grpc::ServerUnaryReactor* CoordinatorService::SubmitSweep(grpc::CallbackServerContext* ctx,
                                                          const v1::SubmitSweepRequest* req,
                                                          v1::SubmitSweepResponse* resp) {
  // Parsing and expansion need no lock; only the registration does.
  if (req->sweep_text().size() > kMaxSweepText) {
    return Finish(ctx, Invalid("sweep_text", "is larger than 1 MiB"));
  }
  if (req->base_config().size() > kMaxSweepText) {
    return Finish(ctx, Invalid("base_config", "is larger than 1 MiB"));
  }
  if (req->source().size() > 1024) return Finish(ctx, Invalid("source", "is longer than 1024 bytes"));
  const std::string source = req->source().empty() ? "sweep" : req->source();
  StatusOr<SweepSpec> spec = Status::Internal("unset");
  StatusOr<std::vector<TrialSpec>> trials = Status::Internal("unset");
  if (Authorize(ctx).ok()) {
    spec = ParseSweepText(req->sweep_text(), source);
    if (spec.ok()) ResolveAshaUnit(&*spec, req->base_config());
    if (spec.ok()) trials = ExpandSweep(*spec);
    // Every trial's config (base config, factor values, seed) must validate: a typo or a value
    // that cannot run is refused here rather than failing every trial.
    if (trials.ok()) {
      Status configs = CheckTrialConfigs(*spec, *trials, req->base_config(), source);
      if (!configs.ok()) trials = configs;
    }
  }
  return Handle(ctx, [&](StateBatch* batch) REQUIRES(mu_) -> grpc::Status {
    if (!spec.ok()) return ToGrpcCapped(spec.status());
    if (!trials.ok()) return ToGrpcCapped(trials.status());
    const std::string id = spec->name;
    auto existing = sweeps_.find(id);
    if (existing != sweeps_.end()) {
      if (existing->second.text == req->sweep_text() && existing->second.base_config == req->base_config()) {
        resp->set_sweep_id(id);
        resp->set_num_trials(static_cast<int>(existing->second.trial_ids.size()));
        resp->set_already_submitted(true);
        return grpc::Status::OK;
      }
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS, "sweep " + Quote(id) + " already exists (submitted from " +
                                                                existing->second.source +
                                                                ") with a different file: choose another "
                                                                "name in [sweep] name");
    }
    SweepEntry s;
    s.spec = *spec;
    s.text = req->sweep_text();
    s.source = source;
    s.base_config = req->base_config();
    s.base_values = ConfigValues(s.base_config);
    s.order = counters_.next_order++;
    if (s.spec.asha) {
      StatusOr<Asha> asha = Asha::Create(*s.spec.asha);
      if (!asha.ok()) return ToGrpc(asha.status());
      s.asha = std::move(*asha);
      batch->PutAsha(id, *s.asha);
    }
    for (const TrialSpec& ts : *trials) {
      s.trial_ids.push_back(ts.id);
      TrialEntry t{id, ts, Trial(ts.id, options_.budgets)};
      batch->PutTrial(TrialKey(id, ts.id), t.row());
      trials_.emplace(TrialKey(id, ts.id), std::move(t));
    }
    batch->PutSweep(id, s);
    batch->PutCounters(counters_);
    sweeps_.emplace(id, std::move(s));
    resp->set_sweep_id(id);
    resp->set_num_trials(static_cast<int>(trials->size()));
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* CoordinatorService::Finish(grpc::CallbackServerContext* ctx, grpc::Status status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  grpc::Status auth = Authorize(ctx);
  reactor->Finish(auth.ok() ? status : auth);
  return reactor;
}

void CoordinatorService::FillTrialStatus(const TrialEntry& t, v1::TrialStatus* out) const {
  const TrialRecord& r = t.trial.record();
  out->set_trial_id(r.id);
  for (const auto& [k, v] : t.spec.factors) (*out->mutable_factors())[k] = v;
  out->set_seed(t.spec.seed);
  out->set_cell(t.spec.cell);
  out->set_state(TrialStateName(r.state));
  out->set_attempt(r.attempt);
  out->set_group_id(r.group);
  out->set_step(r.step);
  out->set_total_steps(t.total_steps);
  out->set_checkpoint(r.checkpoint);
  out->set_checkpoint_step(r.checkpoint_step);
  out->set_last_error(r.last_error);
  for (const auto& [k, v] : t.latest_train) (*out->mutable_latest_train())[k] = v;
  for (const auto& [k, v] : t.latest_eval) (*out->mutable_latest_eval())[k] = v;
  out->set_eta_seconds(TrialEta(t));
  out->set_preemptions(r.preemptions);
  out->set_node_faults(r.node_faults);
  out->set_trial_errors(r.trial_errors);
}

grpc::ServerUnaryReactor* CoordinatorService::GetSweep(grpc::CallbackServerContext* ctx, const v1::GetSweepRequest* req,
                                                       v1::SweepStatus* resp) {
  return Handle(ctx, [&](StateBatch*) REQUIRES(mu_) -> grpc::Status {
    FLAP_RETURN_IF_GRPC_ERROR(CheckId("sweep_id", req->sweep_id()));
    auto it = sweeps_.find(req->sweep_id());
    if (it == sweeps_.end()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "sweep_id: no sweep " + Quote(req->sweep_id()));
    }
    const SweepEntry& sw = it->second;
    resp->set_sweep_id(req->sweep_id());
    resp->set_state(SweepStateName(sw.state));
    resp->set_priority(sw.spec.priority);
    resp->set_search(SearchKindName(sw.spec.search));
    for (const auto& f : sw.spec.factors) resp->add_factors(f.name);
    if (sw.spec.asha) resp->set_asha_metric(sw.spec.asha->metric);
    resp->set_sweep_text(sw.text);
    for (const auto& tid : sw.trial_ids) {
      FillTrialStatus(trials_.at(TrialKey(req->sweep_id(), tid)), resp->add_trials());
    }
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* CoordinatorService::ListSweeps(grpc::CallbackServerContext* ctx, const v1::ListSweepsRequest*,
                                                         v1::ListSweepsResponse* resp) {
  return Handle(ctx, [&](StateBatch*) REQUIRES(mu_) -> grpc::Status {
    for (const auto& [id, sw] : sweeps_) {
      auto* e = resp->add_sweeps();
      e->set_sweep_id(id);
      e->set_state(SweepStateName(sw.state));
      e->set_priority(sw.spec.priority);
      e->set_num_trials(static_cast<int>(sw.trial_ids.size()));
      int terminal = 0;
      for (const auto& tid : sw.trial_ids) {
        terminal += IsTerminal(trials_.at(TrialKey(id, tid)).trial.state()) ? 1 : 0;
      }
      e->set_num_terminal(terminal);
    }
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* CoordinatorService::CancelSweep(grpc::CallbackServerContext* ctx,
                                                          const v1::CancelSweepRequest* req,
                                                          v1::CancelSweepResponse* resp) {
  return Handle(ctx, [&](StateBatch* batch) REQUIRES(mu_) -> grpc::Status {
    FLAP_RETURN_IF_GRPC_ERROR(CheckId("sweep_id", req->sweep_id()));
    auto it = sweeps_.find(req->sweep_id());
    if (it == sweeps_.end()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "sweep_id: no sweep " + Quote(req->sweep_id()));
    }
    SweepEntry& sw = it->second;
    int cancelled = 0;
    for (const auto& tid : sw.trial_ids) {
      const std::string key = TrialKey(req->sweep_id(), tid);
      TrialEntry& t = trials_.at(key);
      if (IsTerminal(t.trial.state())) continue;
      const std::string group = t.trial.record().group;
      if (!group.empty()) ReleaseGroup(group, "sweep " + req->sweep_id() + " was cancelled", batch);
      RevokeLeases(key, batch);
      if (!t.trial.Cancel().ok()) continue;
      batch->PutTrial(key, t.row());
      ++cancelled;
    }
    if (sw.state == SweepState::kRunning) {
      sw.state = SweepState::kCancelled;
      batch->PutSweep(req->sweep_id(), sw);
      reports_due_.push_back(req->sweep_id());
      PruneEndedSweep(req->sweep_id());
    }
    resp->set_cancelled_trials(cancelled);
    return grpc::Status::OK;
  });
}

StatusOr<std::vector<MetricPoint>> CoordinatorService::History(const std::string& sweep_id,
                                                               const std::string& trial_id) const {
  FLAP_ASSIGN_OR_RETURN(Rows<MetricPoint> rows, store_->Metrics(sweep_id, trial_id));
  std::vector<MetricPoint> out;
  for (auto& [trial_key, p] : rows) out.push_back(std::move(p));
  return out;
}

grpc::ServerUnaryReactor* CoordinatorService::GetMetrics(grpc::CallbackServerContext* ctx,
                                                         const v1::GetMetricsRequest* req,
                                                         v1::GetMetricsResponse* resp) {
  return Handle(ctx, [&](StateBatch*) REQUIRES(mu_) -> grpc::Status {
    grpc::Status s = CheckId("sweep_id", req->sweep_id());
    if (s.ok() && !req->trial_id().empty()) s = CheckId("trial_id", req->trial_id());
    if (!s.ok()) return s;
    if (!sweeps_.count(req->sweep_id())) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "sweep_id: no sweep " + Quote(req->sweep_id()));
    }
    if (!req->trial_id().empty() && !trials_.count(TrialKey(req->sweep_id(), req->trial_id()))) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          "trial_id: no trial " + Quote(req->trial_id()) + " in sweep " + Quote(req->sweep_id()));
    }
    // Committed records only, which include every record whose report was answered.
    StatusOr<std::vector<MetricPoint>> points = History(req->sweep_id(), req->trial_id());
    if (!points.ok()) return ToGrpc(points.status());
    for (const MetricPoint& p : *points) {
      auto* r = resp->add_records();
      r->set_trial_id(p.trial_id);
      r->set_attempt(p.attempt);
      r->set_kind(MetricKindName(p.kind));
      r->set_step(p.step);
      r->set_epoch(p.epoch);
      r->set_time_unix_ms(p.time_ms);
      for (const auto& [k, v] : p.values) (*r->mutable_values())[k] = v;
    }
    return grpc::Status::OK;
  });
}

StatusOr<ReportInput> CoordinatorService::ReportInputFor(const std::string& sweep_id) const {
  ReportInput in;
  {
    MutexLock lock(&mu_);
    auto it = sweeps_.find(sweep_id);
    if (it == sweeps_.end()) return Status::NotFound("sweep_id: no sweep " + Quote(sweep_id));
    in.sweep_id = sweep_id;
    in.spec = it->second.spec;
    in.state = SweepStateName(it->second.state);
    in.base_config = it->second.base_config;
    for (const auto& tid : it->second.trial_ids) {
      const TrialEntry& t = trials_.at(TrialKey(sweep_id, tid));
      in.trials.push_back(t.spec);
      in.records.push_back(t.trial.record());
    }
  }
  FLAP_ASSIGN_OR_RETURN(in.metrics, History(sweep_id, ""));
  return in;
}

grpc::ServerUnaryReactor* CoordinatorService::FromReportInput(grpc::CallbackServerContext* ctx,
                                                              const std::string& sweep_id, grpc::Status checked,
                                                              std::function<void(const ReportInput&)> answer) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  grpc::Status s = Authorize(ctx);
  if (s.ok()) s = CheckId("sweep_id", sweep_id);
  if (s.ok()) s = checked;
  if (!s.ok()) {
    reactor->Finish(s);
    return reactor;
  }
  // Wait for what was staged before, then read: the answer shows only committed state.
  store_->WhenDurable(store_->appended(), [this, reactor, sweep_id, answer](const Status& durable) {
    if (!durable.ok()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, durable.message()));
      return;
    }
    StatusOr<ReportInput> in = ReportInputFor(sweep_id);
    if (!in.ok()) {
      reactor->Finish(ToGrpc(in.status()));
      return;
    }
    answer(*in);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* CoordinatorService::GetReport(grpc::CallbackServerContext* ctx,
                                                        const v1::GetReportRequest* req, v1::GetReportResponse* resp) {
  grpc::Status checked = grpc::Status::OK;
  if (std::isnan(req->target()) || std::isinf(req->target())) checked = Invalid("target", "must be a finite number");
  return FromReportInput(ctx, req->sweep_id(), checked, [req, resp](const ReportInput& in) {
    ReportOptions ro;
    ro.target = req->target();
    for (auto& f : BuildReport(in, ro)) {
      auto* out = resp->add_files();
      out->set_name(f.name);
      out->set_content(std::move(f.content));
    }
  });
}

grpc::ServerUnaryReactor* CoordinatorService::GetBest(grpc::CallbackServerContext* ctx, const v1::GetBestRequest* req,
                                                      v1::GetBestResponse* resp) {
  return FromReportInput(ctx, req->sweep_id(), grpc::Status::OK, [resp](const ReportInput& in) {
    const BestChoices best = SelectBest(in, ReportOptions{});
    resp->set_sweep_id(in.sweep_id);
    resp->set_state(in.state);
    resp->set_metric(best.metric);
    resp->set_higher_is_better(best.max_mode);
    resp->set_base_config(in.base_config);
    for (const CellChoice& c : best.cells) {
      v1::CellChoice* out = resp->add_cells();
      out->set_cell(c.cell);
      out->set_label(c.label);
      out->mutable_factors()->insert(c.factors.begin(), c.factors.end());
      out->set_candidates(c.candidates);
      if (c.trial != nullptr) {
        out->set_trial_id(c.trial->id);
        out->set_seed(c.trial->seed);
        out->set_selected_step(c.selected_step);
        out->set_checkpoint(c.checkpoint);
        out->set_objective(c.objective);
        out->mutable_validation()->insert(c.validation.begin(), c.validation.end());
        out->mutable_test()->insert(c.test.begin(), c.test.end());
      }
      out->set_reason(c.reason);
    }
  });
}

}  // namespace flap::coordinator
