#include "worker/checkpointer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <torch/serialize.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <ostream>
#include <sstream>
#include <thread>

namespace flap::worker {
namespace {

constexpr char kStorageFault[] = "checkpoint storage fault";

template <typename Save>
StatusOr<std::string> ToBytes(const char* what, Save save) {
  try {
    std::ostringstream out;
    save(out);
    return out.str();
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("cannot serialise ") + what + ": " + e.what_without_backtrace());
  }
}

}  // namespace

bool IsCheckpointStorageFault(const Status& s) {
  return s.code() == Status::Code::kIOError && s.message().find(kStorageFault) != std::string::npos;
}

StatusOr<std::unique_ptr<Checkpointer>> Checkpointer::Open(const CheckpointConfig& config, const std::string& trial_id,
                                                           const std::string& config_hash) {
  checkpoint::StoreOptions options;
  // A trial handed on from a group that is still stopping it (saving its last checkpoint)
  // finds the index locked for a few seconds; wait for it rather than fail the trial.
  options.lock_wait_s = kIndexLockWaitS;
  FLAP_ASSIGN_OR_RETURN(std::unique_ptr<checkpoint::Store> store, checkpoint::Store::Open(config.root, options));
  return std::unique_ptr<Checkpointer>(new Checkpointer(config, trial_id, config_hash, std::move(store)));
}

Checkpointer::Checkpointer(CheckpointConfig config, std::string trial_id, std::string config_hash,
                           std::unique_ptr<checkpoint::Store> store)
    : config_(std::move(config)),
      trial_id_(std::move(trial_id)),
      config_hash_(std::move(config_hash)),
      store_(std::move(store)),
      log_(&std::cerr) {}

Checkpointer::~Checkpointer() { (void)Wait(); }

Status Checkpointer::Wait() {
  if (!in_flight_.valid()) return Status::OK();
  SaveResult r = in_flight_.get();
  if (!r.saved) return OnFailedSave(in_flight_step_, r.status);
  last_bytes_ = r.bytes;
  last_seconds_ = r.seconds;
  last_saved_step_ = in_flight_step_;
  ++saves_completed_;
  failed_saves_ = 0;
  if (!r.replaced.empty()) {
    *log_ << "checkpoint: saved step " << in_flight_step_ << " over a damaged checkpoint (" << r.replaced << ")"
          << std::endl;
  }
  if (!r.status.ok() && r.status.code() == Status::Code::kIOError) {
    // The checkpoint is committed; only deleting old ones failed. The next save retries.
    *log_ << "checkpoint: WARNING: " << r.status.ToString() << " (the checkpoint at step " << in_flight_step_
          << " is saved; retention is retried after the next save)" << std::endl;
    return Status::OK();
  }
  return r.status;
}

Status Checkpointer::OnFailedSave(int64_t step, const Status& status) {
  // Only I/O failures are the storage's; anything else (bad input, a corrupt index, another
  // process holding the index) is returned as it is.
  if (status.code() != Status::Code::kIOError) return status;
  ++failed_saves_;
  const std::string where = " under " + config_.root + " on this node";
  if (failed_saves_ >= max_failed_saves_) {
    *log_ << "checkpoint: ERROR: the save at step " << step << " failed, " << failed_saves_
          << " failed saves in a row: giving up on this node's checkpoint storage" << std::endl;
    return Status::IOError(std::string(kStorageFault) + ": " + std::to_string(failed_saves_) +
                           " checkpoint saves in a row failed" + where + " (the last: " + status.message() + ")");
  }
  // Training goes on only if what a restart would resume from is intact: the newest committed
  // checkpoint (none yet: a restart begins at step 0 either way).
  std::string previous = "no checkpoint is saved yet: a restart would begin at step 0";
  auto entries = store_->List(trial_id_, nullptr);
  Status intact = entries.ok() ? Status::OK() : entries.status();
  if (entries.ok() && !entries->empty()) {
    intact = store_->Verify(entries->front());
    previous = "a restart would resume from step " + std::to_string(entries->front().step) + " (verified)";
  }
  if (!intact.ok()) {
    *log_ << "checkpoint: ERROR: the save at step " << step << " failed and the newest checkpoint "
          << "does not verify: " << intact.ToString() << std::endl;
    return Status::IOError(std::string(kStorageFault) + ": the save at step " + std::to_string(step) + " failed" +
                           where + " (" + status.message() + ") and the newest checkpoint does not verify (" +
                           intact.message() + ")");
  }
  *log_ << "checkpoint: WARNING: the save at step " << step << " FAILED (" << failed_saves_ << " of "
        << max_failed_saves_ << " failed saves in a row allowed before this node's storage is "
        << "reported as faulty): " << status.ToString() << "; its partial folder was removed, "
        << "training goes on, " << previous << std::endl;
  return Status::OK();
}

Status Checkpointer::Poll() {
  if (!in_flight_.valid() || in_flight_.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
    return Status::OK();
  }
  return Wait();
}

std::string Checkpointer::CheckpointRef(int64_t step) const {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%012lld", static_cast<long long>(step));
  return config_.root + "/" + trial_id_ + "/" + buf;
}

Status Checkpointer::SaveAsync(core::FlapModel& model, torch::optim::Optimizer& optimizer, int64_t step,
                               int64_t steps_per_epoch, const std::map<std::string, double>& metrics,
                               const nlohmann::json& data_cursor, const nlohmann::json& progress) {
  FLAP_RETURN_IF_ERROR(Wait());
  // The copy: everything the background thread writes is bytes owned by it.
  std::map<std::string, std::string> files;
  FLAP_ASSIGN_OR_RETURN(files["model.pt"], ToBytes("the model", [&](std::ostream& o) { torch::save(model, o); }));
  FLAP_ASSIGN_OR_RETURN(files["optimizer.pt"], ToBytes("the optimizer", [&](std::ostream& o) {
                          torch::serialize::OutputArchive archive;
                          optimizer.save(archive);
                          archive.save_to(o);
                        }));
  FLAP_ASSIGN_OR_RETURN(files["rng.pt"], ToBytes("the generator", [&](std::ostream& o) {
                          torch::save(at::detail::getDefaultCPUGenerator().get_state(), o);
                        }));
  const int64_t epoch = step / steps_per_epoch;
  nlohmann::json state = {{"step", step},
                          {"epoch", epoch},
                          {"position_in_epoch", step % steps_per_epoch},
                          {"steps_per_epoch", steps_per_epoch},
                          {"config_hash", config_hash_}};
  if (!data_cursor.is_null()) state["data_cursor"] = data_cursor;
  if (!progress.is_null()) state["progress"] = progress;
  if (!run_config_.is_null()) state["config"] = run_config_;
  if (!tokenizer_.is_null()) state["tokenizer"] = tokenizer_;
  files["state.json"] = state.dump(2) + "\n";
  checkpoint::Metadata meta;
  meta.config_hash = config_hash_;
  meta.epoch = epoch;
  meta.metrics = metrics;
  meta.extra = {{"position_in_epoch", step % steps_per_epoch}};

  in_flight_step_ = step;
  in_flight_ = std::async(std::launch::async, [this, files = std::move(files), meta, step]() {
    SaveResult r;
    const auto start = std::chrono::steady_clock::now();
    auto entry = store_->Save(trial_id_, step, files, meta, &r.replaced);
    if (!entry.ok()) {
      r.status = entry.status().WithContext("checkpoint at step " + std::to_string(step));
      return r;
    }
    r.saved = true;
    r.bytes = static_cast<int64_t>(entry->TotalBytes());
    checkpoint::GcOptions gc;
    gc.keep_last = config_.keep_last;
    gc.keep_best = config_.keep_best;
    gc.metric = config_.metric;
    auto report = store_->Gc(trial_id_, gc);
    if (!report.ok()) r.status = report.status().WithContext("retention after step " + std::to_string(step));
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return r;
  });
  return Status::OK();
}

StatusOr<checkpoint::Entry> Checkpointer::EntryAt(int64_t step, bool force) const {
  FLAP_ASSIGN_OR_RETURN(std::vector<checkpoint::Entry> entries, store_->List(trial_id_, nullptr));
  const checkpoint::Entry* entry = nullptr;
  for (const auto& e : entries) {
    if (e.step == step) entry = &e;
  }
  if (entry == nullptr) {
    return Status::NotFound("trial '" + trial_id_ + "' has no checkpoint at step " + std::to_string(step) +
                            " under '" + config_.root + "'");
  }
  if (entry->metadata.config_hash != config_hash_ && !force) {
    return Status::FailedPrecondition("checkpoint " + entry->Name() + " was made with config " +
                                      entry->metadata.config_hash + ", this run's is " + config_hash_ +
                                      " (--force to resume anyway)");
  }
  return *entry;
}

Status Checkpointer::LoadModelAt(int64_t step, core::FlapModel& model) {
  FLAP_ASSIGN_OR_RETURN(const checkpoint::Entry entry, EntryAt(step, false));
  FLAP_ASSIGN_OR_RETURN(auto files, store_->Load(entry));
  if (!files.count("model.pt")) return Status::Corruption("checkpoint " + entry.Name() + " lacks model.pt");
  try {
    std::istringstream m(files["model.pt"]);
    torch::load(model, m, model->parameters().front().device());
  } catch (const c10::Error& e) {
    return Status::Corruption("checkpoint " + entry.Name() + " does not fit this model: " + e.what_without_backtrace());
  }
  return Status::OK();
}

StatusOr<RestoredState> Checkpointer::Restore(const ResumeOptions& options, core::FlapModel& model,
                                              torch::optim::Optimizer& optimizer, std::ostream& log) {
  checkpoint::Entry entry;
  if (options.from_step >= 0) {
    FLAP_ASSIGN_OR_RETURN(entry, EntryAt(options.from_step, options.force));
  } else {
    StatusOr<checkpoint::ResumePoint> latest = store_->LatestVerified(trial_id_, config_hash_, options.force);
    for (double delay : resume_retry_delays_) {
      if (latest.status().code() != Status::Code::kIOError) break;
      log << "checkpoint: resuming trial " << trial_id_ << ": " << latest.status().message() << "; trying again in "
          << delay << " s" << std::endl;
      std::this_thread::sleep_for(std::chrono::duration<double>(delay));
      latest = store_->LatestVerified(trial_id_, config_hash_, options.force);
    }
    if (latest.status().code() == Status::Code::kIOError) {
      // The node's checkpoint storage failing (a full disk while RocksDB replays the index's
      // log, say), not the trial: a storage fault, as a failed save is, so that the agent
      // reports a node fault rather than spending the trial's error budget.
      return Status::IOError(std::string(kStorageFault) + ": resuming trial " + trial_id_ + " under " + config_.root +
                             " on this node: " + latest.status().message());
    }
    if (latest.status().code() == Status::Code::kCorruption) {
      // The index reads (List succeeds) and lists checkpoints, none of which verifies: each is
      // as absent as a damaged newest one is, so the run starts from step 0, and each is moved
      // aside when its step is saved again. (A trial whose only checkpoint was damaged failed
      // on every restart with "no checkpoint of trial ... verifies" until its budget ran out.)
      auto entries = store_->List(trial_id_, nullptr);
      if (entries.ok() && !entries->empty()) {
        log << "checkpoint: " << latest.status().message() << std::endl;
        return Status::NotFound("none of the " + std::to_string(entries->size()) + " checkpoint(s) of trial " +
                                trial_id_ + " verifies: starting from step 0");
      }
    }
    FLAP_ASSIGN_OR_RETURN(checkpoint::ResumePoint point, std::move(latest));
    for (const std::string& w : point.warnings) log << "checkpoint: " << w << std::endl;
    entry = point.entry;
  }
  FLAP_ASSIGN_OR_RETURN(auto files, store_->Load(entry));
  for (const char* name : {"model.pt", "optimizer.pt", "rng.pt", "state.json"}) {
    if (!files.count(name)) return Status::Corruption("checkpoint " + entry.Name() + " lacks " + name);
  }
  try {
    // Saved tensors carry the device they were saved from; they are mapped onto the model's,
    // so a checkpoint written on a GPU resumes on a CPU and back.
    const c10::Device device = model->parameters().front().device();
    std::istringstream m(files["model.pt"]);
    torch::load(model, m, device);
    std::istringstream o(files["optimizer.pt"]);
    torch::serialize::InputArchive archive;
    archive.load_from(o, device);
    optimizer.load(archive);
    at::Tensor rng;
    std::istringstream r(files["rng.pt"]);
    torch::load(rng, r);
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    generator.set_state(rng);
  } catch (const c10::Error& e) {
    return Status::Corruption("checkpoint " + entry.Name() + " does not fit this model: " + e.what_without_backtrace());
  }
  auto state = nlohmann::json::parse(files["state.json"], nullptr, false);
  if (state.is_discarded() || !state.contains("step") || state["step"].get<int64_t>() != entry.step) {
    return Status::Corruption("checkpoint " + entry.Name() + ": state.json is malformed");
  }
  log << "resumed from checkpoint " << entry.Name() << " (step " << entry.step << ")" << std::endl;
  RestoredState restored;
  restored.step = entry.step;
  if (state.contains("data_cursor")) restored.data_cursor = state["data_cursor"];
  if (state.contains("progress")) restored.progress = state["progress"];
  return restored;
}

}  // namespace flap::worker
