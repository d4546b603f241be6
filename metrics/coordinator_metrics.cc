// Implementation of metrics/coordinator_metrics.h.
#include "metrics/coordinator_metrics.h"

#include <prometheus/client_metric.h>
#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <utility>

namespace flap::metrics {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

// One family of the state catalogue (docs/metrics.md).
struct Def {
  const char* name;
  const char* help;
  MetricType type;
};

constexpr Def kTrialState{"flap_trial_state", "1 for the state the trial is in (label state)", MetricType::Gauge};
constexpr Def kTrialStep{"flap_trial_step", "Latest step the trial reported", MetricType::Gauge};
constexpr Def kTrialPlanned{"flap_trial_planned_steps", "Steps the trial will run, as its workers report",
                            MetricType::Gauge};
constexpr Def kTrialProgress{"flap_trial_progress_ratio", "Fraction of the planned steps done (1 once completed)",
                             MetricType::Gauge};
constexpr Def kTrialEpoch{"flap_trial_epoch", "Epochs completed (fractional), latest TRAIN record", MetricType::Gauge};
constexpr Def kTrialLoss{"flap_trial_loss", "Latest training loss by kind (total, contrastive, recon)",
                         MetricType::Gauge};
constexpr Def kTrialLogitScale{"flap_trial_logit_scale", "exp(learned log logit scale), latest TRAIN record",
                               MetricType::Gauge};
constexpr Def kTrialLr{"flap_trial_learning_rate", "Learning rate, latest TRAIN record", MetricType::Gauge};
constexpr Def kTrialRate{"flap_trial_samples_per_second", "Global training throughput, latest TRAIN record",
                         MetricType::Gauge};
constexpr Def kTrialBatch{"flap_trial_global_batch", "Samples per step over all ranks, latest TRAIN record",
                          MetricType::Gauge};
constexpr Def kTrialNegatives{"flap_trial_negatives_per_step", "Contrastive candidates per query, latest TRAIN record",
                              MetricType::Gauge};
constexpr Def kTrialEval{"flap_trial_eval", "Latest evaluation by metric (t2a_r1 ... a2t_r10, map10), as fractions",
                         MetricType::Gauge};
constexpr Def kTrialEta{"flap_trial_eta_seconds", "Estimated time until the trial's last step", MetricType::Gauge};
constexpr Def kTrialAttempts{"flap_trial_attempts_total", "Times the trial was assigned to a worker group",
                             MetricType::Counter};
constexpr Def kTrialFailures{"flap_trial_failures_total", "Failed attempts of the trial by class", MetricType::Counter};
constexpr Def kSweepState{"flap_sweep_state", "1 for the state the sweep is in (label state)", MetricType::Gauge};
constexpr Def kSweepTrials{"flap_sweep_trials", "Trials of the sweep by state", MetricType::Gauge};
constexpr Def kSweepPlanned{"flap_sweep_planned_trials", "Trials the sweep expanded into", MetricType::Gauge};
constexpr Def kSweepEta{"flap_sweep_eta_seconds", "Estimated time until every trial of the sweep has ended",
                        MetricType::Gauge};
constexpr Def kSweepFailures{"flap_sweep_failures_total", "Failed attempts of the sweep's trials by class",
                             MetricType::Counter};
constexpr Def kSweeps{"flap_coordinator_sweeps", "Sweeps the coordinator holds, by state", MetricType::Gauge};
constexpr Def kGroupsLive{"flap_coordinator_groups_live", "Worker groups whose last heartbeat is within the timeout",
                          MetricType::Gauge};
constexpr Def kGroupsBusy{"flap_coordinator_groups_busy", "Live worker groups holding a trial", MetricType::Gauge};
constexpr Def kLeasesActive{"flap_coordinator_leases_active", "Shard leases granted and not yet completed or expired",
                            MetricType::Gauge};
constexpr Def kLeasesExpired{"flap_coordinator_leases_expired_total",
                             "Shard leases that expired (their shards went back to the pool)", MetricType::Counter};

// The families under construction, in the order of their first series.
class Families {
 public:
  void Add(const Def& def, Labels labels, double value) {
    auto [it, fresh] = index_.emplace(def.name, out_.size());
    if (fresh) {
      MetricFamily f;
      f.name = def.name;
      f.help = def.help;
      f.type = def.type;
      out_.push_back(std::move(f));
    }
    ClientMetric m;
    m.label = std::move(labels);
    if (def.type == MetricType::Counter) {
      m.counter.value = value;
    } else {
      m.gauge.value = value;
    }
    out_[it->second].metric.push_back(std::move(m));
  }
  std::vector<MetricFamily> Take() { return std::move(out_); }

 private:
  std::map<std::string, size_t> index_;
  std::vector<MetricFamily> out_;
};

Labels With(Labels labels, const char* name, const std::string& value) {
  labels.push_back({name, value});
  return labels;
}

// The value of `key` in `values` as a series of `def`, when the record has it.
void AddIfPresent(Families* out, const Def& def, const Labels& labels, const std::map<std::string, double>& values,
                  const std::string& key) {
  auto it = values.find(key);
  if (it != values.end()) out->Add(def, labels, it->second);
}

void AddTrial(const std::string& sweep, const TrialSnapshot& t, Families* out) {
  Labels labels = {{"sweep", sweep}, {"trial", t.trial}};
  for (const FactorLabel& f : FactorLabels()) {
    auto it = t.config.find(f.key);
    labels.push_back({f.label, it == t.config.end() || it->second.empty() ? kUnsetFactor : it->second});
  }
  labels.push_back({"seed", std::to_string(t.seed)});

  out->Add(kTrialState, With(labels, "state", t.state), 1);
  out->Add(kTrialStep, labels, static_cast<double>(t.step));
  if (t.total_steps > 0) out->Add(kTrialPlanned, labels, static_cast<double>(t.total_steps));
  double progress = t.total_steps > 0 ? std::min(1.0, double(t.step) / double(t.total_steps)) : 0.0;
  if (t.state == "completed") progress = 1;
  out->Add(kTrialProgress, labels, progress);
  AddIfPresent(out, kTrialEpoch, labels, t.train, "epoch");
  AddIfPresent(out, kTrialLoss, With(labels, "kind", "total"), t.train, "loss");
  AddIfPresent(out, kTrialLoss, With(labels, "kind", "contrastive"), t.train, "contrastive");
  AddIfPresent(out, kTrialLoss, With(labels, "kind", "recon"), t.train, "recon");
  AddIfPresent(out, kTrialLogitScale, labels, t.train, "logit_scale");
  AddIfPresent(out, kTrialLr, labels, t.train, "lr");
  AddIfPresent(out, kTrialRate, labels, t.train, "samples_per_second");
  AddIfPresent(out, kTrialBatch, labels, t.train, "global_batch");
  AddIfPresent(out, kTrialNegatives, labels, t.train, "negatives_per_step");
  for (const auto& [metric, value] : t.eval) out->Add(kTrialEval, With(labels, "metric", metric), value);
  if (t.eta_seconds >= 0) out->Add(kTrialEta, labels, t.eta_seconds);
  out->Add(kTrialAttempts, labels, t.attempts);
  for (const auto& [cause, n] : t.failures) out->Add(kTrialFailures, With(labels, "class", cause), n);
}

void AddSweep(const SweepSnapshot& s, Families* out) {
  const Labels labels = {{"sweep", s.sweep}};
  out->Add(kSweepState, With(labels, "state", s.state), 1);
  for (const auto& [state, n] : s.trials_by_state) out->Add(kSweepTrials, With(labels, "state", state), n);
  out->Add(kSweepPlanned, labels, static_cast<double>(s.trials.size()));
  if (s.eta_seconds >= 0) out->Add(kSweepEta, labels, s.eta_seconds);
  std::map<std::string, int> failures;
  for (const TrialSnapshot& t : s.trials) {
    for (const auto& [cause, n] : t.failures) failures[cause] += n;
  }
  for (const auto& [cause, n] : failures) out->Add(kSweepFailures, With(labels, "class", cause), n);
}

}  // namespace

const std::vector<FactorLabel>& FactorLabels() {
  static const std::vector<FactorLabel> k = {{"mask.ratio", "mask_ratio"},
                                             {"mask.strategy", "mask_strategy"},
                                             {"loss.recon_weight", "recon_weight"},
                                             {"text.augment", "text_augment"}};
  return k;
}

std::vector<MetricFamily> SnapshotFamilies(const CoordinatorSnapshot& snapshot) {
  Families out;
  for (const SweepSnapshot& s : snapshot.sweeps) AddSweep(s, &out);
  for (const SweepSnapshot& s : snapshot.sweeps) {
    for (const TrialSnapshot& t : s.trials) AddTrial(s.sweep, t, &out);
  }
  for (const auto& [state, n] : snapshot.sweeps_by_state) out.Add(kSweeps, {{"state", state}}, n);
  out.Add(kGroupsLive, {}, snapshot.groups_live);
  out.Add(kGroupsBusy, {}, snapshot.groups_busy);
  out.Add(kLeasesActive, {}, static_cast<double>(snapshot.leases_active));
  out.Add(kLeasesExpired, {}, static_cast<double>(snapshot.leases_expired));
  return out.Take();
}

CoordinatorMetrics::CoordinatorMetrics(prometheus::Registry& registry, SnapshotFn snapshot)
    : snapshot_(std::move(snapshot)) {
  rpcs_ = &prometheus::BuildCounter()
               .Name("flap_coordinator_rpcs_total")
               .Help("RPCs answered, by method and gRPC status code")
               .Register(registry);
  rpc_seconds_ = &prometheus::BuildHistogram()
                      .Name("flap_coordinator_rpc_duration_seconds")
                      .Help("Time from an RPC's arrival to its reply (journal commit included), by method")
                      .Register(registry);
}

void CoordinatorMetrics::ObserveRpc(const std::string& method, const std::string& code, double seconds) {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                                   0.1,    0.25,  0.5,    1,     2.5,  5,     10};
  rpcs_->Add({{"method", method}, {"code", code}}).Increment();
  rpc_seconds_->Add({{"method", method}}, kBuckets).Observe(seconds);
}

std::vector<MetricFamily> CoordinatorMetrics::Collect() const { return SnapshotFamilies(snapshot_()); }

}  // namespace flap::metrics
