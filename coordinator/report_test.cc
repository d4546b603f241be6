// The ablation report as a pure function: cells, spread over seeds, main effects with their
// confidence intervals, time-to-target, and what is kept out of the means.
#include "coordinator/report.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/test_util.h"

namespace flap::coordinator {
namespace {

std::string File(const std::vector<ReportFile>& files, const std::string& name) {
  for (const auto& f : files) {
    if (f.name == name) return f.content;
  }
  return "";
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Two cells (recon.weight 0 and 1) x three seeds; map10 values chosen by hand.
ReportInput TwoCells() {
  ReportInput in;
  in.sweep_id = "r";
  in.state = "finished";
  auto spec = ParseSweepText("[sweep]\nname = r\nseeds = 1, 2, 3\n\n[factor.recon.weight]\nvalues = 0, 1\n", "r.ini");
  EXPECT_TRUE(spec.ok()) << spec.status().ToString();
  in.spec = *spec;
  auto trials = ExpandSweep(in.spec);
  EXPECT_TRUE(trials.ok());
  in.trials = *trials;
  const double map10[] = {0.10, 0.20, 0.30, 0.40, 0.50, 0.60};
  for (size_t i = 0; i < in.trials.size(); ++i) {
    TrialRecord r;
    r.id = in.trials[i].id;
    r.state = TrialState::kCompleted;
    r.attempt = 1;
    r.step = 100;
    in.records.push_back(r);
    MetricPoint train{r.id, 1, "train", 50, 0, 1000, {{"samples_per_second", 10.0 * (i + 1)}}};
    MetricPoint half{r.id, 1, "eval", 50, 0, 3000, {{"map10", map10[i] / 2}}};
    MetricPoint last{r.id, 1, "eval", 100, 0, 5000, {{"map10", map10[i]}, {"t2a_r1", 0.01 * i}}};
    in.metrics.insert(in.metrics.end(), {train, half, last});
  }
  return in;
}

TEST(Report, CellsHoldMeanAndSampleSpreadOverSeeds) {
  auto files = BuildReport(TwoCells(), ReportOptions());
  const std::string cells = File(files, "cells.csv");
  // Cell 0: 0.1, 0.2, 0.3 -> mean 0.2, sd 0.1; cell 1: 0.4, 0.5, 0.6 -> mean 0.5, sd 0.1.
  EXPECT_TRUE(Contains(cells, "0,recon.weight=0,3,")) << cells;
  EXPECT_TRUE(Contains(cells, ",0.2,0.1\n")) << cells;
  EXPECT_TRUE(Contains(cells, ",0.5,0.1\n")) << cells;
  EXPECT_TRUE(Contains(File(files, "report.md"), "0.2 ± 0.1")) << File(files, "report.md");
}

TEST(Report, MainEffectsHaveStudentTIntervals) {
  auto files = BuildReport(TwoCells(), ReportOptions());
  const std::string effects = File(files, "effects.csv");
  // Level 0: mean 0.2, sd 0.1, n 3: half-width 4.303 * 0.1 / sqrt(3) = 0.248434; grand mean 0.35.
  EXPECT_TRUE(Contains(effects, "recon.weight,0,3,0.2,-0.0484338,0.448434,-0.15\n")) << effects;
  EXPECT_TRUE(Contains(effects, "recon.weight,1,3,0.5,0.251566,0.748434,0.15\n")) << effects;
}

TEST(Report, TimeToTargetIsFromTheFirstReportToTheFirstEvaluationReachingIt) {
  ReportOptions o;
  // First report at t = 1 s. Reached at step 100 (t = 5 s, so 4 s) by trials whose final map10
  // is >= 0.25, at step 50 (t = 3 s, so 2 s) by those whose half-way map10 already is.
  o.target = 0.25;
  auto files = BuildReport(TwoCells(), o);
  const std::string trials = File(files, "trials.csv");
  EXPECT_TRUE(Contains(trials, "t0000,0,1,0,completed,1,100,100,0,,,,,,0.1,10,,\n")) << trials;
  EXPECT_TRUE(Contains(trials, "t0002,0,3,0,completed,1,100,100,0.02,,,,,,0.3,30,4,\n")) << trials;
  EXPECT_TRUE(Contains(trials, "t0005,1,3,1,completed,1,100,100,0.05,,,,,,0.6,60,2,\n")) << trials;
  // Default target: 80% of the best final map10 (0.6) = 0.48.
  auto defaults = BuildReport(TwoCells(), ReportOptions());
  EXPECT_TRUE(Contains(File(defaults, "report.md"), "map10 >= 0.48")) << File(defaults, "report.md");
}

TEST(Report, UnfinishedTrialsAreListedButKeptOutOfTheMeans) {
  ReportInput in = TwoCells();
  in.records[5].state = TrialState::kStopped;
  in.records[4].state = TrialState::kFailed;
  in.records[4].last_error = "loss is NaN";
  auto files = BuildReport(in, ReportOptions());
  const std::string cells = File(files, "cells.csv");
  EXPECT_TRUE(Contains(cells, "1,recon.weight=1,1,")) << cells;  // only t0003 remains
  EXPECT_TRUE(Contains(File(files, "trials.csv"), "t0004,1,2,1,failed,1,100,100")) << File(files, "trials.csv");
  EXPECT_TRUE(Contains(File(files, "trials.csv"), "loss is NaN"));
  EXPECT_TRUE(Contains(File(files, "report.md"), "1 failed")) << File(files, "report.md");
  EXPECT_TRUE(Contains(File(files, "report.md"), "1 stopped"));
}

TEST(Report, WithoutAMaskRatioThereIsNoPlotAndNothingBreaks) {
  ReportInput in = TwoCells();
  auto files = BuildReport(in, ReportOptions());
  EXPECT_TRUE(File(files, "throughput.gp").empty());
  EXPECT_TRUE(Contains(File(files, "report.md"), "No plot"));
  in.metrics.clear();
  in.records.clear();
  auto empty = BuildReport(in, ReportOptions());
  EXPECT_TRUE(Contains(File(empty, "report.md"), "# Ablation report: r"));
}

TEST(Report, WriteReportRunsGnuplotOrSaysWhyNot) {
  flap::testing::TempDir dir("report_write");
  auto in = TwoCells();
  // Give the trials mask factors so that there is something to plot.
  for (size_t i = 0; i < in.trials.size(); ++i) {
    in.trials[i].factors["mask.ratio"] = i % 2 ? "0.75" : "0.5";
    in.trials[i].factors["mask.strategy"] = "2d";
  }
  auto files = BuildReport(in, ReportOptions());
  ASSERT_FALSE(File(files, "throughput.gp").empty());
  WriteReportOptions missing;
  missing.gnuplot = "/nonexistent/gnuplot";
  Status s = WriteReport(files, dir / "a", missing);
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition);
  EXPECT_TRUE(Contains(s.message(), "gnuplot-nox")) << s.message();
  EXPECT_FALSE(flap::testing::ReadFile(dir / "a/report.md").empty());
  if (flap::testing::RunCommand("command -v gnuplot").exit_code != 0) {
    GTEST_SKIP() << "gnuplot is not installed (scripts/setup.sh installs gnuplot-nox)";
  }
  Status ok = WriteReport(files, dir / "b", WriteReportOptions());
  ASSERT_TRUE(ok.ok()) << ok.ToString();
  EXPECT_TRUE(Contains(flap::testing::ReadFile(dir / "b/throughput.svg"), "<svg"));
  EXPECT_TRUE(Contains(flap::testing::ReadFile(dir / "b/time_to_target.svg"), "<svg"));
}

TEST(Report, MetricPointsRoundTripThroughJsonWithNaN) {
  MetricPoint p{"t0001", 2, "eval", 7, 1, 99, {{"map10", std::nan("")}, {"t2a_r1", 0.5}}};
  auto back = MetricPoint::FromJson(p.ToJson(), "m");
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(std::isnan(back->values.at("map10")));
  EXPECT_EQ(back->values.at("t2a_r1"), 0.5);
  nlohmann::json bad = p.ToJson();
  bad["kind"] = "other";
  EXPECT_EQ(MetricPoint::FromJson(bad, "m").status().code(), Status::Code::kCorruption);
}

}  // namespace
}  // namespace flap::coordinator
