// Checkpoints of a training run (DESIGN.md, "Checkpoints"), on top of checkpoint::Store.
//
// A checkpoint holds model.pt (parameters and buffers), optimizer.pt (AdamW state),
// rng.pt (LibTorch's CPU generator) and state.json (step, epoch, position in the epoch, config
// hash, the run's config and tokenizer when set_run_config and set_tokenizer gave them, the streaming loader's data cursor: loader.h, and the training budgets' progress:
// seconds trained and samples seen, trainer.h). Batches, masks and captions are
// pure functions of (trial seed, epoch, cursor), so restoring the cursor restores exactly the
// samples still to come in the epoch.
//
// SaveAsync copies the state into bytes on the calling (training) thread and writes them on a
// background thread, then applies retention; one save is in flight at a time (a new one waits
// for the previous). A damaged checkpoint that Restore passed over is replaced when training
// saves its step again (moved aside first: checkpoint::Store::Save), and the log says so. Not thread-safe: one
// Checkpointer per training thread.
//
// A save that fails for an I/O error (a full disk, a failing or vanished file system) does not
// fail the trial by itself: the store has removed its partial folder, and if the newest
// checkpoint still verifies, training goes on and a WARNING line on the log says so (a restart
// would resume from that checkpoint). After max_consecutive_failed_saves() failed saves in a
// row, or when the newest checkpoint no longer verifies, Wait/Poll/SaveAsync return a
// checkpoint storage fault (IsCheckpointStorageFault): the node's storage, not the trial, is at
// fault, and the agent reports it as a node fault. Other failures (bad input, a corrupt index)
// are returned as they are. A failed retention after a committed save is logged and retried at
// the next save.
#pragma once

#include <future>
#include <iosfwd>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/optim/optimizer.h>

#include "checkpoint/store.h"
#include "common/status.h"
#include "config/trial_config.h"
#include "worker/core/model.h"

namespace flap::worker {

// Failed saves in a row after which the Checkpointer reports a checkpoint storage fault.
inline constexpr int kMaxConsecutiveFailedSaves = 3;

// Whether `s` is a Checkpointer's checkpoint storage fault (persistent I/O failure of the
// checkpoint root on this node), which the agent reports as a node fault, not a trial error.
bool IsCheckpointStorageFault(const Status& s);

struct ResumeOptions {
  bool resume = false;     // from the newest checkpoint that verifies (fresh start if none)
  int64_t from_step = -1;  // >= 0: from exactly this step's checkpoint
  bool force = false;      // accept a checkpoint whose config hash differs
};

struct RestoredState {
  int64_t step = 0;
  nlohmann::json data_cursor;  // null when the checkpoint carries none
  nlohmann::json progress;     // the budgets' counters saved with it (trainer.cc); null: none
};

// How long Open waits for a trial's index that another process still holds.
inline constexpr double kIndexLockWaitS = 120;

class Checkpointer {
 public:
  static StatusOr<std::unique_ptr<Checkpointer>> Open(const CheckpointConfig& config, const std::string& trial_id,
                                                      const std::string& config_hash);
  ~Checkpointer();  // waits for the save in flight

  // Restores model and optimizer as the options say. Returns the restored step and data
  // cursor, or NotFound when there is nothing to resume from (a fresh start), which includes a
  // trial whose every checkpoint is damaged when resuming from the newest; damaged checkpoints
  // passed over are reported on `log`.
  StatusOr<RestoredState> Restore(const ResumeOptions& options, core::FlapModel& model,
                                  torch::optim::Optimizer& optimizer, std::ostream& log);

  // Loads only the parameters and buffers of the checkpoint at `step` (its checksums verified)
  // into `model`: NotFound when there is none, FailedPrecondition for another config's,
  // Corruption for one that is damaged or does not fit.
  Status LoadModelAt(int64_t step, core::FlapModel& model);

  // Copies the state now and writes it in the background. Returns the previous save's
  // status if it failed.
  Status SaveAsync(core::FlapModel& model, torch::optim::Optimizer& optimizer, int64_t step, int64_t steps_per_epoch,
                   const std::map<std::string, double>& metrics, const nlohmann::json& data_cursor = nullptr,
                   const nlohmann::json& progress = nullptr);
  // Waits for the save in flight; its status (OK for a failed save that training outlives: see
  // above).
  Status Wait();
  // Collects the save in flight if it has finished, without waiting; its status (OK when
  // none finished, and as Wait for a failed one).
  Status Poll();

  // Where failed saves are reported (default std::cerr). Not owned.
  void set_log(std::ostream* log) { log_ = log; }
  // Failed saves in a row before a storage fault (default kMaxConsecutiveFailedSaves; >= 1).
  void set_max_consecutive_failed_saves(int n) { max_failed_saves_ = n < 1 ? 1 : n; }
  int max_consecutive_failed_saves() const { return max_failed_saves_; }
  // Failed saves since the last one that succeeded.
  int consecutive_failed_saves() const { return failed_saves_; }
  // Restore from the newest checkpoint whose index cannot be read for an I/O error (a full
  // disk while RocksDB replays the index's log) tries again after each of these delays, in
  // seconds (default 1, 2, 4, 8: a disk filled for a few seconds does not cost the trial a
  // node fault), then returns a checkpoint storage fault.
  void set_resume_retry_delays(std::vector<double> seconds) { resume_retry_delays_ = std::move(seconds); }

  // Bytes and seconds of the last finished save (for logs and metrics).
  int64_t last_save_bytes() const { return last_bytes_; }
  double last_save_seconds() const { return last_seconds_; }
  int64_t saves_completed() const { return saves_completed_; }
  // The step of the newest save known to be durable (-1: none yet), and where it is.
  int64_t last_saved_step() const { return last_saved_step_; }
  std::string CheckpointRef(int64_t step) const;
  // The run's configuration (TrialConfig::ToJson), written into each later checkpoint's
  // state.json as "config", so a checkpoint says what it was trained with (export.h reads it).
  void set_run_config(nlohmann::json config) { run_config_ = std::move(config); }
  // The run's tokenizer (trainer.h, TokenizerRecord), written into state.json as "tokenizer".
  void set_tokenizer(nlohmann::json tokenizer) { tokenizer_ = std::move(tokenizer); }

 private:
  Checkpointer(CheckpointConfig config, std::string trial_id, std::string config_hash,
               std::unique_ptr<checkpoint::Store> store);
  CheckpointConfig config_;
  std::string trial_id_, config_hash_;
  nlohmann::json run_config_;  // null: none
  nlohmann::json tokenizer_;   // null: none
  std::unique_ptr<checkpoint::Store> store_;
  std::vector<double> resume_retry_delays_ = {1, 2, 4, 8};
  struct SaveResult {
    Status status;
    bool saved = false;    // the checkpoint was committed (status may still hold a retention error)
    std::string replaced;  // a damaged checkpoint of the step that the save replaced (Store::Save)
    int64_t bytes = 0;
    double seconds = 0;
  };
  // The index entry of the checkpoint at `step`, of this config unless `force`.
  StatusOr<checkpoint::Entry> EntryAt(int64_t step, bool force) const;
  // A save at `step` failed with `status`: OK to train on, or the error to end the trial with.
  Status OnFailedSave(int64_t step, const Status& status);
  std::future<SaveResult> in_flight_;
  int64_t last_bytes_ = 0;
  int64_t saves_completed_ = 0;
  int64_t in_flight_step_ = -1;
  int64_t last_saved_step_ = -1;
  double last_seconds_ = 0;
  std::ostream* log_;
  int max_failed_saves_ = kMaxConsecutiveFailedSaves;
  int failed_saves_ = 0;
};

}  // namespace flap::worker
