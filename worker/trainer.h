// `flap-worker train` and `flap-worker eval` as library calls: one trial, standalone, on
// the device train.device selects (core/device.h: a GPU per rank, or the CPU) in the
// precision train.precision names. Training loads the dataset, builds the model from the
// config (the tokenizer sets the vocabulary size), runs TrainStep over the epochs with
// periodic evaluation, prints one progress line per `train.log_every` steps, and ends with a
// JSON summary (metrics, config, wall time) that is also written to train.output_dir.
//
// Several ranks: RunTraining first joins the worker group that the launcher's variables
// describe (dist.* keys; worker/core/launcher.h); with none it is a group of one. Each rank
// trains on its slice of every global batch (world size x train.batch_size), embeddings are
// gathered across ranks and gradients averaged, so parameters stay identical on every rank.
// Rank 0 logs, writes train.output_dir and owns the checkpoints. A rank that dies or hangs
// makes the others return DeadlineExceeded naming it, within dist.timeout.
//
// Group size. With train.global_batch set, the trial fixes its global batch (the negatives of
// every step) rather than its group: each rank takes global_batch / world size (a group whose
// size does not divide it is refused before anything runs, naming both sizes), and every rank
// reads the split in the order one rank would (each rank computes the features of every shard)
// and keeps its contiguous slice of each global batch, so the order, the steps per epoch, the
// data cursor and the schedule do not depend on the group's size. A checkpoint made by W ranks
// resumes on W' ranks with the same global batch, and the run ends with the parameters one
// rank would have reached, within float reduction order. Without it (train.batch_size per
// rank, each rank reading its own shards) a checkpoint resumes only on a group with the same
// global batch: another one is refused naming both, unless forced. Checkpoints and the summary
// list the group sizes the trial ran on ("world_sizes": from_step, world_size, per_rank_batch).
//
// Evaluation runs once per group: rank 0 evaluates and broadcasts the metrics, while the other
// ranks wait for them (so dist.timeout must exceed one evaluation on rank 0).
//
// Budgets. A trial trains until the first of: its step budget (train.epochs, train.max_steps,
// and train.max_samples / global batch, rounded up), train.max_seconds of training-loop wall
// time (evaluations and waits for the loader's batches excluded: their time is recorded
// apart), train.max_samples samples, or train.max_flops model FLOPs. FLOPs are counted per step
// from what the step computed (core::StepFlops: the audio tokens each clip kept, the caption
// width, the decoder when reconstruction is on) and summed over the ranks, so the same config
// and seed spend the same FLOPs on any machine: a FLOPs budget is the equal-compute budget that
// does not depend on the machine or its load. The budgets are looked at before each step, so a
// budget ends at the first step boundary at or past it. Rank 0 decides with its own clock and
// the group agrees on it in the same all-reduce as the stop signals, so every rank stops at the
// same step. Seconds trained, samples seen and FLOPs spent are saved in each checkpoint and
// continue from there on resume (a checkpoint made before they were saved resumes with
// samples = step x global batch and no seconds or FLOPs). Every evaluation records the training
// seconds, samples and FLOPs at which it was made (summary's eval_history; the "eval" report),
// and the summary's "budget" says which budget ended the trial.
//
// Schedule. Unless optim.total_steps is set (then the cosine counts steps to it), the
// learning rate follows the fraction of the binding budget spent: progress is the largest of
// step / step budget, FLOPs / train.max_flops and step / the steps fitted to train.max_seconds,
// so the cosine reaches optim.min_lr exactly when the first budget runs out. The warm-up is
// optim.warmup_steps steps; the cosine spans the progress left after it. With a time budget,
// the run measures its seconds per step over ten steps after its first and fixes its total
// steps from them (the rate stays at its peak until then, and the cosine spans the rest); the
// fitted count is saved in checkpoints, so a resume continues the same schedule (and the trial
// ends there, or earlier if the time runs out first). Step, sample and FLOPs budgets resume
// bit-exact on CPU.
//
// On CPU the same config and seed give bit-identical parameters: every random choice comes
// from the trial seed (model init through LibTorch's generator, masks, captions and order
// through core/draw.h). Not thread-safe; one call per process at a time (sets LibTorch's
// thread count).
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "worker/checkpointer.h"
#include "config/trial_config.h"
#include "worker/core/model.h"
#include "worker/core/retrieval.h"
#include "worker/dataset.h"
#include "worker/loader.h"

namespace flap::core {
class WorkerGroup;
}
namespace flap::metrics {
class MetricsServer;
}

namespace flap::worker {

struct TrainOutcome {
  nlohmann::json summary;
  core::RetrievalMetrics final_metrics;
  core::FlapModel model{nullptr};
  int stop_signal = 0;     // non-zero: stopped by this signal after a last checkpoint
  bool stopped = false;    // stopped because TrainingHooks::report or should_stop said so
  int64_t steps_done = 0;  // the step training reached
  // The budget that ended the trial: "epochs", "steps", "samples" or "seconds"; empty when it
  // was stopped (signal, hooks) before any.
  std::string budget_reached;
  double train_seconds = 0;      // training-loop seconds, resumes included (the budget's clock)
  int64_t samples_seen = 0;      // training samples of all ranks, resumes included
  int evaluations_computed = 0;  // evaluations this rank ran itself (rank 0: all; others: none)
};

// How a caller that runs trials for someone else (the agent: worker/agent.h) plugs into a
// run. Every member is optional; the defaults give the standalone `flap-worker train`.
struct TrainingHooks {
  // An existing worker group to train in (kept open afterwards); null: join the group that
  // the launcher's variables describe and leave it at the end.
  core::WorkerGroup* group = nullptr;
  // This rank's shard source over the training split's shards (manifest order); null: the
  // fixed source. A resumed run replays the epoch's order up to the checkpoint's cursor when
  // rank 0 finds that the checkpoint's group had this size and per-rank batch and that the
  // source places the checkpoint's step where its cursor says (PlaceStep: a lease-backed source
  // that reads by position); otherwise the source continues the epoch at the checkpoint's step
  // with what it has left (ShardSource::ContinueEpoch).
  std::function<StatusOr<std::unique_ptr<ShardSource>>(const std::vector<sharding::ShardInfo>& shards, int rank,
                                                       int world_size)>
      make_source;
  // Rank 0: called with each training record (kind "train": loss, contrastive, recon,
  // logit_scale, lr, samples_per_second, global_batch, negatives_per_step, epoch,
  // train_seconds, samples, and max_seconds when a time budget is set) at every log step and
  // each evaluation (kind "eval": t2a_r1 ... map10, train_seconds, samples, eval_seconds) at
  // the step it describes. With a time budget, total_steps is the step at which the budget is
  // expected to run out at the recent rate (never past the step budget).
  // Returning true stops the trial on every rank at the next step (no extra checkpoint).
  std::function<bool(const std::string& kind, int64_t step, int64_t epoch, int64_t total_steps,
                     const std::map<std::string, double>& values)>
      report;
  // Rank 0: a checkpoint is durable (saved, indexed and verified) at `ref` for `step`.
  std::function<void(const std::string& ref, int64_t step)> on_checkpoint;
  // Rank 0: polled before every step; true stops the trial like `report` does.
  std::function<bool()> should_stop;
  // Extra evaluations (ASHA's rungs), besides train.eval_every and the end: at the first step
  // boundary at or past each point of eval_at, counted in eval_unit: steps, samples (all
  // ranks), flops (model FLOPs of all ranks) or seconds (the training clock of the time
  // budget, rank 0's).
  std::string eval_unit = "steps";
  std::vector<double> eval_at;
  // Serve this rank's metrics on this server instead of starting one from metrics.listen.
  metrics::MetricsServer* metrics_server = nullptr;
  // Seconds on a monotonic clock, read by the time budget and the training seconds recorded
  // with each evaluation (rank 0's decides for the group); empty: std::chrono::steady_clock.
  std::function<double()> clock;
};

// With ckpt.root set, checkpoints every ckpt.every steps, at the end and when a stop signal
// arrives (stop_signal.h); `resume` picks the checkpoint to start from. A resumed run ends
// with the parameters an uninterrupted run would have had, bit for bit on CPU (with the fixed
// shard source).
StatusOr<TrainOutcome> RunTraining(const TrialConfig& config, std::ostream& log, const ResumeOptions& resume = {},
                                   const TrainingHooks& hooks = {});

// Joins the worker group that the launcher's variables describe (dist.* keys; a group of one
// without any) and says so on `log` when it has several ranks; *launcher_name gets the
// launcher found (env, mpi, slurm, none).
StatusOr<std::unique_ptr<core::WorkerGroup>> JoinWorkerGroup(const TrialConfig& config, std::ostream& log,
                                                             std::string* launcher_name = nullptr);

// Shared set-up of the worker's commands: LibTorch's intra-op threads (train.threads; 0 -> 1 on
// CPU), the in-memory dataset options of a config, and the model of a config with the
// tokenizer's vocabulary, padding and end ids, initialised from train.seed and then loaded from
// `model_path` (model.pt of a training run) unless it is empty. A roberta text tower takes its
// shape from model.init_text when that file exists (warm_start.h, ResolveTextTower; a run
// records the shape it built, so its model.pt loads without the file), written into *config.
// LoadModel: NotFound for a missing file, Corruption for one that does not fit the config,
// InvalidArgument for a tower the tokenizer or init_text cannot serve.
void SetThreads(int threads);
// The feature options of a config (frames, bins, feature threads, the caches data.fbank_cache
// names: auto = memory within data.feature_memory_mb plus DATA/.fbank-cache for the rest).
FeatureOptions DataOptions(const TrialConfig& config);
StatusOr<core::FlapModel> LoadModel(TrialConfig* config, const sharding::TextTokenizer& tokenizer,
                                    const std::string& model_path,
                                    const c10::Device& device = c10::Device(c10::DeviceType::CPU));
// What a run records of its tokenizer (state.json and summary.json "tokenizer"): kind,
// identity, vocab_size and path (sharding/text_tokenizer.h).
nlohmann::json TokenizerRecord(const sharding::TextTokenizer& tokenizer);

// The device train.device names for this rank (core/device.h: local rank, visible GPUs), made
// current. InvalidArgument when CUDA is asked for and none is visible.
StatusOr<c10::Device> TrainingDevice(const TrialConfig& config);

// Evaluates the model saved at `model_path` (model.pt of a training run) on data.eval_split;
// an empty path evaluates the untrained model initialised from train.seed (a baseline).
StatusOr<core::RetrievalMetrics> RunEvaluation(const TrialConfig& config, const std::string& model_path,
                                               std::ostream& log);

}  // namespace flap::worker
