// Tests for coordinator/asha.h: promotion and stopping on hand-worked sequences, ties, NaN,
// repeated reports, and the state restored from storage.
#include "coordinator/asha.h"
#include "common/testing/testing.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace flap::coordinator {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Asha Make(AshaMode mode, int eta, std::vector<double> rungs = {100, 200, 400}) {
  AshaConfig c;
  c.metric = "map10";
  c.mode = mode;
  c.rungs = std::move(rungs);
  c.reduction = eta;
  auto a = Asha::Create(c);
  EXPECT_OK(a);
  return std::move(a).value();
}

AshaAction Act(Asha& a, const std::string& trial, int rung, double value) {
  auto d = a.Decide(trial, rung, value);
  EXPECT_OK(d);
  return d.ok() ? d->action : AshaAction::kStop;
}

constexpr AshaAction kGo = AshaAction::kContinue;
constexpr AshaAction kStop = AshaAction::kStop;

TEST(Asha, HandWorkedSequenceMaxModeEta3) {
  Asha a = Make(AshaMode::kMax, 3);
  EXPECT_EQ(Act(a, "t1", 0, 0.50), kGo);    // 1 result < eta
  EXPECT_EQ(Act(a, "t2", 0, 0.70), kGo);    // 2 results < eta
  EXPECT_EQ(Act(a, "t3", 0, 0.60), kStop);  // n=3: top 1; 0.70 is better
  EXPECT_EQ(Act(a, "t4", 0, 0.90), kGo);    // n=4: top 1; best so far
  EXPECT_EQ(Act(a, "t5", 0, 0.80), kStop);  // n=5: top 1; 0.90 is better
  EXPECT_EQ(Act(a, "t6", 0, 0.75), kStop);  // n=6: top 2; 0.90, 0.80 are better
  EXPECT_EQ(Act(a, "t7", 0, 0.85), kGo);    // n=7: top 2; only 0.90 is better
  EXPECT_EQ(a.NumResults(0), 7);
  EXPECT_EQ(a.NumResults(1), 0);
}

TEST(Asha, DecisionCarriesRankAndCounts) {
  Asha a = Make(AshaMode::kMax, 3);
  Act(a, "t1", 0, 0.5);
  Act(a, "t2", 0, 0.7);
  auto d = a.Decide("t3", 0, 0.6);
  ASSERT_OK(d);
  EXPECT_EQ(d->rung, 0);
  EXPECT_EQ(d->rank, 1);
  EXPECT_EQ(d->num_results, 3);
  EXPECT_EQ(d->num_promoted, 1);
}

TEST(Asha, MinModePrefersSmallerValues) {
  Asha a = Make(AshaMode::kMin, 3);
  EXPECT_EQ(Act(a, "t1", 0, 0.50), kGo);
  EXPECT_EQ(Act(a, "t2", 0, 0.30), kGo);
  EXPECT_EQ(Act(a, "t3", 0, 0.40), kStop);  // 0.30 is better
  EXPECT_EQ(Act(a, "t4", 0, 0.10), kGo);
  EXPECT_EQ(Act(a, "t5", 0, 0.20), kStop);  // 0.10 is better, top 1 of 5
}

TEST(Asha, FewerThanEtaResultsAlwaysContinue) {
  Asha a = Make(AshaMode::kMax, 4);
  EXPECT_EQ(Act(a, "t1", 0, 0.9), kGo);
  EXPECT_EQ(Act(a, "t2", 0, 0.1), kGo);
  EXPECT_EQ(Act(a, "t3", 0, 0.0), kGo);  // worst, but only 3 < 4 results
  EXPECT_EQ(Act(a, "t4", 0, 0.0), kStop);
}

TEST(Asha, TiesAtTheBoundaryAllContinue) {
  Asha a = Make(AshaMode::kMax, 2);
  EXPECT_EQ(Act(a, "t1", 0, 0.5), kGo);
  EXPECT_EQ(Act(a, "t2", 0, 0.5), kGo);    // n=2, top 1: nothing strictly better
  EXPECT_EQ(Act(a, "t3", 0, 0.5), kGo);    // n=3, top 1: still a tie for first
  EXPECT_EQ(Act(a, "t4", 0, 0.4), kStop);  // three better
  EXPECT_EQ(Act(a, "t5", 0, 0.6), kGo);    // n=5, top 2: best
}

TEST(Asha, TieRankCountsOnlyStrictlyBetterResults) {
  // Values 0.6, 0.5, 0.5, 0.5, 0.4 then 0.5 again with eta 2: n=6 keeps the top 3; one result
  // (0.6) is strictly better than 0.5, so 0.5 has rank 1 and continues.
  Asha a = Make(AshaMode::kMax, 2);
  Act(a, "a", 0, 0.6);
  Act(a, "b", 0, 0.5);
  Act(a, "c", 0, 0.5);
  Act(a, "d", 0, 0.4);
  Act(a, "e", 0, 0.5);
  auto d = a.Decide("f", 0, 0.5);
  ASSERT_OK(d);
  EXPECT_EQ(d->rank, 1);
  EXPECT_EQ(d->num_promoted, 3);
  EXPECT_EQ(d->action, kGo);
}

TEST(Asha, NaNIsWorstAndStopsOnceTheRungHasEtaResults) {
  Asha a = Make(AshaMode::kMax, 2);
  EXPECT_EQ(Act(a, "t1", 0, kNaN), kGo);  // fewer than eta results
  EXPECT_EQ(Act(a, "t2", 0, -5.0), kGo);  // n=2, top 1: a NaN is never better
  EXPECT_EQ(Act(a, "t3", 0, kNaN), kStop);
  auto d = a.DecisionFor("t3", 0);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->rank, 1);  // below the number, tied with the other NaN
}

TEST(Asha, TwoNaNsDoNotPromoteEachOther) {
  Asha a = Make(AshaMode::kMin, 2);
  EXPECT_EQ(Act(a, "t1", 0, kNaN), kGo);
  EXPECT_EQ(Act(a, "t2", 0, kNaN), kStop);  // rank 0 by the tie, but NaN never promotes
}

TEST(Asha, NaNIsWorstInMinModeToo) {
  Asha a = Make(AshaMode::kMin, 2);
  Act(a, "t1", 0, kNaN);
  EXPECT_EQ(Act(a, "t2", 0, 1e9), kGo);  // a huge loss still beats NaN
}

TEST(Asha, RepeatedReportReturnsTheFirstDecisionAndRecordsNothing) {
  Asha a = Make(AshaMode::kMax, 2);
  Act(a, "t1", 0, 0.9);
  auto first = a.Decide("t2", 0, 0.1);
  ASSERT_OK(first);
  EXPECT_EQ(first->action, kStop);
  auto again = a.Decide("t2", 0, 0.99);  // a retry with another value: ignored
  ASSERT_OK(again);
  EXPECT_EQ(*again, *first);
  EXPECT_EQ(a.NumResults(0), 2);
  // t3 is ranked against 0.9 and 0.1, not 0.99.
  EXPECT_EQ(Act(a, "t3", 0, 0.5), kStop);  // n=3, top 1, 0.9 better
  EXPECT_EQ(Act(a, "t4", 0, 0.95), kGo);   // n=4, top 2, rank 0
}

TEST(Asha, DecisionIsNotRevisedByLaterResults) {
  Asha a = Make(AshaMode::kMax, 2);
  Act(a, "t1", 0, 0.5);
  EXPECT_EQ(Act(a, "t2", 0, 0.6), kGo);
  Act(a, "t3", 0, 0.9);
  Act(a, "t4", 0, 0.95);
  auto d = a.DecisionFor("t2", 0);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->action, kGo);
}

TEST(Asha, StoppedTrialCannotReportALaterRung) {
  Asha a = Make(AshaMode::kMax, 2);
  Act(a, "t1", 0, 0.9);
  EXPECT_EQ(Act(a, "t2", 0, 0.1), kStop);
  EXPECT_EQ(a.StoppedAt("t2"), 0);
  EXPECT_FALSE(a.StoppedAt("t1").has_value());
  auto late = a.Decide("t2", 1, 0.99);
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(late.status().message().find("t2"), std::string::npos);
  EXPECT_EQ(a.NumResults(1), 0);
}

TEST(Asha, RungsAreRankedIndependently) {
  Asha a = Make(AshaMode::kMax, 2);
  Act(a, "t1", 0, 0.9);
  Act(a, "t2", 0, 0.8);  // n=2, top 1 -> stop
  Act(a, "t3", 0, 0.95);
  EXPECT_EQ(Act(a, "t1", 1, 0.1), kGo);     // rung 1 has 1 result
  EXPECT_EQ(Act(a, "t3", 1, 0.05), kStop);  // rung 1: 0.1 is better
}

TEST(Asha, SkippingARungIsAllowed) {
  Asha a = Make(AshaMode::kMax, 2);
  EXPECT_EQ(Act(a, "t1", 2, 0.5), kGo);
  EXPECT_FALSE(a.DecisionFor("t1", 0).has_value());
}

TEST(Asha, RefusesBadRungsAndIds) {
  Asha a = Make(AshaMode::kMax, 2);
  EXPECT_EQ(a.Decide("t1", 3, 0.5).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(a.Decide("t1", -1, 0.5).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(a.Decide("", 0, 0.5).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(a.NumResults(0), 0);
}

TEST(Asha, RungReachedAtMapsStepsToRungs) {
  Asha a = Make(AshaMode::kMax, 3);
  EXPECT_FALSE(a.RungReachedAt(99).has_value());
  EXPECT_EQ(a.RungReachedAt(100), 0);
  EXPECT_EQ(a.RungReachedAt(399), 1);
  EXPECT_EQ(a.RungReachedAt(10000), 2);
}

TEST(AshaConfig, InvalidConfigListsEveryProblem) {
  AshaConfig c;
  c.metric = "bad metric!";
  c.rungs = {200, 100, -1};
  c.reduction = 1;
  auto a = Asha::Create(c);
  ASSERT_FALSE(a.ok());
  const std::string& m = a.status().message();
  EXPECT_NE(m.find("metric:"), std::string::npos) << m;
  EXPECT_NE(m.find("strictly increasing"), std::string::npos) << m;
  EXPECT_NE(m.find("> 0"), std::string::npos) << m;
  EXPECT_NE(m.find("reduction:"), std::string::npos) << m;
  EXPECT_FALSE(Asha::Create(AshaConfig{"map10", AshaMode::kMax, "", {}, 3}).ok());
  // Units: one of steps, samples, flops, seconds; steps are whole.
  AshaConfig unit{"map10", AshaMode::kMax, "tokens", {100}, 3};
  EXPECT_NE(unit.Validate().message().find("unit: expected steps, samples, flops or seconds, got 'tokens'"),
            std::string::npos)
      << unit.Validate().ToString();
  unit.unit = "steps";
  unit.rungs = {10.5};
  EXPECT_NE(unit.Validate().message().find("whole numbers"), std::string::npos) << unit.Validate().ToString();
  unit.unit = "flops";
  unit.rungs = {2.5e12, 5e12};
  EXPECT_OK(unit.Validate());
}

// Its rungs' results, as storage keeps them.
std::vector<std::vector<AshaResult>> Stored(const Asha& a) {
  std::vector<std::vector<AshaResult>> rungs;
  for (int k = 0; k < static_cast<int>(a.config().rungs.size()); ++k) rungs.push_back(a.ResultsAt(k));
  return rungs;
}

TEST(Asha, RestoreKeepsResultsDecisionsAndNaN) {
  Asha a = Make(AshaMode::kMax, 2);
  Act(a, "t1", 0, 0.9);
  Act(a, "t2", 0, kNaN);
  Act(a, "t3", 0, -std::numeric_limits<double>::infinity());
  Act(a, "t1", 1, 0.7);
  auto b = Asha::Restore(a.config(), Stored(a), "asha/s");
  ASSERT_OK(b);
  EXPECT_EQ(b->config().metric, "map10");
  EXPECT_EQ(b->NumResults(0), 3);
  EXPECT_EQ(b->NumResults(1), 1);
  EXPECT_EQ(b->StoppedAt("t2"), 0);
  EXPECT_EQ(*b->DecisionFor("t3", 0), *a.DecisionFor("t3", 0));
  ASSERT_EQ(b->ResultsAt(0).size(), 3u);
  EXPECT_TRUE(std::isnan(b->ResultsAt(0)[1].value));
  // The restored state decides the next result exactly as the original does.
  auto from_a = a.Decide("t4", 0, 0.8);
  auto from_b = b->Decide("t4", 0, 0.8);
  ASSERT_TRUE(from_a.ok() && from_b.ok());
  EXPECT_EQ(*from_a, *from_b);
  EXPECT_EQ(from_b->rank, 1);  // only 0.9 is better: NaN and -inf are worse
}

TEST(Asha, RestoreRefusesDamagedState) {
  Asha a = Make(AshaMode::kMax, 2);
  Act(a, "t1", 0, 0.9);
  auto misplaced = Stored(a);
  misplaced[1].push_back(misplaced[0][0]);  // a decision of rung 0 stored at rung 1
  auto b = Asha::Restore(a.config(), misplaced, "asha/s");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), Status::Code::kCorruption);
  EXPECT_NE(b.status().message().find("asha/s: rungs[1][0]"), std::string::npos) << b.status().message();

  auto twice = Stored(a);
  twice[0].push_back(twice[0][0]);
  EXPECT_EQ(Asha::Restore(a.config(), twice, "asha/s").status().code(), Status::Code::kCorruption);
  auto fewer = Stored(a);
  fewer.pop_back();
  EXPECT_EQ(Asha::Restore(a.config(), fewer, "asha/s").status().code(), Status::Code::kCorruption);
  AshaConfig bad = a.config();
  bad.reduction = 1;
  EXPECT_EQ(Asha::Restore(bad, Stored(a), "asha/s").status().code(), Status::Code::kCorruption);
}

TEST(Asha, NamesOfActionsReadBack) {
  for (AshaAction action : {AshaAction::kContinue, AshaAction::kStop}) {
    EXPECT_EQ(*ParseAshaAction(AshaActionName(action)), action);
  }
  EXPECT_EQ(ParseAshaAction("maybe").status().code(), Status::Code::kInvalidArgument);
}

TEST(AshaUnits, RecordsArePlacedInTheRungsUnit) {
  const std::map<std::string, double> v = {{"samples", 640}, {"flops", 3.5e12}, {"train_seconds", 61.5}};
  EXPECT_EQ(RecordPosition("steps", 20, v), 20.0);
  EXPECT_EQ(RecordPosition("", 20, v), 20.0);
  EXPECT_EQ(RecordPosition("samples", 20, v), 640.0);
  EXPECT_EQ(RecordPosition("flops", 20, v), 3.5e12);
  EXPECT_EQ(RecordPosition("seconds", 20, v), 61.5);
  EXPECT_EQ(RecordPosition("flops", 20, {}), std::nullopt);  // a worker that does not count FLOPs
  Asha a = Make(AshaMode::kMax, 2, {1e12, 2e12});
  EXPECT_EQ(a.RungReachedAt(0.99e12), std::nullopt);
  EXPECT_EQ(a.RungReachedAt(1.3e12), 0);
  EXPECT_EQ(a.RungReachedAt(2e12), 1);
}

TEST(AshaUnits, ValueAtARungIsInterpolatedBetweenTheEvaluationsAroundIt) {
  // Evaluations at 0.6 (0.2) and 1.4 (0.6) around a rung at 1.0: halfway, 0.4.
  EXPECT_DOUBLE_EQ(ValueAtRung(1.0, std::make_pair(0.6, 0.2), 1.4, 0.6), 0.4);
  // Exactly at the rung: its own value.
  EXPECT_DOUBLE_EQ(ValueAtRung(1.0, std::make_pair(0.6, 0.2), 1.0, 0.7), 0.7);
  // No evaluation before the rung (or one not before it): the evaluation past it.
  EXPECT_DOUBLE_EQ(ValueAtRung(1.0, std::nullopt, 1.2, 0.5), 0.5);
  EXPECT_DOUBLE_EQ(ValueAtRung(1.0, std::make_pair(1.0, 0.1), 1.2, 0.5), 0.5);
}

}  // namespace
}  // namespace flap::coordinator
