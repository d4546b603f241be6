// CoordinatorService: metrics snapshots, scrape targets, the reaper and the report threads (coordinator/service.h has
// the protocol).
#include "coordinator/service.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include "coordinator/service_internal.h"

namespace flap::coordinator {
using namespace service_internal;  // NOLINT: this part's own helpers

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
  MutexLock lock(&mu_);
  const int64_t now = Now();
  metrics::CoordinatorSnapshot out;
  // The ended sweeps whose series stay: the most recently submitted ones.
  std::vector<std::pair<int64_t, std::string>> ended;
  for (const auto& [id, sw] : sweeps_) {
    ++out.sweeps_by_state[SweepStateName(sw.state)];
    if (sw.state != SweepState::kRunning) ended.push_back({sw.order, id});
  }
  std::sort(ended.rbegin(), ended.rend());
  ended.resize(std::min<size_t>(ended.size(), std::max(0, options_.metrics_ended_sweeps)));
  std::set<std::string> kept;
  for (const auto& e : ended) kept.insert(e.second);
  for (const auto& [id, sw] : sweeps_) {
    if (sw.state != SweepState::kRunning && !kept.count(id)) continue;
    metrics::SweepSnapshot& ss = out.sweeps.emplace_back();
    ss.sweep = id;
    ss.state = SweepStateName(sw.state);
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
        if (std::optional<std::string> v = TrialSweepValue(sw.base_values, t.spec, f.key)) ts.config[f.key] = *v;
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

// ---------------------------------------------------------------------------------------------
// Background work

void CoordinatorService::Reap() {
  std::vector<std::string> reports;
  std::vector<metrics::ScrapeTarget> targets;
  {
    MutexLock lock(&mu_);
    const int64_t now = Now();
    StateBatch batch;
    for (auto& [gid, g] : groups_) {
      if (g.trial_key.empty() || now - g.last_heartbeat_ms <= options_.heartbeat_timeout_ms) {
        continue;
      }
      const std::string key = g.trial_key;
      TrialEntry& t = trials_.at(key);
      const std::string why = "group " + gid + " missed heartbeats for " + std::to_string(now - g.last_heartbeat_ms) +
                              " ms (timeout " + std::to_string(options_.heartbeat_timeout_ms) + " ms)";
      EndAttempt(key, &t, FailureCause::kNodeFault, why, &batch);
      ReleaseGroup(gid, "trial taken: " + why, &batch);
    }
    for (auto& [ekey, table] : leases_) {
      if (table.active_leases() > 0) ExpireLeases(ekey, &table, now, &batch);
    }
    store_->Append(std::move(batch));
    reports.swap(reports_due_);
    if (sd_file_) targets = SdTargets(now);
  }
  for (const auto& id : reports) WriteReportInBackground(id);
  // Kept trying at every reap; a lasting failure is said once (SdFileWriter::Update).
  if (sd_file_) (void)sd_file_->Update(targets);
}

void CoordinatorService::ReapLoop() {
  mu_.Lock();
  while (!stop_) {
    stop_cv_.WaitFor(&mu_, std::chrono::milliseconds(options_.reap_interval_ms));
    if (stop_) break;
    mu_.Unlock();
    Reap();
    mu_.Lock();
  }
  mu_.Unlock();
}

void CoordinatorService::WriteReportInBackground(const std::string& sweep_id) {
  if (options_.report_dir.empty()) return;
  if (!IsPathName(sweep_id)) {  // submission refuses such names; never write outside report_dir
    std::fprintf(stderr, "flap-coordinator: no report for sweep '%s': not a folder name\n", sweep_id.c_str());
    return;
  }
  const uint64_t seq = store_->appended();
  reports_.Start([this, sweep_id, seq] {
    Status s = store_->Wait(seq);
    StatusOr<ReportInput> in = s.ok() ? ReportInputFor(sweep_id) : StatusOr<ReportInput>(s);
    if (in.ok()) {
      WriteReportOptions wo;
      wo.plots = options_.report_plots;
      s = WriteReport(BuildReport(*in, ReportOptions()), options_.report_dir + "/" + sweep_id, wo);
    } else {
      s = in.status();
    }
    if (!s.ok()) std::fprintf(stderr, "flap-coordinator: report of %s: %s\n", sweep_id.c_str(), s.ToString().c_str());
  });
}

CoordinatorService::MemoryStats CoordinatorService::memory_stats() const {
  MemoryStats m;
  {
    MutexLock lock(&mu_);
    m.sweeps = sweeps_.size();
    m.trials = trials_.size();
    m.groups = groups_.size();
    m.lease_tables = leases_.size();
    m.epoch_trials = epochs_.size();
  }
  m.report_threads = reports_.threads();
  return m;
}

void CoordinatorService::WaitForReports() { reports_.WaitAll(); }

}  // namespace flap::coordinator
