#include "worker/trainer.h"

#include <torch/serialize.h>
#include <torch/utils.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <map>
#include <ostream>
#include <sstream>

#include "common/atomic_file.h"
#include "metrics/metrics.h"
#include "metrics/worker_metrics.h"
#include "sharding/file_util.h"
#include "worker/core/masking.h"
#include "worker/stop_signal.h"
#include "worker/trainer_internal.h"
#include "worker/warm_start.h"

namespace flap::worker {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string FormatGiB(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f GiB", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

std::string FormatDuration(double s) {
  char buf[32];
  const long total = static_cast<long>(s + 0.5);
  if (total >= 3600)
    std::snprintf(buf, sizeof(buf), "%ldh%02ldm", total / 3600, (total % 3600) / 60);
  else
    std::snprintf(buf, sizeof(buf), "%ldm%02lds", total / 60, total % 60);
  return buf;
}

core::FlapModel BuildSeededModel(TrialConfig* config, int vocab_size) {
  config->model.vocab_size = vocab_size;
  torch::manual_seed(config->train.seed);
  return core::FlapModel(config->model, config->loss.logit_scale_init);
}

}  // namespace

void SetThreads(int threads) { core::SetComputeThreads(threads > 0 ? threads : 1); }

FeatureOptions DataOptions(const TrialConfig& c) {
  FeatureOptions o;
  o.target_frames = c.model.target_frames;
  o.max_frames = c.data.max_frames;
  o.num_mel_bins = c.model.num_mel_bins;
  o.threads = c.data.loader_threads;
  const std::string& cache = c.data.fbank_cache;
  if (cache.empty() || cache == "off") return o;
  o.memory_budget_bytes = c.data.feature_memory_mb << 20;
  if (cache == "auto") {
    o.cache_dir = sharding::JoinPath(c.data.path, ".fbank-cache");
    o.disk_overflow_only = true;
  } else {
    o.cache_dir = cache;
  }
  return o;
}

StatusOr<c10::Device> TrainingDevice(const TrialConfig& config) {
  return core::SelectDevice(config.train.device, core::ProcessEnvironment());
}

StatusOr<std::unique_ptr<core::WorkerGroup>> JoinWorkerGroup(const TrialConfig& c, std::ostream& log,
                                                             std::string* launcher_name) {
  FLAP_ASSIGN_OR_RETURN(core::Launcher launcher, core::ParseLauncher(c.dist.launcher));
  FLAP_ASSIGN_OR_RETURN(core::Rendezvous rendezvous, core::DetectRendezvous(core::ProcessEnvironment(), launcher));
  FLAP_ASSIGN_OR_RETURN(const c10::Device device, TrainingDevice(c));
  core::GroupOptions o;
  o.backend = c.dist.backend;
  o.timeout_s = c.dist.timeout;
  o.device = device;
  FLAP_ASSIGN_OR_RETURN(std::unique_ptr<core::WorkerGroup> group, core::WorkerGroup::Create(rendezvous, o));
  if (launcher_name != nullptr) *launcher_name = core::LauncherName(rendezvous.launcher);
  if (group->world_size() > 1) {
    log << "rank " << group->rank() << " of " << group->world_size() << " joined ("
        << core::LauncherName(rendezvous.launcher) << " launcher, " << group->backend() << ", rendezvous "
        << rendezvous.master_addr << ":" << rendezvous.master_port << ", timeout " << c.dist.timeout << " s)"
        << std::endl;
  }
  return group;
}

namespace internal {

Trainer::Trainer(const TrialConfig& config, std::ostream& log, const TrainingHooks& hooks)
    : config_(config), log_in_(log), hooks_(hooks) {}

Trainer::~Trainer() = default;

StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const TrialConfig& config, std::ostream& log,
                                                   const ResumeOptions& resume, const TrainingHooks& hooks) {
  std::unique_ptr<Trainer> t(new Trainer(config, log, hooks));
  FLAP_RETURN_IF_ERROR(t->config_.Validate());
  if (t->config_.data.path.empty()) return Status::InvalidArgument("data.path is not set");
  FLAP_RETURN_IF_ERROR(t->SetUpHost());
  FLAP_RETURN_IF_ERROR(t->LoadData());
  FLAP_RETURN_IF_ERROR(t->BuildModel());
  FLAP_RETURN_IF_ERROR(t->Restore(resume));
  FLAP_RETURN_IF_ERROR(t->StartLoader());
  t->LogPlan();
  return t;
}

Status Trainer::SetUpHost() {
  FLAP_ASSIGN_OR_RETURN(device_, TrainingDevice(config_));
  allocator_ = core::TuneHostAllocator();
  cores_ = UsableCores();
  feature_options_ = DataOptions(config_);
  const bool features_cached = feature_options_.memory_budget_bytes > 0 || !feature_options_.cache_dir.empty();
  thread_plan_ =
      PlanThreads(cores_, device_.is_cuda(), features_cached, config_.train.threads, config_.data.loader_threads);
  core::SetComputeThreads(thread_plan_.compute);
  FLAP_ASSIGN_OR_RETURN(precision_, core::ParsePrecision(config_.train.precision));
  FLAP_ASSIGN_OR_RETURN(eval_crop_, ParseEvalCrop(config_.eval.crop));
  device_info_ = core::DescribeDevice(device_);
  if (hooks_.group == nullptr) {
    FLAP_ASSIGN_OR_RETURN(own_group_, JoinWorkerGroup(config_, log_in_, &launcher_name_));
    group_ = own_group_.get();
  } else {
    group_ = hooks_.group;
  }
  rank_ = group_->rank();
  world_ = group_->world_size();
  FLAP_ASSIGN_OR_RETURN(rank_metrics_, StartRankMetrics(config_, rank_, log_in_, hooks_.metrics_server));
  wm_ = rank_metrics_->worker.get();
  if (rank_ == 0) log_ = &log_in_;
  return Status::OK();
}

Status Trainer::LoadData() {
  const DataConfig& d = config_.data;
  FLAP_ASSIGN_OR_RETURN(manifest_, sharding::ReadManifest(d.path));
  FLAP_ASSIGN_OR_RETURN(sharding::Tokenizer tokenizer, sharding::Tokenizer::Load(d.path + "/" + manifest_.tokenizer));
  tokenizer_.emplace(std::move(tokenizer));
  FLAP_ASSIGN_OR_RETURN(Dataset eval, Dataset::Load(d.path, d.val_split, feature_options_));
  eval_.emplace(std::move(eval));
  load_s_ = Since(start_);
  const std::vector<sharding::ShardInfo> shards = manifest_.ShardsOf(d.train_split);
  if (shards.empty())
    return Status::NotFound("dataset '" + d.path + "' has no shards in split '" + d.train_split + "'");
  if (hooks_.make_source) {
    auto made = hooks_.make_source(shards, rank_, world_);
    if (!made.ok()) return made.status().WithContext("split '" + d.train_split + "'");
    source_ = std::move(*made);
    for (const auto& shard : shards) train_clips_ += shard.num_samples;
  } else {
    auto fixed = FixedShardSource::Create(shards, rank_, world_, config_.train.batch_size, config_.train.seed);
    if (!fixed.ok()) return fixed.status().WithContext("split '" + d.train_split + "'");
    for (const auto& shard : (*fixed)->shards()) train_clips_ += shard.num_samples;
    source_ = std::move(*fixed);
  }
  per_epoch_ = source_->StepsPerEpoch();
  FLAP_ASSIGN_OR_RETURN(augment_, sharding::ReadAugmentFile(d.path, manifest_));
  return Status::OK();
}

Status Trainer::BuildModel() {
  outcome_.model = BuildSeededModel(&config_, tokenizer_->vocab_size());
  FLAP_RETURN_IF_ERROR(WarmStart(outcome_.model, config_.init_audio, config_.init_text, *log_));  // on the CPU
  outcome_.model->to(device_);  // initialised on the CPU from the seed, the same on every device
  // The step budget: epochs, max_steps and max_samples, whichever is fewest steps.
  const TrainConfig& t = config_.train;
  global_batch_ = t.batch_size * world_;
  total_steps_ = per_epoch_ * t.epochs;
  if (t.max_steps > 0 && t.max_steps < total_steps_) {
    total_steps_ = t.max_steps;
    step_budget_ = "steps";
  }
  const int64_t for_samples = (t.max_samples + global_batch_ - 1) / global_batch_;
  if (t.max_samples > 0 && for_samples < total_steps_) {
    total_steps_ = for_samples;
    step_budget_ = "samples";
  }
  if (config_.optim.total_steps == 0) config_.optim.total_steps = total_steps_;
  gather_ = std::make_unique<core::GroupGather>(group_);
  core::GradSyncOptions sync_options;
  sync_options.bucket_mb = config_.dist.bucket_mb;
  sync_options.overlap = config_.dist.overlap;
  sync_ = std::make_unique<core::GroupGradientSync>(group_, sync_options);
  step_runner_ = std::make_unique<core::TrainStep>(outcome_.model, config_.loss, config_.optim,
                                                   world_ > 1 ? gather_.get() : nullptr,
                                                   world_ > 1 ? sync_.get() : nullptr, precision_);
  kept_ = core::NumKept(config_.mask, {config_.model.freq_patches(), config_.model.time_patches()});
  return Status::OK();
}

Status Trainer::Restore(const ResumeOptions& resume) {
  const bool resuming = resume.resume || resume.from_step >= 0;
  if (config_.ckpt.root.empty() && resuming) return Status::InvalidArgument("--resume needs ckpt.root");
  // Rank 0 owns the trial's checkpoints; the others receive what it restores.
  if (!config_.ckpt.root.empty() && rank_ == 0) {
    FLAP_ASSIGN_OR_RETURN(ckpt_, Checkpointer::Open(config_.ckpt, config_.TrialId(), config_.Hash()));
  }
  if (ckpt_ && resuming) {
    auto restored = ckpt_->Restore(resume, outcome_.model, step_runner_->optimizer(), *log_);
    if (restored.ok()) {
      start_step_ = restored->step;
      FLAP_ASSIGN_OR_RETURN(cursor_, CursorForStep(restored->data_cursor, start_step_, per_epoch_));
      samples_ = start_step_ * global_batch_;
      if (restored->progress.is_object()) {
        trained_s0_ = restored->progress.value("train_seconds", 0.0);
        samples_ = restored->progress.value("samples", samples_);
      } else if (config_.train.max_seconds > 0) {
        *log_ << "checkpoint at step " << start_step_
              << " records no training seconds: the time budget counts from this resume" << std::endl;
      }
    } else if (restored.status().code() == Status::Code::kNotFound && resume.from_step < 0) {
      *log_ << "no checkpoint of trial " << config_.TrialId() << " yet: starting from step 0" << std::endl;
    } else {
      return restored.status();
    }
  }
  if (world_ > 1 && resuming) {
    FLAP_RETURN_IF_ERROR(
        ShareRestoredState(*group_, outcome_.model, step_runner_->optimizer(), &start_step_, &trained_s0_, &samples_));
  }
  const TrainConfig& t = config_.train;
  if (t.max_samples > 0 && start_step_ > 0) {
    // The samples still due decide the steps left (the same as before unless the global batch
    // changed since the checkpoint).
    const int64_t left = std::max<int64_t>(0, t.max_samples - samples_);
    total_steps_ = std::min(per_epoch_ * t.epochs, start_step_ + (left + global_batch_ - 1) / global_batch_);
    if (t.max_steps > 0) total_steps_ = std::min(total_steps_, t.max_steps);
  }
  if (!hooks_.exact_resume) {
    // The epoch's order cannot be replayed: continue the epoch at the checkpoint's step with
    // the shards the source still has.
    cursor_ = LoaderCursor{start_step_ / per_epoch_, 0, 0, start_step_ % per_epoch_, {}};
  } else if (world_ > 1) {
    // Only rank 0 reads checkpoints; every rank places its own shards' cursor at the shared
    // step (exact for the fixed shard source: loader.h).
    FLAP_ASSIGN_OR_RETURN(cursor_, CursorForStep(nullptr, start_step_, per_epoch_));
  }
  step_ = last_saved_ = start_step_;
  return Status::OK();
}

Status Trainer::StartLoader() {
  LoaderOptions& lo = loader_options_;
  lo.dataset_dir = config_.data.path;
  lo.threads = thread_plan_.loader;
  lo.shuffle_shards = config_.data.shuffle_shards;
  lo.prefetch_batches = config_.data.prefetch_batches;
  lo.pin_memory = device_.is_cuda();
  lo.features = feature_options_;
  lo.features.augment = &augment_;
  auto loader = StreamingLoader::Start(lo, config_, *tokenizer_, std::move(source_), cursor_);
  if (!loader.ok()) return loader.status().WithContext("data loader");
  loader_ = std::move(*loader);
  InstallStopSignalHandlers(config_.ckpt.stop_deadline);
  return Status::OK();
}

void Trainer::LogPlan() {
  const TrialConfig& c = config_;
  const int64_t b = c.train.batch_size;
  if (!manifest_.augment.is_null()) {
    *log_ << "augmented captions for " << augment_.size() << " clips from " << sharding::kAugmentFileName << " ("
          << manifest_.augment.value("method", "?") << ")" << std::endl;
  }
  *log_ << "train: " << train_clips_ << " clips streamed by " << loader_options_.threads
        << " loader threads, eval: " << eval_->size() << " clips / " << eval_->num_captions()
        << " captions, features in " << FormatDuration(load_s_) << "; preset " << c.preset << ", mask " << c.mask.ratio
        << " " << core::MaskStrategyName(c.mask.strategy) << " (" << kept_ << "/" << c.model.num_patches()
        << " tokens kept), recon.weight " << c.loss.recon_weight << ", text.augment " << c.augment << "; "
        << total_steps_ << " steps of global batch " << global_batch_ << " (" << world_
        << " rank(s) x train.batch_size " << b << " per rank; " << global_batch_
        << " negatives per step); threads: " << thread_plan_.compute << " compute + " << loader_options_.threads
        << " loader of " << cores_ << " cores (" << thread_plan_.why << "), " << allocator_ << "; device "
        << device_info_.device << " (" << device_info_.name << ", " << FormatGiB(device_info_.memory_bytes) << "), "
        << core::PrecisionName(precision_) << std::endl;
}

double Trainer::Now() const {
  return hooks_.clock ? hooks_.clock() : std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

// Training-loop seconds of this trial (earlier runs included), without this run's evaluations.
double Trainer::TrainedSeconds() const { return trained_s0_ + (Now() - loop_t0_) - eval_budget_s_; }

// The step the trial is expected to end at: the step budget, or earlier where the time budget
// runs out at this run's rate so far.
int64_t Trainer::PlannedSteps(int64_t at_step) const {
  if (config_.train.max_seconds <= 0 || at_step <= start_step_) return total_steps_;
  const double trained = TrainedSeconds();
  const double per_step = (trained - trained_s0_) / static_cast<double>(at_step - start_step_);
  if (!(per_step > 0)) return total_steps_;
  const double left = std::max(0.0, config_.train.max_seconds - trained) / per_step;
  return std::min(total_steps_, at_step + static_cast<int64_t>(std::ceil(left)));
}

void Trainer::Report(const std::string& kind, int64_t at_step, const std::map<std::string, double>& values) {
  if (rank_ == 0 && hooks_.report &&
      hooks_.report(kind, at_step, at_step / per_epoch_, PlannedSteps(at_step), values)) {
    stop_asked_ = true;
  }
}

StatusOr<TrainOutcome> Trainer::Run() {
  if (wm_ != nullptr) wm_->SetBatch(global_batch_, global_batch_);
  train_start_ = Clock::now();
  host_start_ = ReadHostUsage();
  loop_t0_ = Now();
  const TrainConfig& t = config_.train;
  for (int64_t epoch = start_step_ / per_epoch_; step_ < total_steps_; ++epoch) {
    for (int64_t i = step_ % per_epoch_; i < per_epoch_ && step_ < total_steps_; ++i, ++step_) {
      const auto t0 = Clock::now();
      FLAP_ASSIGN_OR_RETURN(const Next next, BeforeStep());
      phases_.stop += Since(t0);
      if (next == Next::kEnded) return std::move(outcome_);
      if (next == Next::kBudgetSpent) return Finish();
      FLAP_RETURN_IF_ERROR(Step(epoch, i));
      const bool eval_due =
          (t.eval_every > 0 && (step_ + 1) % t.eval_every == 0) ||
          std::find(hooks_.eval_steps.begin(), hooks_.eval_steps.end(), step_ + 1) != hooks_.eval_steps.end();
      if (eval_due && step_ + 1 < total_steps_) FLAP_RETURN_IF_ERROR(Evaluate(step_ + 1));
      if (config_.ckpt.every > 0 && (step_ + 1) % config_.ckpt.every == 0 && step_ + 1 < total_steps_) {
        FLAP_RETURN_IF_ERROR(Checkpoint(step_ + 1));
      }
    }
  }
  return Finish();
}

StatusOr<Trainer::Next> Trainer::BeforeStep() {
  if (ckpt_) {
    FLAP_RETURN_IF_ERROR(ckpt_->Poll());
    ObserveSaves();
  }
  if (rank_ == 0 && hooks_.should_stop && hooks_.should_stop()) stop_asked_ = true;
  const int budget = rank_ == 0 ? SpentBudget(config_.train, TrainedSeconds(), samples_) : kBudgetNone;
  FLAP_ASSIGN_OR_RETURN(const StopDecision stop, AgreeOnStop(*group_, StopRequested(), stop_asked_, budget));
  outcome_.train_seconds = TrainedSeconds();
  outcome_.samples_seen = samples_;
  if (stop.signal == 0 && stop.asked) {
    if (ckpt_) FLAP_RETURN_IF_ERROR(ckpt_->Wait());
    ObserveSaves();
    *log_ << "trial stopped at step " << step_ << " as asked (early stopping or cancellation)" << std::endl;
    outcome_.stopped = true;
    outcome_.steps_done = step_;
    outcome_.summary = {{"stopped", true}, {"step", step_}, {"config_hash", config_.Hash()}};
    return Next::kEnded;
  }
  if (stop.signal != 0) {
    if (step_ != last_saved_) FLAP_RETURN_IF_ERROR(Checkpoint(step_));
    if (ckpt_) FLAP_RETURN_IF_ERROR(ckpt_->Wait());
    ObserveSaves();
    outcome_.steps_done = step_;
    *log_ << "stopped by signal " << stop.signal << " at step " << step_
          << (ckpt_ ? ", checkpoint taken" : " (no ckpt.root: nothing saved)") << std::endl;
    outcome_.stop_signal = stop.signal;
    outcome_.summary = {{"stopped_by_signal", stop.signal}, {"step", step_}, {"config_hash", config_.Hash()}};
    return Next::kEnded;
  }
  if (stop.budget != kBudgetNone) {
    budget_spent_ = stop.budget;
    return Next::kBudgetSpent;
  }
  return Next::kStep;
}

Status Trainer::Step(int64_t epoch, int64_t i) {
  const auto t0 = Clock::now();
  auto batch = loader_->Next();
  if (!batch.ok()) return batch.status().WithContext("training data at step " + std::to_string(step_));
  if (batch->epoch != epoch || batch->step_in_epoch != i) {
    return Status::Internal("loader out of step: batch of epoch " + std::to_string(batch->epoch) + " step " +
                            std::to_string(batch->step_in_epoch) + " where epoch " + std::to_string(epoch) + " step " +
                            std::to_string(i) + " was due");
  }
  const double waited = Since(t0);
  phases_.data_wait += waited;
  const auto t1 = Clock::now();
  const core::Batch on_device = core::ToDevice(batch->batch, device_);
  phases_.to_device += Since(t1);
  const auto t2 = Clock::now();
  FLAP_ASSIGN_OR_RETURN(last_, step_runner_->Run(on_device, step_));
  const double run = Since(t2), comm = last_.gather_s + last_.sync_s;
  if (wm_ != nullptr) wm_->ObserveStep(waited, std::max(0.0, run - comm), comm, config_.train.batch_size);
  phases_.forward += last_.forward_s;
  phases_.backward += last_.backward_s;
  phases_.optimizer += last_.optimizer_s;
  phases_.gather += last_.gather_s;
  phases_.grad_sync += last_.sync_s;
  cursor_ = batch->after;
  samples_ += global_batch_;

  const auto t3 = Clock::now();
  const bool log_now = (step_ + 1) % config_.train.log_every == 0 || step_ + 1 == total_steps_;
  if (log_now) FLAP_RETURN_IF_ERROR(MeanLosses(*group_, &last_));
  if (!std::isfinite(last_.loss)) {
    return Status::Internal("loss became " + std::to_string(last_.loss) + " at step " + std::to_string(step_) +
                            " (lower optim.lr?)");
  }
  window_s_ += Since(t0);
  ++window_steps_;
  if (log_now) LogWindow();
  phases_.bookkeeping += Since(t3);
  return Status::OK();
}

// The progress line, report and metrics of the steps since the last one (step_ just ran).
void Trainer::LogWindow() {
  const int64_t done = step_ + 1;
  const double rate = static_cast<double>(window_steps_ * global_batch_) / window_s_;
  const int64_t planned = PlannedSteps(done);
  const double eta = static_cast<double>(planned - done) * window_s_ / static_cast<double>(window_steps_);
  const double trained = TrainedSeconds();
  const double epochs = static_cast<double>(done) / static_cast<double>(per_epoch_);
  char budget_text[64] = "";
  if (config_.train.max_seconds > 0) {
    std::snprintf(budget_text, sizeof(budget_text), " | trained %.0f/%.0f s", trained, config_.train.max_seconds);
  }
  char buf[320];
  std::snprintf(buf, sizeof(buf),
                "step %lld/%lld epoch %.2f loss %.4f (contrastive %.4f recon %.4f) scale %.1f lr %.2e | %.1f "
                "samples/s%s | eta %s",
                static_cast<long long>(done), static_cast<long long>(planned), epochs, last_.loss, last_.contrastive,
                last_.recon, last_.logit_scale, last_.lr, rate, budget_text, FormatDuration(eta).c_str());
  *log_ << buf << std::endl;
  std::map<std::string, double> values = {{"loss", last_.loss},
                                          {"contrastive", last_.contrastive},
                                          {"recon", last_.recon},
                                          {"logit_scale", last_.logit_scale},
                                          {"lr", last_.lr},
                                          {"samples_per_second", rate},
                                          {"global_batch", static_cast<double>(global_batch_)},
                                          {"negatives_per_step", static_cast<double>(global_batch_)},
                                          {"epoch", epochs},
                                          {"train_seconds", trained},
                                          {"samples", static_cast<double>(samples_)}};
  if (config_.train.max_seconds > 0) values["max_seconds"] = config_.train.max_seconds;
  Report("train", done, values);
  if (wm_ != nullptr) {
    wm_->SetProgress(done, epochs, rate);
    wm_->SetLosses(last_.loss, last_.contrastive, last_.recon, last_.logit_scale);
    wm_->UpdateMemory();
  }
  window_s_ = 0;
  window_steps_ = 0;
}

// Rank 0 evaluates, every rank receives the metrics.
Status Trainer::Evaluate(int64_t step) {
  const double t0 = Now();
  const double trained = TrainedSeconds();
  core::RetrievalMetrics& m = outcome_.final_metrics;
  if (rank_ == 0) {
    m = worker::Evaluate(outcome_.model, *eval_, config_.train.eval_batch_size, precision_, eval_crop_);
    ++outcome_.evaluations_computed;
  }
  FLAP_RETURN_IF_ERROR(ShareMetrics(*group_, &m));
  const double eval_dt = Now() - t0;
  eval_s_ += eval_dt;
  nlohmann::json entry = MetricsToJson(m);
  std::map<std::string, double> values;
  for (auto& [k, v] : entry.items()) {
    if (v.is_number_float()) values[k] = v.get<double>();
  }
  if (wm_ != nullptr) wm_->SetEvaluation(values);
  entry["step"] = step;
  entry["train_seconds"] = trained;
  entry["samples"] = samples_;
  entry["eval_seconds"] = eval_dt;
  history_.push_back(entry);
  values["train_seconds"] = trained;
  values["samples"] = static_cast<double>(samples_);
  values["eval_seconds"] = eval_dt;
  Report("eval", step, values);
  char buf[224];
  std::snprintf(buf, sizeof(buf),
                "eval  step %lld (%.1f s, %lld samples trained): R@1 t2a %.1f%% a2t %.1f%%, R@10 t2a %.1f%% a2t "
                "%.1f%%, mAP@10 %.1f%% (%.1f s)",
                static_cast<long long>(step), trained, static_cast<long long>(samples_), 100 * m.t2a_r1, 100 * m.a2t_r1,
                100 * m.t2a_r10, 100 * m.a2t_r10, 100 * m.map10, eval_dt);
  *log_ << buf << std::endl;
  eval_budget_s_ += Now() - t0;  // reporting it is not training either
  return Status::OK();
}

std::map<std::string, double> Trainer::MetricsForRetention() const {
  std::map<std::string, double> m;
  if (!history_.empty()) {
    for (auto& [k, v] : history_.back().items()) {
      if (v.is_number() && k != "step" && k != "train_seconds" && k != "samples" && k != "eval_seconds") {
        m[k] = v.get<double>();
      }
    }
  }
  return m;
}

// Reports checkpoints finished since the last call to the metrics and the hooks.
void Trainer::ObserveSaves() {
  if (ckpt_ && ckpt_->saves_completed() != rank_metrics_->saves_seen) {
    rank_metrics_->saves_seen = ckpt_->saves_completed();
    if (wm_ != nullptr) wm_->ObserveCheckpoint(ckpt_->last_save_seconds(), ckpt_->last_save_bytes());
    if (hooks_.on_checkpoint)
      hooks_.on_checkpoint(ckpt_->CheckpointRef(ckpt_->last_saved_step()), ckpt_->last_saved_step());
  }
}

Status Trainer::Checkpoint(int64_t step) {
  if (!ckpt_) return Status::OK();
  Status s = ckpt_->SaveAsync(outcome_.model, step_runner_->optimizer(), step, per_epoch_, MetricsForRetention(),
                              cursor_.ToJson(), {{"train_seconds", TrainedSeconds()}, {"samples", samples_}});
  ObserveSaves();
  last_saved_ = step;
  return s;
}

StatusOr<TrainOutcome> Trainer::Finish() {
  const double train_s = Since(train_start_) - eval_s_;
  outcome_.train_seconds = TrainedSeconds();
  outcome_.samples_seen = samples_;
  outcome_.budget_reached = budget_spent_ != kBudgetNone ? BudgetName(budget_spent_) : step_budget_;
  *log_ << "training budget reached (" << outcome_.budget_reached << ") at step " << step_ << ": " << std::fixed
        << std::setprecision(1) << outcome_.train_seconds << std::defaultfloat << " s trained, " << samples_
        << " samples" << std::endl;
  // The last evaluation, unless one was just made at this step.
  if (history_.empty() || history_.back().value("step", int64_t{-1}) != step_) FLAP_RETURN_IF_ERROR(Evaluate(step_));
  if (ckpt_ && step_ != last_saved_) FLAP_RETURN_IF_ERROR(Checkpoint(step_));
  if (ckpt_) FLAP_RETURN_IF_ERROR(ckpt_->Wait());
  ObserveSaves();
  if (hooks_.group == nullptr) FLAP_RETURN_IF_ERROR(group_->Shutdown());
  outcome_.steps_done = step_;
  outcome_.summary = Summary(train_s);
  for (const std::string& n : loader_->stats().notes) *log_ << "loader: " << n << std::endl;
  if (rank_ == 0) FLAP_RETURN_IF_ERROR(WriteOutputs());
  return std::move(outcome_);
}

nlohmann::json Trainer::Summary(double train_s) const {
  const TrialConfig& c = config_;
  const int64_t step = step_;
  nlohmann::json s;
  s["config"] = c.ToJson();
  s["config_hash"] = c.Hash();
  s["steps"] = step;
  s["epochs"] = static_cast<double>(step) / static_cast<double>(per_epoch_);
  s["samples_seen"] = samples_;
  s["budget"] = {{"reached", outcome_.budget_reached},
                 {"train_seconds", outcome_.train_seconds},
                 {"samples", samples_},
                 {"max_steps", total_steps_},
                 {"max_seconds", c.train.max_seconds},
                 {"max_samples", c.train.max_samples}};
  s["resumed_from_step"] = start_step_;
  s["trial_id"] = c.TrialId();
  s["world_size"] = world_;
  s["rank"] = rank_;
  s["per_rank_batch"] = c.train.batch_size;
  s["global_batch"] = global_batch_;
  s["negatives_per_step"] = global_batch_;
  s["dist"] = {{"launcher", launcher_name_},
               {"backend", group_->backend()},
               {"overlap", c.dist.overlap},
               {"bucket_mb", c.dist.bucket_mb},
               {"buckets", world_ > 1 ? sync_->num_buckets() : 0}};
  s["tokens_kept"] = kept_;
  s["device"] = {{"device", device_info_.device},
                 {"name", device_info_.name},
                 {"memory_bytes", device_info_.memory_bytes},
                 {"precision", core::PrecisionName(precision_)},
                 {"peak_memory_bytes", core::PeakMemoryBytes(device_)}};
  s["final_loss"] = {{"total", last_.loss},
                     {"contrastive", last_.contrastive},
                     {"recon", last_.recon},
                     {"logit_scale", last_.logit_scale}};
  s["eval"] = MetricsToJson(outcome_.final_metrics);
  s["eval_history"] = history_;
  const int64_t steps_run = std::max<int64_t>(1, step - start_step_);
  s["samples_per_second"] = train_s > 0 ? static_cast<double>(steps_run * global_batch_) / train_s : 0.0;
  const LoaderStats ls = loader_->stats();
  s["data"] = {{"wait_seconds", phases_.data_wait},
               {"wait_fraction", train_s > 0 ? phases_.data_wait / train_s : 0.0},
               {"shards_computed", ls.shards_computed},
               {"shards_from_cache", ls.shards_cached},
               {"shards_from_memory", ls.shards_from_memory},
               {"loader_threads", loader_options_.threads},
               {"loader_busy_seconds", ls.busy_seconds},
               {"loader_feature_seconds", ls.feature_seconds},
               {"loader_assembly_seconds", ls.assembly_seconds}};
  const HostUsage host_end = ReadHostUsage();
  const double user_s = host_end.user_s - host_start_.user_s, system_s = host_end.system_s - host_start_.system_s;
  s["host"] = {{"cores", cores_},
               {"compute_threads", thread_plan_.compute},
               {"loader_threads", loader_options_.threads},
               {"allocator", allocator_},
               {"minor_faults_per_step",
                static_cast<double>(host_end.minor_faults - host_start_.minor_faults) / static_cast<double>(steps_run)},
               {"system_time_share", user_s + system_s > 0 ? system_s / (user_s + system_s) : 0.0}};
  // Per step of this run: the phases of PhaseSeconds, the loop's whole step (evaluations
  // excluded) and what no phase covers.
  const double n = static_cast<double>(steps_run);
  const PhaseSeconds& p = phases_;
  const double covered = p.stop + p.data_wait + p.to_device + p.forward + p.backward + p.optimizer + p.bookkeeping;
  s["step_seconds"] = {{"stop_check", p.stop / n},
                       {"data_wait", p.data_wait / n},
                       {"to_device", p.to_device / n},
                       {"forward", p.forward / n},
                       {"backward", p.backward / n},
                       {"optimizer", p.optimizer / n},
                       {"bookkeeping", p.bookkeeping / n},
                       {"gather", p.gather / n},
                       {"grad_sync", p.grad_sync / n},
                       {"loop", train_s / n},
                       {"other", std::max(0.0, train_s - covered) / n}};
  s["wall_seconds"] = Since(start_);
  s["train_seconds"] = train_s;
  s["eval_seconds"] = eval_s_;
  return s;
}

// train.output_dir: model.pt and summary.json (rank 0).
Status Trainer::WriteOutputs() const {
  const std::string& dir = config_.train.output_dir;
  if (dir.empty()) return Status::OK();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError("cannot create train.output_dir '" + dir + "': " + ec.message());
  const std::string model_path = dir + "/model.pt";
  std::ostringstream model_bytes;
  try {
    torch::save(outcome_.model, model_bytes);
  } catch (const c10::Error& e) {
    return Status::IOError("cannot save '" + model_path + "': " + e.what_without_backtrace());
  }
  FLAP_RETURN_IF_ERROR(flap::WriteFileAtomic(model_path, model_bytes.str()));
  return flap::WriteFileAtomic(dir + "/summary.json", outcome_.summary.dump(2) + "\n");
}

}  // namespace internal

StatusOr<TrainOutcome> RunTraining(const TrialConfig& config, std::ostream& log, const ResumeOptions& resume,
                                   const TrainingHooks& hooks) {
  FLAP_ASSIGN_OR_RETURN(std::unique_ptr<internal::Trainer> trainer,
                        internal::Trainer::Create(config, log, resume, hooks));
  return trainer->Run();
}

StatusOr<core::FlapModel> LoadModel(TrialConfig* config, int vocab_size, const std::string& model_path,
                                    const c10::Device& device) {
  core::FlapModel model = BuildSeededModel(config, vocab_size);
  model->to(device);
  if (model_path.empty()) return model;
  if (!std::filesystem::exists(model_path)) return Status::NotFound("model file '" + model_path + "' does not exist");
  try {
    torch::load(model, model_path, device);
  } catch (const c10::Error& e) {
    return Status::Corruption("model file '" + model_path +
                              "' does not match this config or is damaged: " + e.what_without_backtrace());
  }
  return model;
}

StatusOr<core::RetrievalMetrics> RunEvaluation(const TrialConfig& config_in, const std::string& model_path,
                                               std::ostream& log) {
  TrialConfig config = config_in;
  FLAP_RETURN_IF_ERROR(config.Validate());
  if (config.data.path.empty()) return Status::InvalidArgument("data.path is not set");
  SetThreads(config.train.threads);
  FLAP_ASSIGN_OR_RETURN(Dataset eval, Dataset::Load(config.data.path, config.data.val_split, DataOptions(config)));
  FLAP_ASSIGN_OR_RETURN(const c10::Device device, TrainingDevice(config));
  FLAP_ASSIGN_OR_RETURN(const core::Precision precision, core::ParsePrecision(config.train.precision));
  FLAP_ASSIGN_OR_RETURN(core::FlapModel model, LoadModel(&config, eval.tokenizer().vocab_size(), model_path, device));
  log << "evaluating " << (model_path.empty() ? "the untrained model" : "'" + model_path + "'") << " on split '"
      << config.data.val_split << "' on " << core::DescribeDevice(device).device << ", "
      << core::PrecisionName(precision) << std::endl;
  FLAP_ASSIGN_OR_RETURN(const EvalCrop eval_crop, ParseEvalCrop(config.eval.crop));
  return Evaluate(model, eval, config.train.eval_batch_size, precision, eval_crop);
}

}  // namespace flap::worker
