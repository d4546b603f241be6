// Trial (trial_state.h): the trial state machine's transitions and the record's checks.
#include "coordinator/trial_state.h"

#include <cassert>
#include <utility>

namespace flap::coordinator {
namespace {

constexpr TrialState kAllStates[] = {TrialState::kPending,   TrialState::kAssigned, TrialState::kRunning,
                                     TrialState::kCompleted, TrialState::kStopped,  TrialState::kFailed,
                                     TrialState::kCancelled};

// Empty when `r` is consistent, else what is wrong with it.
std::string Inconsistency(const TrialRecord& r) {
  if (r.id.empty()) return "empty trial id";
  if (r.attempt < 0) return "negative attempt";
  if (r.step < 0 || r.checkpoint_step < 0) return "negative step";
  if (r.preemptions < 0 || r.node_faults < 0 || r.trial_errors < 0) return "negative count";
  if (r.budgets.preemption < 0 || r.budgets.node_fault < 0 || r.budgets.trial_error < 0) {
    return "negative budget";
  }
  const bool held = r.state == TrialState::kAssigned || r.state == TrialState::kRunning;
  if (held && r.group.empty()) return std::string(TrialStateName(r.state)) + " without a group";
  if (!held && !r.group.empty()) {
    return std::string(TrialStateName(r.state)) + " but held by group '" + r.group + "'";
  }
  const bool ran = held || r.state == TrialState::kCompleted || r.state == TrialState::kStopped;
  if (ran && r.attempt < 1) return std::string(TrialStateName(r.state)) + " with attempt 0";
  return "";
}

}  // namespace

const char* TrialStateName(TrialState state) {
  switch (state) {
    case TrialState::kPending:
      return "pending";
    case TrialState::kAssigned:
      return "assigned";
    case TrialState::kRunning:
      return "running";
    case TrialState::kCompleted:
      return "completed";
    case TrialState::kStopped:
      return "stopped";
    case TrialState::kFailed:
      return "failed";
    case TrialState::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

StatusOr<TrialState> ParseTrialState(const std::string& name) {
  for (TrialState s : kAllStates) {
    if (name == TrialStateName(s)) return s;
  }
  return Status::InvalidArgument("unknown trial state '" + name + "'");
}

bool IsTerminal(TrialState state) {
  return state == TrialState::kCompleted || state == TrialState::kStopped || state == TrialState::kFailed ||
         state == TrialState::kCancelled;
}

const char* FailureCauseName(FailureCause cause) {
  switch (cause) {
    case FailureCause::kPreemption:
      return "preemption";
    case FailureCause::kNodeFault:
      return "node_fault";
    case FailureCause::kTrialError:
      return "trial_error";
  }
  return "unknown";
}

StatusOr<FailureCause> ParseFailureCause(const std::string& name) {
  for (FailureCause c : {FailureCause::kPreemption, FailureCause::kNodeFault, FailureCause::kTrialError}) {
    if (name == FailureCauseName(c)) return c;
  }
  return Status::InvalidArgument("unknown failure cause '" + name + "'");
}

const char* MetricKindName(MetricKind kind) {
  switch (kind) {
    case MetricKind::kTrain:
      return "train";
    case MetricKind::kEval:
      return "eval";
    case MetricKind::kTest:
      return "test";
  }
  return "train";
}

StatusOr<MetricKind> ParseMetricKind(const std::string& name) {
  for (MetricKind k : {MetricKind::kTrain, MetricKind::kEval, MetricKind::kTest}) {
    if (name == MetricKindName(k)) return k;
  }
  return Status::InvalidArgument("unknown metric kind '" + name + "' (train, eval or test)");
}

MetricKind MetricKindFromName(const std::string& name) {
  const StatusOr<MetricKind> kind = ParseMetricKind(name);
  return kind.ok() ? *kind : MetricKind::kTrain;
}

Trial::Trial(std::string id, RetryBudgets budgets) {
  assert(!id.empty());
  assert(budgets.preemption >= 0 && budgets.node_fault >= 0 && budgets.trial_error >= 0);
  record_.id = std::move(id);
  record_.budgets = budgets;
}

StatusOr<Trial> Trial::FromRecord(TrialRecord record) {
  if (std::string bad = Inconsistency(record); !bad.empty()) {
    return Status::InvalidArgument("inconsistent trial record '" + record.id + "': " + bad);
  }
  return Trial(std::move(record));
}

Status Trial::Illegal(TrialState to) const {
  return Status::FailedPrecondition("trial " + record_.id + ": illegal transition from " +
                                    TrialStateName(record_.state) + " to " + TrialStateName(to));
}

Status Trial::Stale(int attempt, const std::string& action) const {
  return Status::FailedPrecondition("trial " + record_.id + ": stale attempt " + std::to_string(attempt) +
                                    " (current attempt " + std::to_string(record_.attempt) + ", " +
                                    TrialStateName(record_.state) + ") cannot " + action);
}

Status Trial::CheckLive(int attempt, TrialState to, std::initializer_list<TrialState> from) const {
  if (attempt != record_.attempt) {
    return Stale(attempt, std::string("move it to ") + TrialStateName(to));
  }
  for (TrialState s : from) {
    if (record_.state == s) return Status::OK();
  }
  return Illegal(to);
}

StatusOr<int> Trial::Assign(const std::string& group) {
  if (group.empty()) {
    return Status::InvalidArgument("trial " + record_.id + ": assigned to an empty group id");
  }
  if (record_.state != TrialState::kPending) return Illegal(TrialState::kAssigned);
  record_.state = TrialState::kAssigned;
  record_.group = group;
  record_.attempt += 1;
  record_.step = record_.checkpoint_step;
  return record_.attempt;
}

Status Trial::Start(int attempt) {
  if (attempt == record_.attempt && record_.state == TrialState::kRunning) return Status::OK();
  FLAP_RETURN_IF_ERROR(CheckLive(attempt, TrialState::kRunning, {TrialState::kAssigned}));
  record_.state = TrialState::kRunning;
  return Status::OK();
}

Status Trial::ReportProgress(int attempt, int64_t step) {
  if (step < 0) {
    return Status::InvalidArgument("trial " + record_.id + ": negative step " + std::to_string(step));
  }
  FLAP_RETURN_IF_ERROR(CheckLive(attempt, TrialState::kRunning, {TrialState::kRunning}));
  record_.step = step;
  return Status::OK();
}

Status Trial::ReportCheckpoint(int attempt, const std::string& ref, int64_t step) {
  if (ref.empty() || step < 0) {
    return Status::InvalidArgument("trial " + record_.id + ": a checkpoint needs a reference and a step >= 0");
  }
  if (attempt != record_.attempt) return Stale(attempt, "record a checkpoint");
  if (record_.state != TrialState::kAssigned && record_.state != TrialState::kRunning) {
    return Status::FailedPrecondition("trial " + record_.id + ": cannot record a checkpoint while " +
                                      TrialStateName(record_.state));
  }
  record_.checkpoint = ref;
  record_.checkpoint_step = step;
  return Status::OK();
}

Status Trial::Complete(int attempt) {
  if (attempt == record_.attempt && record_.state == TrialState::kCompleted) return Status::OK();
  FLAP_RETURN_IF_ERROR(CheckLive(attempt, TrialState::kCompleted, {TrialState::kRunning}));
  record_.state = TrialState::kCompleted;
  record_.group.clear();
  return Status::OK();
}

Status Trial::Stop(int attempt) {
  if (attempt == record_.attempt && record_.state == TrialState::kStopped) return Status::OK();
  FLAP_RETURN_IF_ERROR(CheckLive(attempt, TrialState::kStopped, {TrialState::kRunning}));
  record_.state = TrialState::kStopped;
  record_.group.clear();
  return Status::OK();
}

StatusOr<TrialState> Trial::Requeue(int attempt, FailureCause cause, const std::string& error) {
  FLAP_RETURN_IF_ERROR(CheckLive(attempt, TrialState::kPending, {TrialState::kAssigned, TrialState::kRunning}));
  int* count = nullptr;
  int budget = 0;
  switch (cause) {
    case FailureCause::kPreemption:
      count = &record_.preemptions;
      budget = record_.budgets.preemption;
      break;
    case FailureCause::kNodeFault:
      count = &record_.node_faults;
      budget = record_.budgets.node_fault;
      break;
    case FailureCause::kTrialError:
      count = &record_.trial_errors;
      budget = record_.budgets.trial_error;
      break;
  }
  *count += 1;
  record_.group.clear();
  record_.step = record_.checkpoint_step;
  if (*count > budget) {
    record_.state = TrialState::kFailed;
    record_.last_error = std::string(FailureCauseName(cause)) + " budget of " + std::to_string(budget) +
                         " retries exhausted after " + std::to_string(*count) + " failures; last error: " + error;
  } else {
    record_.state = TrialState::kPending;
    record_.last_error = error;
  }
  return record_.state;
}

Status Trial::Cancel() {
  if (record_.state == TrialState::kCancelled) return Status::OK();
  if (IsTerminal(record_.state)) return Illegal(TrialState::kCancelled);
  record_.state = TrialState::kCancelled;
  record_.group.clear();
  return Status::OK();
}

}  // namespace flap::coordinator
