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
#include "worker/config.h"
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
  int stop_signal = 0;      // non-zero: stopped by this signal after a last checkpoint
  bool stopped = false;     // stopped because TrainingHooks::report or should_stop said so
  int64_t steps_done = 0;   // the step training reached
};

// How a caller that runs trials for someone else (the agent: worker/agent.h) plugs into a
// run. Every member is optional; the defaults give the standalone `flap-worker train`.
struct TrainingHooks {
  // An existing worker group to train in (kept open afterwards); null: join the group that
  // the launcher's variables describe and leave it at the end.
  core::WorkerGroup* group = nullptr;
  // This rank's shard source over the training split's shards (manifest order); null: the
  // fixed source. A source that cannot replay an epoch's order (a lease-backed one) resumes
  // at the checkpoint's step with the epoch's remaining shards (exact_resume = false).
  std::function<StatusOr<std::unique_ptr<ShardSource>>(const std::vector<sharding::ShardInfo>& shards, int rank,
                                                       int world_size)>
      make_source;
  bool exact_resume = true;
  // Rank 0: called with each training record (kind "train": loss, contrastive, recon,
  // logit_scale, lr, samples_per_second, global_batch, negatives_per_step, epoch) at every
  // log step and each evaluation (kind "eval": t2a_r1 ... map10) at the step it describes.
  // Returning true stops the trial on every rank at the next step (no extra checkpoint).
  std::function<bool(const std::string& kind, int64_t step, int64_t epoch, int64_t total_steps,
                     const std::map<std::string, double>& values)>
      report;
  // Rank 0: a checkpoint is durable (saved, indexed and verified) at `ref` for `step`.
  std::function<void(const std::string& ref, int64_t step)> on_checkpoint;
  // Rank 0: polled before every step; true stops the trial like `report` does.
  std::function<bool()> should_stop;
  // Extra evaluations at these steps (ASHA's rungs), besides train.eval_every and the end.
  std::vector<int64_t> eval_steps;
  // Serve this rank's metrics on this server instead of starting one from metrics.listen.
  metrics::MetricsServer* metrics_server = nullptr;
};

// With ckpt.root set, checkpoints every ckpt.every steps, at the end and when a stop signal
// arrives (stop_signal.h); `resume` picks the checkpoint to start from. A resumed run ends
// with the parameters an uninterrupted run would have had, bit for bit on CPU (with the fixed
// shard source).
StatusOr<TrainOutcome> RunTraining(const TrialConfig& config, std::ostream& log,
                                   const ResumeOptions& resume = {}, const TrainingHooks& hooks = {});

// Joins the worker group that the launcher's variables describe (dist.* keys; a group of one
// without any) and says so on `log` when it has several ranks; *launcher_name gets the
// launcher found (env, mpi, slurm, none).
StatusOr<std::unique_ptr<core::WorkerGroup>> JoinWorkerGroup(const TrialConfig& config, std::ostream& log,
                                                             std::string* launcher_name = nullptr);

// Shared set-up of the worker's commands: LibTorch's intra-op threads (train.threads; 0 -> 1 on
// CPU), the in-memory dataset options of a config, and the model of a config with the
// tokenizer's vocabulary, initialised from train.seed and then loaded from `model_path`
// (model.pt of a training run) unless it is empty. LoadModel: NotFound for a missing file,
// Corruption for one that does not fit the config.
void SetThreads(int threads);
DatasetOptions DataOptions(const TrialConfig& config);
StatusOr<core::FlapModel> LoadModel(TrialConfig* config, int vocab_size, const std::string& model_path,
                                     const c10::Device& device = c10::Device(c10::DeviceType::CPU));

// The device train.device names for this rank (core/device.h: local rank, visible GPUs), made
// current. InvalidArgument when CUDA is asked for and none is visible.
StatusOr<c10::Device> TrainingDevice(const TrialConfig& config);

// Evaluates the model saved at `model_path` (model.pt of a training run) on data.eval_split;
// an empty path evaluates the untrained model initialised from train.seed (a baseline).
StatusOr<core::RetrievalMetrics> RunEvaluation(const TrialConfig& config, const std::string& model_path,
                                               std::ostream& log);

}  // namespace flap::worker
