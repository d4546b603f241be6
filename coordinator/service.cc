// Implementation of coordinator/service.h.
#include "coordinator/service.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <utility>

#include "common/path_name.h"
#include "coordinator/grpc_status.h"
#include "coordinator/json_util.h"
#include "coordinator/report.h"

namespace flap::coordinator {
namespace {

namespace ji = json_internal;

constexpr size_t kMaxSweepText = 1 << 20;
constexpr int kMaxWorldSize = 65536;
constexpr int kMaxEpoch = 1000000;
constexpr int kMaxShards = 100000;
constexpr int kMaxSlot = 4095;
constexpr int64_t kMaxStep = 1000000000000LL;
constexpr size_t kMaxMetrics = 64;

grpc::Status Invalid(const std::string& field, const std::string& what) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, field + ": " + what);
}

std::string Quote(const std::string& s) {
  std::string shown = s.size() > 80 ? s.substr(0, 80) + "..." : s;
  return "'" + shown + "'";
}

// Ids become paths (reports, checkpoints): the shared path-name rule (common/path_name.h).
grpc::Status CheckId(const std::string& field, const std::string& value) {
  const std::string problem = PathNameProblem(value);
  if (problem.empty()) return grpc::Status::OK;
  return Invalid(field, value.empty() ? problem : Quote(value) + " " + problem);
}

grpc::Status CheckRef(const v1::TrialRef& ref) {
  grpc::Status s = CheckId("trial.sweep_id", ref.sweep_id());
  if (s.ok()) s = CheckId("trial.trial_id", ref.trial_id());
  if (s.ok() && ref.attempt() < 1) {
    s = Invalid("trial.attempt", "is " + std::to_string(ref.attempt()) + "; attempts count from 1");
  }
  return s;
}

// RegisterGroupRequest.metrics_endpoints: none, or one host:port (at most 256 bytes) per rank.
grpc::Status CheckEndpoints(const v1::RegisterGroupRequest& req) {
  const int n = req.metrics_endpoints_size();
  if (n != 0 && n != req.world_size()) {
    return Invalid("metrics_endpoints", "has " + std::to_string(n) + " entries; give none or one per rank (" +
                                            std::to_string(req.world_size()) + ")");
  }
  for (int i = 0; i < n; ++i) {
    const std::string field = "metrics_endpoints[" + std::to_string(i) + "]";
    const std::string& e = req.metrics_endpoints(i);
    if (e.size() > 256) return Invalid(field, "is longer than 256 bytes");
    StatusOr<metrics::HostPort> hp = metrics::ParseHostPort(e);
    if (!hp.ok()) return Invalid(field, hp.status().message());
    if (hp->host == "*" || hp->port == 0) {
      return Invalid(field, Quote(e) + " is not an address to scrape (a host name or address and a port > 0)");
    }
  }
  return grpc::Status::OK;
}

bool IsMetricName(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '@')) {
      return false;
    }
  }
  return true;
}

std::string TrialKey(const std::string& sweep, const std::string& trial) {
  return sweep + "/" + trial;
}
std::string EpochKey(const std::string& trial_key, int epoch) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%06d", epoch);
  return trial_key + "/" + buf;
}
std::string MetricKey(const std::string& trial_key, const std::string& kind, int64_t step) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%012lld", static_cast<long long>(step));
  return "metric/" + trial_key + "/" + kind + "/" + buf;
}
std::string RankId(const std::string& group, int rank) { return group + "/" + std::to_string(rank); }

// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
bool SameToken(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i % (b.empty() ? 1 : b.size())];
  return diff == 0 && !b.empty();
}

StatusOr<nlohmann::json> ParseJson(const std::string& text, const std::string& key) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::Corruption("stored value of " + key + " is not JSON");
  return j;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Set-up and recovery

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
    FLAP_RETURN_IF_ERROR(ji::Get(j, "state", key, &s.state));
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
      if (s.state != "running" &&
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

// Runs `fn(batch)` under mu_, stages the batch and replies once it is durable.
template <typename Fn>
grpc::ServerUnaryReactor* CoordinatorService::Handle(grpc::CallbackServerContext* ctx, Fn&& fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  grpc::Status status = Authorize(ctx);
  if (!status.ok()) {
    reactor->Finish(status);
    return reactor;
  }
  if (!journal_->healthy()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                 journal_->status().message() + "; restart the coordinator"));
    return reactor;
  }
  uint64_t seq = 0;
  std::vector<std::string> reports;
  {
    std::lock_guard<std::mutex> lock(mu_);
    JournalBatch batch;
    status = fn(&batch);
    seq = journal_->Append(std::move(batch));
    reports.swap(reports_due_);
  }
  for (const auto& id : reports) WriteReportInBackground(id);
  ReplyWhenDurable(reactor, seq, status);
  return reactor;
}

void CoordinatorService::PutSweep(const std::string& id, const SweepEntry& s,
                                  JournalBatch* batch) const {
  nlohmann::json j = {{"spec", s.spec.ToJson()}, {"text", s.text},     {"source", s.source},
                      {"base_config", s.base_config}, {"state", s.state}, {"order", s.order},
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
  if (s.state != "running") return;
  for (const auto& tid : s.trial_ids) {
    if (!IsTerminal(trials_.at(TrialKey(sweep_id, tid)).trial.state())) return;
  }
  s.state = "finished";
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

// ---------------------------------------------------------------------------------------------
// Worker groups

grpc::ServerUnaryReactor* CoordinatorService::RegisterGroup(grpc::CallbackServerContext* ctx,
                                                            const v1::RegisterGroupRequest* req,
                                                            v1::RegisterGroupResponse* resp) {
  return Handle(ctx, [&](JournalBatch* batch) -> grpc::Status {
    grpc::Status s = CheckId("incarnation", req->incarnation());
    if (s.ok() && !req->group_id().empty()) s = CheckId("group_id", req->group_id());
    if (!s.ok()) return s;
    if (req->host().size() > 256) return Invalid("host", "is longer than 256 bytes");
    if (req->world_size() < 1 || req->world_size() > kMaxWorldSize) {
      return Invalid("world_size", "is " + std::to_string(req->world_size()) + "; must be in [1, 65536]");
    }
    s = CheckEndpoints(*req);
    if (!s.ok()) return s;
    const std::vector<std::string> endpoints(req->metrics_endpoints().begin(), req->metrics_endpoints().end());
    std::string id = req->group_id();
    if (id.empty()) {
      for (const auto& [gid, g] : groups_) {
        if (g.incarnation == req->incarnation()) id = gid;  // a retry
      }
      while (id.empty() || (groups_.count(id) && groups_[id].incarnation != req->incarnation())) {
        id = "g" + std::to_string(next_group_++);
      }
      PutCounters(batch);
    }
    const int64_t now = Now();
    auto it = groups_.find(id);
    if (it != groups_.end() && it->second.incarnation != req->incarnation() &&
        !it->second.trial_key.empty()) {
      // The group restarted: the trial it held is lost with its processes.
      const std::string key = it->second.trial_key;
      TrialEntry& t = trials_.at(key);
      EndAttempt(key, &t, FailureCause::kNodeFault,
                 "group " + id + " restarted (new incarnation) while running attempt " +
                     std::to_string(t.trial.attempt()),
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
      PutGroup(id, g, batch);
    }
    resp->set_group_id(id);
    resp->set_heartbeat_interval_ms(options_.heartbeat_interval_ms);
    resp->set_heartbeat_timeout_ms(options_.heartbeat_timeout_ms);
    resp->set_lease_ttl_ms(options_.lease_ttl_ms);
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* CoordinatorService::Heartbeat(grpc::CallbackServerContext* ctx,
                                                        const v1::HeartbeatRequest* req,
                                                        v1::HeartbeatResponse* resp) {
  return Handle(ctx, [&](JournalBatch*) -> grpc::Status {
    grpc::Status s = CheckId("group_id", req->group_id());
    if (!s.ok()) return s;
    auto g = groups_.find(req->group_id());
    if (g == groups_.end()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "group_id: no group " +
                                                           Quote(req->group_id()) +
                                                           " is registered (RegisterGroup first)");
    }
    if (req->ranks_size() > kMaxWorldSize) return Invalid("ranks", "lists more than 65536 ranks");
    for (int i = 0; i < req->ranks_size(); ++i) {
      if (req->ranks(i) < 0 || req->ranks(i) >= g->second.world_size) {
        return Invalid("ranks[" + std::to_string(i) + "]",
                       "is " + std::to_string(req->ranks(i)) + "; the group has " +
                           std::to_string(g->second.world_size) + " ranks");
      }
    }
    const int64_t now = Now();
    g->second.last_heartbeat_ms = now;
    const std::string& key = g->second.trial_key;
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
    } else if (!g->second.revoked_reason.empty()) {
      resp->set_action(v1::STOP);
      *resp->mutable_trial() = g->second.revoked;
      resp->set_reason(g->second.revoked_reason);
    } else {
      resp->set_action(v1::IDLE);
    }
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* CoordinatorService::NextTrial(grpc::CallbackServerContext* ctx,
                                                        const v1::NextTrialRequest* req,
                                                        v1::NextTrialResponse* resp) {
  return Handle(ctx, [&](JournalBatch* batch) -> grpc::Status {
    grpc::Status s = CheckId("group_id", req->group_id());
    if (!s.ok()) return s;
    auto g = groups_.find(req->group_id());
    if (g == groups_.end()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "group_id: no group " +
                                                           Quote(req->group_id()) +
                                                           " is registered (RegisterGroup first)");
    }
    g->second.last_heartbeat_ms = Now();
    if (!g->second.trial_key.empty()) {  // a retry: the same assignment
      resp->set_assigned(true);
      FillAssignment(g->second.trial_key, trials_.at(g->second.trial_key), resp->mutable_assignment());
      return grpc::Status::OK;
    }
    g->second.revoked.Clear();
    g->second.revoked_reason.clear();
    std::vector<std::pair<std::pair<int, int64_t>, std::string>> order;
    for (const auto& [id, sw] : sweeps_) {
      if (sw.state == "running") order.push_back({{-sw.spec.priority, sw.order}, id});
    }
    std::sort(order.begin(), order.end());
    bool any_live = false;
    for (const auto& [rank, sweep_id] : order) {
      for (const auto& tid : sweeps_.at(sweep_id).trial_ids) {
        const std::string key = TrialKey(sweep_id, tid);
        TrialEntry& t = trials_.at(key);
        if (!IsTerminal(t.trial.state())) any_live = true;
        if (t.trial.state() != TrialState::kPending) continue;
        StatusOr<int> attempt = t.trial.Assign(req->group_id());
        if (!attempt.ok()) return ToGrpc(attempt.status());
        t.rate_step0 = -1;
        g->second.trial_key = key;
        g->second.attempt = *attempt;
        PutTrial(key, t, batch);
        resp->set_assigned(true);
        FillAssignment(key, t, resp->mutable_assignment());
        return grpc::Status::OK;
      }
    }
    resp->set_assigned(false);
    resp->set_all_done(!any_live);
    resp->set_retry_after_ms(options_.heartbeat_interval_ms);
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* CoordinatorService::BeginEpoch(grpc::CallbackServerContext* ctx,
                                                         const v1::BeginEpochRequest* req,
                                                         v1::BeginEpochResponse* resp) {
  return Handle(ctx, [&](JournalBatch* batch) -> grpc::Status {
    TrialEntry* t = nullptr;
    grpc::Status s = LiveTrial(req->group_id(), req->trial(), &t);
    if (!s.ok()) return s;
    if (req->epoch() < 0 || req->epoch() > kMaxEpoch) {
      return Invalid("epoch", "is " + std::to_string(req->epoch()) + "; must be in [0, 1000000]");
    }
    if (req->shards_size() < 1 || req->shards_size() > kMaxShards) {
      return Invalid("shards", "has " + std::to_string(req->shards_size()) +
                                   " entries; must have 1 to 100000");
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
        return Invalid(field + ".name", Quote(sh.name()) + " repeats shards[" +
                                            std::to_string(it->second) + "]");
      }
      shards.push_back({sh.name(), sh.num_samples()});
    }
    const std::string key = TrialKey(req->trial().sweep_id(), req->trial().trial_id());
    const std::string ekey = EpochKey(key, req->epoch());
    auto existing = leases_.find(ekey);
    if (existing != leases_.end()) {
      const std::vector<EpochShard>& stored = existing->second.shards();
      bool same = stored.size() == shards.size();
      for (size_t i = 0; same && i < shards.size(); ++i) {
        same = stored[i].name == shards[i].name && stored[i].num_samples == shards[i].num_samples;
      }
      if (!same) {
        return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                            "shards: epoch " + std::to_string(req->epoch()) + " of trial " + key +
                                " was begun with a different shard list");
      }
    } else {
      LeaseOptions lo;
      lo.ttl_ms = options_.lease_ttl_ms;
      StatusOr<LeaseTable> table = LeaseTable::Create(std::move(shards), lo);
      if (!table.ok()) return ToGrpc(table.status());
      existing = leases_.emplace(ekey, std::move(*table)).first;
      epochs_[key].insert(req->epoch());
      nlohmann::json header = existing->second.ToJson();
      header.erase("leases");
      header.erase("next_lease_id");
      batch->Put("epoch/" + ekey, header.dump());
    }
    EnsureRunning(key, t, batch);
    const LeaseTable& table = existing->second;
    resp->set_num_shards(table.num_shards());
    resp->set_done_shards(table.done_shards());
    resp->set_total_samples(table.total_samples());
    resp->set_done_samples(table.done_samples());
    return grpc::Status::OK;
  });
}

grpc::Status CoordinatorService::BegunEpoch(const std::string& trial_key, int epoch,
                                            std::map<std::string, LeaseTable>::iterator* out) {
  *out = leases_.find(EpochKey(trial_key, epoch));
  if (*out == leases_.end()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "epoch: epoch " + std::to_string(epoch) + " of trial " +
                                                         trial_key + " was not begun (BeginEpoch first)");
  }
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* CoordinatorService::LeaseShard(grpc::CallbackServerContext* ctx,
                                                         const v1::LeaseShardRequest* req,
                                                         v1::LeaseShardResponse* resp) {
  return Handle(ctx, [&](JournalBatch* batch) -> grpc::Status {
    TrialEntry* t = nullptr;
    grpc::Status s = LiveTrial(req->group_id(), req->trial(), &t);
    if (!s.ok()) return s;
    const int world = groups_.at(req->group_id()).world_size;
    if (req->rank() < 0 || req->rank() >= world) {
      return Invalid("rank", "is " + std::to_string(req->rank()) + "; the group has " +
                                 std::to_string(world) + " ranks");
    }
    const std::string key = TrialKey(req->trial().sweep_id(), req->trial().trial_id());
    std::map<std::string, LeaseTable>::iterator it;
    s = BegunEpoch(key, req->epoch(), &it);
    if (!s.ok()) return s;
    EnsureRunning(key, t, batch);
    const int64_t now = Now();
    LeaseTable& table = it->second;
    ExpireLeases(it->first, &table, now, batch);
    if (req->slot() < 0 || req->slot() > kMaxSlot) {
      return Invalid("slot", "is " + std::to_string(req->slot()) + "; must be in [0, " + std::to_string(kMaxSlot) + "]");
    }
    const std::string rank = RankId(req->group_id(), req->rank()) + "#" + std::to_string(req->slot());
    // A slot holds one lease per epoch: asking again (a retry whose reply was lost) returns it.
    const std::vector<Lease> held = table.RenewRank(rank, now);
    StatusOr<AcquireResult> r = AcquireResult();
    if (!held.empty()) {
      r->kind = AcquireResult::Kind::kGranted;
      r->lease = held.front();
    } else {
      r = table.Acquire(rank, now);
      if (r.ok() && r->kind == AcquireResult::Kind::kGranted) PutLeases(it->first, {r->lease}, batch);
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
  return Handle(ctx, [&](JournalBatch* batch) -> grpc::Status {
    TrialEntry* t = nullptr;
    grpc::Status s = LiveTrial(req->group_id(), req->trial(), &t);
    if (!s.ok()) return s;
    const std::string key = TrialKey(req->trial().sweep_id(), req->trial().trial_id());
    std::map<std::string, LeaseTable>::iterator it;
    s = BegunEpoch(key, req->epoch(), &it);
    if (!s.ok()) return s;
    LeaseTable& table = it->second;
    StatusOr<Lease> lease = table.Get(req->lease_id());
    if (!lease.ok()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          "lease_id: no lease " + std::to_string(req->lease_id()) + " in epoch " +
                              std::to_string(req->epoch()) + " of trial " + key);
    }
    if (lease->rank.compare(0, req->group_id().size() + 1, req->group_id() + "/") != 0) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "lease_id: lease " + std::to_string(req->lease_id()) + " is held by " +
                              lease->rank + ", not by group " + Quote(req->group_id()));
    }
    const bool already = lease->state == LeaseState::kCompleted;
    StatusOr<Lease> done = table.Complete(req->lease_id(), Now());
    if (!done.ok()) return ToGrpc(done.status());
    if (!already) PutLeases(it->first, {*done}, batch);
    resp->set_done_shards(table.done_shards());
    resp->set_num_shards(table.num_shards());
    resp->set_epoch_done(table.EpochDone());
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* CoordinatorService::ReportMetrics(grpc::CallbackServerContext* ctx,
                                                            const v1::ReportMetricsRequest* req,
                                                            v1::ReportMetricsResponse* resp) {
  return Handle(ctx, [&](JournalBatch* batch) -> grpc::Status {
    TrialEntry* t = nullptr;
    grpc::Status s = LiveTrial(req->group_id(), req->trial(), &t);
    if (!s.ok()) return s;
    if (req->kind() != v1::ReportMetricsRequest::TRAIN && req->kind() != v1::ReportMetricsRequest::EVAL) {
      return Invalid("kind", "must be TRAIN or EVAL");
    }
    if (req->step() < 0 || req->step() > kMaxStep) {
      return Invalid("step", "is " + std::to_string(req->step()) + "; must be in [0, 1e12]");
    }
    if (req->epoch() < 0) return Invalid("epoch", "is negative");
    if (req->total_steps() < 0 || req->total_steps() > kMaxStep) {
      return Invalid("total_steps", "is " + std::to_string(req->total_steps()) + "; must be in [0, 1e12]");
    }
    if (req->values().empty() || req->values().size() > kMaxMetrics) {
      return Invalid("values", "has " + std::to_string(req->values().size()) +
                                   " entries; must have 1 to 64");
    }
    MetricPoint p;
    for (const auto& [name, value] : req->values()) {
      if (!IsMetricName(name)) {
        return Invalid("values", "metric name " + Quote(name) + " is not 1 to 64 characters of [a-z0-9_.@]");
      }
      if (std::isinf(value)) return Invalid("values[" + name + "]", "is infinite");
      p.values[name] = value;
    }
    const std::string key = TrialKey(req->trial().sweep_id(), req->trial().trial_id());
    EnsureRunning(key, t, batch);
    const Status progress = t->trial.ReportProgress(req->trial().attempt(), req->step());
    if (!progress.ok()) return ToGrpc(progress);
    const int64_t now = Now();
    if (req->total_steps() > 0) t->total_steps = req->total_steps();
    if (t->rate_step0 < 0) {
      t->rate_step0 = req->step();
      t->rate_t0_ms = now;
    }
    t->rate_step1 = req->step();
    t->rate_t1_ms = now;
    p.trial_id = t->spec.id;
    p.attempt = req->trial().attempt();
    p.kind = req->kind() == v1::ReportMetricsRequest::TRAIN ? "train" : "eval";
    p.step = req->step();
    p.epoch = req->epoch();
    p.time_ms = now;
    (p.kind == "train" ? t->latest_train : t->latest_eval) = p.values;
    batch->Put(MetricKey(key, p.kind, p.step), p.ToJson().dump());
    resp->set_action(v1::CONTINUE);
    SweepEntry& sw = sweeps_.at(t->sweep);
    if (p.kind == "eval" && sw.asha && p.values.count(sw.asha->config().metric)) {
      std::optional<int> rung = sw.asha->RungReachedAt(p.step);
      if (rung && !sw.asha->DecisionFor(t->spec.id, *rung)) {
        StatusOr<AshaDecision> d =
            sw.asha->Decide(t->spec.id, *rung, p.values.at(sw.asha->config().metric));
        if (d.ok()) {
          batch->Put("asha/" + t->sweep, sw.asha->ToJson().dump());
          if (d->action == AshaAction::kStop && t->trial.Stop(req->trial().attempt()).ok()) {
            const std::string reason =
                "stopped early by ASHA at rung " + std::to_string(*rung) + " (step " +
                std::to_string(sw.asha->config().rungs[*rung]) + "): " +
                sw.asha->config().metric + " ranked " + std::to_string(d->rank + 1) + " of " +
                std::to_string(d->num_results) + ", " + std::to_string(d->num_promoted) +
                " continue";
            ReleaseGroup(req->group_id(), reason, batch);
            resp->set_action(v1::STOP);
            resp->set_reason(reason);
            MaybeFinishSweep(t->sweep, batch);
          }
        }
      }
    }
    PutTrial(key, *t, batch);
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* CoordinatorService::ReportCheckpoint(
    grpc::CallbackServerContext* ctx, const v1::ReportCheckpointRequest* req,
    v1::ReportCheckpointResponse*) {
  return Handle(ctx, [&](JournalBatch* batch) -> grpc::Status {
    TrialEntry* t = nullptr;
    grpc::Status s = LiveTrial(req->group_id(), req->trial(), &t);
    if (!s.ok()) return s;
    if (req->ref().empty() || req->ref().size() > 1024) return Invalid("ref", "must be 1 to 1024 bytes");
    if (req->step() < 0 || req->step() > kMaxStep) {
      return Invalid("step", "is " + std::to_string(req->step()) + "; must be in [0, 1e12]");
    }
    const std::string key = TrialKey(req->trial().sweep_id(), req->trial().trial_id());
    EnsureRunning(key, t, batch);
    const Status r = t->trial.ReportCheckpoint(req->trial().attempt(), req->ref(), req->step());
    if (!r.ok()) return ToGrpc(r);
    PutTrial(key, *t, batch);
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* CoordinatorService::FinishTrial(grpc::CallbackServerContext* ctx,
                                                          const v1::FinishTrialRequest* req,
                                                          v1::FinishTrialResponse*) {
  return Handle(ctx, [&](JournalBatch* batch) -> grpc::Status {
    // A retry of a finish that was committed: OK, nothing changes.
    auto done = trials_.find(TrialKey(req->trial().sweep_id(), req->trial().trial_id()));
    if (done != trials_.end() && done->second.trial.state() == TrialState::kCompleted &&
        done->second.trial.attempt() == req->trial().attempt()) {
      return grpc::Status::OK;
    }
    TrialEntry* t = nullptr;
    grpc::Status s = LiveTrial(req->group_id(), req->trial(), &t);
    if (!s.ok()) return s;
    const std::string key = TrialKey(req->trial().sweep_id(), req->trial().trial_id());
    EnsureRunning(key, t, batch);
    const Status r = t->trial.Complete(req->trial().attempt());
    if (!r.ok()) return ToGrpc(r);
    ReleaseGroup(req->group_id(), "", batch);
    PutTrial(key, *t, batch);
    MaybeFinishSweep(t->sweep, batch);
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* CoordinatorService::FailTrial(grpc::CallbackServerContext* ctx,
                                                        const v1::FailTrialRequest* req,
                                                        v1::FailTrialResponse* resp) {
  return Handle(ctx, [&](JournalBatch* batch) -> grpc::Status {
    TrialEntry* t = nullptr;
    grpc::Status s = LiveTrial(req->group_id(), req->trial(), &t);
    if (!s.ok()) return s;
    FailureCause cause;
    switch (req->cause()) {
      case v1::FailTrialRequest::PREEMPTION: cause = FailureCause::kPreemption; break;
      case v1::FailTrialRequest::NODE_FAULT: cause = FailureCause::kNodeFault; break;
      case v1::FailTrialRequest::TRIAL_ERROR: cause = FailureCause::kTrialError; break;
      default: return Invalid("cause", "must be PREEMPTION, NODE_FAULT or TRIAL_ERROR");
    }
    if (req->error().size() > 4096) return Invalid("error", "is longer than 4096 bytes");
    const std::string key = TrialKey(req->trial().sweep_id(), req->trial().trial_id());
    EndAttempt(key, t, cause, req->error().empty() ? FailureCauseName(cause) : req->error(), batch);
    ReleaseGroup(req->group_id(), "", batch);
    resp->set_state(TrialStateName(t->trial.state()));
    return grpc::Status::OK;
  });
}

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
    if (spec.ok()) trials = ExpandSweep(*spec);
  }
  return Handle(ctx, [&](JournalBatch* batch) -> grpc::Status {
    if (!spec.ok()) return ToGrpc(spec.status());
    if (!trials.ok()) return ToGrpc(trials.status());
    const std::string id = spec->name;
    auto existing = sweeps_.find(id);
    if (existing != sweeps_.end()) {
      if (existing->second.text == req->sweep_text() &&
          existing->second.base_config == req->base_config()) {
        resp->set_sweep_id(id);
        resp->set_num_trials(static_cast<int>(existing->second.trial_ids.size()));
        resp->set_already_submitted(true);
        return grpc::Status::OK;
      }
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                          "sweep " + Quote(id) + " already exists (submitted from " +
                              existing->second.source + ") with a different file: choose another "
                              "name in [sweep] name");
    }
    SweepEntry s;
    s.spec = *spec;
    s.text = req->sweep_text();
    s.source = source;
    s.base_config = req->base_config();
    s.base_values = ConfigValues(s.base_config);
    s.order = next_order_++;
    if (s.spec.asha) {
      StatusOr<Asha> asha = Asha::Create(*s.spec.asha);
      if (!asha.ok()) return ToGrpc(asha.status());
      s.asha = std::move(*asha);
      batch->Put("asha/" + id, s.asha->ToJson().dump());
    }
    for (const TrialSpec& ts : *trials) {
      s.trial_ids.push_back(ts.id);
      TrialEntry t{id, ts, Trial(ts.id, options_.budgets)};
      PutTrial(TrialKey(id, ts.id), t, batch);
      trials_.emplace(TrialKey(id, ts.id), std::move(t));
    }
    PutSweep(id, s, batch);
    PutCounters(batch);
    sweeps_.emplace(id, std::move(s));
    resp->set_sweep_id(id);
    resp->set_num_trials(static_cast<int>(trials->size()));
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* CoordinatorService::Finish(grpc::CallbackServerContext* ctx,
                                                     grpc::Status status) {
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

grpc::ServerUnaryReactor* CoordinatorService::GetSweep(grpc::CallbackServerContext* ctx,
                                                       const v1::GetSweepRequest* req,
                                                       v1::SweepStatus* resp) {
  return Handle(ctx, [&](JournalBatch*) -> grpc::Status {
    grpc::Status s = CheckId("sweep_id", req->sweep_id());
    if (!s.ok()) return s;
    auto it = sweeps_.find(req->sweep_id());
    if (it == sweeps_.end()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "sweep_id: no sweep " + Quote(req->sweep_id()));
    }
    const SweepEntry& sw = it->second;
    resp->set_sweep_id(req->sweep_id());
    resp->set_state(sw.state);
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

grpc::ServerUnaryReactor* CoordinatorService::ListSweeps(grpc::CallbackServerContext* ctx,
                                                         const v1::ListSweepsRequest*,
                                                         v1::ListSweepsResponse* resp) {
  return Handle(ctx, [&](JournalBatch*) -> grpc::Status {
    for (const auto& [id, sw] : sweeps_) {
      auto* e = resp->add_sweeps();
      e->set_sweep_id(id);
      e->set_state(sw.state);
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
  return Handle(ctx, [&](JournalBatch* batch) -> grpc::Status {
    grpc::Status s = CheckId("sweep_id", req->sweep_id());
    if (!s.ok()) return s;
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
      PutTrial(key, t, batch);
      ++cancelled;
    }
    if (sw.state == "running") {
      sw.state = "cancelled";
      PutSweep(req->sweep_id(), sw, batch);
      reports_due_.push_back(req->sweep_id());
      PruneEndedSweep(req->sweep_id());
    }
    resp->set_cancelled_trials(cancelled);
    return grpc::Status::OK;
  });
}

StatusOr<std::vector<MetricPoint>> CoordinatorService::History(const std::string& sweep_id,
                                                               const std::string& trial_id) const {
  const std::string prefix = "metric/" + sweep_id + "/" + (trial_id.empty() ? "" : trial_id + "/");
  FLAP_ASSIGN_OR_RETURN(auto rows, journal_->Scan(prefix));
  std::vector<MetricPoint> out;
  for (const auto& [key, value] : rows) {
    FLAP_ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(value, key));
    FLAP_ASSIGN_OR_RETURN(MetricPoint p, MetricPoint::FromJson(j, key));
    out.push_back(std::move(p));
  }
  return out;
}

grpc::ServerUnaryReactor* CoordinatorService::GetMetrics(grpc::CallbackServerContext* ctx,
                                                         const v1::GetMetricsRequest* req,
                                                         v1::GetMetricsResponse* resp) {
  return Handle(ctx, [&](JournalBatch*) -> grpc::Status {
    grpc::Status s = CheckId("sweep_id", req->sweep_id());
    if (s.ok() && !req->trial_id().empty()) s = CheckId("trial_id", req->trial_id());
    if (!s.ok()) return s;
    if (!sweeps_.count(req->sweep_id())) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "sweep_id: no sweep " + Quote(req->sweep_id()));
    }
    if (!req->trial_id().empty() && !trials_.count(TrialKey(req->sweep_id(), req->trial_id()))) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          "trial_id: no trial " + Quote(req->trial_id()) + " in sweep " +
                              Quote(req->sweep_id()));
    }
    // Committed records only, which include every record whose report was answered.
    StatusOr<std::vector<MetricPoint>> points = History(req->sweep_id(), req->trial_id());
    if (!points.ok()) return ToGrpc(points.status());
    for (const MetricPoint& p : *points) {
      auto* r = resp->add_records();
      r->set_trial_id(p.trial_id);
      r->set_attempt(p.attempt);
      r->set_kind(p.kind);
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
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sweeps_.find(sweep_id);
    if (it == sweeps_.end()) return Status::NotFound("sweep_id: no sweep " + Quote(sweep_id));
    in.sweep_id = sweep_id;
    in.spec = it->second.spec;
    in.state = it->second.state;
    for (const auto& tid : it->second.trial_ids) {
      const TrialEntry& t = trials_.at(TrialKey(sweep_id, tid));
      in.trials.push_back(t.spec);
      in.records.push_back(t.trial.record());
    }
  }
  FLAP_ASSIGN_OR_RETURN(in.metrics, History(sweep_id, ""));
  return in;
}

grpc::ServerUnaryReactor* CoordinatorService::GetReport(grpc::CallbackServerContext* ctx,
                                                        const v1::GetReportRequest* req,
                                                        v1::GetReportResponse* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  grpc::Status s = Authorize(ctx);
  if (s.ok()) s = CheckId("sweep_id", req->sweep_id());
  if (s.ok() && (std::isnan(req->target()) || std::isinf(req->target()))) {
    s = Invalid("target", "must be a finite number");
  }
  if (!s.ok()) {
    reactor->Finish(s);
    return reactor;
  }
  // Wait for what was staged before, then read: the report shows only committed state.
  journal_->WhenDurable(journal_->appended(), [this, reactor, req, resp](const Status& durable) {
    if (!durable.ok()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, durable.message()));
      return;
    }
    StatusOr<ReportInput> in = ReportInputFor(req->sweep_id());
    if (!in.ok()) {
      reactor->Finish(ToGrpc(in.status()));
      return;
    }
    ReportOptions ro;
    ro.target = req->target();
    for (auto& f : BuildReport(*in, ro)) {
      auto* out = resp->add_files();
      out->set_name(f.name);
      out->set_content(std::move(f.content));
    }
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

// ---------------------------------------------------------------------------------------------
// Observability

bool CoordinatorService::GroupLive(const GroupEntry& g, int64_t now) const {
  return now - g.last_heartbeat_ms <= options_.heartbeat_timeout_ms;
}

double CoordinatorService::StepRate(const TrialEntry& t) {
  if (t.rate_step0 < 0 || t.rate_step1 <= t.rate_step0 || t.rate_t1_ms <= t.rate_t0_ms) return 0;
  return double(t.rate_step1 - t.rate_step0) / double(t.rate_t1_ms - t.rate_t0_ms);
}

double CoordinatorService::TrialEta(const TrialEntry& t) {
  if (IsTerminal(t.trial.state())) return 0;
  const double rate = StepRate(t);
  if (t.total_steps <= 0 || rate <= 0) return -1;
  return std::max<double>(0, t.total_steps - t.trial.record().step) / rate / 1000.0;
}

metrics::CoordinatorSnapshot CoordinatorService::MetricsSnapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = Now();
  metrics::CoordinatorSnapshot out;
  // The ended sweeps whose series stay: the most recently submitted ones.
  std::vector<std::pair<int64_t, std::string>> ended;
  for (const auto& [id, sw] : sweeps_) {
    ++out.sweeps_by_state[sw.state];
    if (sw.state != "running") ended.push_back({sw.order, id});
  }
  std::sort(ended.rbegin(), ended.rend());
  ended.resize(std::min<size_t>(ended.size(), std::max(0, options_.metrics_ended_sweeps)));
  std::set<std::string> kept;
  for (const auto& e : ended) kept.insert(e.second);
  for (const auto& [id, sw] : sweeps_) {
    if (sw.state != "running" && !kept.count(id)) continue;
    metrics::SweepSnapshot& ss = out.sweeps.emplace_back();
    ss.sweep = id;
    ss.state = sw.state;
    for (int st = 0; st <= static_cast<int>(TrialState::kCancelled); ++st) {  // every state, 0 included
      ss.trials_by_state[TrialStateName(static_cast<TrialState>(st))] = 0;
    }
    // Sweep ETA: the steps its unended trials still have to run (a trial that has not said
    // how many: the mean of those that have) over the summed step rate of its trials now.
    double rate = 0, remaining = 0, planned = 0;
    int unended = 0, unplanned = 0, with_plan = 0;
    for (const auto& tid : sw.trial_ids) {
      const TrialEntry& t = trials_.at(TrialKey(id, tid));
      const TrialRecord& r = t.trial.record();
      metrics::TrialSnapshot& ts = ss.trials.emplace_back();
      ts.trial = tid;
      for (const metrics::FactorLabel& f : metrics::FactorLabels()) {
        auto factor = t.spec.factors.find(f.key);
        auto base = sw.base_values.find(f.key);
        if (factor != t.spec.factors.end()) {
          ts.config[f.key] = factor->second;
        } else if (base != sw.base_values.end()) {
          ts.config[f.key] = base->second;
        }
      }
      ts.seed = t.spec.seed;
      ts.state = TrialStateName(r.state);
      ts.attempts = r.attempt;
      ts.failures = {{FailureCauseName(FailureCause::kPreemption), r.preemptions},
                     {FailureCauseName(FailureCause::kNodeFault), r.node_faults},
                     {FailureCauseName(FailureCause::kTrialError), r.trial_errors}};
      ts.step = r.step;
      ts.total_steps = t.total_steps;
      ts.eta_seconds = TrialEta(t);
      ts.train = t.latest_train;
      ts.eval = t.latest_eval;
      ++ss.trials_by_state[ts.state];
      if (t.total_steps > 0) {
        planned += double(t.total_steps);
        ++with_plan;
      }
      if (IsTerminal(r.state)) continue;
      ++unended;
      rate += StepRate(t);
      if (t.total_steps > 0) {
        remaining += std::max<double>(0, t.total_steps - r.step);
      } else {
        remaining -= double(r.step);
        ++unplanned;
      }
    }
    if (unended == 0) {
      ss.eta_seconds = 0;
    } else if (rate > 0 && (unplanned == 0 || with_plan > 0)) {
      const double mean_plan = with_plan > 0 ? planned / with_plan : 0;
      ss.eta_seconds = std::max(0.0, remaining + unplanned * mean_plan) / rate / 1000.0;
    }
  }
  for (const auto& [gid, g] : groups_) {
    if (!GroupLive(g, now)) continue;
    ++out.groups_live;
    if (!g.trial_key.empty()) ++out.groups_busy;
  }
  for (const auto& [ekey, table] : leases_) out.leases_active += static_cast<int64_t>(table.active_leases());
  out.leases_expired = leases_expired_;
  return out;
}

std::vector<metrics::ScrapeTarget> CoordinatorService::SdTargets(int64_t now) const {
  std::vector<metrics::ScrapeTarget> out;
  if (!options_.sd_self_endpoint.empty()) {
    out.push_back({options_.sd_self_endpoint, {{"job", "flap-coordinator"}}});
  }
  for (const auto& [gid, g] : groups_) {
    if (g.metrics_endpoints.empty() || !GroupLive(g, now)) continue;
    std::map<std::string, std::string> labels = {{"group", gid}};
    if (!g.trial_key.empty()) {
      const size_t slash = g.trial_key.find('/');
      labels["sweep"] = g.trial_key.substr(0, slash);
      labels["trial"] = g.trial_key.substr(slash + 1);
    }
    for (size_t rank = 0; rank < g.metrics_endpoints.size(); ++rank) {
      labels["rank"] = std::to_string(rank);
      out.push_back({g.metrics_endpoints[rank], labels});
    }
  }
  return out;
}

Status CoordinatorService::WriteSdFile(const std::vector<metrics::ScrapeTarget>& targets) {
  if (sd_written_once_ && targets == sd_written_) return Status::OK();
  FLAP_RETURN_IF_ERROR(metrics::WriteFileSd(options_.sd_file, targets).WithContext("--sd-file"));
  sd_written_ = targets;
  sd_written_once_ = true;
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------
// Background work

void CoordinatorService::Reap() {
  std::vector<std::string> reports;
  std::vector<metrics::ScrapeTarget> targets;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t now = Now();
    JournalBatch batch;
    for (auto& [gid, g] : groups_) {
      if (g.trial_key.empty() || now - g.last_heartbeat_ms <= options_.heartbeat_timeout_ms) {
        continue;
      }
      const std::string key = g.trial_key;
      TrialEntry& t = trials_.at(key);
      const std::string why = "group " + gid + " missed heartbeats for " +
                              std::to_string(now - g.last_heartbeat_ms) + " ms (timeout " +
                              std::to_string(options_.heartbeat_timeout_ms) + " ms)";
      EndAttempt(key, &t, FailureCause::kNodeFault, why, &batch);
      ReleaseGroup(gid, "trial taken: " + why, &batch);
    }
    for (auto& [ekey, table] : leases_) {
      if (table.active_leases() > 0) ExpireLeases(ekey, &table, now, &batch);
    }
    journal_->Append(std::move(batch));
    reports.swap(reports_due_);
    if (!options_.sd_file.empty()) targets = SdTargets(now);
  }
  for (const auto& id : reports) WriteReportInBackground(id);
  if (!options_.sd_file.empty()) {
    const Status s = WriteSdFile(targets);
    // Kept trying at every reap; said once per distinct error.
    if (!s.ok() && s.message() != sd_error_) {
      std::fprintf(stderr, "flap-coordinator: %s\n", s.ToString().c_str());
    }
    sd_error_ = s.ok() ? "" : s.message();
  }
}

void CoordinatorService::ReapLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    stop_cv_.wait_for(lock, std::chrono::milliseconds(options_.reap_interval_ms));
    if (stop_) break;
    lock.unlock();
    Reap();
    lock.lock();
  }
}

void CoordinatorService::WriteReportInBackground(const std::string& sweep_id) {
  if (options_.report_dir.empty()) return;
  if (!IsPathName(sweep_id)) {  // submission refuses such names; never write outside report_dir
    std::fprintf(stderr, "flap-coordinator: no report for sweep '%s': not a folder name\n", sweep_id.c_str());
    return;
  }
  std::vector<std::thread> finished;
  std::lock_guard<std::mutex> lock(report_mu_);
  for (uint64_t n : reports_finished_) {
    auto t = report_threads_.find(n);
    if (t == report_threads_.end()) continue;
    finished.push_back(std::move(t->second));
    report_threads_.erase(t);
  }
  reports_finished_.clear();
  // They have said they are done: each join waits at most for its thread's return.
  for (std::thread& t : finished) t.join();
  ++reports_in_flight_;
  const uint64_t seq = journal_->appended();
  const uint64_t number = next_report_++;
  report_threads_[number] = std::thread([this, sweep_id, seq, number] {
    Status s = journal_->Wait(seq);
    StatusOr<ReportInput> in = s.ok() ? ReportInputFor(sweep_id) : StatusOr<ReportInput>(s);
    if (in.ok()) {
      WriteReportOptions wo;
      wo.plots = options_.report_plots;
      s = WriteReport(BuildReport(*in, ReportOptions()), options_.report_dir + "/" + sweep_id, wo);
    } else {
      s = in.status();
    }
    if (!s.ok()) std::fprintf(stderr, "flap-coordinator: report of %s: %s\n", sweep_id.c_str(), s.ToString().c_str());
    std::lock_guard<std::mutex> l(report_mu_);
    --reports_in_flight_;
    reports_finished_.push_back(number);
    report_cv_.notify_all();
  });
}

CoordinatorService::MemoryStats CoordinatorService::memory_stats() const {
  MemoryStats m;
  {
    std::lock_guard<std::mutex> lock(mu_);
    m.sweeps = sweeps_.size();
    m.trials = trials_.size();
    m.groups = groups_.size();
    m.lease_tables = leases_.size();
    m.epoch_trials = epochs_.size();
  }
  std::lock_guard<std::mutex> lock(report_mu_);
  m.report_threads = report_threads_.size();
  return m;
}

void CoordinatorService::WaitForReports() {
  std::unique_lock<std::mutex> lock(report_mu_);
  report_cv_.wait(lock, [&] { return reports_in_flight_ == 0; });
}

}  // namespace flap::coordinator
