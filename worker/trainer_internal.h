// The pieces of RunTraining (trainer.h): the Trainer that runs one trial step by step, and
// the group agreements and host readings it uses. Internal to worker/: trainer.h is the
// contract.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "sharding/manifest.h"
#include "sharding/text_tokenizer.h"
#include "worker/checkpointer.h"
#include "config/trial_config.h"
#include "worker/core/collectives.h"
#include "worker/core/device.h"
#include "worker/core/train_step.h"
#include "worker/core/worker_group.h"
#include "worker/dataset.h"
#include "worker/evaluator.h"
#include "worker/loader.h"
#include "worker/thread_budget.h"
#include "worker/trainer.h"

namespace flap::metrics {
class WorkerMetrics;
}

namespace flap::worker::internal {

// This process's CPU time and minor page faults so far (getrusage).
struct HostUsage {
  double user_s = 0, system_s = 0;
  int64_t minor_faults = 0;
};
HostUsage ReadHostUsage();

// The budgets looked at before each step (the step budget is the loop's bound).
enum BudgetCode { kBudgetNone = 0, kBudgetSeconds = 1, kBudgetSamples = 2, kBudgetFlops = 3 };
const char* BudgetName(int code);
int SpentBudget(const TrainConfig& t, double trained_s, int64_t samples, double flops);

// How far a trial has come, as a checkpoint keeps it (its "progress") and a resume restores
// it: the step, the budgets' counters, and the schedule's state (trainer.h, "Schedule").
struct RunProgress {
  int64_t step = 0;
  double train_seconds = 0;  // training-loop seconds (evaluations and loader waits excluded)
  int64_t samples = 0;       // training samples of all ranks
  double flops = 0;          // model FLOPs of the training steps of all ranks
  double warmup_end = -1;    // the schedule's progress when the warm-up ended; < 0: not yet
  int64_t fitted_steps = 0;  // total steps fitted to train.max_seconds; 0: not yet
  // Validation's choice so far (Trainer::Selection::ToJson; null: none). Rank 0's only.
  nlohmann::json selected;
  // The global batch the trial trained with (0: a checkpoint from before it was saved) and the
  // group sizes it ran on: [{"from_step", "world_size", "per_rank_batch"}, ...], one entry
  // per change of size, oldest first. Rank 0's only.
  int64_t global_batch = 0;
  nlohmann::json world_sizes = nlohmann::json::array();
  nlohmann::json ToJson() const;  // without the step (the checkpoint has its own)
  // From a checkpoint's progress at `step` (null: a checkpoint from before progress was saved:
  // samples = step x global_batch, the rest unknown).
  static RunProgress FromJson(const nlohmann::json& j, int64_t step, int64_t global_batch);
};

// The sum of `local` over the ranks (every rank gets it; deterministic for a given group size).
StatusOr<double> SumOverRanks(core::WorkerGroup& g, double local);
// Rank 0's `value` on every rank.
StatusOr<int64_t> BroadcastFromRankZero(core::WorkerGroup& g, int64_t value);

// Whether any rank received a stop signal, or was asked to stop the trial (hooks), or rank 0
// found a budget spent: all ranks stop at the same step. The signal is the local one, or
// SIGTERM's number when only another rank got one; the budget is rank 0's (only rank 0 passes
// a non-zero one, so the sum is its code).
struct StopDecision {
  int signal = 0;
  bool asked = false;
  int budget = kBudgetNone;
};
StatusOr<StopDecision> AgreeOnStop(core::WorkerGroup& g, int local_signal, bool local_asked, int budget);

// After rank 0 restored a checkpoint: every rank takes its progress (step, budgets, schedule),
// parameters and optimizer state (serialised and broadcast), so that all ranks resume from the
// same state.
Status ShareRestoredState(core::WorkerGroup& g, core::FlapModel& model, torch::optim::Optimizer& optimizer,
                          RunProgress* progress);
// Rank 0's evaluation metrics, on every rank.
Status ShareMetrics(core::WorkerGroup& g, core::RetrievalMetrics* m);
// Losses averaged over the ranks (each rank's loss is its own rows' mean).
Status MeanLosses(core::WorkerGroup& g, core::StepStats* st);

// The loader cursor to resume at `step`: the checkpoint's own, checked against the step, or,
// for a checkpoint without one, the cursor the step implies.
StatusOr<LoaderCursor> CursorForStep(const nlohmann::json& saved, int64_t step, int64_t per_epoch);

// This rank's Prometheus endpoint (metrics.listen) and its file_sd target file
// (metrics.sd_dir), removed when training ends; or the worker metrics on a shared server.
struct RankMetrics {
  std::unique_ptr<metrics::MetricsServer> server;
  std::unique_ptr<metrics::WorkerMetrics> worker;
  std::string sd_file;
  int64_t saves_seen = 0;
  ~RankMetrics();
};
StatusOr<std::unique_ptr<RankMetrics>> StartRankMetrics(const TrialConfig& c, int rank, std::ostream& log,
                                                        metrics::MetricsServer* shared);

// Where a training step's wall time goes, summed over the steps of a run (summary.json's
// "step_seconds" divides them by the steps): the stop agreement before the step (checkpoint
// poll, hooks, budgets, the group's all-reduce), waiting for the loader's batch, the copy to
// the device, the step's forward (embedding gather included), backward (gradient sync
// included) and optimizer, and the bookkeeping after it (loss means, logs, metrics).
struct PhaseSeconds {
  double stop = 0, data_wait = 0, to_device = 0, forward = 0, backward = 0, optimizer = 0, bookkeeping = 0;
  double gather = 0, grad_sync = 0;  // within forward and backward
};

// One trial's training run. Create sets everything up (device, threads, worker group, data,
// model, checkpoint restore, loader); Run drives the loop: before each step the group agrees
// on stopping (signals, hooks, budgets), Step trains one batch, Evaluate and Checkpoint run
// when due, Finish evaluates last, saves and writes the summary. Not thread-safe.
class Trainer {
 public:
  static StatusOr<std::unique_ptr<Trainer>> Create(const TrialConfig& config, std::ostream& log,
                                                   const ResumeOptions& resume, const TrainingHooks& hooks);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  StatusOr<TrainOutcome> Run();

 private:
  using Clock = std::chrono::steady_clock;
  // What the check before a step decided.
  enum class Next { kStep, kBudgetSpent, kEnded };

  Trainer(const TrialConfig& config, std::ostream& log, const TrainingHooks& hooks);
  Status SetUpHost();                           // device, threads, precision, group, metrics
  Status LoadData();                            // manifest, tokenizer, eval split, shard source
  Status BuildModel();                          // model, warm start, step budget, the step
  Status Restore(const ResumeOptions& resume);  // checkpoint, shared state, loader cursor
  Status CheckGlobalBatch(const RunProgress& saved, bool force) const;
  // Rank 0, with a lease-backed source, after restoring a checkpoint (start_step_, cursor_):
  // whether the source replays the epoch up to the checkpoint's cursor. True at an epoch's
  // start, or when the checkpoint's group had this size and per-rank batch and the source places
  // the step where the cursor says; else false, said in the log.
  bool ReplaysFrom(const RunProgress& progress);
  Status StartLoader();
  void LogPlan();

  StatusOr<Next> BeforeStep();  // stop agreement; kEnded: outcome_ is final
  Status Step(int64_t epoch, int64_t i);
  void LogWindow();
  Status Evaluate(int64_t step);
  Status EvaluateTest();  // rank 0, once, at the end: the test split on validation's choice
  Status Checkpoint(int64_t step);
  void ObserveSaves();
  StatusOr<TrainOutcome> Finish();
  nlohmann::json Summary(double train_s) const;
  Status WriteOutputs() const;

  double Now() const;
  double TrainedSeconds() const;  // the budgets' clock
  int64_t PlannedSteps(int64_t at_step) const;
  // The schedule (trainer.h, "Schedule"): the fraction of the binding budget spent before step
  // step_, the learning rate of step step_, and the fit of the step count to train.max_seconds.
  double ScheduleProgress() const;
  std::optional<double> ScheduledLr();
  Status FitStepsToSeconds();
  // Where the run is in the unit of hooks_.eval_unit (steps, samples, flops, seconds).
  double Position() const;
  StatusOr<bool> EvaluationDue(double before);
  void Report(const std::string& kind, int64_t at_step, const std::map<std::string, double>& values);
  std::map<std::string, double> MetricsForRetention(int64_t step) const;

  TrialConfig config_;
  std::ostream& log_in_;
  std::ostream null_log_{nullptr};
  std::ostream* log_ = &null_log_;  // rank 0 speaks for the group
  const TrainingHooks& hooks_;
  const Clock::time_point start_ = Clock::now();

  // Host and group.
  c10::Device device_{c10::DeviceType::CPU};
  core::DeviceInfo device_info_;
  core::Precision precision_ = core::Precision::kFp32;
  EvalCrop eval_crop_ = EvalCrop::kChunks;
  std::string allocator_;
  int cores_ = 1;
  FeatureOptions feature_options_;
  ThreadPlan thread_plan_;
  std::unique_ptr<core::WorkerGroup> own_group_;
  core::WorkerGroup* group_ = nullptr;
  std::string launcher_name_ = "agent";
  int rank_ = 0, world_ = 1;
  std::unique_ptr<RankMetrics> rank_metrics_;
  metrics::WorkerMetrics* wm_ = nullptr;

  // Data.
  sharding::Manifest manifest_;
  std::optional<sharding::TextTokenizer> tokenizer_;
  std::optional<Dataset> eval_;
  double load_s_ = 0;
  std::unique_ptr<ShardSource> source_;
  int64_t train_clips_ = 0;
  int64_t per_epoch_ = 1;
  std::map<std::string, std::vector<std::string>> augment_;
  LoaderOptions loader_options_;
  std::unique_ptr<StreamingLoader> loader_;
  LoaderCursor cursor_;

  // Model and step.
  TrainOutcome outcome_;
  int64_t per_rank_batch_ = 0;  // PerRankBatch: train.global_batch / world size, or train.batch_size
  int64_t global_batch_ = 0;    // per_rank_batch_ x world size
  // The group sizes the trial has trained on (RunProgress::groups), this run's last.
  nlohmann::json groups_ = nlohmann::json::array();
  int64_t total_steps_ = 0;       // the loop's bound: the step budget, then the fitted steps
  int64_t step_budget_steps_ = 0;  // the step budget (epochs, max_steps, max_samples)
  std::string step_budget_ = "epochs";
  bool explicit_schedule_ = false;  // optim.total_steps was set: the schedule counts steps
  double local_step_flops_ = 0;     // this rank's FLOPs of its last step
  int kept_ = 0;
  std::unique_ptr<core::GroupGather> gather_;
  std::unique_ptr<core::GroupGradientSync> sync_;
  std::unique_ptr<core::TrainStep> step_runner_;
  std::unique_ptr<Checkpointer> ckpt_;

  // Progress.
  int64_t start_step_ = 0;
  int64_t step_ = 0;
  int64_t last_saved_ = 0;
  double trained_s0_ = 0;  // training seconds and samples before this run (the checkpoint's)
  int64_t samples_ = 0;
  double flops_ = 0;          // model FLOPs of all ranks' training steps, resumes included
  double warmup_end_ = -1;    // schedule progress when the warm-up ended; < 0: not yet
  int64_t fitted_steps_ = 0;  // total steps fitted to train.max_seconds; 0: not yet
  int64_t fit_from_step_ = -1;  // the fit's measurement: from this step, at this budget clock
  double fit_from_s_ = 0;
  bool stop_asked_ = false;         // rank 0: a hook asked to stop the trial
  int budget_spent_ = kBudgetNone;  // the budget (seconds, samples) that ended the loop
  nlohmann::json history_ = nlohmann::json::array();
  // Validation's choice (rank 0): the evaluation best by ckpt.metric (larger is better) so far,
  // resumes included, where the budgets stood then, and, when it was made in this run, a CPU
  // copy of the parameters and buffers it measured.
  struct Selection {
    double value = 0;
    int64_t step = -1;  // -1: none yet
    double flops = 0, train_seconds = 0;
    int64_t samples = 0;
    nlohmann::json ToJson() const;
    static Selection FromJson(const nlohmann::json& j);
  };
  Selection selected_;
  std::vector<at::Tensor> selected_weights_;  // empty: not made in this run
  bool new_best_ = false;                     // the last evaluation became validation's choice
  nlohmann::json test_;                       // the test evaluation (summary's "test")
  core::StepStats last_;
  PhaseSeconds phases_;
  double window_s_ = 0;
  int64_t window_steps_ = 0;
  Clock::time_point train_start_;
  HostUsage host_start_;
  double loop_t0_ = 0;
  double eval_s_ = 0;         // evaluations of this run, wall seconds
  double eval_budget_s_ = 0;  // evaluations and their reporting: not training time
  double wait_budget_s_ = 0;  // waits for the loader's batches: not training time either
};

}  // namespace flap::worker::internal
