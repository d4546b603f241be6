// Speaker: rank 0's voice to the coordinator for its worker group (`flap-worker agent`,
// worker/agent.h). It registers the group, heartbeats from its own thread, asks for the next
// trial, and delivers the group's records (metrics, checkpoints, the end or the failure of a
// trial) through an outbox (worker/outbox.h) from a sender thread.
//
// Delivery: records are sent in order, each until the coordinator answers it. A transient
// failure (coordinator::IsTransient: the coordinator away, restarting, or shutting down with the
// call in flight) is retried with backoff from 100 ms to 2 s for as long as it lasts; any answer,
// refusals included, acknowledges the record. A refusal that says the trial's attempt is stale
// marks the trial taken (Taken). An evaluation's record is waited for (up to the retry window),
// since its answer may stop the trial at an ASHA rung; the other records do not wait for an
// answer. Each record costs its caller the outbox's sync to disk (worker/outbox.h: a few ms),
// so that a group killed with SIGKILL loses none.
//
// The outbox's folder is OUTBOX_ROOT/<coordinator id>-<group> (OUTBOX_ROOT: SpeakerOptions,
// by default $TMPDIR/flap-outbox-<uid>): the coordinator's id comes with its answer to
// RegisterGroup and stays the same across its restarts from the same state folder, on whatever
// port, so the group's next agent resends what an earlier one left. A coordinator that sends
// no id (an older one) is named by its address.
//
// Thread-safety: Register, Next, Drained, BeginTrial, EndTrial and Shutdown are called from
// the agent's thread; Report, Checkpoint, Finish, Fail and Taken from the training thread too;
// ReportPreemptionNow from the stop watchdog. The heartbeat and sender threads are the
// Speaker's own.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "coordinator/client.h"
#include "worker/outbox.h"

namespace flap::worker {

struct SpeakerOptions {
  std::string group;           // the group id to register ("" = the coordinator assigns one)
  double retry_s = 120.0;      // how long transient failures of a call are retried
  std::string outbox_root;     // "" = $TMPDIR (or /tmp) + "/flap-outbox-<uid>"
};

class Speaker {
 public:
  Speaker(coordinator::CoordinatorClient* client, SpeakerOptions options, std::ostream& log);
  ~Speaker();  // Shutdown()
  Speaker(const Speaker&) = delete;
  Speaker& operator=(const Speaker&) = delete;

  // Registers a group of `world` ranks (their metrics endpoints), retrying transient failures
  // for retry_s, opens the outbox (resending what an earlier agent of the group left) and starts
  // the heartbeat and sender threads.
  Status Register(int world, const std::vector<std::string>& endpoints);
  const std::string& group() const { return group_; }
  // The outbox's folder (after Register).
  const std::string& outbox_dir() const { return outbox_dir_; }

  // The coordinator's answer to NextTrial, retrying transient failures for retry_s. A
  // `waiting` reason is logged once, not at every ask.
  StatusOr<coordinator::v1::NextTrialResponse> Next();

  // Whether the coordinator has acknowledged every record sent so far, waiting up to `wait`
  // (logs every 30 s while it has not).
  bool Drained(std::chrono::milliseconds wait);

  void BeginTrial(const coordinator::v1::TrialRef& trial);
  void EndTrial();
  // Whether the coordinator took the running trial (STOP or IDLE in a heartbeat, a STOP
  // answering a record, or a record refused as stale); why.
  bool Taken(std::string* why);

  // The records of a trial, through the outbox. Report returns Taken().
  bool Report(const coordinator::v1::TrialRef& trial, coordinator::MetricKind kind, int64_t step, int64_t epoch,
              int64_t total, const std::map<std::string, double>& values);
  void Checkpoint(const coordinator::v1::TrialRef& trial, const std::string& ref, int64_t step);
  void Finish(const coordinator::v1::TrialRef& trial);
  void Fail(const coordinator::v1::TrialRef& trial, coordinator::FailureCause cause, const std::string& error);
  // From the stop watchdog, about to exit (worker/stop_signal.h): one call, no retries.
  void ReportPreemptionNow(const coordinator::v1::TrialRef& trial, int signal);

  void StopHeartbeat();
  // Before the process exits: waits up to retry_s for the outbox to be acknowledged, stops the
  // threads and leaves what is left in the outbox's folder for the group's next agent (an empty
  // folder is removed).
  void Shutdown();

 private:
  std::chrono::milliseconds RetryWindow() const;
  Status OpenOutbox(const std::string& coordinator_id);
  uint64_t Enqueue(const std::string& record);
  void MarkTaken(const coordinator::v1::TrialRef& trial, const std::string& why) EXCLUDES(mu_);
  void SendLoop();
  Status Deliver(const std::string& bytes);
  Status DeliverMetrics(const coordinator::v1::TrialRef& trial, const std::string& fields);
  Status Answered(const Status& s, const std::string& what, const coordinator::v1::TrialRef& trial);
  void HeartbeatLoop();

  coordinator::CoordinatorClient* client_;
  const SpeakerOptions options_;
  std::ostream& log_;
  std::string group_;
  std::string waiting_;  // the coordinator's last reason for passing a trial over (Next)
  int64_t interval_ms_ = 1000;
  std::vector<int> ranks_;
  std::thread heartbeat_;
  std::unique_ptr<Outbox> outbox_;
  std::string outbox_dir_;
  std::chrono::steady_clock::time_point next_drain_word_;
  std::thread sender_;
  Mutex mu_;
  CondVar cv_;
  bool stop_ GUARDED_BY(mu_) = false;
  bool stop_sender_ GUARDED_BY(mu_) = false;
  bool running_ GUARDED_BY(mu_) = false;
  bool taken_ GUARDED_BY(mu_) = false;
  std::string taken_reason_ GUARDED_BY(mu_);
  uint64_t generation_ GUARDED_BY(mu_) = 0;
  coordinator::v1::TrialRef trial_ GUARDED_BY(mu_);
};

}  // namespace flap::worker
