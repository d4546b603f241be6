// Metric records of an attempt that ended while they were on their way (the group lost its
// trial while the coordinator was away, and its outbox delivers them later): refused as stale,
// yet kept as the trial's history where that (kind, step) has none, never replacing a record
// and never doubling one.
//
// Against commit a5e0d09 the late records were refused and dropped: the test failed at
// "t.. has no train record at step 8" (the resumed attempt, starting from a checkpoint past it,
// never reports that step again).
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <tuple>

#include "coordinator/testing/service_test_util.h"

namespace flap::coordinator {
namespace {

TEST(CoordinatorLateMetrics, ARecordOfAnEndedAttemptFillsItsStepAndReplacesNothing) {
  ServiceOptions service = testing::FastServiceOptions();
  service.heartbeat_timeout_ms = 60000;  // the test ends attempts itself
  testing::TestCoordinator tc("late_metrics", service);
  auto c = tc.Client();
  ASSERT_OK(c->SubmitSweep(testing::MaskSweep("late", "1"), "late.ini", ""));
  ASSERT_OK(c->Register("g1", "inc-1", 1));
  auto first = c->NextTrial("g1");
  ASSERT_TRUE(first.ok() && first->assigned);
  const v1::TrialRef one = first->assignment.trial;
  ASSERT_OK(c->ReportMetrics("g1", one, MetricKind::kTrain, 4, 0, {{"loss", 1.0}}));

  // The attempt ends (the group lost it); its record of step 8 arrives afterwards.
  ASSERT_OK(c->Fail("g1", one, FailureCause::kNodeFault, "lost"));
  auto late = c->ReportMetrics("g1", one, MetricKind::kTrain, 8, 0, {{"loss", 0.8}});
  EXPECT_EQ(late.status().code(), Status::Code::kFailedPrecondition) << late.status().ToString();

  // The next attempt reports step 12; attempt 1's record of step 12, arriving later still,
  // does not replace it, and one sent twice is stored once.
  ASSERT_OK(c->Register("g2", "inc-1", 1));
  auto second = c->NextTrial("g2");
  ASSERT_TRUE(second.ok() && second->assigned);
  const v1::TrialRef two = second->assignment.trial;
  ASSERT_EQ(two.trial_id(), one.trial_id());
  ASSERT_EQ(two.attempt(), 2);
  ASSERT_OK(c->ReportMetrics("g2", two, MetricKind::kTrain, 12, 0, {{"loss", 0.5}}));
  EXPECT_FALSE(c->ReportMetrics("g1", one, MetricKind::kTrain, 12, 0, {{"loss", 0.7}}).ok());
  EXPECT_FALSE(c->ReportMetrics("g1", one, MetricKind::kTrain, 8, 0, {{"loss", 0.8}}).ok());
  // A stale attempt that never ran (ahead of the trial's) is refused and not kept.
  v1::TrialRef ahead = one;
  ahead.set_attempt(7);
  EXPECT_FALSE(c->ReportMetrics("g1", ahead, MetricKind::kTrain, 16, 0, {{"loss", 9.0}}).ok());

  auto records = c->GetMetrics("late");
  ASSERT_OK(records);
  std::map<int64_t, std::pair<int, double>> train;  // step: attempt, loss
  std::set<std::tuple<std::string, std::string, int64_t>> seen;
  for (const auto& r : *records) {
    EXPECT_TRUE(seen.insert({r.trial_id(), r.kind(), r.step()}).second) << r.trial_id() << " step " << r.step();
    if (r.trial_id() == one.trial_id() && r.kind() == "train") train[r.step()] = {r.attempt(), r.values().at("loss")};
  }
  ASSERT_EQ(train.count(8), 1u) << one.trial_id() << " has no train record at step 8";
  EXPECT_EQ(train[8], std::make_pair(1, 0.8));
  EXPECT_EQ(train[12], std::make_pair(2, 0.5));
  EXPECT_EQ(train.count(16), 0u);
  EXPECT_EQ(train.size(), 3u);
}

}  // namespace
}  // namespace flap::coordinator
