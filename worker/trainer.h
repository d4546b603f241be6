// `flap-worker train` and `flap-worker eval` as library calls: one trial, standalone, on
// this process's device (CPU here). Training loads the dataset, builds the model from the
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

#include <iosfwd>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "worker/checkpointer.h"
#include "worker/config.h"
#include "worker/core/model.h"
#include "worker/core/retrieval.h"
#include "worker/dataset.h"

namespace flap::worker {

struct TrainOutcome {
  nlohmann::json summary;
  core::RetrievalMetrics final_metrics;
  core::FlapModel model{nullptr};
  int stop_signal = 0;  // non-zero: stopped by this signal after a last checkpoint
};

// With ckpt.root set, checkpoints every ckpt.every steps, at the end and when a stop signal
// arrives (stop_signal.h); `resume` picks the checkpoint to start from. A resumed run ends
// with the parameters an uninterrupted run would have had, bit for bit on CPU.
StatusOr<TrainOutcome> RunTraining(const TrialConfig& config, std::ostream& log,
                                   const ResumeOptions& resume = {});

// Shared set-up of the worker's commands: LibTorch's intra-op threads (train.threads; 0 -> 1 on
// CPU), the in-memory dataset options of a config, and the model of a config with the
// tokenizer's vocabulary, initialised from train.seed and then loaded from `model_path`
// (model.pt of a training run) unless it is empty. LoadModel: NotFound for a missing file,
// Corruption for one that does not fit the config.
void SetThreads(int threads);
DatasetOptions DataOptions(const TrialConfig& config);
StatusOr<core::FlapModel> LoadModel(TrialConfig* config, int vocab_size, const std::string& model_path);

// Evaluates the model saved at `model_path` (model.pt of a training run) on data.eval_split;
// an empty path evaluates the untrained model initialised from train.seed (a baseline).
StatusOr<core::RetrievalMetrics> RunEvaluation(const TrialConfig& config, const std::string& model_path,
                                               std::ostream& log);

}  // namespace flap::worker
