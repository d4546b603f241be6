#include "metrics/worker_metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <unistd.h>

#include <fstream>

namespace flap::metrics {
namespace {

std::map<std::string, std::string> With(std::map<std::string, std::string> labels, const std::string& k,
                                        const std::string& v) {
  labels[k] = v;
  return labels;
}

}  // namespace

WorkerMetrics::WorkerMetrics(prometheus::Registry& registry, const std::string& trial, int rank)
    : registry_(registry), labels_{{"trial", trial}, {"rank", std::to_string(rank)}} {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  steps_ = &BuildCounter().Name("flap_worker_steps_total").Help("Training steps completed").Register(registry).Add(labels_);
  samples_ = &BuildCounter()
                  .Name("flap_worker_samples_total")
                  .Help("Training samples processed by this rank")
                  .Register(registry)
                  .Add(labels_);
  auto& phase = BuildCounter()
                    .Name("flap_worker_step_phase_seconds_total")
                    .Help("Step time by phase: data_wait (blocked on the loader), compute, communication")
                    .Register(registry);
  data_wait_ = &phase.Add(With(labels_, "phase", "data_wait"));
  compute_ = &phase.Add(With(labels_, "phase", "compute"));
  communication_ = &phase.Add(With(labels_, "phase", "communication"));
  step_duration_ = &BuildHistogram()
                        .Name("flap_worker_step_duration_seconds")
                        .Help("Wall time of one training step, data wait included")
                        .Register(registry)
                        .Add(labels_, prometheus::Histogram::BucketBoundaries{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                                               2.5, 5, 10, 30, 60});
  step_ = &BuildGauge().Name("flap_worker_step").Help("Global step of the trial").Register(registry).Add(labels_);
  epoch_ = &BuildGauge().Name("flap_worker_epoch").Help("Epochs completed (fractional)").Register(registry).Add(labels_);
  rate_ = &BuildGauge()
               .Name("flap_worker_samples_per_second")
               .Help("Global training throughput over the last logging window")
               .Register(registry)
               .Add(labels_);
  auto& loss = BuildGauge().Name("flap_worker_loss").Help("Latest training loss by kind").Register(registry);
  loss_total_ = &loss.Add(With(labels_, "kind", "total"));
  loss_contrastive_ = &loss.Add(With(labels_, "kind", "contrastive"));
  loss_recon_ = &loss.Add(With(labels_, "kind", "recon"));
  logit_scale_ = &BuildGauge()
                      .Name("flap_worker_logit_scale")
                      .Help("exp(learned log logit scale)")
                      .Register(registry)
                      .Add(labels_);
  global_batch_ = &BuildGauge()
                       .Name("flap_worker_global_batch")
                       .Help("Samples per step over all ranks")
                       .Register(registry)
                       .Add(labels_);
  negatives_ = &BuildGauge()
                    .Name("flap_worker_negatives_per_step")
                    .Help("Contrastive candidates per query (gathered across ranks)")
                    .Register(registry)
                    .Add(labels_);
  ckpt_saves_ = &BuildCounter()
                     .Name("flap_worker_checkpoint_saves_total")
                     .Help("Checkpoints written")
                     .Register(registry)
                     .Add(labels_);
  ckpt_seconds_ = &BuildHistogram()
                       .Name("flap_worker_checkpoint_save_seconds")
                       .Help("Time to write, index and retain one checkpoint (in the background)")
                       .Register(registry)
                       .Add(labels_, prometheus::Histogram::BucketBoundaries{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
                                                                              120, 300});
  ckpt_bytes_ = &BuildGauge()
                     .Name("flap_worker_checkpoint_bytes")
                     .Help("Size of the last checkpoint")
                     .Register(registry)
                     .Add(labels_);
  memory_ = &BuildGauge()
                 .Name("flap_worker_resident_memory_bytes")
                 .Help("Resident set size of the worker process")
                 .Register(registry)
                 .Add(labels_);
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
  auto& family = prometheus::BuildGauge()
                     .Name("flap_worker_eval")
                     .Help("Latest evaluation by metric (R@k both ways, mAP@10), as fractions")
                     .Register(registry_);
  for (const auto& [name, value] : metrics) family.Add(With(labels_, "metric", name)).Set(value);
}

void WorkerMetrics::UpdateMemory() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  if (statm >> pages >> resident) memory_->Set(static_cast<double>(resident) * static_cast<double>(::sysconf(_SC_PAGESIZE)));
}

}  // namespace flap::metrics
