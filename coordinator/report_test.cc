// The ablation report as a pure function: cells, spread over seeds, main effects with their
// confidence intervals, time-to-target, and what is kept out of the means.
#include "coordinator/report.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <map>
#include <sstream>

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
  // report.md: percentages with one decimal, the spread in percentage points.
  EXPECT_TRUE(Contains(File(files, "report.md"), "20.0% ± 10.0")) << File(files, "report.md");
}

TEST(Report, MainEffectsHaveStudentTIntervals) {
  auto files = BuildReport(TwoCells(), ReportOptions());
  const std::string effects = File(files, "effects.csv");
  // Level 0: mean 0.2, sd 0.1, n 3: half-width 4.303 * 0.1 / sqrt(3) = 0.248434; grand mean 0.35.
  EXPECT_TRUE(Contains(effects, "recon.weight,0,3,0.2,-0.0484338,0.448434,-0.15\n")) << effects;
  EXPECT_TRUE(Contains(effects, "recon.weight,1,3,0.5,0.251566,0.748434,0.15\n")) << effects;
}

TEST(Report, TimeToTargetWithoutTrainingSecondsCountsWallTimeFromTheFirstReport) {
  ReportOptions o;
  // These records carry no train_seconds: wall time from the first report (t = 1 s). t0002's
  // map10 goes 0.15 (t = 3 s) -> 0.3 (t = 5 s): 0.25 is crossed 2/3 of the way, at 3.33 s;
  // t0005's first evaluation (0.3 at t = 3 s) already reaches it: 2 s. t0000 never does.
  o.target = 0.25;
  auto files = BuildReport(TwoCells(), o);
  const std::string trials = File(files, "trials.csv");
  EXPECT_TRUE(Contains(trials, "t0000,0,1,0,completed,1,100,100,0,,,,,,0.1,10,,,,,\n")) << trials;
  EXPECT_TRUE(Contains(trials, "t0002,0,3,0,completed,1,100,100,0.02,,,,,,0.3,30,3.33333,,,,\n")) << trials;
  EXPECT_TRUE(Contains(trials, "t0005,1,3,1,completed,1,100,100,0.05,,,,,,0.6,60,2,,,,\n")) << trials;
  // Default target: 80% of the best final map10 (0.6) = 0.48.
  auto defaults = BuildReport(TwoCells(), ReportOptions());
  EXPECT_TRUE(Contains(File(defaults, "report.md"), "map10 >= 48.0%")) << File(defaults, "report.md");
}

TEST(Report, TimeToTargetInterpolatesBetweenEvaluationsOrIsNotReached) {
  const std::vector<EvalPoint> points = {{10, 100, 0.10}, {20, 200, 0.20}, {30, 300, 0.40}};
  // 0.30 lies halfway between 0.20 (20 s, 200 samples) and 0.40 (30 s, 300 samples).
  TargetCrossing c = TimeToTarget(points, 0.30, true);
  ASSERT_TRUE(c.reached);
  EXPECT_DOUBLE_EQ(c.seconds, 25);
  EXPECT_DOUBLE_EQ(c.samples, 250);
  // Exactly at an evaluation.
  c = TimeToTarget(points, 0.20, true);
  ASSERT_TRUE(c.reached);
  EXPECT_DOUBLE_EQ(c.seconds, 20);
  // Already reached at the first evaluation: its own time (nothing earlier to interpolate from).
  c = TimeToTarget(points, 0.05, true);
  ASSERT_TRUE(c.reached);
  EXPECT_DOUBLE_EQ(c.seconds, 10);
  EXPECT_DOUBLE_EQ(c.samples, 100);
  // Never reached.
  EXPECT_FALSE(TimeToTarget(points, 0.41, true).reached);
  EXPECT_FALSE(TimeToTarget({}, 0.1, true).reached);
  // A dip after the crossing does not matter: the first crossing counts.
  c = TimeToTarget({{10, 1, 0.1}, {20, 2, 0.5}, {30, 3, 0.2}, {40, 4, 0.6}}, 0.3, true);
  EXPECT_DOUBLE_EQ(c.seconds, 15);
  // Lower is better (min mode): 0.5 is crossed a quarter of the way from 0.6 to 0.2.
  c = TimeToTarget({{0, 0, 1.0}, {10, 5, 0.6}, {20, 10, 0.2}}, 0.5, false);
  ASSERT_TRUE(c.reached);
  EXPECT_DOUBLE_EQ(c.seconds, 12.5);
  EXPECT_DOUBLE_EQ(c.samples, 6.25);
  // Unknown samples stay unknown.
  c = TimeToTarget({{10, std::nan(""), 0.1}, {20, std::nan(""), 0.5}}, 0.3, true);
  EXPECT_DOUBLE_EQ(c.seconds, 15);
  EXPECT_TRUE(std::isnan(c.samples));
}

TEST(Report, PercentagesHaveOneDecimal) {
  EXPECT_EQ(Percent(0.623), "62.3%");
  EXPECT_EQ(Percent(0.0), "0.0%");
  EXPECT_EQ(Percent(1.0), "100.0%");
  EXPECT_EQ(Percent(0.30449), "30.4%");
  EXPECT_EQ(Percent(std::nan("")), "-");
  EXPECT_TRUE(IsFractionMetric("t2a_r1"));
  EXPECT_TRUE(IsFractionMetric("a2t_map10"));
  EXPECT_FALSE(IsFractionMetric("loss"));
}

// Two cells (mask.ratio 0 and 0.75) x three seeds at an equal time budget of 100 training
// seconds, target t2a_r1 >= 30% from the sweep's [report] section. Evaluations every 25 s;
// each record carries the training seconds and samples it was made at.
ReportInput Budgeted() {
  ReportInput in;
  in.sweep_id = "b";
  in.state = "finished";
  auto spec = ParseSweepText(
      "[sweep]\nname = b\nseeds = 1, 2, 3\n[factor.mask.ratio]\nvalues = 0, 0.75\n[report]\ntarget = t2a_r1:0.30\n",
      "b.ini");
  EXPECT_TRUE(spec.ok()) << spec.status().ToString();
  in.spec = *spec;
  auto trials = ExpandSweep(in.spec);
  EXPECT_TRUE(trials.ok());
  in.trials = *trials;
  // t2a_r1 at 25, 50, 75, 100 s. Ratio 0 (trials 0-2) never reaches 30%; ratio 0.75 (3-5)
  // crosses it, running 4x the samples per second.
  const double r1[6][4] = {{0.05, 0.10, 0.15, 0.20}, {0.05, 0.12, 0.18, 0.22}, {0.04, 0.11, 0.16, 0.21},
                           {0.20, 0.35, 0.45, 0.50}, {0.10, 0.30, 0.40, 0.48}, {0.10, 0.20, 0.40, 0.52}};
  for (size_t i = 0; i < in.trials.size(); ++i) {
    TrialRecord r;
    r.id = in.trials[i].id;
    r.state = TrialState::kCompleted;
    r.attempt = 1;
    const double per_second = i < 3 ? 20.0 : 80.0;
    r.step = static_cast<int64_t>(100 * per_second / 10);
    in.records.push_back(r);
    for (int k = 0; k < 4; ++k) {
      const double seconds = 25.0 * (k + 1);
      const int64_t step = static_cast<int64_t>(seconds * per_second / 10);
      // Wall time runs on (evaluations take time); the report must use training seconds.
      in.metrics.push_back({r.id,
                            1,
                            "eval",
                            step,
                            0,
                            1000 + 40000 * (k + 1),
                            {{"t2a_r1", r1[i][k]},
                             {"a2t_r1", r1[i][k] / 2},
                             {"train_seconds", seconds},
                             {"samples", seconds * per_second}}});
    }
  }
  return in;
}

std::map<std::string, std::string> Row(const std::string& csv, const std::string& first) {
  std::istringstream in(csv);
  std::string header, line;
  std::getline(in, header);
  while (std::getline(in, line)) {
    if (line.rfind(first + ",", 0) != 0) continue;
    std::map<std::string, std::string> row;
    std::istringstream h(header), l(line);
    std::string k, v;
    while (std::getline(h, k, ',')) {
      std::getline(l, v, ',');
      row[k] = v;
    }
    return row;
  }
  return {};
}

TEST(Report, EqualBudgetsAndTimeToTargetPerCellWithIntervalsOverSeeds) {
  auto files = BuildReport(Budgeted(), ReportOptions());
  const std::string budget = File(files, "budget.csv");
  // Cell 0 (ratio 0): at the end of the budget t2a_r1 0.20, 0.22, 0.21: mean 0.21, sd 0.01,
  // half-width 4.303 * 0.01 / sqrt(3) = 0.0248434; never at 30%.
  auto c0 = Row(budget, "0");
  ASSERT_FALSE(c0.empty()) << budget;
  EXPECT_EQ(c0["n"], "3");
  EXPECT_EQ(c0["train_seconds"], "100");
  EXPECT_EQ(c0["samples"], "2000");
  EXPECT_EQ(c0["t2a_r1_mean"], "0.21");
  EXPECT_EQ(c0["t2a_r1_ci95"], "0.0248434");
  EXPECT_EQ(c0["reached"], "0");
  EXPECT_EQ(c0["time_to_target_s"], "");
  // Cell 1 (ratio 0.75): crossings at 41.6667 s (0.20 -> 0.35 at 25 -> 50 s: 2/3 of the way),
  // 50 s (exactly at an evaluation) and 62.5 s (0.20 -> 0.40 at 50 -> 75 s: halfway): mean
  // 51.3889, sd 10.4859, half-width 4.303 * 10.4859 / sqrt(3) = 26.0505; 80 samples a second.
  auto c1 = Row(budget, "1");
  ASSERT_FALSE(c1.empty()) << budget;
  EXPECT_EQ(c1["reached"], "3");
  EXPECT_EQ(c1["time_to_target_s"], "51.3889");
  EXPECT_EQ(c1["time_to_target_ci95"], "26.0505");
  EXPECT_EQ(c1["samples_to_target"], "4111.11");
  EXPECT_EQ(c1["samples"], "8000");
  EXPECT_EQ(c1["t2a_r1_mean"], "0.5");
  // The trials: interpolated training seconds, not the wall clock of the records.
  const std::string trials = File(files, "trials.csv");
  EXPECT_TRUE(Contains(trials, ",41.6667,3333.33,100,8000,\n")) << trials;
  EXPECT_TRUE(Contains(trials, ",62.5,5000,100,8000,\n")) << trials;

  // report.md: the section, percentages with one decimal, intervals, "not reached".
  const std::string md = File(files, "report.md");
  EXPECT_TRUE(Contains(md, "## Equal budgets and time to target")) << md;
  EXPECT_TRUE(Contains(md, "time to t2a_r1 >= 30.0%")) << md;
  EXPECT_TRUE(Contains(md, "| 0 | mask.ratio=0 | 3 | 100.0 s | 2000 | 21.0% [18.5%, 23.5%] |")) << md;
  EXPECT_TRUE(Contains(md, "| not reached | - | 0/3 |")) << md;
  EXPECT_TRUE(Contains(md, "| 51.4 s [25.3 s, 77.4 s] | 4111 [2027, 6195] | 3/3 |")) << md;
  // The primary metric follows the target's when there is no ASHA metric.
  EXPECT_TRUE(Contains(md, "## Main effects on t2a_r1")) << md;

  // A threshold given with the request replaces the file's (same metric); one seed reaching it
  // has no interval.
  ReportOptions o;
  o.target = 0.5;
  auto higher = BuildReport(Budgeted(), o);
  auto h1 = Row(File(higher, "budget.csv"), "1");
  EXPECT_EQ(h1["reached"], "2");  // 0.50 at 100 s and 0.52 at 100 s; 0.48 never
  EXPECT_TRUE(Contains(File(higher, "report.md"), "time to t2a_r1 >= 50.0%")) << File(higher, "report.md");
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
