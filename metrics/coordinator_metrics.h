// The metrics flap-coordinator serves on its /metrics (catalogue: docs/metrics.md,
// "Coordinator"). prometheus-cpp core only; no gRPC, no RocksDB: the coordinator hands over
// plain values.
//
// Two kinds of series:
//   - Events, counted as they happen: every RPC by method and status code, and its latency
//     (ObserveRpc, called once per call by the coordinator server's interceptor).
//   - State, read at each scrape: CoordinatorMetrics is a prometheus::Collectable whose
//     Collect() asks the coordinator for a CoordinatorSnapshot (sweeps, their trials with
//     their latest TRAIN and EVAL records, groups, leases) and turns it into families. Nothing
//     is updated on the request path for them; a sweep left out of the snapshot has no series
//     at the next scrape, and the values are the ones the coordinator's status calls show.
//
// Cardinality. The RPC series are bounded by the service's methods x gRPC codes. The
// coordinator puts in the snapshot the sweeps still running and the N most recently
// submitted ended ones (flap-coordinator --metrics-ended-sweeps, default 10); each of their
// trials has a fixed set of series (about 30, plus one per evaluation metric it reports), so
// the total is bounded by (running sweeps + N) x trials per sweep x that.
//
// Trial labels. Every per-trial series carries sweep, trial, the factor labels (FactorLabels():
// mask_ratio, mask_strategy, recon_weight, text_augment, each the value the trial runs with,
// from its sweep's factors or else its base config, "-" when neither sets it) and seed.
//
// Thread-safety: all methods are safe from any thread; the snapshot function is called from
// the scraping thread, without any lock of this object held.
#pragma once

#include <prometheus/collectable.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace prometheus {
class Counter;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace flap::metrics {

// A trial config key that becomes a label of every per-trial series.
struct FactorLabel {
  const char* key;    // "mask.ratio"
  const char* label;  // "mask_ratio"
};
// mask.ratio, mask.strategy, loss.recon_weight, text.augment, in that order.
const std::vector<FactorLabel>& FactorLabels();
// The label value of a factor that neither the sweep nor its base config sets.
inline constexpr char kUnsetFactor[] = "-";

struct TrialSnapshot {
  std::string trial;                          // "t0003"
  std::map<std::string, std::string> config;  // FactorLabels() keys the trial runs with
  uint64_t seed = 0;
  std::string state;                    // pending | assigned | running | completed | ...
  int attempts = 0;                     // assignments so far
  std::map<std::string, int> failures;  // failures so far by cause ("preemption", ...)
  int64_t step = 0;                     // latest step reported
  int64_t total_steps = 0;              // planned steps; 0 = not reported yet
  double eta_seconds = -1;              // -1 = not known
  std::map<std::string, double> train;  // the latest TRAIN record (loss, lr, ...)
  std::map<std::string, double> eval;   // the latest EVAL record (t2a_r1, map10, ...)
};

struct SweepSnapshot {
  std::string sweep;
  std::string state;                           // running | finished | cancelled
  double eta_seconds = -1;                     // -1 = not known
  std::map<std::string, int> trials_by_state;  // every trial state, 0 included
  std::vector<TrialSnapshot> trials;           // all of the sweep's trials
};

struct CoordinatorSnapshot {
  std::vector<SweepSnapshot> sweeps;           // the sweeps whose series are exposed
  std::map<std::string, int> sweeps_by_state;  // every sweep the coordinator holds
  int groups_live = 0;                         // heartbeat within the timeout
  int groups_busy = 0;                         // live and holding a trial
  int64_t leases_active = 0;
  int64_t leases_expired = 0;  // since the coordinator started
};

class CoordinatorMetrics : public prometheus::Collectable {
 public:
  using SnapshotFn = std::function<CoordinatorSnapshot()>;

  // Registers the RPC families in `registry` (which must outlive this object). `snapshot` is
  // called at each Collect(); it must stay callable until this object is no longer collected.
  CoordinatorMetrics(prometheus::Registry& registry, SnapshotFn snapshot);

  // One finished RPC: its method ("RegisterGroup"), its gRPC status code name ("OK",
  // "INVALID_ARGUMENT") and its time from arrival to the reply, in seconds.
  void ObserveRpc(const std::string& method, const std::string& code, double seconds);

  // The state families, from a fresh snapshot.
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  SnapshotFn snapshot_;
  prometheus::Family<prometheus::Counter>* rpcs_;
  prometheus::Family<prometheus::Histogram>* rpc_seconds_;
};

// The families of `snapshot` (what Collect() returns); a pure function, for tests.
std::vector<prometheus::MetricFamily> SnapshotFamilies(const CoordinatorSnapshot& snapshot);

}  // namespace flap::metrics
