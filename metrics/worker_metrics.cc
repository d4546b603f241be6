#include "metrics/worker_metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <unistd.h>

#include <fstream>

namespace flap::metrics {
namespace {

using Labels = std::map<std::string, std::string>;

Labels With(Labels labels, const std::string& k, const std::string& v) {
  labels[k] = v;
  return labels;
}

// Adds the series `labels` to `family` and records how to remove it again.
template <typename T, typename... Args>
T* Add(prometheus::Family<T>& family, const Labels& labels, std::vector<std::function<void()>>* removers,
       Args&&... args) {
  T* metric = &family.Add(labels, std::forward<Args>(args)...);
  removers->push_back([&family, metric] { family.Remove(metric); });
  return metric;
}

}  // namespace

WorkerMetrics::WorkerMetrics(prometheus::Registry& registry, const std::string& trial, int rank)
    : labels_{{"trial", trial}, {"rank", std::to_string(rank)}} {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  auto counter = [&](const char* name, const char* help) -> prometheus::Family<prometheus::Counter>& {
    return BuildCounter().Name(name).Help(help).Register(registry);
  };
  auto gauge = [&](const char* name, const char* help) -> prometheus::Family<prometheus::Gauge>& {
    return BuildGauge().Name(name).Help(help).Register(registry);
  };
  auto histogram = [&](const char* name, const char* help) -> prometheus::Family<prometheus::Histogram>& {
    return BuildHistogram().Name(name).Help(help).Register(registry);
  };
  auto* r = &removers_;
  steps_ = Add(counter("flap_worker_steps_total", "Training steps completed"), labels_, r);
  samples_ = Add(counter("flap_worker_samples_total", "Training samples processed by this rank"), labels_, r);
  auto& phase = counter("flap_worker_step_phase_seconds_total",
                        "Step time by phase: data_wait (blocked on the loader), compute, communication");
  data_wait_ = Add(phase, With(labels_, "phase", "data_wait"), r);
  compute_ = Add(phase, With(labels_, "phase", "compute"), r);
  communication_ = Add(phase, With(labels_, "phase", "communication"), r);
  step_duration_ =
      Add(histogram("flap_worker_step_duration_seconds", "Wall time of one training step, data wait included"), labels_,
          r, prometheus::Histogram::BucketBoundaries{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60});
  step_ = Add(gauge("flap_worker_step", "Global step of the trial"), labels_, r);
  epoch_ = Add(gauge("flap_worker_epoch", "Epochs completed (fractional)"), labels_, r);
  rate_ = Add(gauge("flap_worker_samples_per_second", "Global training throughput over the last logging window"),
              labels_, r);
  auto& loss = gauge("flap_worker_loss", "Latest training loss by kind");
  loss_total_ = Add(loss, With(labels_, "kind", "total"), r);
  loss_contrastive_ = Add(loss, With(labels_, "kind", "contrastive"), r);
  loss_recon_ = Add(loss, With(labels_, "kind", "recon"), r);
  logit_scale_ = Add(gauge("flap_worker_logit_scale", "exp(learned log logit scale)"), labels_, r);
  global_batch_ = Add(gauge("flap_worker_global_batch", "Samples per step over all ranks"), labels_, r);
  negatives_ = Add(gauge("flap_worker_negatives_per_step", "Contrastive candidates per query (gathered across ranks)"),
                   labels_, r);
  ckpt_saves_ = Add(counter("flap_worker_checkpoint_saves_total", "Checkpoints written"), labels_, r);
  ckpt_seconds_ =
      Add(histogram("flap_worker_checkpoint_save_seconds",
                    "Time to write, index and retain one checkpoint (in the background)"),
          labels_, r, prometheus::Histogram::BucketBoundaries{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300});
  ckpt_bytes_ = Add(gauge("flap_worker_checkpoint_bytes", "Size of the last checkpoint"), labels_, r);
  memory_ = Add(gauge("flap_worker_resident_memory_bytes", "Resident set size of the worker process"), labels_, r);
  eval_family_ = &gauge("flap_worker_eval", "Latest evaluation by metric (R@k both ways, mAP@10), as fractions");
}

WorkerMetrics::~WorkerMetrics() {
  for (auto& remove : removers_) remove();
  MutexLock lock(&eval_mu_);
  for (const auto& [name, gauge] : eval_) eval_family_->Remove(gauge);
}

void WorkerMetrics::ObserveStep(double data_wait_s, double compute_s, double communication_s, int64_t samples) {
  steps_->Increment();
  samples_->Increment(static_cast<double>(samples));
  data_wait_->Increment(data_wait_s);
  compute_->Increment(compute_s);
  communication_->Increment(communication_s);
  step_duration_->Observe(data_wait_s + compute_s + communication_s);
}

void WorkerMetrics::SetProgress(int64_t step, double epoch, double samples_per_second) {
  step_->Set(static_cast<double>(step));
  epoch_->Set(epoch);
  rate_->Set(samples_per_second);
}

void WorkerMetrics::SetLosses(double total, double contrastive, double recon, double logit_scale) {
  loss_total_->Set(total);
  loss_contrastive_->Set(contrastive);
  loss_recon_->Set(recon);
  logit_scale_->Set(logit_scale);
}

void WorkerMetrics::SetBatch(int64_t global_batch, int64_t negatives_per_step) {
  global_batch_->Set(static_cast<double>(global_batch));
  negatives_->Set(static_cast<double>(negatives_per_step));
}

void WorkerMetrics::ObserveCheckpoint(double seconds, int64_t bytes) {
  ckpt_saves_->Increment();
  ckpt_seconds_->Observe(seconds);
  ckpt_bytes_->Set(static_cast<double>(bytes));
}

void WorkerMetrics::SetEvaluation(const std::map<std::string, double>& metrics) {
  MutexLock lock(&eval_mu_);
  for (const auto& [name, value] : metrics) {
    prometheus::Gauge*& gauge = eval_[name];
    if (gauge == nullptr) gauge = &eval_family_->Add(With(labels_, "metric", name));
    gauge->Set(value);
  }
}

void WorkerMetrics::UpdateMemory() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  if (statm >> pages >> resident)
    memory_->Set(static_cast<double>(resident) * static_cast<double>(::sysconf(_SC_PAGESIZE)));
}

}  // namespace flap::metrics
