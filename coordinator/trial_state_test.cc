// Tests for coordinator/trial_state.h: every legal and illegal transition, retry budgets per
// cause, stale attempts, idempotent reports, the resume point, and the record's JSON.
#include "coordinator/trial_state.h"
#include "common/testing/testing.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

namespace flap::coordinator {
namespace {

constexpr RetryBudgets kNoRetries{0, 0, 0};

// A trial "t7" brought into `state` by legal transitions (attempt 1 unless pending/cancelled).
Trial InState(TrialState state) {
  Trial t("t7", state == TrialState::kFailed ? kNoRetries : RetryBudgets{});
  if (state == TrialState::kPending) return t;
  if (state == TrialState::kCancelled) {
    EXPECT_OK(t.Cancel());
    return t;
  }
  EXPECT_OK(t.Assign("g1"));
  if (state == TrialState::kAssigned) return t;
  if (state == TrialState::kFailed) {
    EXPECT_OK(t.Requeue(1, FailureCause::kTrialError, "boom"));
    return t;
  }
  EXPECT_OK(t.Start(1));
  if (state == TrialState::kCompleted) {
    EXPECT_OK(t.Complete(1));
  }
  if (state == TrialState::kStopped) {
    EXPECT_OK(t.Stop(1));
  }
  return t;
}

void ExpectIllegal(const Status& s, TrialState from, TrialState to) {
  ASSERT_FALSE(s.ok()) << TrialStateName(from) << " -> " << TrialStateName(to);
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition) << s.ToString();
  const std::string want =
      std::string("trial t7: illegal transition from ") + TrialStateName(from) + " to " + TrialStateName(to);
  EXPECT_EQ(s.message(), want);
}

void ExpectStale(const Status& s) {
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(s.message().find("stale attempt"), std::string::npos) << s.message();
}

TEST(TrialState, NamesRoundTrip) {
  for (TrialState s : {TrialState::kPending, TrialState::kAssigned, TrialState::kRunning, TrialState::kCompleted,
                       TrialState::kStopped, TrialState::kFailed, TrialState::kCancelled}) {
    auto parsed = ParseTrialState(TrialStateName(s));
    ASSERT_OK(parsed);
    EXPECT_EQ(*parsed, s);
  }
  EXPECT_FALSE(ParseTrialState("done").ok());
  EXPECT_TRUE(IsTerminal(TrialState::kStopped));
  EXPECT_FALSE(IsTerminal(TrialState::kAssigned));
  EXPECT_EQ(*ParseFailureCause("node_fault"), FailureCause::kNodeFault);
  EXPECT_FALSE(ParseFailureCause("cosmic_ray").ok());
}

TEST(Trial, HappyPathToCompleted) {
  Trial t("t7", RetryBudgets{});
  EXPECT_EQ(t.state(), TrialState::kPending);
  EXPECT_EQ(t.attempt(), 0);
  auto attempt = t.Assign("g1");
  ASSERT_OK(attempt);
  EXPECT_EQ(*attempt, 1);
  EXPECT_EQ(t.state(), TrialState::kAssigned);
  EXPECT_EQ(t.record().group, "g1");
  ASSERT_OK(t.Start(1));
  EXPECT_EQ(t.state(), TrialState::kRunning);
  ASSERT_OK(t.ReportProgress(1, 50));
  ASSERT_OK(t.ReportCheckpoint(1, "ckpt/100", 100));
  ASSERT_OK(t.ReportProgress(1, 120));
  EXPECT_EQ(t.record().step, 120);
  EXPECT_EQ(t.record().checkpoint, "ckpt/100");
  ASSERT_OK(t.Complete(1));
  EXPECT_EQ(t.state(), TrialState::kCompleted);
  EXPECT_EQ(t.record().group, "");
}

TEST(Trial, RunningToStoppedByAsha) {
  Trial t = InState(TrialState::kRunning);
  ASSERT_OK(t.ReportCheckpoint(1, "ckpt/200", 200));
  ASSERT_OK(t.Stop(1));
  EXPECT_EQ(t.state(), TrialState::kStopped);
  EXPECT_EQ(t.record().checkpoint, "ckpt/200");  // stopped trials keep their checkpoints
}

TEST(Trial, AssignedAndRunningRequeueToPending) {
  for (TrialState from : {TrialState::kAssigned, TrialState::kRunning}) {
    Trial t = InState(from);
    auto s = t.Requeue(1, FailureCause::kNodeFault, "heartbeat missed");
    ASSERT_OK(s);
    EXPECT_EQ(*s, TrialState::kPending);
    EXPECT_EQ(t.state(), TrialState::kPending);
    EXPECT_EQ(t.record().group, "");
    EXPECT_EQ(t.record().node_faults, 1);
    EXPECT_EQ(t.record().last_error, "heartbeat missed");
    auto again = t.Assign("g2");
    ASSERT_OK(again);
    EXPECT_EQ(*again, 2);
  }
}

TEST(Trial, EveryNonTerminalStateCanBeCancelled) {
  for (TrialState from : {TrialState::kPending, TrialState::kAssigned, TrialState::kRunning}) {
    Trial t = InState(from);
    ASSERT_OK(t.Cancel()) << TrialStateName(from);
    EXPECT_EQ(t.state(), TrialState::kCancelled);
    EXPECT_EQ(t.record().group, "");
    EXPECT_OK(t.Cancel());  // idempotent
  }
}

// Every operation from every state: legal ones succeed, the rest are refused with the trial, the
// state it is in and the state asked for, and change nothing.
TEST(Trial, EveryIllegalTransitionIsRefusedAndChangesNothing) {
  struct Op {
    TrialState to;
    std::function<Status(Trial&)> run;
  };
  const std::vector<Op> ops = {
      {TrialState::kAssigned, [](Trial& t) { return t.Assign("g9").status(); }},
      {TrialState::kRunning, [](Trial& t) { return t.Start(t.attempt()); }},
      {TrialState::kCompleted, [](Trial& t) { return t.Complete(t.attempt()); }},
      {TrialState::kStopped, [](Trial& t) { return t.Stop(t.attempt()); }},
      {TrialState::kPending, [](Trial& t) { return t.Requeue(t.attempt(), FailureCause::kPreemption, "x").status(); }},
      {TrialState::kCancelled, [](Trial& t) { return t.Cancel(); }},
  };
  // (from, to) pairs that succeed: the legal transitions plus the idempotent repeats.
  const std::vector<std::pair<TrialState, TrialState>> legal = {
      {TrialState::kPending, TrialState::kAssigned},    {TrialState::kPending, TrialState::kCancelled},
      {TrialState::kAssigned, TrialState::kRunning},    {TrialState::kAssigned, TrialState::kPending},
      {TrialState::kAssigned, TrialState::kCancelled},  {TrialState::kRunning, TrialState::kRunning},  // Start repeated
      {TrialState::kRunning, TrialState::kCompleted},   {TrialState::kRunning, TrialState::kStopped},
      {TrialState::kRunning, TrialState::kPending},     {TrialState::kRunning, TrialState::kCancelled},
      {TrialState::kCompleted, TrialState::kCompleted},  // Complete repeated
      {TrialState::kStopped, TrialState::kStopped},      // Stop repeated
      {TrialState::kCancelled, TrialState::kCancelled},  // Cancel repeated
  };
  int refused = 0;
  for (TrialState from : {TrialState::kPending, TrialState::kAssigned, TrialState::kRunning, TrialState::kCompleted,
                          TrialState::kStopped, TrialState::kFailed, TrialState::kCancelled}) {
    for (const Op& op : ops) {
      Trial t = InState(from);
      const TrialRecord before = t.record();
      Status s = op.run(t);
      bool is_legal = std::find(legal.begin(), legal.end(), std::make_pair(from, op.to)) != legal.end();
      if (is_legal) {
        EXPECT_OK(s) << TrialStateName(from) << " -> " << TrialStateName(op.to) << ": " << s.ToString();
      } else {
        ExpectIllegal(s, from, op.to);
        EXPECT_EQ(t.record(), before);
        ++refused;
      }
    }
  }
  EXPECT_EQ(refused, 7 * 6 - static_cast<int>(legal.size()));
}

TEST(Trial, RepeatedCompletionWithTheSameAttemptChangesNothing) {
  Trial t = InState(TrialState::kCompleted);
  const TrialRecord before = t.record();
  EXPECT_OK(t.Complete(1));
  EXPECT_OK(t.Complete(1));
  EXPECT_EQ(t.record(), before);
  ExpectStale(t.Complete(2));
}

TEST(Trial, RepeatedStartAndStopAreHarmless) {
  Trial t = InState(TrialState::kRunning);
  ASSERT_OK(t.ReportProgress(1, 40));
  EXPECT_OK(t.Start(1));
  EXPECT_EQ(t.record().step, 40);
  ASSERT_OK(t.Stop(1));
  EXPECT_OK(t.Stop(1));
  EXPECT_EQ(t.state(), TrialState::kStopped);
}

TEST(Trial, StaleAttemptCannotTouchTheTrial) {
  Trial t = InState(TrialState::kRunning);
  ASSERT_OK(t.Requeue(1, FailureCause::kNodeFault, "lost g1"));
  ASSERT_EQ(*t.Assign("g2"), 2);
  ASSERT_OK(t.Start(2));
  ASSERT_OK(t.ReportCheckpoint(2, "ckpt/g2-300", 300));
  const TrialRecord before = t.record();
  // The lost group g1 comes back and reports as attempt 1.
  ExpectStale(t.Start(1));
  ExpectStale(t.ReportProgress(1, 999));
  ExpectStale(t.ReportCheckpoint(1, "ckpt/g1-900", 900));
  ExpectStale(t.Complete(1));
  ExpectStale(t.Stop(1));
  ExpectStale(t.Requeue(1, FailureCause::kTrialError, "g1 crashed").status());
  // A future attempt number is as wrong as an old one.
  ExpectStale(t.Complete(3));
  EXPECT_EQ(t.record(), before);
  EXPECT_OK(t.Complete(2));
}

TEST(Trial, StaleMessageNamesTrialAndAttempts) {
  Trial t = InState(TrialState::kAssigned);
  ASSERT_OK(t.Requeue(1, FailureCause::kPreemption, "preempted"));
  ASSERT_OK(t.Assign("g2"));
  Status s = t.Complete(1);
  EXPECT_EQ(s.message(), "trial t7: stale attempt 1 (current attempt 2, assigned) cannot move it to completed");
}

TEST(Trial, ReportAfterRequeueWithTheOldAttemptIsRefused) {
  // Requeued but not yet reassigned: attempt 1 is over although it is still the latest number.
  Trial t = InState(TrialState::kRunning);
  ASSERT_OK(t.Requeue(1, FailureCause::kNodeFault, "lost"));
  ExpectIllegal(t.Complete(1), TrialState::kPending, TrialState::kCompleted);
  EXPECT_FALSE(t.ReportCheckpoint(1, "ckpt/x", 10).ok());
  EXPECT_FALSE(t.ReportProgress(1, 10).ok());
}

TEST(Trial, BudgetsAreKeptApartPerCause) {
  Trial t("t7", RetryBudgets{/*preemption=*/2, /*node_fault=*/1, /*trial_error=*/1});
  auto fail = [&t](FailureCause c, const std::string& error) {
    EXPECT_OK(t.Assign("g"));
    auto s = t.Requeue(t.attempt(), c, error);
    EXPECT_OK(s);
    return s.ok() ? *s : TrialState::kFailed;
  };
  EXPECT_EQ(fail(FailureCause::kPreemption, "p1"), TrialState::kPending);
  EXPECT_EQ(fail(FailureCause::kPreemption, "p2"), TrialState::kPending);
  // The preemption budget is spent, but a node fault and a trial error have their own.
  EXPECT_EQ(fail(FailureCause::kNodeFault, "n1"), TrialState::kPending);
  EXPECT_EQ(fail(FailureCause::kTrialError, "e1"), TrialState::kPending);
  EXPECT_EQ(t.record().preemptions, 2);
  EXPECT_EQ(t.record().node_faults, 1);
  EXPECT_EQ(t.record().trial_errors, 1);
  EXPECT_EQ(t.attempt(), 4);
  // The third preemption exhausts its budget.
  EXPECT_EQ(fail(FailureCause::kPreemption, "p3: slurm took the node"), TrialState::kFailed);
  EXPECT_EQ(t.state(), TrialState::kFailed);
  EXPECT_EQ(t.record().group, "");
  const std::string& e = t.record().last_error;
  EXPECT_NE(e.find("preemption budget of 2"), std::string::npos) << e;
  EXPECT_NE(e.find("p3: slurm took the node"), std::string::npos) << e;
  EXPECT_FALSE(t.Assign("g").ok());
}

TEST(Trial, ZeroBudgetFailsOnTheFirstFailureOfThatCauseOnly) {
  Trial t("t7", RetryBudgets{/*preemption=*/5, /*node_fault=*/5, /*trial_error=*/0});
  ASSERT_OK(t.Assign("g"));
  ASSERT_EQ(*t.Requeue(1, FailureCause::kNodeFault, "n"), TrialState::kPending);
  ASSERT_OK(t.Assign("g"));
  ASSERT_OK(t.Start(2));
  auto s = t.Requeue(2, FailureCause::kTrialError, "loss is NaN at step 40");
  ASSERT_OK(s);
  EXPECT_EQ(*s, TrialState::kFailed);
  EXPECT_NE(t.record().last_error.find("loss is NaN at step 40"), std::string::npos);
  EXPECT_NE(t.record().last_error.find("trial_error"), std::string::npos);
}

TEST(Trial, RequeueResumesFromTheLatestCheckpoint) {
  Trial t = InState(TrialState::kRunning);
  ASSERT_OK(t.ReportCheckpoint(1, "ckpt/200", 200));
  ASSERT_OK(t.ReportProgress(1, 260));
  ASSERT_OK(t.Requeue(1, FailureCause::kNodeFault, "lost"));
  EXPECT_EQ(t.record().checkpoint, "ckpt/200");
  EXPECT_EQ(t.record().checkpoint_step, 200);
  EXPECT_EQ(t.record().step, 200);  // progress falls back to where the next attempt resumes
  ASSERT_OK(t.Assign("g2"));
  EXPECT_EQ(t.record().step, 200);
  // The new attempt fell back to an older verified checkpoint and says so: newest report wins.
  ASSERT_OK(t.ReportCheckpoint(2, "ckpt/100", 100));
  EXPECT_EQ(t.record().checkpoint, "ckpt/100");
}

TEST(Trial, RequeueWithoutCheckpointRestartsFromScratch) {
  Trial t = InState(TrialState::kRunning);
  ASSERT_OK(t.ReportProgress(1, 70));
  ASSERT_OK(t.Requeue(1, FailureCause::kPreemption, "preempted"));
  EXPECT_EQ(t.record().checkpoint, "");
  EXPECT_EQ(t.record().step, 0);
}

TEST(Trial, CheckpointAllowedWhileAssignedOrRunningOnly) {
  Trial a = InState(TrialState::kAssigned);
  EXPECT_OK(a.ReportCheckpoint(1, "ckpt/0", 0));
  Trial p = InState(TrialState::kPending);
  EXPECT_EQ(p.ReportCheckpoint(0, "ckpt/0", 0).code(), Status::Code::kFailedPrecondition);
  Trial c = InState(TrialState::kCompleted);
  EXPECT_EQ(c.ReportCheckpoint(1, "ckpt/9", 9).code(), Status::Code::kFailedPrecondition);
  Trial assigned = InState(TrialState::kAssigned);
  EXPECT_EQ(assigned.ReportProgress(1, 5).code(), Status::Code::kFailedPrecondition);
}

TEST(Trial, BadArgumentsAreInvalid) {
  Trial t = InState(TrialState::kRunning);
  EXPECT_EQ(t.ReportCheckpoint(1, "", 10).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(t.ReportCheckpoint(1, "ckpt", -1).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(t.ReportProgress(1, -5).code(), Status::Code::kInvalidArgument);
  Trial p("t8", RetryBudgets{});
  EXPECT_EQ(p.Assign("").status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(p.state(), TrialState::kPending);
}

TEST(TrialRecord, FromRecordRestoresAStoredRecord) {
  Trial t("t7", RetryBudgets{4, 2, 1});
  ASSERT_OK(t.Assign("g1"));
  ASSERT_OK(t.Requeue(1, FailureCause::kPreemption, "p"));
  ASSERT_OK(t.Assign("g2"));
  ASSERT_OK(t.Start(2));
  ASSERT_OK(t.ReportCheckpoint(2, "ckpt/50", 50));
  ASSERT_OK(t.ReportProgress(2, 60));
  const TrialRecord stored = t.record();
  auto restored = Trial::FromRecord(stored);
  ASSERT_OK(restored);
  EXPECT_EQ(restored->record(), t.record());
  EXPECT_EQ(restored->state(), TrialState::kRunning);
  EXPECT_EQ(restored->record().budgets, (RetryBudgets{4, 2, 1}));
  EXPECT_EQ(restored->record().preemptions, 1);
  EXPECT_OK(restored->Complete(2));
  ExpectStale(restored->Complete(1));
}

TEST(TrialRecord, FromRecordRefusesInconsistentRecords) {
  TrialRecord r;
  r.id = "t1";
  ASSERT_OK(Trial::FromRecord(r));

  TrialRecord pending_with_group = r;
  pending_with_group.group = "g1";
  auto a = Trial::FromRecord(pending_with_group);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(a.status().message().find("'t1'"), std::string::npos) << a.status().message();

  TrialRecord running_without_group = r;
  running_without_group.state = TrialState::kRunning;
  running_without_group.attempt = 1;
  EXPECT_FALSE(Trial::FromRecord(running_without_group).ok());

  TrialRecord negative = r;
  negative.node_faults = -1;
  EXPECT_FALSE(Trial::FromRecord(negative).ok());

  TrialRecord bad;
  bad.id = "t2";
  bad.state = TrialState::kCompleted;  // completed with attempt 0: never ran
  EXPECT_EQ(Trial::FromRecord(bad).status().code(), Status::Code::kInvalidArgument);
}

}  // namespace
}  // namespace flap::coordinator
