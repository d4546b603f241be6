// Trial: the life of one trial of a sweep, as a state machine over a plain, serialisable
// TrialRecord. It decides which changes are legal; it does not schedule, talk to workers or
// persist itself (the service journals record() after every successful transition, before it
// replies).
//
// States.
//   pending    waiting in the queue for a worker group (new, or requeued after a failure).
//   assigned   handed to a worker group as attempt N (N counts assignments from 1); the group
//              has not yet said it started.
//   running    the group started attempt N and reports progress and checkpoints.
//   completed  attempt N finished its training and evaluation.          (terminal)
//   stopped    stopped early by ASHA; its checkpoints and results stay.  (terminal)
//   failed     a retry budget ran out; last_error says why.               (terminal)
//   cancelled  cancelled by the user.                                      (terminal)
//
// Transitions (anything else is refused with FailedPrecondition naming the trial, the state it
// is in and the state asked for):
//   pending            -> assigned    Assign(group): attempt += 1
//   assigned           -> running     Start(attempt)
//   running            -> completed   Complete(attempt)
//   running            -> stopped     Stop(attempt)
//   assigned | running -> pending     Requeue(attempt, cause, error), while cause's budget lasts
//   assigned | running -> failed      Requeue(...) when it exhausts cause's budget
//   any non-terminal   -> cancelled   Cancel()
//
// Invariants.
//   - A trial runs on at most one worker group at a time: `group` is set exactly in assigned
//     and running, and only the current attempt may move the trial. Every call that carries an
//     attempt number is refused (FailedPrecondition, "stale attempt") when it is not the current
//     attempt, so a group that was declared lost and comes back cannot complete, stop, requeue
//     or checkpoint a trial that now belongs to another attempt: nothing runs twice to
//     completion.
//   - Retries are counted per cause and budgets are kept apart: preemption (the scheduler took
//     the nodes), node_fault (the group stopped heartbeating or a node failed) and trial_error
//     (the trial itself failed: NaN loss, bad config, crash). A budget of B allows B requeues of
//     that cause; failure B + 1 of that cause marks the trial failed, with that failure's error
//     as last_error. Failures of one cause never use another's budget.
//   - The latest checkpoint reference and its step survive requeues: a requeued trial resumes
//     from them (an empty reference means "start from scratch"). On requeue, `step` falls back
//     to the checkpoint's step, where the next attempt resumes.
//   - Retries of the same report are harmless: Start on a running trial, Complete on a
//     completed one and Stop on a stopped one, all with the attempt that got there, are OK and
//     change nothing; Cancel on a cancelled trial is OK.
//
// Thread-safety: not thread-safe; the coordinator calls it under its own lock.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "common/status.h"

namespace flap::coordinator {

enum class TrialState { kPending, kAssigned, kRunning, kCompleted, kStopped, kFailed, kCancelled };

// "pending", "assigned", ... and back (InvalidArgument for an unknown name).
const char* TrialStateName(TrialState state);
StatusOr<TrialState> ParseTrialState(const std::string& name);
// completed, stopped, failed and cancelled are terminal: no transition leaves them.
bool IsTerminal(TrialState state);

// Why an attempt ended without finishing the trial.
enum class FailureCause { kPreemption, kNodeFault, kTrialError };
// "preemption", "node_fault", "trial_error", and back.
const char* FailureCauseName(FailureCause cause);
StatusOr<FailureCause> ParseFailureCause(const std::string& name);

// A metric record's kind: training progress, an evaluation on the validation split (which
// decides: ASHA, checkpoint selection), or the test split's evaluation of the selected checkpoint
// (once per trial; reported, never decides).
enum class MetricKind { kTrain, kEval, kTest };
// "train" | "eval" | "test" (the journal's metric keys, logs, the worker's outbox, GetMetrics),
// and back: ParseMetricKind gives InvalidArgument for another name; MetricKindFromName kTrain.
const char* MetricKindName(MetricKind kind);
StatusOr<MetricKind> ParseMetricKind(const std::string& name);
MetricKind MetricKindFromName(const std::string& name);

// Requeues allowed per cause before the trial is marked failed. Each >= 0.
struct RetryBudgets {
  int preemption = 20;  // preemption is routine on shared clusters
  int node_fault = 3;
  int trial_error = 2;  // a trial that fails the same way 3 times will not succeed

  bool operator==(const RetryBudgets& o) const {
    return preemption == o.preemption && node_fault == o.node_fault && trial_error == o.trial_error;
  }
};

// Everything the state machine knows about one trial: a plain value to store and ship.
struct TrialRecord {
  std::string id;  // the trial id, e.g. "t0007" (non-empty)
  TrialState state = TrialState::kPending;
  int attempt = 0;              // current or last attempt; 0 = never assigned
  std::string group;            // worker group holding it; set iff assigned/running
  int64_t step = 0;             // latest step reported (or resumed from)
  std::string checkpoint;       // latest checkpoint reference; "" = none
  int64_t checkpoint_step = 0;  // the step that checkpoint holds
  RetryBudgets budgets;
  int preemptions = 0;  // failures so far, per cause
  int node_faults = 0;
  int trial_errors = 0;
  std::string last_error;  // the latest failure's error ("" = none)

  bool operator==(const TrialRecord& o) const {
    return id == o.id && state == o.state && attempt == o.attempt && group == o.group && step == o.step &&
           checkpoint == o.checkpoint && checkpoint_step == o.checkpoint_step && budgets == o.budgets &&
           preemptions == o.preemptions && node_faults == o.node_faults && trial_errors == o.trial_errors &&
           last_error == o.last_error;
  }
};

class Trial {
 public:
  // A new, pending trial. `id` must be non-empty, budgets >= 0 (asserted: programming errors).
  Trial(std::string id, RetryBudgets budgets);
  // A trial loaded from storage. InvalidArgument naming the trial when the record is
  // inconsistent (e.g. a group set while pending or missing while running, a negative count, a
  // terminal state with attempt 0).
  static StatusOr<Trial> FromRecord(TrialRecord record);

  const TrialRecord& record() const { return record_; }
  const std::string& id() const { return record_.id; }
  TrialState state() const { return record_.state; }
  int attempt() const { return record_.attempt; }

  // pending -> assigned to `group` (non-empty, else InvalidArgument). Returns the new attempt
  // number; the resume point is record().checkpoint / checkpoint_step.
  StatusOr<int> Assign(const std::string& group);
  // assigned -> running. OK and no change if already running with this attempt.
  Status Start(int attempt);
  // Records progress of a running attempt. InvalidArgument for a negative step.
  Status ReportProgress(int attempt, int64_t step);
  // Records the latest durable checkpoint of an assigned or running attempt (a group may save
  // before it says it started, e.g. a restored state). `ref` non-empty and step >= 0, else
  // InvalidArgument. The newest report wins, even with a lower step (a resumed attempt that fell
  // back to an older verified checkpoint reports from there).
  Status ReportCheckpoint(int attempt, const std::string& ref, int64_t step);
  // running -> completed. OK and no change if already completed by this attempt.
  Status Complete(int attempt);
  // running -> stopped (ASHA said stop). OK and no change if already stopped by this attempt.
  Status Stop(int attempt);
  // assigned | running -> pending (budget of `cause` left) or failed (budget exhausted). Records
  // `error` as last_error and returns the new state.
  StatusOr<TrialState> Requeue(int attempt, FailureCause cause, const std::string& error);
  // Any non-terminal state -> cancelled; OK and no change if already cancelled. The caller tells
  // the group (if any) to stop; its later reports are refused.
  Status Cancel();

 private:
  explicit Trial(TrialRecord record) : record_(std::move(record)) {}

  // FailedPrecondition unless `attempt` is the current one and the state is one of `from`.
  Status CheckLive(int attempt, TrialState to, std::initializer_list<TrialState> from) const;
  Status Illegal(TrialState to) const;
  Status Stale(int attempt, const std::string& action) const;

  TrialRecord record_;
};

}  // namespace flap::coordinator
