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
#include <thread>

#include "common/atomic_file.h"
#include "common/file_util.h"
#include "metrics/metrics.h"
#include "metrics/worker_metrics.h"
#include "worker/core/masking.h"
#include "worker/safetensors.h"
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

// The text tower's ids from the run's tokenizer and, for a roberta tower warm-started from a
// file, its shape from the file (written into *config, so the run records what it built).
// `read_file` false: the shape from the config's keys alone.
Status SetTextTower(TrialConfig* config, const sharding::TextTokenizer& tokenizer, bool read_file = true) {
  config->model.vocab_size = tokenizer.vocab_size();
  config->model.text_pad_id = tokenizer.pad_id();
  config->model.text_end_id = tokenizer.end_id();
  if (read_file && !config->model.init_text.empty()) {
    // A file that records its tokenizer (an export) must have been trained with this one: checked
    // before its shape, whose vocabulary would differ too.
    auto index = ReadSafetensorsIndex(config->model.init_text);
    if (!index.ok()) return index.status().WithContext("model.init_text");
    FLAP_RETURN_IF_ERROR(
        CheckTokenizerIdentity(index->metadata, config->model.init_text, tokenizer).WithContext("model.init_text"));
  }
  FLAP_ASSIGN_OR_RETURN(
      config->model, ResolveTextTower(config->model, read_file ? config->model.init_text : "", config->text_heads_set));
  if (config->model.text_roberta() && !config->model.init_text.empty()) config->text_heads_set = true;
  return config->Validate();
}

// The config's model (its audio position layout resolved: an unreadable warm-start file is
// reported by the warm start itself), initialised from train.seed.
core::FlapModel BuildSeededModel(TrialConfig* config) {
  core::ModelConfig model = config->model;
  auto layout = ResolveAudioPosLayout(model.audio_pos_layout, config->model.init_audio);
  model.audio_pos_layout = layout.ok() ? *layout : "flap";
  torch::manual_seed(config->train.seed);
  return core::FlapModel(model, config->loss.logit_scale_init);
}

}  // namespace

void SetThreads(int threads) { core::SetComputeThreads(threads > 0 ? threads : 1); }

FeatureOptions DataOptions(const TrialConfig& c) {
  FeatureOptions o;
  o.target_frames = c.model.target_frames;
  o.max_frames = c.data.max_frames;
  o.num_mel_bins = c.model.num_mel_bins;
  o.threads = c.data.loader_threads;
  o.text_tokenizer = c.text.tokenizer;
  const std::string& cache = c.data.fbank_cache;
  if (cache.empty() || cache == "off") return o;
  o.memory_budget_bytes = c.data.feature_memory_mb << 20;
  if (cache == "auto") {
    o.cache_dir = JoinPath(c.data.path, ".fbank-cache");
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
  // The batch of each rank; with train.global_batch, a group whose size does not divide it is
  // refused here, before anything is read or trained.
  FLAP_ASSIGN_OR_RETURN(per_rank_batch_, PerRankBatch(config_.train, world_));
  global_batch_ = per_rank_batch_ * world_;
  FLAP_ASSIGN_OR_RETURN(rank_metrics_, StartRankMetrics(config_, rank_, log_in_, hooks_.metrics_server));
  wm_ = rank_metrics_->worker.get();
  if (rank_ == 0) log_ = &log_in_;
  return Status::OK();
}

Status Trainer::LoadData() {
  const DataConfig& d = config_.data;
  FLAP_ASSIGN_OR_RETURN(manifest_, sharding::ReadManifest(d.path));
  FLAP_ASSIGN_OR_RETURN(sharding::TextTokenizer tokenizer,
                        sharding::TextTokenizer::ForDataset(d.path, manifest_, config_.text.tokenizer));
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
  } else if (config_.train.global_batch > 0) {
    // One order for any group size: every rank reads the whole split as one rank would, and
    // keeps its slice of each global batch (loader.h, LoaderOptions::slice).
    auto fixed = FixedShardSource::Create(shards, 0, 1, global_batch_, config_.train.seed);
    if (!fixed.ok()) return fixed.status().WithContext("split '" + d.train_split + "'");
    for (const auto& shard : (*fixed)->shards()) train_clips_ += shard.num_samples;
    source_ = std::move(*fixed);
    loader_options_.slice = rank_;
    loader_options_.slices = world_;
  } else {
    auto fixed = FixedShardSource::Create(shards, rank_, world_, per_rank_batch_, config_.train.seed);
    if (!fixed.ok()) return fixed.status().WithContext("split '" + d.train_split + "'");
    for (const auto& shard : (*fixed)->shards()) train_clips_ += shard.num_samples;
    source_ = std::move(*fixed);
  }
  per_epoch_ = source_->StepsPerEpoch();
  FLAP_ASSIGN_OR_RETURN(augment_, sharding::ReadAugmentFile(d.path, manifest_));
  return Status::OK();
}

Status Trainer::BuildModel() {
  FLAP_RETURN_IF_ERROR(SetTextTower(&config_, *tokenizer_));
  outcome_.model = BuildSeededModel(&config_);
  // On the CPU; a text file recording another tokenizer is refused.
  FLAP_RETURN_IF_ERROR(
      WarmStart(outcome_.model, config_.model.init_audio, config_.model.init_text, *log_, &*tokenizer_));
  outcome_.model->to(device_);  // initialised on the CPU from the seed, the same on every device
  // The step budget: epochs, max_steps and max_samples, whichever is fewest steps.
  const TrainConfig& t = config_.train;
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
  step_budget_steps_ = total_steps_;
  explicit_schedule_ = config_.optim.total_steps != 0;
  if (!explicit_schedule_) config_.optim.total_steps = total_steps_;
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

// A checkpoint trained with another global batch would change the negatives of every later
// step: refused, naming both, unless forced. A checkpoint from before the global batch was
// saved passes.
Status Trainer::CheckGlobalBatch(const RunProgress& saved, bool force) const {
  if (saved.global_batch <= 0 || saved.global_batch == global_batch_) return Status::OK();
  std::string was = std::to_string(saved.global_batch);
  if (saved.world_sizes.is_array() && !saved.world_sizes.empty()) {
    const nlohmann::json& last = saved.world_sizes.back();
    was += " (" + std::to_string(last.value("world_size", 0)) + " rank(s) x " +
           std::to_string(last.value("per_rank_batch", int64_t{0})) + ")";
  }
  const std::string now = std::to_string(global_batch_) + " (" + std::to_string(world_) + " rank(s) x " +
                          std::to_string(per_rank_batch_) + ")";
  const std::string what = "checkpoint at step " + std::to_string(saved.step) + " of trial " + config_.TrialId() +
                           " was trained with global batch " + was + ", this group's is " + now;
  if (force) {
    *log_ << "WARNING: " << what << ": resumed anyway (--force), with another number of negatives per step"
          << std::endl;
    return Status::OK();
  }
  return Status::FailedPrecondition(what +
                                    ": a trial keeps its number of negatives; set train.global_batch (each rank "
                                    "then takes its share on any group size whose size divides it) or resume with "
                                    "--force");
}

bool Trainer::ReplaysFrom(const RunProgress& progress) {
  if (start_step_ % per_epoch_ == 0) return true;  // nothing of the epoch was trained
  const nlohmann::json& groups = progress.world_sizes;
  const bool same_group = groups.is_array() && !groups.empty() && groups.back().value("world_size", 0) == world_ &&
                          groups.back().value("per_rank_batch", int64_t{0}) == per_rank_batch_;
  std::string why;
  if (!same_group) {
    why = "it was made by a group of another size";
  } else {
    auto placed = PlaceStep(*source_, cursor_.epoch, cursor_.step_in_epoch, per_rank_batch_,
                            config_.data.shuffle_shards);
    if (placed.ok() && placed->shards_done == cursor_.shards_done && placed->position == cursor_.position &&
        placed->block == cursor_.block) {
      return true;
    }
    why = placed.ok() ? "its data cursor is not where this group's order places the step" : placed.status().ToString();
  }
  *log_ << "resuming at step " << start_step_ << " without replaying epoch " << cursor_.epoch << " (" << why
        << "): the epoch goes on with the shards it has left" << std::endl;
  return false;
}

Status Trainer::Restore(const ResumeOptions& resume) {
  const bool resuming = resume.resume || resume.from_step >= 0;
  if (config_.ckpt.root.empty() && resuming) return Status::InvalidArgument("--resume needs ckpt.root");
  // Rank 0 owns the trial's checkpoints; the others receive what it restores.
  if (!config_.ckpt.root.empty() && rank_ == 0) {
    FLAP_ASSIGN_OR_RETURN(ckpt_, Checkpointer::Open(config_.ckpt, config_.TrialId(), config_.Hash()));
    ckpt_->set_run_config(config_.ToJson());
    ckpt_->set_tokenizer(TokenizerRecord(*tokenizer_));
  }
  RunProgress progress;
  Status restored_ok = Status::OK();  // rank 0: why the checkpoint cannot be resumed
  if (ckpt_ && resuming) {
    auto restored = ckpt_->Restore(resume, outcome_.model, step_runner_->optimizer(), *log_);
    if (restored.ok()) {
      start_step_ = restored->step;
      progress = RunProgress::FromJson(restored->progress, start_step_, global_batch_);
      restored_ok = CheckGlobalBatch(progress, resume.force);
      if (restored_ok.ok()) {
        auto cursor = CursorForStep(restored->data_cursor, start_step_, per_epoch_);
        if (cursor.ok()) cursor_ = *cursor;
        restored_ok = cursor.status();
      }
      if (!restored->progress.is_object() && config_.train.max_seconds > 0) {
        *log_ << "checkpoint at step " << start_step_
              << " records no training seconds: the time budget counts from this resume" << std::endl;
      }
    } else if (restored.status().code() == Status::Code::kNotFound && resume.from_step < 0) {
      *log_ << "no checkpoint of trial " << config_.TrialId() << " yet: starting from step 0" << std::endl;
    } else {
      restored_ok = restored.status();
    }
  }
  // Whether the epoch's order is replayed up to the checkpoint's cursor (rank 0 decides).
  bool replay = true;
  if (restored_ok.ok() && ckpt_ && hooks_.make_source) replay = ReplaysFrom(progress);
  if (world_ > 1 && resuming) {
    // The other ranks learn whether rank 0 resumes at all, rather than wait for its state, and
    // whether it replays the epoch.
    FLAP_ASSIGN_OR_RETURN(const int64_t resumes,
                          BroadcastFromRankZero(*group_, restored_ok.ok() ? (replay ? 2 : 1) : 0));
    FLAP_RETURN_IF_ERROR(restored_ok);
    if (resumes == 0) return Status::FailedPrecondition("rank 0 could not resume the trial (its log says why)");
    replay = resumes == 2;
    progress.step = start_step_;
    FLAP_RETURN_IF_ERROR(ShareRestoredState(*group_, outcome_.model, step_runner_->optimizer(), &progress));
    start_step_ = progress.step;
  }
  FLAP_RETURN_IF_ERROR(restored_ok);
  // The group sizes the trial ran on: a new entry when this run's differs from the last one.
  groups_ = progress.world_sizes.is_array() ? progress.world_sizes : nlohmann::json::array();
  if (groups_.empty() || groups_.back().value("world_size", 0) != world_ ||
      groups_.back().value("per_rank_batch", int64_t{0}) != per_rank_batch_) {
    if (rank_ == 0 && !groups_.empty()) {
      *log_ << "resuming at step " << start_step_ << " on " << world_ << " rank(s) x " << per_rank_batch_
            << " where the trial last ran on " << groups_.back().value("world_size", 0) << " x "
            << groups_.back().value("per_rank_batch", int64_t{0}) << ": the same global batch of " << global_batch_
            << std::endl;
    }
    groups_.push_back({{"from_step", start_step_}, {"world_size", world_}, {"per_rank_batch", per_rank_batch_}});
  }
  trained_s0_ = progress.train_seconds;
  samples_ = progress.samples;
  flops_ = progress.flops;
  warmup_end_ = progress.warmup_end;
  fitted_steps_ = progress.fitted_steps;
  selected_ = Selection::FromJson(progress.selected);
  const TrainConfig& t = config_.train;
  if (t.max_samples > 0 && start_step_ > 0) {
    // The samples still due decide the steps left (the same as before unless the global batch
    // changed since the checkpoint).
    const int64_t left = std::max<int64_t>(0, t.max_samples - samples_);
    total_steps_ = std::min(per_epoch_ * t.epochs, start_step_ + (left + global_batch_ - 1) / global_batch_);
    if (t.max_steps > 0) total_steps_ = std::min(total_steps_, t.max_steps);
    step_budget_steps_ = total_steps_;
  }
  if (fitted_steps_ > 0 && fitted_steps_ < total_steps_) {
    total_steps_ = fitted_steps_;
    step_budget_ = "seconds";
  }
  if (!replay) {
    // The epoch's order cannot be replayed: continue the epoch at the checkpoint's step with
    // the shards the source still has.
    FLAP_RETURN_IF_ERROR(source_->ContinueEpoch(start_step_ / per_epoch_));
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
  TrialConfig loader_config = config_;
  loader_config.train.batch_size = per_rank_batch_;
  auto loader = StreamingLoader::Start(lo, loader_config, *tokenizer_, std::move(source_), cursor_);
  if (!loader.ok()) return loader.status().WithContext("data loader");
  loader_ = std::move(*loader);
  InstallStopSignalHandlers(config_.ckpt.stop_deadline);
  return Status::OK();
}

void Trainer::LogPlan() {
  const TrialConfig& c = config_;
  const int64_t b = per_rank_batch_;
  if (!manifest_.augment.is_null()) {
    *log_ << "augmented captions for " << augment_.size() << " clips from " << sharding::kAugmentFileName << " ("
          << manifest_.augment.value("method", "?") << ")" << std::endl;
  }
  *log_ << "train: " << train_clips_ << " clips streamed by " << loader_options_.threads
        << " loader threads, eval: " << eval_->size() << " clips / " << eval_->num_captions()
        << " captions, features in " << FormatDuration(load_s_) << "; preset " << c.model.preset << ", mask "
        << c.mask.ratio << " " << core::MaskStrategyName(c.mask.strategy) << " (" << kept_ << "/"
        << c.model.num_patches() << " tokens kept), loss.recon_weight " << c.loss.recon_weight << ", text.augment "
        << c.text.augment << "; " << total_steps_ << " steps of global batch " << global_batch_ << " (" << world_
        << " rank(s) x " << (c.train.global_batch > 0 ? "" : "train.batch_size ") << b << " per rank"
        << (c.train.global_batch > 0 ? " of train.global_batch" : "") << "; " << global_batch_
        << " negatives per step); threads: " << thread_plan_.compute << " compute + " << loader_options_.threads
        << " loader of " << cores_ << " cores (" << thread_plan_.why << "), " << allocator_ << "; device "
        << device_info_.device << " (" << device_info_.name << ", " << FormatGiB(device_info_.memory_bytes) << "), "
        << core::PrecisionName(precision_) << std::endl;
}

double Trainer::Now() const {
  return hooks_.clock ? hooks_.clock() : std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

// Training-loop seconds of this trial (earlier runs included), without this run's evaluations
// and waits for the loader.
double Trainer::TrainedSeconds() const {
  return trained_s0_ + (Now() - loop_t0_) - eval_budget_s_ - wait_budget_s_;
}

// The step the trial is expected to end at: the step budget, or earlier where the time budget
// runs out at this run's rate so far.
int64_t Trainer::PlannedSteps(int64_t at_step) const {
  int64_t planned = total_steps_;
  if (config_.train.max_flops > 0 && at_step > 0 && flops_ > 0) {
    const double left = std::max(0.0, config_.train.max_flops - flops_) / (flops_ / static_cast<double>(at_step));
    planned = std::min(planned, at_step + static_cast<int64_t>(std::ceil(left)));
  }
  if (config_.train.max_seconds <= 0 || fitted_steps_ > 0 || at_step <= start_step_) return planned;
  const double trained = TrainedSeconds();
  const double per_step = (trained - trained_s0_) / static_cast<double>(at_step - start_step_);
  if (!(per_step > 0)) return total_steps_;
  const double left = std::max(0.0, config_.train.max_seconds - trained) / per_step;
  return std::min(planned, at_step + static_cast<int64_t>(std::ceil(left)));
}

double Trainer::ScheduleProgress() const {
  double p = step_budget_steps_ > 0 ? static_cast<double>(step_) / static_cast<double>(step_budget_steps_) : 0.0;
  if (config_.train.max_flops > 0) p = std::max(p, flops_ / config_.train.max_flops);
  if (fitted_steps_ > 0) p = std::max(p, static_cast<double>(step_) / static_cast<double>(fitted_steps_));
  return std::min(1.0, p);
}

std::optional<double> Trainer::ScheduledLr() {
  if (explicit_schedule_) return std::nullopt;  // optim.total_steps: LearningRate over steps
  // With a time budget the cosine starts once the step count is fitted: until then the rate
  // stays at its peak after the warm-up.
  const bool fitting = config_.train.max_seconds > 0 && fitted_steps_ == 0;
  if (warmup_end_ < 0 && step_ >= config_.optim.warmup_steps && !fitting) warmup_end_ = ScheduleProgress();
  if (warmup_end_ < 0 && step_ >= config_.optim.warmup_steps) return config_.optim.lr;
  return core::ScheduledLearningRate(config_.optim, step_, ScheduleProgress(), std::max(0.0, warmup_end_));
}

// With a time budget, the step count is fixed from the throughput measured over a few steps
// (after this run's first, so neither start-up nor the loader's first features count), so that
// the schedule has a length to follow; saved in checkpoints, so a resume keeps it.
Status Trainer::FitStepsToSeconds() {
  constexpr int64_t kMeasuredSteps = 10;
  if (config_.train.max_seconds <= 0 || fitted_steps_ > 0) return Status::OK();
  if (fit_from_step_ < 0) {
    if (step_ > start_step_) {
      fit_from_step_ = step_;
      fit_from_s_ = TrainedSeconds();
    }
    return Status::OK();
  }
  if (step_ < fit_from_step_ + kMeasuredSteps) return Status::OK();
  int64_t fitted = total_steps_;
  double per_step = 0;
  if (rank_ == 0) {
    const double trained = TrainedSeconds();
    per_step = (trained - fit_from_s_) / static_cast<double>(step_ - fit_from_step_);
    if (per_step > 0) {
      const double left = std::max(0.0, config_.train.max_seconds - trained);
      fitted = std::min(total_steps_, step_ + static_cast<int64_t>(std::ceil(left / per_step)));
    }
  }
  FLAP_ASSIGN_OR_RETURN(fitted_steps_, BroadcastFromRankZero(*group_, fitted));
  if (fitted_steps_ < total_steps_) {
    total_steps_ = fitted_steps_;
    step_budget_ = "seconds";
  }
  char buf[160];
  std::snprintf(buf, sizeof(buf), "time budget: %lld steps in all at %.3f s per step (measured over steps %lld-%lld)",
                static_cast<long long>(fitted_steps_), per_step, static_cast<long long>(fit_from_step_),
                static_cast<long long>(step_));
  *log_ << buf << std::endl;
  return Status::OK();
}

double Trainer::Position() const {
  const std::string& unit = hooks_.eval_unit;
  if (unit == "samples") return static_cast<double>(samples_);
  if (unit == "flops") return flops_;
  if (unit == "seconds") return TrainedSeconds();
  return static_cast<double>(step_);
}

// Whether a point of hooks_.eval_at lies in (before, now]: rank 0's clock decides for seconds.
StatusOr<bool> Trainer::EvaluationDue(double before) {
  if (hooks_.eval_at.empty()) return false;
  const double now = hooks_.eval_unit == "steps" ? static_cast<double>(step_ + 1) : Position();
  bool due = false;
  for (double at : hooks_.eval_at) due = due || (before < at && at <= now);
  if (hooks_.eval_unit != "seconds" || world_ == 1) return due;
  FLAP_ASSIGN_OR_RETURN(const int64_t agreed, BroadcastFromRankZero(*group_, due ? 1 : 0));
  return agreed != 0;
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
      const double before = Position();
      FLAP_RETURN_IF_ERROR(Step(epoch, i));
      FLAP_ASSIGN_OR_RETURN(const bool rung_due, EvaluationDue(before));
      const bool eval_due = (t.eval_every > 0 && (step_ + 1) % t.eval_every == 0) || rung_due;
      if (eval_due && step_ + 1 < total_steps_) FLAP_RETURN_IF_ERROR(Evaluate(step_ + 1));
      // A checkpoint at each new choice of validation, so that a resumed trial still has the
      // weights it chose; and every ckpt.every steps.
      const bool chosen = eval_due && new_best_ && step_ + 1 != last_saved_;
      if (step_ + 1 < total_steps_ &&
          (chosen || (config_.ckpt.every > 0 && (step_ + 1) % config_.ckpt.every == 0))) {
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
  const int budget = rank_ == 0 ? SpentBudget(config_.train, TrainedSeconds(), samples_, flops_) : kBudgetNone;
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
  FLAP_RETURN_IF_ERROR(FitStepsToSeconds());
  if (step_ >= total_steps_) return Next::kBudgetSpent;  // the steps fitted to the time budget are done
  return Next::kStep;
}

Status Trainer::Step(int64_t epoch, int64_t i) {
  const auto t0 = Clock::now();
  const double wait_from = Now();
  auto batch = loader_->Next();
  wait_budget_s_ += Now() - wait_from;
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
  FLAP_ASSIGN_OR_RETURN(last_, step_runner_->Run(on_device, step_, ScheduledLr()));
  local_step_flops_ = core::StepFlops(config_.model, on_device, config_.loss.recon_weight > 0);
  FLAP_ASSIGN_OR_RETURN(const double step_flops, SumOverRanks(*group_, local_step_flops_));
  flops_ += step_flops;
  const double run = Since(t2), comm = last_.gather_s + last_.sync_s;
  if (wm_ != nullptr) wm_->ObserveStep(waited, std::max(0.0, run - comm), comm, per_rank_batch_);
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
                                          {"world_size", static_cast<double>(world_)},
                                          {"per_rank_batch", static_cast<double>(per_rank_batch_)},
                                          {"epoch", epochs},
                                          {"train_seconds", trained},
                                          {"samples", static_cast<double>(samples_)},
                                          {"flops", flops_},
                                          {"data_wait_seconds", wait_budget_s_}};
  if (config_.train.max_seconds > 0) values["max_seconds"] = config_.train.max_seconds;
  if (config_.train.max_flops > 0) values["max_flops"] = config_.train.max_flops;
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
  entry["flops"] = flops_;
  entry["eval_seconds"] = eval_dt;
  history_.push_back(entry);
  // Validation's choice: rank 0 keeps the weights of the best evaluation by ckpt.metric.
  new_best_ = false;
  if (rank_ == 0 && entry.contains(config_.ckpt.metric) && entry[config_.ckpt.metric].is_number()) {
    const double v = entry[config_.ckpt.metric].get<double>();
    if (std::isfinite(v) && (selected_.step < 0 || v > selected_.value)) {
      selected_ = Selection{v, step, flops_, trained, samples_};
      at::NoGradGuard no_grad;
      selected_weights_.clear();
      for (const auto& p : outcome_.model->parameters()) selected_weights_.push_back(p.detach().to(at::kCPU).clone());
      for (const auto& b : outcome_.model->buffers()) selected_weights_.push_back(b.detach().to(at::kCPU).clone());
      new_best_ = true;
    }
  }
  if (eval_ && rank_ == 0) {
    for (const auto& [k, v] : eval_->identity().ToRecord()) values[k] = v;
  }
  values["train_seconds"] = trained;
  values["samples"] = static_cast<double>(samples_);
  values["flops"] = flops_;
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

nlohmann::json Trainer::Selection::ToJson() const {
  return {{"value", value}, {"step", step}, {"flops", flops}, {"train_seconds", train_seconds}, {"samples", samples}};
}

Trainer::Selection Trainer::Selection::FromJson(const nlohmann::json& j) {
  Selection s;
  if (!j.is_object()) return s;
  s.value = j.value("value", 0.0);
  s.step = j.value("step", int64_t{-1});
  s.flops = j.value("flops", 0.0);
  s.train_seconds = j.value("train_seconds", 0.0);
  s.samples = j.value("samples", int64_t{0});
  return s;
}

// The test split, read here for the first and only time, evaluated on the weights validation
// chose: this run's copy, or the checkpoint of its step when the choice was made before a
// resume. Nothing decides on it; it is reported (summary's "test", a "test" record).
Status Trainer::EvaluateTest() {
  const std::string& split = config_.data.test_split;
  auto loaded = Dataset::Load(config_.data.path, split, feature_options_);
  if (!loaded.ok()) {
    if (loaded.status().code() != Status::Code::kNotFound) return loaded.status().WithContext("test split");
    *log_ << "test: not evaluated: " << loaded.status().message() << std::endl;
    test_ = {{"evaluated", false}, {"reason", loaded.status().message()}};
    return Status::OK();
  }
  const Dataset& test = *loaded;
  core::FlapModel& model = outcome_.model;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> tensors;
  for (const auto& p : model->parameters()) tensors.push_back(p.detach());
  for (const auto& b : model->buffers()) tensors.push_back(b.detach());
  std::vector<at::Tensor> final_weights;  // restored after the test, when swapped out
  Selection chosen = selected_;
  std::string note;
  if (chosen.step >= 0 && chosen.step != step_) {
    for (const auto& t : tensors) final_weights.push_back(t.clone());
    if (!selected_weights_.empty()) {
      for (size_t i = 0; i < tensors.size(); ++i) tensors[i].copy_(selected_weights_[i]);
    } else {
      Status loaded_choice = ckpt_ ? ckpt_->LoadModelAt(chosen.step, model)
                                   : Status::NotFound("no ckpt.root to read step " + std::to_string(chosen.step) + " from");
      if (!loaded_choice.ok()) {
        note = "the weights validation chose at step " + std::to_string(chosen.step) +
               " before the resume could not be read (" + loaded_choice.message() + "): the final weights are tested";
        *log_ << "test: " << note << std::endl;
        for (size_t i = 0; i < tensors.size(); ++i) tensors[i].copy_(final_weights[i]);
        chosen = Selection{0, step_, flops_, TrainedSeconds(), samples_};
      }
    }
  } else if (chosen.step < 0) {
    chosen = Selection{0, step_, flops_, TrainedSeconds(), samples_};
  }
  const double t0 = Now();
  const core::RetrievalMetrics m = worker::Evaluate(model, test, config_.train.eval_batch_size, precision_, eval_crop_);
  const double eval_dt = Now() - t0;
  for (size_t i = 0; i < final_weights.size(); ++i) tensors[i].copy_(final_weights[i]);
  nlohmann::json entry = MetricsToJson(m);
  std::map<std::string, double> values;
  for (auto& [k, v] : entry.items()) {
    if (v.is_number_float()) values[k] = v.get<double>();
  }
  for (const auto& [k, v] : test.identity().ToRecord()) values[k] = v;
  values["selected_step"] = static_cast<double>(chosen.step);
  values["flops"] = chosen.flops;
  values["train_seconds"] = chosen.train_seconds;
  values["samples"] = static_cast<double>(chosen.samples);
  values["eval_seconds"] = eval_dt;
  entry["evaluated"] = true;
  entry["split"] = test.identity().split;
  entry["set"] = test.Describe();
  entry["selected_step"] = chosen.step;
  entry["selected_by"] = config_.ckpt.metric;
  entry["flops"] = chosen.flops;
  entry["train_seconds"] = chosen.train_seconds;
  entry["samples"] = chosen.samples;
  if (!note.empty()) entry["note"] = note;
  test_ = entry;
  if (hooks_.report) hooks_.report("test", step_, step_ / per_epoch_, step_, values);
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "test  step %lld (chosen by validation %s): R@1 t2a %.1f%% a2t %.1f%%, R@10 t2a %.1f%% a2t %.1f%%, "
                "mAP@10 %.1f%% on ",
                static_cast<long long>(chosen.step), config_.ckpt.metric.c_str(), 100 * m.t2a_r1, 100 * m.a2t_r1,
                100 * m.t2a_r10, 100 * m.a2t_r10, 100 * m.map10);
  *log_ << buf << test.Describe() << std::endl;
  return Status::OK();
}

// The metrics of the evaluation made at `step`, for the checkpoint of that step (retention's
// best K): a checkpoint made at a step that was not evaluated has none, so the best kept are
// weights that were measured.
std::map<std::string, double> Trainer::MetricsForRetention(int64_t step) const {
  std::map<std::string, double> m;
  if (!history_.empty() && history_.back().value("step", int64_t{-1}) == step) {
    for (auto& [k, v] : history_.back().items()) {
      if (v.is_number() && k != "step" && k != "train_seconds" && k != "samples" && k != "flops" &&
          k != "eval_seconds") {
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
  Status s = ckpt_->SaveAsync(outcome_.model, step_runner_->optimizer(), step, per_epoch_, MetricsForRetention(step),
                              cursor_.ToJson(),
                              RunProgress{step, TrainedSeconds(), samples_, flops_, warmup_end_, fitted_steps_,
                                          selected_.step >= 0 ? selected_.ToJson() : nlohmann::json(), global_batch_,
                                          groups_}
                                  .ToJson());
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
        << " samples, " << std::scientific << std::setprecision(3) << flops_ << std::defaultfloat << " FLOPs"
        << std::endl;
  // The last evaluation, unless one was just made at this step.
  if (history_.empty() || history_.back().value("step", int64_t{-1}) != step_) FLAP_RETURN_IF_ERROR(Evaluate(step_));
  if (ckpt_ && step_ != last_saved_) FLAP_RETURN_IF_ERROR(Checkpoint(step_));
  if (ckpt_) FLAP_RETURN_IF_ERROR(ckpt_->Wait());
  // The final checkpoint holds the run's model: a failed save of it is not passed over as one
  // during training is, but tried again (a disk that filled up may free), until it is saved or
  // the checkpointer gives up on the storage (its storage fault; the agent's node fault, after
  // which the trial resumes from its previous checkpoint).
  for (int retry = 1; ckpt_ && ckpt_->consecutive_failed_saves() > 0; ++retry) {
    *log_ << "checkpoint: the final save at step " << step_ << " failed; trying it again in " << retry << " s"
          << std::endl;
    std::this_thread::sleep_for(std::chrono::seconds(retry));
    FLAP_RETURN_IF_ERROR(Checkpoint(step_));
    FLAP_RETURN_IF_ERROR(ckpt_->Wait());
  }
  ObserveSaves();
  if (hooks_.group == nullptr) FLAP_RETURN_IF_ERROR(group_->Shutdown());
  if (rank_ == 0) FLAP_RETURN_IF_ERROR(EvaluateTest());
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
  s["tokenizer"] = TokenizerRecord(*tokenizer_);
  s["audio_pos_layout"] = outcome_.model->config().audio_pos_layout;
  s["steps"] = step;
  s["epochs"] = static_cast<double>(step) / static_cast<double>(per_epoch_);
  s["samples_seen"] = samples_;
  s["budget"] = {{"reached", outcome_.budget_reached},
                 {"train_seconds", outcome_.train_seconds},
                 {"samples", samples_},
                 {"flops", flops_},
                 {"max_steps", total_steps_},
                 {"max_seconds", c.train.max_seconds},
                 {"max_samples", c.train.max_samples},
                 {"max_flops", c.train.max_flops},
                 {"fitted_steps", fitted_steps_},
                 {"loader_wait_seconds", wait_budget_s_}};
  // Where the learning-rate schedule ended: its progress through the binding budget (1 when a
  // budget ended the trial) and the rate it gives there (optim.min_lr at progress 1).
  const double progress = ScheduleProgress();
  s["schedule"] = {{"progress", progress},
                   {"lr", explicit_schedule_ ? core::LearningRate(c.optim, step)
                                             : core::ScheduledLearningRate(c.optim, step, progress,
                                                                           std::max(0.0, warmup_end_))},
                   {"warmup_end", warmup_end_},
                   {"fitted_steps", fitted_steps_}};
  s["resumed_from_step"] = start_step_;
  s["trial_id"] = c.TrialId();
  s["world_size"] = world_;
  s["rank"] = rank_;
  s["per_rank_batch"] = per_rank_batch_;
  s["world_sizes"] = groups_;
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
  s["val_split"] = c.data.val_split;
  s["test"] = test_;
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

nlohmann::json TokenizerRecord(const sharding::TextTokenizer& tokenizer) {
  return {{"kind", tokenizer.kind_name()},
          {"identity", tokenizer.identity()},
          {"vocab_size", tokenizer.vocab_size()},
          {"path", tokenizer.path()}};
}

StatusOr<core::FlapModel> LoadModel(TrialConfig* config, const sharding::TextTokenizer& tokenizer,
                                    const std::string& model_path, const c10::Device& device) {
  // A run's recorded config holds the shape it built: the warm-start file may be gone since.
  FLAP_RETURN_IF_ERROR(SetTextTower(config, tokenizer, std::filesystem::exists(config->model.init_text)));
  core::FlapModel model = BuildSeededModel(config);
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
  FLAP_ASSIGN_OR_RETURN(core::FlapModel model, LoadModel(&config, eval.tokenizer(), model_path, device));
  log << "evaluating " << (model_path.empty() ? "the untrained model" : "'" + model_path + "'") << " on split '"
      << config.data.val_split << "' on " << core::DescribeDevice(device).device << ", "
      << core::PrecisionName(precision) << std::endl;
  FLAP_ASSIGN_OR_RETURN(const EvalCrop eval_crop, ParseEvalCrop(config.eval.crop));
  return Evaluate(model, eval, config.train.eval_batch_size, precision, eval_crop);
}

}  // namespace flap::worker
