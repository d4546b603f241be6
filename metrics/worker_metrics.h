// The metrics one worker rank serves on its /metrics (catalogue: docs/metrics.md). Every
// series carries the labels trial and rank; their number is bounded by the ranks a process
// runs in its life (one trial at a time).
//
// Thread-safety: safe from any thread (prometheus-cpp metrics are atomic).
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
}  // namespace prometheus

namespace flap::metrics {

class WorkerMetrics {
 public:
  // Registers the worker's families in `registry` (which must outlive this object).
  WorkerMetrics(prometheus::Registry& registry, const std::string& trial, int rank);

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
  prometheus::Registry& registry_;
  std::map<std::string, std::string> labels_;
  prometheus::Counter *steps_, *samples_, *data_wait_, *compute_, *communication_, *ckpt_saves_;
  prometheus::Histogram *step_duration_, *ckpt_seconds_;
  prometheus::Gauge *step_, *epoch_, *rate_, *loss_total_, *loss_contrastive_, *loss_recon_, *logit_scale_,
      *global_batch_, *negatives_, *ckpt_bytes_, *memory_;
};

}  // namespace flap::metrics
