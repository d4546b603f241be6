// CoordinatorService (coordinator/service.h): creation, loading the state, the journal
// records, authorisation and the trial-scoped checks shared by the handlers (the handlers are
// in service_groups.cc, service_leases.cc, service_trials.cc and service_sweeps.cc).
#include "coordinator/service.h"

#include <chrono>
#include <filesystem>
#include <utility>

#include "coordinator/service_internal.h"

namespace flap::coordinator {
using namespace service_internal;  // NOLINT: this part's own helpers

// ---------------------------------------------------------------------------------------------
// Set-up and recovery

CoordinatorService::CoordinatorService(const ServiceOptions& options) : options_(options) {}

StatusOr<std::unique_ptr<CoordinatorService>> CoordinatorService::Create(const ServiceOptions& options) {
  if (options.state_dir.empty()) return Status::InvalidArgument("state_dir: not set");
  if (options.token.empty()) return Status::InvalidArgument("token: not set");
  if (options.heartbeat_interval_ms <= 0 || options.heartbeat_timeout_ms <= 0 || options.lease_ttl_ms <= 0 ||
      options.reap_interval_ms <= 0) {
    return Status::InvalidArgument("heartbeat, lease and reap times must be > 0 ms");
  }
  if (options.budgets.preemption < 0 || options.budgets.node_fault < 0 || options.budgets.trial_error < 0) {
    return Status::InvalidArgument("retry budgets must be >= 0");
  }
  std::unique_ptr<CoordinatorService> service(new CoordinatorService(options));
  JournalOptions jo;
  jo.sync = options.sync;
  jo.on_failure = options.on_journal_failure;
  FLAP_ASSIGN_OR_RETURN(service->store_, StateStore::Open(options.state_dir, jo));
  FLAP_RETURN_IF_ERROR(service->Load());
  if (!options.sd_file.empty()) {
    service->sd_file_ = std::make_unique<SdFileWriter>(options.sd_file);
    std::vector<metrics::ScrapeTarget> targets;
    {
      MutexLock lock(&service->mu_);
      targets = service->SdTargets(service->Now());
    }
    FLAP_RETURN_IF_ERROR(service->sd_file_->Write(targets));
  }
  service->reaper_ = std::thread([s = service.get()] { s->ReapLoop(); });
  return service;
}

CoordinatorService::~CoordinatorService() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  stop_cv_.SignalAll();
  if (reaper_.joinable()) reaper_.join();
  reports_.JoinAll();  // before the members its jobs use are destroyed
}

int64_t CoordinatorService::Now() const {
  if (options_.now_ms) return options_.now_ms();
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Status CoordinatorService::Load() {
  MutexLock lock(&mu_);
  const int64_t now = Now();
  FLAP_ASSIGN_OR_RETURN(counters_, store_->ReadCounters());
  FLAP_ASSIGN_OR_RETURN(Rows<SweepRecord> sweeps, store_->Sweeps());
  for (auto& [id, record] : sweeps) {
    SweepEntry s;
    static_cast<SweepRecord&>(s) = std::move(record);
    s.base_values = ConfigValues(s.base_config);
    sweeps_[id] = std::move(s);
  }
  FLAP_ASSIGN_OR_RETURN(Rows<Asha> ashas, store_->Ashas());
  for (auto& [id, asha] : ashas) {
    auto it = sweeps_.find(id);
    if (it == sweeps_.end()) {
      return Status::Corruption(TablePrefix(Table::kAsha) + id + ": ASHA state of an unknown sweep");
    }
    it->second.asha = std::move(asha);
  }
  for (auto& [id, s] : sweeps_) {
    if (s.spec.asha && !s.asha) {
      FLAP_ASSIGN_OR_RETURN(Asha asha, Asha::Create(*s.spec.asha));
      s.asha = std::move(asha);
    }
  }
  FLAP_ASSIGN_OR_RETURN(Rows<GroupRecord> groups, store_->Groups());
  for (auto& [id, record] : groups) {
    GroupEntry g;
    static_cast<GroupRecord&>(g) = std::move(record);
    g.last_heartbeat_ms = now;  // the grace period
    groups_[id] = std::move(g);
  }
  FLAP_ASSIGN_OR_RETURN(Rows<TrialRow> trials, store_->Trials());
  for (auto& [tkey, row] : trials) {
    const std::string key = TablePrefix(Table::kTrial) + tkey;
    const std::string sweep = SplitTrialKey(tkey).first;
    if (!sweeps_.count(sweep)) return Status::Corruption(key + ": trial of an unknown sweep");
    FLAP_ASSIGN_OR_RETURN(Trial trial, Trial::FromRecord(std::move(row.record)));
    TrialEntry t(sweep, std::move(row.spec), std::move(trial));
    t.total_steps = row.total_steps;
    if (!t.trial.record().group.empty()) {
      auto g = groups_.find(t.trial.record().group);
      if (g == groups_.end()) {
        return Status::Corruption(key + ": held by group '" + t.trial.record().group + "', which is not registered");
      }
      g->second.trial_key = tkey;
      g->second.attempt = t.trial.attempt();
    }
    trials_.emplace(tkey, std::move(t));
  }
  for (auto& [id, s] : sweeps_) {
    for (const auto& tid : s.trial_ids) {
      if (!trials_.count(TrialKey(id, tid))) {
        return Status::Corruption(TablePrefix(Table::kSweep) + id + ": trial " + tid + " is missing");
      }
    }
  }
  // Latest metrics per trial (for status).
  FLAP_ASSIGN_OR_RETURN(Rows<MetricPoint> metrics, store_->Metrics());
  for (auto& [tkey, p] : metrics) {
    auto t = trials_.find(tkey);
    if (t == trials_.end()) {
      return Status::Corruption(TablePrefix(Table::kMetric) + tkey + "/" + MetricKindName(p.kind) + "/" +
                                std::to_string(p.step) + ": metrics of an unknown trial");
    }
    if (p.kind == MetricKind::kTest) continue;  // the test split's record: for the report only
    if (p.kind == MetricKind::kEval && p.step < t->second.latest_eval_step) continue;
    if (p.kind == MetricKind::kEval) t->second.latest_eval_step = p.step;
    if (p.kind == MetricKind::kTrain && !t->second.latest_train.empty() && p.step < t->second.latest_train_step)
      continue;
    if (p.kind == MetricKind::kTrain) t->second.latest_train_step = p.step;
    (p.kind == MetricKind::kTrain ? t->second.latest_train : t->second.latest_eval) = std::move(p.values);
  }
  // Lease tables.
  FLAP_ASSIGN_OR_RETURN(Rows<LeaseTable> tables, store_->LeaseTables());
  for (auto& [ekey, table] : tables) {
    const size_t slash = ekey.rfind('/');
    const std::string tkey = ekey.substr(0, slash);
    if (!trials_.count(tkey)) {
      return Status::Corruption(TablePrefix(Table::kEpoch) + ekey + ": lease table of an unknown trial");
    }
    if (IsTerminal(trials_.at(tkey).trial.state())) continue;  // ended: nothing leases its shards
    table.ExtendAll(now);                                      // the grace period
    epochs_[tkey].insert(std::stoi(ekey.substr(slash + 1)));
    leases_.emplace(ekey, std::move(table));
  }
  // A report a crash kept from being written is written now.
  if (!options_.report_dir.empty()) {
    for (const auto& [id, s] : sweeps_) {
      if (s.state != SweepState::kRunning && !std::filesystem::exists(options_.report_dir + "/" + id + "/report.md")) {
        WriteReportInBackground(id);
      }
    }
  }
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------
// Plumbing

grpc::Status CoordinatorService::Authorize(grpc::CallbackServerContext* ctx) const {
  const auto& md = ctx->client_metadata();
  auto it = md.find(kTokenMetadataKey);
  if (it == md.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing token: every call must carry the coordinator's token in the '" +
                            std::string(kTokenMetadataKey) +
                            "' metadata entry (flapctl: --token-file or $FLAP_COORDINATOR_TOKEN)");
  }
  if (!SameToken(std::string(it->second.data(), it->second.size()), options_.token)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "wrong token in the '" + std::string(kTokenMetadataKey) +
                            "' metadata entry: use the token from the coordinator's token file");
  }
  return grpc::Status::OK;
}

void CoordinatorService::ReplyWhenDurable(grpc::ServerUnaryReactor* reactor, uint64_t seq, grpc::Status status) {
  store_->WhenDurable(seq, [reactor, status](const Status& durable) {
    if (!durable.ok()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, durable.message() + "; restart the coordinator"));
    } else {
      reactor->Finish(status);
    }
  });
}

grpc::Status CoordinatorService::FindGroup(const std::string& group_id, GroupEntry** out) {
  FLAP_RETURN_IF_GRPC_ERROR(CheckId("group_id", group_id));
  auto g = groups_.find(group_id);
  if (g == groups_.end()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        "group_id: no group " + Quote(group_id) + " is registered (RegisterGroup first)");
  }
  *out = &g->second;
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::OpenTrial(const std::string& group_id, const v1::TrialRef& ref, TrialScope* out) {
  FLAP_RETURN_IF_GRPC_ERROR(CheckId("group_id", group_id));
  FLAP_RETURN_IF_GRPC_ERROR(CheckRef(ref));
  GroupEntry* g = nullptr;
  FLAP_RETURN_IF_GRPC_ERROR(FindGroup(group_id, &g));
  if (!sweeps_.count(ref.sweep_id())) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "trial.sweep_id: no sweep " + Quote(ref.sweep_id()));
  }
  const std::string key = TrialKey(ref.sweep_id(), ref.trial_id());
  auto t = trials_.find(key);
  if (t == trials_.end()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        "trial.trial_id: no trial " + Quote(ref.trial_id()) + " in sweep " + Quote(ref.sweep_id()));
  }
  const TrialRecord& r = t->second.trial.record();
  if (IsTerminal(r.state)) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "trial " + key + " is " + TrialStateName(r.state) +
                            (r.last_error.empty() ? "" : " (" + r.last_error + ")") + ": stop running it");
  }
  if (ref.attempt() != r.attempt || g->trial_key != key) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "stale attempt: group " + Quote(group_id) + " does not hold attempt " +
                            std::to_string(ref.attempt()) + " of trial " + key + " (its current attempt is " +
                            std::to_string(r.attempt) + (r.group.empty() ? "" : " on group " + Quote(r.group)) +
                            "): stop running it");
  }
  g->last_heartbeat_ms = Now();
  out->key = key;
  out->attempt = ref.attempt();
  out->trial = &t->second;
  out->group = g;
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::BegunEpoch(const TrialScope& scope, int epoch,
                                            std::map<std::string, LeaseTable>::iterator* out) {
  *out = leases_.find(EpochKey(scope.key, epoch));
  if (*out == leases_.end()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "epoch: epoch " + std::to_string(epoch) + " of trial " +
                                                         scope.key + " was not begun (BeginEpoch first)");
  }
  return grpc::Status::OK;
}

void CoordinatorService::EnsureRunning(const TrialScope& scope, StateBatch* batch) {
  TrialEntry* t = scope.trial;
  if (t->trial.state() == TrialState::kAssigned) {
    Status s = t->trial.Start(t->trial.attempt());
    if (s.ok()) batch->PutTrial(scope.key, t->row());
  }
}

void CoordinatorService::ReleaseGroup(const std::string& group_id, const std::string& reason, StateBatch* /*batch*/) {
  auto g = groups_.find(group_id);
  if (g == groups_.end()) return;
  if (!reason.empty() && !g->second.trial_key.empty()) {
    const size_t slash = g->second.trial_key.find('/');
    g->second.revoked.set_sweep_id(g->second.trial_key.substr(0, slash));
    g->second.revoked.set_trial_id(g->second.trial_key.substr(slash + 1));
    g->second.revoked.set_attempt(g->second.attempt);
    g->second.revoked_reason = reason;
  }
  g->second.trial_key.clear();
  g->second.attempt = 0;
}

void CoordinatorService::RevokeLeases(const std::string& key, StateBatch* batch) {
  auto e = epochs_.find(key);
  if (e == epochs_.end()) return;
  for (int epoch : e->second) {
    const std::string ekey = EpochKey(key, epoch);
    LeaseTable& table = leases_.at(ekey);
    batch->PutLeases(ekey, table.RevokeAll());
  }
}

void CoordinatorService::PruneEndedSweep(const std::string& sweep_id) {
  for (const auto& tid : sweeps_.at(sweep_id).trial_ids) {
    const std::string key = TrialKey(sweep_id, tid);
    auto e = epochs_.find(key);
    if (e == epochs_.end()) continue;
    for (int epoch : e->second) leases_.erase(EpochKey(key, epoch));
    epochs_.erase(e);
  }
}

void CoordinatorService::ExpireLeases(const std::string& ekey, LeaseTable* table, int64_t now, StateBatch* batch) {
  const std::vector<Lease> expired = table->Expire(now);
  leases_expired_ += static_cast<int64_t>(expired.size());
  batch->PutLeases(ekey, expired);
}

void CoordinatorService::EndAttempt(const std::string& key, TrialEntry* t, FailureCause cause, const std::string& error,
                                    StateBatch* batch) {
  StatusOr<TrialState> next = t->trial.Requeue(t->trial.attempt(), cause, error);
  if (!next.ok()) return;  // not live: nothing to end
  RevokeLeases(key, batch);
  t->rate_step0 = -1;
  batch->PutTrial(key, t->row());
  if (*next == TrialState::kFailed) MaybeFinishSweep(t->sweep, batch);
}

void CoordinatorService::MaybeFinishSweep(const std::string& sweep_id, StateBatch* batch) {
  SweepEntry& s = sweeps_.at(sweep_id);
  if (s.state != SweepState::kRunning) return;
  for (const auto& tid : s.trial_ids) {
    if (!IsTerminal(trials_.at(TrialKey(sweep_id, tid)).trial.state())) return;
  }
  s.state = SweepState::kFinished;
  batch->PutSweep(sweep_id, s);
  reports_due_.push_back(sweep_id);
  PruneEndedSweep(sweep_id);
}

void CoordinatorService::FillAssignment(const std::string& key, const TrialEntry& t, v1::Assignment* a) const {
  const TrialRecord& r = t.trial.record();
  const SweepEntry& s = sweeps_.at(t.sweep);
  a->mutable_trial()->set_sweep_id(t.sweep);
  a->mutable_trial()->set_trial_id(r.id);
  a->mutable_trial()->set_attempt(r.attempt);
  a->set_base_config(s.base_config);
  for (const auto& [k, v] : TrialOverrides(t.sweep, t.spec)) (*a->mutable_overrides())[k] = v;
  a->set_resume_checkpoint(r.checkpoint);
  a->set_resume_step(r.checkpoint_step);
  if (s.spec.asha) {
    a->set_asha_metric(s.spec.asha->metric);
    a->set_asha_unit(s.spec.asha->Unit());
    for (double rung : s.spec.asha->rungs) {
      a->add_asha_rung_points(rung);
      if (s.spec.asha->Unit() == "steps") a->add_asha_rungs(static_cast<int64_t>(rung));
    }
  }
  (void)key;
}

}  // namespace flap::coordinator
