#include "worker/trainer.h"

#include <ATen/Parallel.h>
#include <sys/resource.h>
#include <torch/serialize.h>
#include <torch/utils.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <ostream>
#include <sstream>
#include <thread>

#include "common/atomic_file.h"
#include "sharding/file_util.h"
#include "sharding/manifest.h"
#include "worker/core/collectives.h"
#include "worker/core/device.h"
#include "worker/core/masking.h"
#include "worker/core/worker_group.h"
#include "metrics/metrics.h"
#include "metrics/worker_metrics.h"
#include "worker/loader.h"
#include "worker/dataset.h"
#include "worker/evaluator.h"
#include "worker/stop_signal.h"
#include "worker/thread_budget.h"
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

// This process's CPU time and minor page faults so far.
struct HostUsage {
  double user_s = 0, system_s = 0;
  int64_t minor_faults = 0;
};
HostUsage ReadHostUsage() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  HostUsage u;
  u.user_s = static_cast<double>(ru.ru_utime.tv_sec) + 1e-6 * static_cast<double>(ru.ru_utime.tv_usec);
  u.system_s = static_cast<double>(ru.ru_stime.tv_sec) + 1e-6 * static_cast<double>(ru.ru_stime.tv_usec);
  u.minor_faults = ru.ru_minflt;
  return u;
}

std::string FormatDuration(double s) {
  char buf[32];
  const long total = static_cast<long>(s + 0.5);
  if (total >= 3600) std::snprintf(buf, sizeof(buf), "%ldh%02ldm", total / 3600, (total % 3600) / 60);
  else std::snprintf(buf, sizeof(buf), "%ldm%02lds", total / 60, total % 60);
  return buf;
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

namespace {

core::FlapModel BuildModel(TrialConfig* config, int vocab_size) {
  config->model.vocab_size = vocab_size;
  torch::manual_seed(config->train.seed);
  return core::FlapModel(config->model, config->loss.logit_scale_init);
}

Status WriteText(const std::string& path, const std::string& text) { return flap::WriteFileAtomic(path, text); }

// The loader cursor to resume at `step`: the checkpoint's own, checked against the step, or,
// for a checkpoint without one, the cursor the step implies.
StatusOr<LoaderCursor> CursorForStep(const nlohmann::json& saved, int64_t step, int64_t per_epoch) {
  if (saved.is_null()) return LoaderCursor{step / per_epoch, -1, 0, step % per_epoch, {}};
  FLAP_ASSIGN_OR_RETURN(LoaderCursor c, LoaderCursor::FromJson(saved, "checkpoint at step " + std::to_string(step)));
  if (c.epoch * per_epoch + c.step_in_epoch != step) {
    return Status::Corruption("checkpoint at step " + std::to_string(step) + ": its data cursor (epoch " +
                              std::to_string(c.epoch) + ", step " + std::to_string(c.step_in_epoch) +
                              ") does not match the step at " + std::to_string(per_epoch) + " steps per epoch");
  }
  return c;
}

// After rank 0 restored a checkpoint: every rank takes its step, budget progress (seconds
// trained, samples seen), parameters and optimizer state (serialised and broadcast), so that
// all ranks resume from the same state.
Status ShareRestoredState(core::WorkerGroup& g, core::FlapModel& model, torch::optim::Optimizer& optimizer,
                          int64_t* step, double* trained_s, int64_t* samples) {
  at::Tensor s = at::tensor({*step, *samples}, at::kLong);
  FLAP_RETURN_IF_ERROR(g.Broadcast(s, 0));
  *step = s[0].item<int64_t>();
  *samples = s[1].item<int64_t>();
  at::Tensor seconds = at::tensor({*trained_s}, at::kDouble);
  FLAP_RETURN_IF_ERROR(g.Broadcast(seconds, 0));
  *trained_s = seconds.item<double>();
  if (*step == 0) return Status::OK();
  {
    at::NoGradGuard no_grad;
    for (auto& p : model->parameters()) {
      at::Tensor d = p.detach();
      FLAP_RETURN_IF_ERROR(g.Broadcast(d, 0));
    }
    for (auto& b : model->buffers()) FLAP_RETURN_IF_ERROR(g.Broadcast(b, 0));
  }
  std::string bytes;
  if (g.rank() == 0) {
    std::ostringstream out;
    torch::save(optimizer, out);
    bytes = out.str();
  }
  FLAP_RETURN_IF_ERROR(core::BroadcastBytes(g, &bytes, 0));
  if (g.rank() != 0) {
    std::istringstream in(bytes);
    try {
      torch::load(optimizer, in, model->parameters().front().device());
    } catch (const c10::Error& e) {
      return Status::Corruption(std::string("optimizer state received from rank 0: ") + e.what_without_backtrace());
    }
  }
  return Status::OK();
}

// Whether any rank received a stop signal, or was asked to stop the trial (hooks), or rank 0
// found a budget spent: all ranks stop at the same step. The signal is the local one, or
// SIGTERM's number when only another rank got one; the budget is rank 0's (only rank 0 passes
// a non-zero one, so the sum is its code).
struct StopDecision {
  int signal = 0;
  bool asked = false;
  int budget = 0;  // BudgetCode
};

StatusOr<StopDecision> AgreeOnStop(core::WorkerGroup& g, int local_signal, bool local_asked, int budget) {
  if (g.world_size() == 1) return StopDecision{local_signal, local_asked, budget};
  at::Tensor flag = at::tensor({local_signal != 0 ? 1.0f : 0.0f, local_asked ? 1.0f : 0.0f,
                                g.rank() == 0 ? static_cast<float>(budget) : 0.0f},
                               at::kFloat);
  FLAP_RETURN_IF_ERROR(g.AllReduceSum(flag));
  StopDecision d;
  if (flag[0].item<float>() != 0.0f) d.signal = local_signal != 0 ? local_signal : 15;
  d.asked = flag[1].item<float>() != 0.0f;
  d.budget = static_cast<int>(std::lround(flag[2].item<float>()));
  return d;
}

// The budgets looked at before each step (the step budget is the loop's bound).
enum BudgetCode { kBudgetNone = 0, kBudgetSeconds = 1, kBudgetSamples = 2 };

const char* BudgetName(int code) {
  return code == kBudgetSeconds ? "seconds" : code == kBudgetSamples ? "samples" : "";
}

int SpentBudget(const TrainConfig& t, double trained_s, int64_t samples) {
  if (t.max_samples > 0 && samples >= t.max_samples) return kBudgetSamples;
  if (t.max_seconds > 0 && trained_s >= t.max_seconds) return kBudgetSeconds;
  return kBudgetNone;
}

// Rank 0's evaluation metrics, on every rank.
Status ShareMetrics(core::WorkerGroup& g, core::RetrievalMetrics* m) {
  if (g.world_size() == 1) return Status::OK();
  at::Tensor t = at::tensor({m->t2a_r1, m->t2a_r5, m->t2a_r10, m->a2t_r1, m->a2t_r5, m->a2t_r10, m->t2a_map10,
                             m->a2t_map10, m->map10, static_cast<double>(m->num_clips),
                             static_cast<double>(m->num_captions)},
                            at::kDouble);
  FLAP_RETURN_IF_ERROR(g.Broadcast(t, 0));
  const auto v = [&t](int i) { return t[i].item<double>(); };
  *m = core::RetrievalMetrics{v(0), v(1), v(2), v(3), v(4), v(5), v(6), v(7), v(8),
                              static_cast<int64_t>(std::llround(v(9))), static_cast<int64_t>(std::llround(v(10)))};
  return Status::OK();
}

// Losses averaged over the ranks (each rank's loss is its own rows' mean).
Status MeanLosses(core::WorkerGroup& g, core::StepStats* st) {
  if (g.world_size() == 1) return Status::OK();
  at::Tensor l = at::tensor({st->loss, st->contrastive, st->recon}, at::kDouble);
  FLAP_RETURN_IF_ERROR(g.AllReduceSum(l));
  l.div_(g.world_size());
  st->loss = l[0].item<double>();
  st->contrastive = l[1].item<double>();
  st->recon = l[2].item<double>();
  return Status::OK();
}

// This rank's Prometheus endpoint (metrics.listen) and its file_sd target file
// (metrics.sd_dir), removed when training ends.
struct RankMetrics {
  std::unique_ptr<metrics::MetricsServer> server;
  std::unique_ptr<metrics::WorkerMetrics> worker;
  std::string sd_file;
  int64_t saves_seen = 0;
  ~RankMetrics() {
    if (!sd_file.empty()) {
      std::error_code ec;
      std::filesystem::remove(sd_file, ec);
    }
  }
};

StatusOr<std::unique_ptr<RankMetrics>> StartRankMetrics(const TrialConfig& c, int rank, std::ostream& log,
                                                        metrics::MetricsServer* shared) {
  auto m = std::make_unique<RankMetrics>();
  if (shared != nullptr) {
    m->worker = std::make_unique<metrics::WorkerMetrics>(shared->registry(), c.TrialId(), rank);
    return m;
  }
  if (c.metrics.listen.empty()) return m;
  FLAP_ASSIGN_OR_RETURN(m->server, metrics::MetricsServer::Start(c.metrics.listen));
  m->worker = std::make_unique<metrics::WorkerMetrics>(m->server->registry(), c.TrialId(), rank);
  log << "rank " << rank << " serves metrics on http://" << m->server->endpoint() << "/metrics" << std::endl;
  if (!c.metrics.sd_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(c.metrics.sd_dir, ec);
    const std::string path = c.metrics.sd_dir + "/" + c.TrialId() + "-rank" + std::to_string(rank) + ".json";
    FLAP_RETURN_IF_ERROR(metrics::WriteFileSd(
        path, {{m->server->endpoint(), {{"trial", c.TrialId()}, {"rank", std::to_string(rank)}}}}));
    m->sd_file = path;
  }
  return m;
}

}  // namespace

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

StatusOr<TrainOutcome> RunTraining(const TrialConfig& config_in, std::ostream& log_in,
                                   const ResumeOptions& resume, const TrainingHooks& hooks) {
  TrialConfig config = config_in;
  FLAP_RETURN_IF_ERROR(config.Validate());
  if (config.data.path.empty()) return Status::InvalidArgument("data.path is not set");
  const auto start = Clock::now();
  FLAP_ASSIGN_OR_RETURN(const c10::Device device, TrainingDevice(config));
  const std::string allocator = core::TuneHostAllocator();
  const int cores = UsableCores();
  const FeatureOptions feature_options = DataOptions(config);
  const bool features_cached = feature_options.memory_budget_bytes > 0 || !feature_options.cache_dir.empty();
  const ThreadPlan thread_plan =
      PlanThreads(cores, device.is_cuda(), features_cached, config.train.threads, config.data.loader_threads);
  const int compute_threads = thread_plan.compute;
  core::SetComputeThreads(compute_threads);
  FLAP_ASSIGN_OR_RETURN(const core::Precision precision, core::ParsePrecision(config.train.precision));
  FLAP_ASSIGN_OR_RETURN(const EvalCrop eval_crop, ParseEvalCrop(config.eval.crop));
  const core::DeviceInfo device_info = core::DescribeDevice(device);
  std::unique_ptr<core::WorkerGroup> own_group;
  std::string launcher_name = "agent";
  if (hooks.group == nullptr) {
    FLAP_ASSIGN_OR_RETURN(own_group, JoinWorkerGroup(config, log_in, &launcher_name));
  }
  core::WorkerGroup& group = hooks.group != nullptr ? *hooks.group : *own_group;
  const int rank = group.rank(), world = group.world_size();
  FLAP_ASSIGN_OR_RETURN(std::unique_ptr<RankMetrics> rank_metrics,
                        StartRankMetrics(config, rank, log_in, hooks.metrics_server));
  metrics::WorkerMetrics* wm = rank_metrics->worker.get();
  // Rank 0 speaks for the group; the others only report their own failures (returned).
  std::ostream null_log(nullptr);
  std::ostream& log = rank == 0 ? log_in : null_log;

  FLAP_ASSIGN_OR_RETURN(sharding::Manifest manifest, sharding::ReadManifest(config.data.path));
  FLAP_ASSIGN_OR_RETURN(sharding::Tokenizer tokenizer,
                        sharding::Tokenizer::Load(config.data.path + "/" + manifest.tokenizer));
  FLAP_ASSIGN_OR_RETURN(Dataset eval, Dataset::Load(config.data.path, config.data.eval_split, DataOptions(config)));
  const double load_s = Since(start);
  const std::vector<sharding::ShardInfo> train_shards = manifest.ShardsOf(config.data.train_split);
  if (train_shards.empty()) {
    return Status::NotFound("dataset '" + config.data.path + "' has no shards in split '" + config.data.train_split + "'");
  }
  std::unique_ptr<ShardSource> source;
  int64_t train_clips = 0;
  if (hooks.make_source) {
    auto made = hooks.make_source(train_shards, rank, world);
    if (!made.ok()) return made.status().WithContext("split '" + config.data.train_split + "'");
    source = std::move(*made);
    for (const auto& shard : train_shards) train_clips += shard.num_samples;
  } else {
    auto fixed = FixedShardSource::Create(train_shards, rank, world, config.train.batch_size, config.train.seed);
    if (!fixed.ok()) return fixed.status().WithContext("split '" + config.data.train_split + "'");
    for (const auto& shard : (*fixed)->shards()) train_clips += shard.num_samples;
    source = std::move(*fixed);
  }
  const int64_t per_epoch = source->StepsPerEpoch();

  TrainOutcome outcome;
  outcome.model = BuildModel(&config, tokenizer.vocab_size());
  FLAP_RETURN_IF_ERROR(WarmStart(outcome.model, config.init_audio, config.init_text, log));  // on the CPU
  outcome.model->to(device);  // initialised on the CPU from the seed, the same on every device
  // The step budget: epochs, max_steps and max_samples, whichever is fewest steps.
  const int64_t global_batch = config.train.batch_size * world;
  int64_t total_steps = per_epoch * config.train.epochs;
  std::string step_budget = "epochs";
  if (config.train.max_steps > 0 && config.train.max_steps < total_steps) {
    total_steps = config.train.max_steps;
    step_budget = "steps";
  }
  const auto steps_for_samples = [global_batch](int64_t samples) { return (samples + global_batch - 1) / global_batch; };
  if (config.train.max_samples > 0 && steps_for_samples(config.train.max_samples) < total_steps) {
    total_steps = steps_for_samples(config.train.max_samples);
    step_budget = "samples";
  }
  if (config.optim.total_steps == 0) config.optim.total_steps = total_steps;
  core::GroupGather gather(&group);
  core::GradSyncOptions sync_options;
  sync_options.bucket_mb = config.dist.bucket_mb;
  sync_options.overlap = config.dist.overlap;
  core::GroupGradientSync sync(&group, sync_options);
  core::TrainStep step_runner(outcome.model, config.loss, config.optim, world > 1 ? &gather : nullptr,
                              world > 1 ? &sync : nullptr, precision);

  int64_t start_step = 0;
  double trained_s0 = 0;  // training seconds and samples before this run (from the checkpoint)
  int64_t samples = 0;
  LoaderCursor cursor;
  std::unique_ptr<Checkpointer> ckpt;
  // Rank 0 owns the trial's checkpoints; the others receive what it restores.
  if (!config.ckpt.root.empty() && rank == 0) {
    FLAP_ASSIGN_OR_RETURN(ckpt, Checkpointer::Open(config.ckpt, config.TrialId(), config.Hash()));
    if (resume.resume || resume.from_step >= 0) {
      auto restored = ckpt->Restore(resume, outcome.model, step_runner.optimizer(), log);
      if (restored.ok()) {
        start_step = restored->step;
        FLAP_ASSIGN_OR_RETURN(cursor, CursorForStep(restored->data_cursor, start_step, per_epoch));
        samples = start_step * global_batch;
        if (restored->progress.is_object()) {
          trained_s0 = restored->progress.value("train_seconds", 0.0);
          samples = restored->progress.value("samples", samples);
        } else if (config.train.max_seconds > 0) {
          log << "checkpoint at step " << start_step
              << " records no training seconds: the time budget counts from this resume" << std::endl;
        }
      } else if (restored.status().code() == Status::Code::kNotFound && resume.from_step < 0) {
        log << "no checkpoint of trial " << config.TrialId() << " yet: starting from step 0" << std::endl;
      } else {
        return restored.status();
      }
    }
  } else if (config.ckpt.root.empty() && (resume.resume || resume.from_step >= 0)) {
    return Status::InvalidArgument("--resume needs ckpt.root");
  }
  if (world > 1 && (resume.resume || resume.from_step >= 0)) {
    FLAP_RETURN_IF_ERROR(
        ShareRestoredState(group, outcome.model, step_runner.optimizer(), &start_step, &trained_s0, &samples));
  }
  if (config.train.max_samples > 0 && start_step > 0) {
    // The samples still due decide the steps left (the same as before unless the global batch
    // changed since the checkpoint).
    const int64_t left = std::max<int64_t>(0, config.train.max_samples - samples);
    total_steps = std::min(per_epoch * config.train.epochs, start_step + steps_for_samples(left));
    if (config.train.max_steps > 0) total_steps = std::min(total_steps, config.train.max_steps);
  }
  if (!hooks.exact_resume) {
    // The epoch's order cannot be replayed: continue the epoch at the checkpoint's step with
    // the shards the source still has.
    cursor = LoaderCursor{start_step / per_epoch, 0, 0, start_step % per_epoch, {}};
  } else if (world > 1) {
    // Only rank 0 reads checkpoints; every rank places its own shards' cursor at the shared
    // step (exact for the fixed shard source: loader.h).
    FLAP_ASSIGN_OR_RETURN(cursor, CursorForStep(nullptr, start_step, per_epoch));
  }
  LoaderOptions lo;
  lo.dataset_dir = config.data.path;
  lo.threads = thread_plan.loader;
  lo.shuffle_shards = config.data.shuffle_shards;
  lo.prefetch_batches = config.data.prefetch_batches;
  lo.pin_memory = device.is_cuda();
  lo.features = feature_options;
  FLAP_ASSIGN_OR_RETURN(auto augment, sharding::ReadAugmentFile(config.data.path, manifest));
  lo.features.augment = &augment;
  auto loader_or = StreamingLoader::Start(lo, config, tokenizer, std::move(source), cursor);
  if (!loader_or.ok()) return loader_or.status().WithContext("data loader");
  std::unique_ptr<StreamingLoader> loader = std::move(*loader_or);
  InstallStopSignalHandlers(config.ckpt.stop_deadline);

  const int64_t b = config.train.batch_size;
  const int kept = core::NumKept(config.mask, {config.model.freq_patches(), config.model.time_patches()});
  if (!manifest.augment.is_null()) {
    log << "augmented captions for " << augment.size() << " clips from " << sharding::kAugmentFileName << " ("
        << manifest.augment.value("method", "?") << ")" << std::endl;
  }
  log << "train: " << train_clips << " clips streamed by " << lo.threads << " loader threads, eval: " << eval.size() << " clips / " << eval.num_captions()
      << " captions, features in " << FormatDuration(load_s) << "; preset " << config.preset << ", mask "
      << config.mask.ratio << " " << core::MaskStrategyName(config.mask.strategy) << " (" << kept << "/"
      << config.model.num_patches() << " tokens kept), recon.weight " << config.loss.recon_weight
      << ", text.augment " << config.augment << "; " << total_steps << " steps of global batch " << b * world
      << " (" << world << " rank(s) x train.batch_size " << b << " per rank; " << b * world
      << " negatives per step); threads: " << compute_threads << " compute + " << lo.threads << " loader of "
      << cores << " cores (" << thread_plan.why << "), " << allocator << "; device " << device_info.device << " ("
      << device_info.name << ", " << FormatGiB(device_info.memory_bytes) << "), " << core::PrecisionName(precision)
      << std::endl;

  nlohmann::json history = nlohmann::json::array();
  core::StepStats last;
  double fwd_s = 0, bwd_s = 0, opt_s = 0, gather_s = 0, sync_s = 0, window_s = 0, wait_s = 0;
  int64_t window_steps = 0;
  const auto train_start = Clock::now();
  const HostUsage host_start = ReadHostUsage();
  double eval_s = 0;
  bool stop_asked = false;  // rank 0: a hook asked to stop the trial
  // The budgets' clock: training-loop seconds of this trial (earlier runs included), without
  // the evaluations of this run (eval_budget_s).
  const auto now = [&hooks]() {
    return hooks.clock ? hooks.clock() : std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
  };
  const double loop_t0 = now();
  double eval_budget_s = 0;
  const auto trained_seconds = [&]() { return trained_s0 + (now() - loop_t0) - eval_budget_s; };
  // The step the trial is expected to end at: the step budget, or earlier where the time
  // budget runs out at this run's rate so far.
  const auto planned_steps = [&](int64_t at_step) {
    if (config.train.max_seconds <= 0 || at_step <= start_step) return total_steps;
    const double trained = trained_seconds();
    const double per_step = (trained - trained_s0) / static_cast<double>(at_step - start_step);
    if (!(per_step > 0)) return total_steps;
    const double left = std::max(0.0, config.train.max_seconds - trained) / per_step;
    return std::min(total_steps, at_step + static_cast<int64_t>(std::ceil(left)));
  };
  auto report = [&](const std::string& kind, int64_t at_step, const std::map<std::string, double>& values) {
    if (rank == 0 && hooks.report &&
        hooks.report(kind, at_step, at_step / per_epoch, planned_steps(at_step), values)) {
      stop_asked = true;
    }
  };
  // Rank 0 evaluates, every rank receives the metrics.
  auto evaluate = [&](int64_t step) -> Status {
    const double t0 = now();
    const double trained = trained_seconds();
    if (rank == 0) {
      outcome.final_metrics = Evaluate(outcome.model, eval, config.train.eval_batch_size, precision, eval_crop);
      ++outcome.evaluations_computed;
    }
    FLAP_RETURN_IF_ERROR(ShareMetrics(group, &outcome.final_metrics));
    const double eval_dt = now() - t0;
    eval_s += eval_dt;
    nlohmann::json entry = MetricsToJson(outcome.final_metrics);
    std::map<std::string, double> values;
    for (auto& [k, v] : entry.items()) {
      if (v.is_number_float()) values[k] = v.get<double>();
    }
    if (wm != nullptr) wm->SetEvaluation(values);
    entry["step"] = step;
    entry["train_seconds"] = trained;
    entry["samples"] = samples;
    entry["eval_seconds"] = eval_dt;
    history.push_back(entry);
    values["train_seconds"] = trained;
    values["samples"] = static_cast<double>(samples);
    values["eval_seconds"] = eval_dt;
    report("eval", step, values);
    char buf[224];
    std::snprintf(buf, sizeof(buf),
                  "eval  step %lld (%.1f s, %lld samples trained): R@1 t2a %.1f%% a2t %.1f%%, R@10 t2a %.1f%% a2t "
                  "%.1f%%, mAP@10 %.1f%% (%.1f s)",
                  static_cast<long long>(step), trained, static_cast<long long>(samples),
                  100 * outcome.final_metrics.t2a_r1, 100 * outcome.final_metrics.a2t_r1,
                  100 * outcome.final_metrics.t2a_r10, 100 * outcome.final_metrics.a2t_r10,
                  100 * outcome.final_metrics.map10, eval_dt);
    log << buf << std::endl;
    eval_budget_s += now() - t0;  // reporting it is not training either
    return Status::OK();
  };

  auto metrics_for_retention = [&]() {
    std::map<std::string, double> m;
    if (!history.empty()) {
      for (auto& [k, v] : history.back().items()) {
        if (v.is_number() && k != "step" && k != "train_seconds" && k != "samples" && k != "eval_seconds") {
          m[k] = v.get<double>();
        }
      }
    }
    return m;
  };
  // Reports checkpoints finished since the last call to the metrics.
  auto observe_saves = [&]() {
    if (ckpt && ckpt->saves_completed() != rank_metrics->saves_seen) {
      rank_metrics->saves_seen = ckpt->saves_completed();
      if (wm != nullptr) wm->ObserveCheckpoint(ckpt->last_save_seconds(), ckpt->last_save_bytes());
      if (hooks.on_checkpoint) hooks.on_checkpoint(ckpt->CheckpointRef(ckpt->last_saved_step()), ckpt->last_saved_step());
    }
  };
  auto save = [&](int64_t at_step) -> Status {
    if (!ckpt) return Status::OK();
    Status s = ckpt->SaveAsync(outcome.model, step_runner.optimizer(), at_step, per_epoch, metrics_for_retention(),
                               cursor.ToJson(), {{"train_seconds", trained_seconds()}, {"samples", samples}});
    observe_saves();
    return s;
  };
  if (wm != nullptr) wm->SetBatch(b * world, b * world);

  int64_t step = start_step;
  int64_t last_saved = start_step;
  int budget_spent = kBudgetNone;  // a budget looked at before each step ended the loop
  for (int64_t epoch = start_step / per_epoch; step < total_steps && budget_spent == kBudgetNone; ++epoch) {
    for (int64_t i = step % per_epoch; i < per_epoch && step < total_steps; ++i, ++step) {
      if (ckpt) {
        FLAP_RETURN_IF_ERROR(ckpt->Poll());
        observe_saves();
      }
      if (rank == 0 && hooks.should_stop && hooks.should_stop()) stop_asked = true;
      const int budget = rank == 0 ? SpentBudget(config.train, trained_seconds(), samples) : kBudgetNone;
      FLAP_ASSIGN_OR_RETURN(const StopDecision stop, AgreeOnStop(group, StopRequested(), stop_asked, budget));
      const int sig = stop.signal;
      outcome.train_seconds = trained_seconds();
      outcome.samples_seen = samples;
      if (sig == 0 && stop.asked) {
        if (ckpt) FLAP_RETURN_IF_ERROR(ckpt->Wait());
        observe_saves();
        log << "trial stopped at step " << step << " as asked (early stopping or cancellation)" << std::endl;
        outcome.stopped = true;
        outcome.steps_done = step;
        outcome.summary = {{"stopped", true}, {"step", step}, {"config_hash", config.Hash()}};
        return outcome;
      }
      if (sig != 0) {
        if (step != last_saved) FLAP_RETURN_IF_ERROR(save(step));
        if (ckpt) FLAP_RETURN_IF_ERROR(ckpt->Wait());
        observe_saves();
        outcome.steps_done = step;
        log << "stopped by signal " << sig << " at step " << step
            << (ckpt ? ", checkpoint taken" : " (no ckpt.root: nothing saved)") << std::endl;
        outcome.stop_signal = sig;
        outcome.summary = {{"stopped_by_signal", sig}, {"step", step}, {"config_hash", config.Hash()}};
        return outcome;
      }
      if (stop.budget != kBudgetNone) {
        budget_spent = stop.budget;
        break;
      }
      const auto t = Clock::now();
      auto batch = loader->Next();
      if (!batch.ok()) return batch.status().WithContext("training data at step " + std::to_string(step));
      if (batch->epoch != epoch || batch->step_in_epoch != i) {
        return Status::Internal("loader out of step: batch of epoch " + std::to_string(batch->epoch) + " step " +
                                std::to_string(batch->step_in_epoch) + " where epoch " + std::to_string(epoch) +
                                " step " + std::to_string(i) + " was due");
      }
      const double waited = Since(t);
      wait_s += waited;
      const auto run_start = Clock::now();
      FLAP_ASSIGN_OR_RETURN(last, step_runner.Run(core::ToDevice(batch->batch, device), step));
      if (wm != nullptr) {
        const double run = Since(run_start), comm = last.gather_s + last.sync_s;
        wm->ObserveStep(waited, std::max(0.0, run - comm), comm, b);
      }
      cursor = batch->after;
      samples += global_batch;
      gather_s += last.gather_s;
      sync_s += last.sync_s;
      const bool log_now = (step + 1) % config.train.log_every == 0 || step + 1 == total_steps;
      if (log_now) FLAP_RETURN_IF_ERROR(MeanLosses(group, &last));
      if (!std::isfinite(last.loss)) {
        return Status::Internal("loss became " + std::to_string(last.loss) + " at step " + std::to_string(step) +
                                " (lower optim.lr?)");
      }
      window_s += Since(t);
      ++window_steps;
      fwd_s += last.forward_s;
      bwd_s += last.backward_s;
      opt_s += last.optimizer_s;
      if (log_now) {
        const double rate = static_cast<double>(window_steps * b * world) / window_s;
        const int64_t planned = planned_steps(step + 1);
        const double eta = static_cast<double>(planned - step - 1) * window_s / static_cast<double>(window_steps);
        const double trained = trained_seconds();
        char budget_text[64] = "";
        if (config.train.max_seconds > 0) {
          std::snprintf(budget_text, sizeof(budget_text), " | trained %.0f/%.0f s", trained, config.train.max_seconds);
        }
        char buf[320];
        std::snprintf(buf, sizeof(buf),
                      "step %lld/%lld epoch %.2f loss %.4f (contrastive %.4f recon %.4f) scale %.1f lr %.2e | %.1f samples/s%s | eta %s",
                      static_cast<long long>(step + 1), static_cast<long long>(planned),
                      static_cast<double>(step + 1) / static_cast<double>(per_epoch), last.loss, last.contrastive,
                      last.recon, last.logit_scale, last.lr, rate, budget_text, FormatDuration(eta).c_str());
        log << buf << std::endl;
        std::map<std::string, double> values = {{"loss", last.loss},
                                                {"contrastive", last.contrastive},
                                                {"recon", last.recon},
                                                {"logit_scale", last.logit_scale},
                                                {"lr", last.lr},
                                                {"samples_per_second", rate},
                                                {"global_batch", static_cast<double>(b * world)},
                                                {"negatives_per_step", static_cast<double>(b * world)},
                                                {"epoch", static_cast<double>(step + 1) / static_cast<double>(per_epoch)},
                                                {"train_seconds", trained},
                                                {"samples", static_cast<double>(samples)}};
        if (config.train.max_seconds > 0) values["max_seconds"] = config.train.max_seconds;
        report("train", step + 1, values);
        if (wm != nullptr) {
          wm->SetProgress(step + 1, static_cast<double>(step + 1) / static_cast<double>(per_epoch), rate);
          wm->SetLosses(last.loss, last.contrastive, last.recon, last.logit_scale);
          wm->UpdateMemory();
        }
        window_s = 0;
        window_steps = 0;
      }
      const bool eval_due = (config.train.eval_every > 0 && (step + 1) % config.train.eval_every == 0) ||
                            std::find(hooks.eval_steps.begin(), hooks.eval_steps.end(), step + 1) != hooks.eval_steps.end();
      if (eval_due && step + 1 < total_steps) FLAP_RETURN_IF_ERROR(evaluate(step + 1));
      if (config.ckpt.every > 0 && (step + 1) % config.ckpt.every == 0 && step + 1 < total_steps) {
        FLAP_RETURN_IF_ERROR(save(step + 1));
        last_saved = step + 1;
      }
    }
  }
  const double train_s = Since(train_start) - eval_s;
  outcome.train_seconds = trained_seconds();
  outcome.samples_seen = samples;
  outcome.budget_reached = budget_spent != kBudgetNone ? BudgetName(budget_spent) : step_budget;
  log << "training budget reached (" << outcome.budget_reached << ") at step " << step << ": " << std::fixed
      << std::setprecision(1) << outcome.train_seconds << std::defaultfloat << " s trained, " << samples
      << " samples" << std::endl;
  // The last evaluation, unless one was just made at this step.
  if (history.empty() || history.back().value("step", int64_t{-1}) != step) FLAP_RETURN_IF_ERROR(evaluate(step));
  if (ckpt && step != last_saved) FLAP_RETURN_IF_ERROR(save(step));
  if (ckpt) FLAP_RETURN_IF_ERROR(ckpt->Wait());
  observe_saves();
  if (hooks.group == nullptr) FLAP_RETURN_IF_ERROR(group.Shutdown());
  outcome.steps_done = step;

  nlohmann::json& s = outcome.summary;
  s["config"] = config.ToJson();
  s["config_hash"] = config.Hash();
  s["steps"] = step;
  s["epochs"] = static_cast<double>(step) / static_cast<double>(per_epoch);
  s["samples_seen"] = samples;
  s["budget"] = {{"reached", outcome.budget_reached},
                 {"train_seconds", outcome.train_seconds},
                 {"samples", samples},
                 {"max_steps", total_steps},
                 {"max_seconds", config.train.max_seconds},
                 {"max_samples", config.train.max_samples}};
  s["resumed_from_step"] = start_step;
  s["trial_id"] = config.TrialId();
  s["world_size"] = world;
  s["rank"] = rank;
  s["per_rank_batch"] = b;
  s["global_batch"] = b * world;
  s["negatives_per_step"] = b * world;
  s["dist"] = {{"launcher", launcher_name},
               {"backend", group.backend()},
               {"overlap", config.dist.overlap},
               {"bucket_mb", config.dist.bucket_mb},
               {"buckets", world > 1 ? sync.num_buckets() : 0}};
  s["tokens_kept"] = kept;
  s["device"] = {{"device", device_info.device},
                 {"name", device_info.name},
                 {"memory_bytes", device_info.memory_bytes},
                 {"precision", core::PrecisionName(precision)},
                 {"peak_memory_bytes", core::PeakMemoryBytes(device)}};
  s["final_loss"] = {{"total", last.loss}, {"contrastive", last.contrastive}, {"recon", last.recon},
                     {"logit_scale", last.logit_scale}};
  s["eval"] = MetricsToJson(outcome.final_metrics);
  s["eval_history"] = history;
  s["samples_per_second"] = train_s > 0 ? static_cast<double>(step * b * world) / train_s : 0.0;
  const LoaderStats ls = loader->stats();
  s["data"] = {{"wait_seconds", wait_s},
               {"wait_fraction", train_s > 0 ? wait_s / train_s : 0.0},
               {"shards_computed", ls.shards_computed},
               {"shards_from_cache", ls.shards_cached},
               {"shards_from_memory", ls.shards_from_memory},
               {"loader_threads", lo.threads},
               {"loader_busy_seconds", ls.busy_seconds}};
  const HostUsage host_end = ReadHostUsage();
  const double cpu_s = (host_end.user_s - host_start.user_s) + (host_end.system_s - host_start.system_s);
  s["host"] = {{"cores", cores},
               {"compute_threads", compute_threads},
               {"loader_threads", lo.threads},
               {"allocator", allocator},
               {"minor_faults_per_step", static_cast<double>(host_end.minor_faults - host_start.minor_faults) /
                                             static_cast<double>(std::max<int64_t>(1, step - start_step))},
               {"system_time_share", cpu_s > 0 ? (host_end.system_s - host_start.system_s) / cpu_s : 0.0}};
  for (const std::string& n : ls.notes) log << "loader: " << n << std::endl;
  const double steps_run = static_cast<double>(std::max<int64_t>(1, step - start_step));
  s["step_seconds"] = {{"forward", fwd_s / steps_run},
                       {"backward", bwd_s / steps_run},
                       {"optimizer", opt_s / steps_run},
                       {"gather", gather_s / steps_run},
                       {"grad_sync", sync_s / steps_run}};
  s["wall_seconds"] = Since(start);
  s["train_seconds"] = train_s;
  s["eval_seconds"] = eval_s;

  if (!config.train.output_dir.empty() && rank == 0) {
    std::error_code ec;
    std::filesystem::create_directories(config.train.output_dir, ec);
    if (ec) return Status::IOError("cannot create train.output_dir '" + config.train.output_dir + "': " + ec.message());
    const std::string model_path = config.train.output_dir + "/model.pt";
    std::ostringstream model_bytes;
    try {
      torch::save(outcome.model, model_bytes);
    } catch (const c10::Error& e) {
      return Status::IOError("cannot save '" + model_path + "': " + e.what_without_backtrace());
    }
    FLAP_RETURN_IF_ERROR(flap::WriteFileAtomic(model_path, model_bytes.str()));
    FLAP_RETURN_IF_ERROR(WriteText(config.train.output_dir + "/summary.json", s.dump(2) + "\n"));
  }
  return outcome;
}

StatusOr<core::FlapModel> LoadModel(TrialConfig* config, int vocab_size, const std::string& model_path,
                                     const c10::Device& device) {
  core::FlapModel model = BuildModel(config, vocab_size);
  model->to(device);
  if (model_path.empty()) return model;
  if (!std::filesystem::exists(model_path)) return Status::NotFound("model file '" + model_path + "' does not exist");
  try {
    torch::load(model, model_path, device);
  } catch (const c10::Error& e) {
    return Status::Corruption("model file '" + model_path + "' does not match this config or is damaged: " +
                              e.what_without_backtrace());
  }
  return model;
}

StatusOr<core::RetrievalMetrics> RunEvaluation(const TrialConfig& config_in, const std::string& model_path,
                                               std::ostream& log) {
  TrialConfig config = config_in;
  FLAP_RETURN_IF_ERROR(config.Validate());
  if (config.data.path.empty()) return Status::InvalidArgument("data.path is not set");
  SetThreads(config.train.threads);
  FLAP_ASSIGN_OR_RETURN(Dataset eval, Dataset::Load(config.data.path, config.data.eval_split, DataOptions(config)));
  FLAP_ASSIGN_OR_RETURN(const c10::Device device, TrainingDevice(config));
  FLAP_ASSIGN_OR_RETURN(const core::Precision precision, core::ParsePrecision(config.train.precision));
  FLAP_ASSIGN_OR_RETURN(core::FlapModel model,
                        LoadModel(&config, eval.tokenizer().vocab_size(), model_path, device));
  log << "evaluating " << (model_path.empty() ? "the untrained model" : "'" + model_path + "'") << " on split '"
      << config.data.eval_split << "' on " << core::DescribeDevice(device).device << ", "
      << core::PrecisionName(precision) << std::endl;
  FLAP_ASSIGN_OR_RETURN(const EvalCrop eval_crop, ParseEvalCrop(config.eval.crop));
  return Evaluate(model, eval, config.train.eval_batch_size, precision, eval_crop);
}

}  // namespace flap::worker
