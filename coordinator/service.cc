// CoordinatorService (coordinator/service.h): creation, loading the state, the journal
// records, authorisation and the trial-scoped checks shared by the handlers (the handlers are
// in service_groups.cc, service_leases.cc, service_trials.cc and service_sweeps.cc).
#include "coordinator/service.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <utility>

#include "coordinator/report.h"
#include "coordinator/service_internal.h"

namespace flap::coordinator {
using namespace service_internal;  // NOLINT: this part's own helpers

// ---------------------------------------------------------------------------------------------
// Set-up and recovery

const char* SweepStateName(SweepState state) {
  switch (state) {
    case SweepState::kRunning: return "running";
    case SweepState::kFinished: return "finished";
    case SweepState::kCancelled: return "cancelled";
  }
  return "running";
}

StatusOr<SweepState> ParseSweepState(const std::string& name, const std::string& what) {
  for (SweepState s : {SweepState::kRunning, SweepState::kFinished, SweepState::kCancelled}) {
    if (name == SweepStateName(s)) return s;
  }
  return Status::Corruption(what + ": unknown sweep state '" + name + "'");
}

CoordinatorService::CoordinatorService(const ServiceOptions& options) : options_(options) {}

StatusOr<std::unique_ptr<CoordinatorService>> CoordinatorService::Create(
    const ServiceOptions& options) {
  if (options.state_dir.empty()) return Status::InvalidArgument("state_dir: not set");
  if (options.token.empty()) return Status::InvalidArgument("token: not set");
  if (options.heartbeat_interval_ms <= 0 || options.heartbeat_timeout_ms <= 0 ||
      options.lease_ttl_ms <= 0 || options.reap_interval_ms <= 0) {
    return Status::InvalidArgument("heartbeat, lease and reap times must be > 0 ms");
  }
  if (options.budgets.preemption < 0 || options.budgets.node_fault < 0 ||
      options.budgets.trial_error < 0) {
    return Status::InvalidArgument("retry budgets must be >= 0");
  }
  std::unique_ptr<CoordinatorService> service(new CoordinatorService(options));
  JournalOptions jo;
  jo.sync = options.sync;
  jo.on_failure = options.on_journal_failure;
  FLAP_ASSIGN_OR_RETURN(service->journal_, Journal::Open(options.state_dir, jo));
  FLAP_RETURN_IF_ERROR(service->Load());
  if (!options.sd_file.empty()) {
    const std::filesystem::path dir = std::filesystem::path(options.sd_file).parent_path();
    std::error_code ec;
    if (!dir.empty()) std::filesystem::create_directories(dir, ec);
    std::vector<metrics::ScrapeTarget> targets;
    {
      std::lock_guard<std::mutex> lock(service->mu_);
      targets = service->SdTargets(service->Now());
    }
    FLAP_RETURN_IF_ERROR(service->WriteSdFile(targets));
  }
  service->reaper_ = std::thread([s = service.get()] { s->ReapLoop(); });
  return service;
}

CoordinatorService::~CoordinatorService() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (reaper_.joinable()) reaper_.join();
  WaitForReports();
  std::map<uint64_t, std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(report_mu_);
    threads.swap(report_threads_);
  }
  for (auto& [n, t] : threads) t.join();
}

int64_t CoordinatorService::Now() const {
  if (options_.now_ms) return options_.now_ms();
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Status CoordinatorService::Load() {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = Now();
  FLAP_ASSIGN_OR_RETURN(auto counters, journal_->Scan("meta/counters"));
  for (const auto& [key, value] : counters) {
    FLAP_ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(value, key));
    FLAP_RETURN_IF_ERROR(ji::Get(j, "next_group", key, &next_group_));
    FLAP_RETURN_IF_ERROR(ji::Get(j, "next_order", key, &next_order_));
  }
  FLAP_ASSIGN_OR_RETURN(auto sweeps, journal_->Scan("sweep/"));
  for (const auto& [key, value] : sweeps) {
    FLAP_ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(value, key));
    SweepEntry s;
    if (!j.is_object() || !j.contains("spec")) return Status::Corruption(key + ": no spec");
    FLAP_ASSIGN_OR_RETURN(s.spec, SweepSpec::FromJson(j["spec"], key));
    FLAP_RETURN_IF_ERROR(ji::Get(j, "text", key, &s.text));
    FLAP_RETURN_IF_ERROR(ji::Get(j, "source", key, &s.source));
    FLAP_RETURN_IF_ERROR(ji::Get(j, "base_config", key, &s.base_config));
    std::string state;
    FLAP_RETURN_IF_ERROR(ji::Get(j, "state", key, &state));
    FLAP_ASSIGN_OR_RETURN(s.state, ParseSweepState(state, key));
    FLAP_RETURN_IF_ERROR(ji::Get(j, "order", key, &s.order));
    FLAP_RETURN_IF_ERROR(ji::GetArray(j, "trial_ids", key, &s.trial_ids));
    s.base_values = ConfigValues(s.base_config);
    sweeps_[key.substr(6)] = std::move(s);
  }
  FLAP_ASSIGN_OR_RETURN(auto ashas, journal_->Scan("asha/"));
  for (const auto& [key, value] : ashas) {
    auto it = sweeps_.find(key.substr(5));
    if (it == sweeps_.end()) return Status::Corruption(key + ": ASHA state of an unknown sweep");
    FLAP_ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(value, key));
    FLAP_ASSIGN_OR_RETURN(Asha asha, Asha::FromJson(j, key));
    it->second.asha = std::move(asha);
  }
  for (auto& [id, s] : sweeps_) {
    if (s.spec.asha && !s.asha) {
      FLAP_ASSIGN_OR_RETURN(Asha asha, Asha::Create(*s.spec.asha));
      s.asha = std::move(asha);
    }
  }
  FLAP_ASSIGN_OR_RETURN(auto groups, journal_->Scan("group/"));
  for (const auto& [key, value] : groups) {
    FLAP_ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(value, key));
    GroupEntry g;
    FLAP_RETURN_IF_ERROR(ji::Get(j, "incarnation", key, &g.incarnation));
    FLAP_RETURN_IF_ERROR(ji::Get(j, "host", key, &g.host));
    FLAP_RETURN_IF_ERROR(ji::Get(j, "world_size", key, &g.world_size));
    if (j.contains("metrics_endpoints")) {  // absent in journals written before endpoints
      FLAP_RETURN_IF_ERROR(ji::GetArray(j, "metrics_endpoints", key, &g.metrics_endpoints));
    }
    g.last_heartbeat_ms = now;  // the grace period
    groups_[key.substr(6)] = std::move(g);
  }
  FLAP_ASSIGN_OR_RETURN(auto trials, journal_->Scan("trial/"));
  for (const auto& [key, value] : trials) {
    FLAP_ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(value, key));
    if (!j.is_object() || !j.contains("spec") || !j.contains("record")) {
      return Status::Corruption(key + ": fields 'spec' and 'record' are required");
    }
    const std::string tkey = key.substr(6);
    const std::string sweep = tkey.substr(0, tkey.find('/'));
    if (!sweeps_.count(sweep)) return Status::Corruption(key + ": trial of an unknown sweep");
    FLAP_ASSIGN_OR_RETURN(TrialSpec spec, TrialSpec::FromJson(j["spec"], key));
    FLAP_ASSIGN_OR_RETURN(TrialRecord record, TrialRecord::FromJson(j["record"], key));
    FLAP_ASSIGN_OR_RETURN(Trial trial, Trial::FromRecord(record));
    TrialEntry t{sweep, std::move(spec), std::move(trial)};
    FLAP_RETURN_IF_ERROR(ji::Get(j, "total_steps", key, &t.total_steps));
    if (!t.trial.record().group.empty()) {
      auto g = groups_.find(t.trial.record().group);
      if (g == groups_.end()) {
        return Status::Corruption(key + ": held by group '" + t.trial.record().group +
                                  "', which is not registered");
      }
      g->second.trial_key = tkey;
      g->second.attempt = t.trial.attempt();
    }
    trials_.emplace(tkey, std::move(t));
  }
  for (auto& [id, s] : sweeps_) {
    for (const auto& tid : s.trial_ids) {
      if (!trials_.count(TrialKey(id, tid))) {
        return Status::Corruption("sweep/" + id + ": trial " + tid + " is missing");
      }
    }
  }
  // Latest metrics per trial (for status).
  FLAP_ASSIGN_OR_RETURN(auto metrics, journal_->Scan("metric/"));
  for (const auto& [key, value] : metrics) {
    FLAP_ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(value, key));
    FLAP_ASSIGN_OR_RETURN(MetricPoint p, MetricPoint::FromJson(j, key));
    const std::string rest = key.substr(7);  // sweep/trial/kind/step
    const std::string tkey = rest.substr(0, rest.find('/', rest.find('/') + 1));
    auto t = trials_.find(tkey);
    if (t == trials_.end()) return Status::Corruption(key + ": metrics of an unknown trial");
    (p.kind == "train" ? t->second.latest_train : t->second.latest_eval) = p.values;
  }
  // Lease tables: the epoch's shards under epoch/<ekey>, each lease under lease/<ekey>/<id>.
  FLAP_ASSIGN_OR_RETURN(auto tables, journal_->Scan("epoch/"));
  for (const auto& [key, value] : tables) {
    FLAP_ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(value, key));
    const std::string ekey = key.substr(6);
    FLAP_ASSIGN_OR_RETURN(auto lease_rows, journal_->Scan("lease/" + ekey + "/"));
    nlohmann::json leases = nlohmann::json::array();
    uint64_t next_id = 1;
    for (const auto& [lkey, lvalue] : lease_rows) {
      FLAP_ASSIGN_OR_RETURN(nlohmann::json l, ParseJson(lvalue, lkey));
      FLAP_ASSIGN_OR_RETURN(Lease lease, Lease::FromJson(l, lkey));
      next_id = std::max(next_id, lease.id + 1);
      leases.push_back(std::move(l));
    }
    if (!j.is_object()) return Status::Corruption(key + ": expected a JSON object");
    j["leases"] = std::move(leases);
    j["next_lease_id"] = next_id;
    FLAP_ASSIGN_OR_RETURN(LeaseTable table, LeaseTable::FromJson(j, key));
    const size_t slash = ekey.rfind('/');
    const std::string tkey = ekey.substr(0, slash);
    if (!trials_.count(tkey)) return Status::Corruption(key + ": lease table of an unknown trial");
    if (IsTerminal(trials_.at(tkey).trial.state())) continue;  // ended: nothing leases its shards
    table.ExtendAll(now);  // the grace period
    epochs_[tkey].insert(std::stoi(ekey.substr(slash + 1)));
    leases_.emplace(ekey, std::move(table));
  }
  // A report a crash kept from being written is written now.
  if (!options_.report_dir.empty()) {
    for (const auto& [id, s] : sweeps_) {
      if (s.state != SweepState::kRunning &&
          !std::filesystem::exists(options_.report_dir + "/" + id + "/report.md")) {
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

void CoordinatorService::ReplyWhenDurable(grpc::ServerUnaryReactor* reactor, uint64_t seq,
                                          grpc::Status status) {
  journal_->WhenDurable(seq, [reactor, status](const Status& durable) {
    if (!durable.ok()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                   durable.message() + "; restart the coordinator"));
    } else {
      reactor->Finish(status);
    }
  });
}


void CoordinatorService::PutSweep(const std::string& id, const SweepEntry& s,
                                  JournalBatch* batch) const {
  nlohmann::json j = {{"spec", s.spec.ToJson()}, {"text", s.text},     {"source", s.source},
                      {"base_config", s.base_config}, {"state", SweepStateName(s.state)}, {"order", s.order},
                      {"trial_ids", s.trial_ids}};
  batch->Put("sweep/" + id, j.dump());
}

void CoordinatorService::PutTrial(const std::string& key, const TrialEntry& t,
                                  JournalBatch* batch) const {
  nlohmann::json j = {{"spec", t.spec.ToJson()},
                      {"record", t.trial.record().ToJson()},
                      {"total_steps", t.total_steps}};
  batch->Put("trial/" + key, j.dump());
}

void CoordinatorService::PutGroup(const std::string& id, const GroupEntry& g,
                                  JournalBatch* batch) const {
  nlohmann::json j = {{"incarnation", g.incarnation},
                      {"host", g.host},
                      {"world_size", g.world_size},
                      {"metrics_endpoints", g.metrics_endpoints}};
  batch->Put("group/" + id, j.dump());
}

void CoordinatorService::PutLeases(const std::string& ekey, const std::vector<Lease>& leases,
                                   JournalBatch* batch) const {
  for (const Lease& l : leases) {
    char id[24];
    std::snprintf(id, sizeof(id), "%012llu", static_cast<unsigned long long>(l.id));
    batch->Put("lease/" + ekey + "/" + id, l.ToJson().dump());
  }
}

void CoordinatorService::PutCounters(JournalBatch* batch) const {
  nlohmann::json j = {{"next_group", next_group_}, {"next_order", next_order_}};
  batch->Put("meta/counters", j.dump());
}

grpc::Status CoordinatorService::LiveTrial(const std::string& group_id, const v1::TrialRef& ref,
                                           TrialEntry** out) {
  grpc::Status s = CheckId("group_id", group_id);
  if (s.ok()) s = CheckRef(ref);
  if (!s.ok()) return s;
  auto g = groups_.find(group_id);
  if (g == groups_.end()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        "group_id: no group " + Quote(group_id) + " is registered (RegisterGroup first)");
  }
  if (!sweeps_.count(ref.sweep_id())) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        "trial.sweep_id: no sweep " + Quote(ref.sweep_id()));
  }
  const std::string key = TrialKey(ref.sweep_id(), ref.trial_id());
  auto t = trials_.find(key);
  if (t == trials_.end()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "trial.trial_id: no trial " +
                                                         Quote(ref.trial_id()) + " in sweep " +
                                                         Quote(ref.sweep_id()));
  }
  const TrialRecord& r = t->second.trial.record();
  if (IsTerminal(r.state)) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "trial " + key + " is " + TrialStateName(r.state) +
                            (r.last_error.empty() ? "" : " (" + r.last_error + ")") +
                            ": stop running it");
  }
  if (ref.attempt() != r.attempt || g->second.trial_key != key) {
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        "stale attempt: group " + Quote(group_id) + " does not hold attempt " +
            std::to_string(ref.attempt()) + " of trial " + key + " (its current attempt is " +
            std::to_string(r.attempt) + (r.group.empty() ? "" : " on group " + Quote(r.group)) +
            "): stop running it");
  }
  g->second.last_heartbeat_ms = Now();
  *out = &t->second;
  return grpc::Status::OK;
}

void CoordinatorService::EnsureRunning(const std::string& key, TrialEntry* t, JournalBatch* batch) {
  if (t->trial.state() == TrialState::kAssigned) {
    Status s = t->trial.Start(t->trial.attempt());
    if (s.ok()) PutTrial(key, *t, batch);
  }
}

void CoordinatorService::ReleaseGroup(const std::string& group_id, const std::string& reason,
                                      JournalBatch* /*batch*/) {
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

void CoordinatorService::RevokeLeases(const std::string& key, JournalBatch* batch) {
  auto e = epochs_.find(key);
  if (e == epochs_.end()) return;
  for (int epoch : e->second) {
    const std::string ekey = EpochKey(key, epoch);
    LeaseTable& table = leases_.at(ekey);
    PutLeases(ekey, table.RevokeAll(), batch);
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

void CoordinatorService::ExpireLeases(const std::string& ekey, LeaseTable* table, int64_t now,
                                      JournalBatch* batch) {
  const std::vector<Lease> expired = table->Expire(now);
  leases_expired_ += static_cast<int64_t>(expired.size());
  PutLeases(ekey, expired, batch);
}

void CoordinatorService::EndAttempt(const std::string& key, TrialEntry* t, FailureCause cause,
                                    const std::string& error, JournalBatch* batch) {
  StatusOr<TrialState> next = t->trial.Requeue(t->trial.attempt(), cause, error);
  if (!next.ok()) return;  // not live: nothing to end
  RevokeLeases(key, batch);
  t->rate_step0 = -1;
  PutTrial(key, *t, batch);
  if (*next == TrialState::kFailed) MaybeFinishSweep(t->sweep, batch);
}

void CoordinatorService::MaybeFinishSweep(const std::string& sweep_id, JournalBatch* batch) {
  SweepEntry& s = sweeps_.at(sweep_id);
  if (s.state != SweepState::kRunning) return;
  for (const auto& tid : s.trial_ids) {
    if (!IsTerminal(trials_.at(TrialKey(sweep_id, tid)).trial.state())) return;
  }
  s.state = SweepState::kFinished;
  PutSweep(sweep_id, s, batch);
  reports_due_.push_back(sweep_id);
  PruneEndedSweep(sweep_id);
}

void CoordinatorService::FillAssignment(const std::string& key, const TrialEntry& t,
                                        v1::Assignment* a) const {
  const TrialRecord& r = t.trial.record();
  const SweepEntry& s = sweeps_.at(t.sweep);
  a->mutable_trial()->set_sweep_id(t.sweep);
  a->mutable_trial()->set_trial_id(r.id);
  a->mutable_trial()->set_attempt(r.attempt);
  a->set_base_config(s.base_config);
  for (const auto& [k, v] : t.spec.factors) (*a->mutable_overrides())[k] = v;
  (*a->mutable_overrides())["train.seed"] = std::to_string(t.spec.seed);
  (*a->mutable_overrides())["train.trial_id"] = t.sweep + "-" + r.id;
  a->set_resume_checkpoint(r.checkpoint);
  a->set_resume_step(r.checkpoint_step);
  if (s.spec.asha) {
    a->set_asha_metric(s.spec.asha->metric);
    for (int64_t rung : s.spec.asha->rungs) a->add_asha_rungs(rung);
  }
  (void)key;
}

}  // namespace flap::coordinator
