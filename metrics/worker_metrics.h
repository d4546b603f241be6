// The metrics one worker rank serves on its /metrics (catalogue: docs/metrics.md). Every
// series carries the labels trial and rank. A WorkerMetrics registers its series when built
// and removes them when destroyed, so a process that runs trials one after another on one
// registry (one MetricsServer) builds one WorkerMetrics per trial and exposes only the
// current trial's series; their number is bounded by the trials a process runs at once.
//
// Thread-safety: safe from any thread (prometheus-cpp metrics are atomic); the destructor
// must not run concurrently with other calls on the same object.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/mutex.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace flap::metrics {

class WorkerMetrics {
 public:
  // Registers the worker's families in `registry` (which must outlive this object) and adds
  // this trial's and rank's series to them. Families already in the registry (an earlier
  // trial's) are reused.
  WorkerMetrics(prometheus::Registry& registry, const std::string& trial, int rank);
  // Removes every series this object added; the families stay registered (empty).
  ~WorkerMetrics();
  WorkerMetrics(const WorkerMetrics&) = delete;
  WorkerMetrics& operator=(const WorkerMetrics&) = delete;

  // One training step: seconds waiting for data, computing, and communicating (gather and
  // gradient all-reduce not hidden behind compute), and the samples this rank processed.
  void ObserveStep(double data_wait_s, double compute_s, double communication_s, int64_t samples);
  void SetProgress(int64_t step, double epoch, double samples_per_second);
  void SetLosses(double total, double contrastive, double recon, double logit_scale);
  void SetBatch(int64_t global_batch, int64_t negatives_per_step);
  void ObserveCheckpoint(double seconds, int64_t bytes);
  // Latest evaluation: metric name (t2a_r1, a2t_r1, map10, ...) -> value.
  void SetEvaluation(const std::map<std::string, double>& metrics);
  // Reads this process's resident set size (/proc/self/statm) into its gauge.
  void UpdateMemory();

 private:
  std::map<std::string, std::string> labels_;
  // Undo the Add of each series made in the constructor (run by the destructor).
  std::vector<std::function<void()>> removers_;
  prometheus::Counter *steps_, *samples_, *data_wait_, *compute_, *communication_, *ckpt_saves_;
  prometheus::Histogram *step_duration_, *ckpt_seconds_;
  prometheus::Gauge *step_, *epoch_, *rate_, *loss_total_, *loss_contrastive_, *loss_recon_, *logit_scale_,
      *global_batch_, *negatives_, *ckpt_bytes_, *memory_;
  prometheus::Family<prometheus::Gauge>* eval_family_;
  Mutex eval_mu_;
  std::map<std::string, prometheus::Gauge*> eval_ GUARDED_BY(eval_mu_);  // by metric name
};

}  // namespace flap::metrics
