// The ablation report as a pure function: cells, spread over seeds, main effects with their
// confidence intervals, time-to-target, and what is kept out of the means.
#include "coordinator/report.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <regex>
#include <set>
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

// The row of a CSV whose first field is `first`, by column name (no quoted commas).
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

// Two cells (loss.recon_weight 0 and 1) x three seeds; map10 values chosen by hand.
ReportInput TwoCells() {
  ReportInput in;
  in.sweep_id = "r";
  in.state = "finished";
  auto spec = ParseSweepText("[sweep]\nname = r\nseeds = 1, 2, 3\n\n[factor.loss.recon_weight]\nvalues = 0, 1\n", "r.ini");
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
    MetricPoint train{r.id, 1, MetricKind::kTrain, 50, 0, 1000, {{"samples_per_second", 10.0 * (i + 1)}}};
    MetricPoint half{r.id, 1, MetricKind::kEval, 50, 0, 3000, {{"map10", map10[i] / 2}}};
    MetricPoint last{r.id, 1, MetricKind::kEval, 100, 0, 5000, {{"map10", map10[i]}, {"t2a_r1", 0.01 * i}}};
    in.metrics.insert(in.metrics.end(), {train, half, last});
  }
  return in;
}

TEST(Report, CellsHoldMeanAndSampleSpreadOverSeeds) {
  auto files = BuildReport(TwoCells(), ReportOptions());
  const std::string cells = File(files, "cells.csv");
  // Cell 0: 0.1, 0.2, 0.3 -> mean 0.2, sd 0.1; cell 1: 0.4, 0.5, 0.6 -> mean 0.5, sd 0.1.
  EXPECT_TRUE(Contains(cells, "0,loss.recon_weight=0,3,")) << cells;
  auto c0 = Row(cells, "0"), c1 = Row(cells, "1");
  EXPECT_EQ(c0["map10_mean"], "0.2");
  EXPECT_EQ(c0["map10_sd"], "0.1");
  EXPECT_EQ(c1["map10_mean"], "0.5");
  EXPECT_EQ(c1["map10_sd"], "0.1");
  EXPECT_EQ(c0["map10_qlo"], "");  // these records carry no bounds
  EXPECT_EQ(c0["test_n"], "0");
  // report.md: percentages with one decimal, the spread in percentage points.
  EXPECT_TRUE(Contains(File(files, "report.md"), "20.0% ± 10.0")) << File(files, "report.md");
}

TEST(Report, MainEffectsHaveStudentTIntervals) {
  auto files = BuildReport(TwoCells(), ReportOptions());
  const std::string effects = File(files, "effects.csv");
  // Level 0: mean 0.2, sd 0.1, n 3: half-width 4.303 * 0.1 / sqrt(3) = 0.248434 (a fraction's
  // bounds are kept in [0, 1]: -0.0484 reads 0); grand mean 0.35.
  EXPECT_TRUE(Contains(effects, "loss.recon_weight,0,3,0.2,0,0.448434,-0.15\n")) << effects;
  EXPECT_TRUE(Contains(effects, "loss.recon_weight,1,3,0.5,0.251566,0.748434,0.15\n")) << effects;
}

TEST(Report, TimeToTargetWithoutTrainingSecondsCountsWallTimeFromTheFirstReport) {
  ReportOptions o;
  // These records carry no train_seconds: wall time from the first report (t = 1 s). t0002's
  // map10 goes 0.15 (t = 3 s) -> 0.3 (t = 5 s): 0.25 is crossed 2/3 of the way, at 3.33 s;
  // t0005's first evaluation (0.3 at t = 3 s) already reaches it: 2 s. t0000 never does.
  o.target = 0.25;
  auto files = BuildReport(TwoCells(), o);
  const std::string trials = File(files, "trials.csv");
  EXPECT_TRUE(Contains(trials, "t0000,0,1,0,completed,1,100,100,0,,,,,,0.1,10,,,,")) << trials;
  EXPECT_EQ(Row(trials, "t0000")["time_to_target_s"], "");
  EXPECT_EQ(Row(trials, "t0002")["time_to_target_s"], "3.33333");
  EXPECT_EQ(Row(trials, "t0002")["samples_to_target"], "");
  EXPECT_EQ(Row(trials, "t0005")["time_to_target_s"], "2");
  EXPECT_EQ(Row(trials, "t0005")["samples_per_second"], "60");
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
                            MetricKind::kEval,
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
  EXPECT_EQ(Row(trials, "t0003")["time_to_target_s"], "41.6667") << trials;
  EXPECT_EQ(Row(trials, "t0003")["samples_to_target"], "3333.33") << trials;
  EXPECT_EQ(Row(trials, "t0005")["time_to_target_s"], "62.5") << trials;
  EXPECT_EQ(Row(trials, "t0005")["train_seconds"], "100") << trials;
  EXPECT_EQ(Row(trials, "t0005")["samples"], "8000") << trials;
  EXPECT_EQ(Row(trials, "t0005")["flops"], "") << trials;  // older records: no FLOPs

  // report.md: the section, percentages with one decimal, intervals, "not reached".
  const std::string md = File(files, "report.md");
  EXPECT_TRUE(Contains(md, "## Equal budgets and time to target")) << md;
  EXPECT_TRUE(Contains(md, "time to t2a_r1 >= 30.0%")) << md;
  // Spread over seeds as ± sd (a Student t interval over three seeds says little); these records
  // carry no FLOPs, bounds or set identity: n/a, no interval.
  EXPECT_TRUE(Contains(md, "| 0 | mask.ratio=0 | 3 | 100.0 s | 2000 | n/a | 21.0% ± 1.0 |")) << md;
  EXPECT_TRUE(Contains(md, "| not reached | - | - | 0/3 |")) << md;
  EXPECT_TRUE(Contains(md, "| 51.4 s ± 10.5 s | n/a | 4111 ± 839 | 3/3 |")) << md;
  EXPECT_TRUE(Contains(md, "| val | n/a | n/a | n/a |")) << md;
  EXPECT_TRUE(Contains(md, "## Retrieval at equal FLOPs\n\nn/a")) << md;
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
  EXPECT_TRUE(Contains(cells, "1,loss.recon_weight=1,1,")) << cells;  // only t0003 remains
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

// ---------------------------------------------------------------------------------------------
// A report to publish: FLOPs, bounds over queries, set identities, the test split.

constexpr double kValHash = 0xabcdef012345;
constexpr double kTestHash = 0x0123456789ab;

// Two cells (mask.ratio 0, the baseline, and 0.75) x two seeds, evaluated on the validation
// split at steps 100 to 400 (0.25 training seconds a step; 1 GFLOP a step unmasked, 0.4 masked),
// each record with its bootstrap bounds (± 5 points), FLOPs and the set's identity; one TEST
// record per trial at step 400 for the step validation selected (t0002: 300), 2 points below
// validation there. Target t2a_r1 >= 30%.
ReportInput Published() {
  ReportInput in;
  in.sweep_id = "p";
  in.state = "finished";
  auto spec = ParseSweepText(
      "[sweep]\nname = p\nseeds = 1, 2\n[factor.mask.ratio]\nvalues = 0, 0.75\n[report]\ntarget = t2a_r1:0.30\n",
      "p.ini");
  EXPECT_TRUE(spec.ok()) << spec.status().ToString();
  in.spec = *spec;
  auto trials = ExpandSweep(in.spec);
  EXPECT_TRUE(trials.ok());
  in.trials = *trials;
  // t0000, t0001: ratio 0 seeds 1, 2; t0002, t0003: ratio 0.75 seeds 1, 2.
  const double r1[4][4] = {{0.10, 0.20, 0.30, 0.40}, {0.12, 0.22, 0.32, 0.42}, {0.05, 0.15, 0.25, 0.35},
                           {0.07, 0.17, 0.27, 0.38}};
  const int64_t selected[4] = {400, 400, 300, 400};
  auto identity = [](std::map<std::string, double>* v, bool test) {
    (*v)["set_clips"] = test ? 1000 : 500;
    (*v)["set_captions"] = test ? 5000 : 2500;
    (*v)["set_hash"] = test ? kTestHash : kValHash;
    const double clips = test ? 1000 : 500;
    (*v)["chance_t2a_r1"] = 1 / clips;
    (*v)["chance_t2a_r5"] = 5 / clips;
    (*v)["chance_t2a_r10"] = 10 / clips;
    (*v)["chance_a2t_r1"] = 1 / clips;
    (*v)["chance_a2t_r5"] = 5 / clips;
    (*v)["chance_a2t_r10"] = 10 / clips;
  };
  auto metrics = [](std::map<std::string, double>* v, double x) {
    for (const auto& [m, value] : std::map<std::string, double>{{"t2a_r1", x},
                                                                {"t2a_r5", x + 0.2},
                                                                {"t2a_r10", x + 0.3},
                                                                {"a2t_r1", x + 0.01},
                                                                {"a2t_r5", x + 0.21},
                                                                {"a2t_r10", x + 0.31},
                                                                {"map10", x}}) {
      (*v)[m] = value;
      (*v)[m + "_lo"] = std::max(0.0, value - 0.05);
      (*v)[m + "_hi"] = std::min(1.0, value + 0.05);
    }
  };
  for (size_t i = 0; i < in.trials.size(); ++i) {
    TrialRecord r;
    r.id = in.trials[i].id;
    r.state = TrialState::kCompleted;
    r.attempt = 1;
    r.step = 400;
    in.records.push_back(r);
    const double flops_per_step = i < 2 ? 1e9 : 0.4e9;
    in.metrics.push_back({r.id, 1, MetricKind::kTrain, 200, 0, 1000, {{"samples_per_second", 26.0202 + i}}});
    for (int k = 0; k < 4; ++k) {
      const int64_t step = 100 * (k + 1);
      MetricPoint e{r.id, 1, MetricKind::kEval, step, 0, 2000 + 1000 * k, {}};
      metrics(&e.values, r1[i][k]);
      identity(&e.values, false);
      e.values["train_seconds"] = 0.25 * step;
      e.values["samples"] = 8.0 * step;
      e.values["flops"] = flops_per_step * step;
      in.metrics.push_back(e);
    }
    const int64_t sel = selected[i];
    MetricPoint t{r.id, 1, MetricKind::kTest, 400, 0, 9000, {}};
    metrics(&t.values, r1[i][sel / 100 - 1] - 0.02);
    identity(&t.values, true);
    t.values["selected_step"] = static_cast<double>(sel);
    t.values["flops"] = flops_per_step * sel;
    t.values["train_seconds"] = 0.25 * sel;
    t.values["samples"] = 8.0 * sel;
    in.metrics.push_back(t);
  }
  return in;
}

TEST(Report, TestFiguresOfTheSelectedCheckpointStandNextToValidation) {
  auto files = BuildReport(Published(), ReportOptions());
  const std::string cells = File(files, "cells.csv");
  auto c0 = Row(cells, "0"), c1 = Row(cells, "1");
  EXPECT_EQ(c0["t2a_r1_mean"], "0.41");
  EXPECT_EQ(c0["test_n"], "2");
  EXPECT_EQ(c0["test_t2a_r1_mean"], "0.39");
  EXPECT_EQ(c1["test_t2a_r1_mean"], "0.295");  // (0.23 + 0.36) / 2: t0002 selected step 300
  // The query bootstrap's bounds, averaged over seeds.
  EXPECT_EQ(c0["t2a_r1_qlo"], "0.36");
  EXPECT_EQ(c0["test_t2a_r1_qhi"], "0.44");
  const std::string md = File(files, "report.md");
  EXPECT_TRUE(Contains(md, "| 0 | mask.ratio=0 | val | 2 | 400 | 400.0 GFLOP | 41.0% ± 1.4 [36.0%, 46.0%] |")) << md;
  EXPECT_TRUE(Contains(md, "| | | test | 2 | 400 | 400.0 GFLOP | 39.0% ± 1.4 [34.0%, 44.0%] |")) << md;
  EXPECT_TRUE(Contains(md, "| | | test | 2 | 300, 400 | 140.0 GFLOP | 29.5% ± 9.2 [24.5%, 34.5%] |")) << md;
  const std::string trials = File(files, "trials.csv");
  EXPECT_EQ(Row(trials, "t0002")["selected_step"], "300");
  EXPECT_EQ(Row(trials, "t0002")["test_t2a_r1"], "0.23");
  EXPECT_EQ(Row(trials, "t0002")["test_set_hash"], "0123456789ab");
  EXPECT_EQ(Row(trials, "t0002")["val_set_hash"], "abcdef012345");
}

TEST(Report, EachSetHasItsIdentityAndChanceAndDisagreementsAreFlagged) {
  ReportInput in = Published();
  auto files = BuildReport(in, ReportOptions());
  std::string md = File(files, "report.md");
  EXPECT_TRUE(Contains(md, "| val | 500 | 2500 | abcdef012345 | 0.2% | 1.0% | 2.0% | 0.2% | 1.0% | 2.0% | 4 |")) << md;
  EXPECT_TRUE(Contains(md, "| test | 1000 | 5000 | 0123456789ab | 0.1% | 0.5% | 1.0% | 0.1% | 0.5% | 1.0% | 4 |"))
      << md;
  EXPECT_TRUE(Contains(md, "Every cell's trials agree on each set's hash.")) << md;
  // Equal chance levels do not make a2t's R@5 / R@10 comparable with t2a's: the reading notes say
  // where the directions compare.
  EXPECT_TRUE(Contains(md, "- Compare the two directions at R@1. a2t ranks every caption of the set")) << md;
  EXPECT_TRUE(Contains(File(files, "sets.csv"), "val,500,2500,abcdef012345,0.002,0.01,0.02,0.002,0.01,0.02,"))
      << File(files, "sets.csv");
  // t0003 (cell 1) was tested on another test set; t0001 (cell 0) validated on its test set.
  for (auto& p : in.metrics) {
    if (p.trial_id == "t0003" && p.kind == MetricKind::kTest) p.values["set_hash"] = 0xfff;
    if (p.trial_id == "t0001" && p.kind == MetricKind::kTest) p.values["set_hash"] = kValHash;
  }
  md = File(BuildReport(in, ReportOptions()), "report.md");
  EXPECT_TRUE(Contains(md, "**Cell 1 (mask.ratio=0.75): its trials disagree on the test set's hash** "
                           "(0123456789ab, 000000000fff)"))
      << md;
  EXPECT_TRUE(Contains(md, "**The test set differs between trials** (3 hashes)")) << md;
  EXPECT_TRUE(Contains(md, "**Trial t0001 was tested on its validation set** (hash abcdef012345)")) << md;
  EXPECT_FALSE(Contains(md, "Every cell's trials agree")) << md;
}

TEST(Report, TimeToTargetInFlopsAndRetrievalAtEqualFlops) {
  auto files = BuildReport(Published(), ReportOptions());
  // Target t2a_r1 >= 30%: t0000 at step 300 exactly, t0001 80% of the way from 200 to 300 (step
  // 280), t0002 halfway from 300 to 400 (step 350), t0003 3/11 of it (step 327.27): FLOPs are
  // 1e9 (cell 0) and 0.4e9 (cell 1) a step, seconds 0.25 a step.
  const std::string trials = File(files, "trials.csv");
  EXPECT_EQ(Row(trials, "t0000")["flops_to_target"], "3e+11");
  EXPECT_EQ(Row(trials, "t0001")["flops_to_target"], "2.8e+11");
  EXPECT_EQ(Row(trials, "t0001")["time_to_target_s"], "70");
  EXPECT_EQ(Row(trials, "t0002")["flops_to_target"], "1.4e+11");
  EXPECT_EQ(Row(trials, "t0003")["time_to_target_s"], "81.8182");
  auto b0 = Row(File(files, "budget.csv"), "0");
  EXPECT_EQ(b0["flops_to_target"], "2.9e+11");
  EXPECT_EQ(b0["flops"], "4e+11");
  const std::string md = File(files, "report.md");
  EXPECT_TRUE(Contains(md, "| 72.5 s ± 3.5 s | 290.0 GFLOP ± 14.1 GFLOP | 2320 ± 113 | 2/2 |")) << md;
  EXPECT_TRUE(Contains(md, "| 0 | mask.ratio=0 | 2 | 100.0 s | 3200 | 400.0 GFLOP |")) << md;
  // Equal FLOPs: the least final FLOPs is cell 1's 160 GFLOP (step 400); cell 0 is there at step
  // 160, 60% of the way from 100 to 200: 0.16 and 0.18.
  EXPECT_TRUE(Contains(md, "interpolated at 160.0 GFLOP")) << md;
  auto e0 = Row(File(files, "equal_flops.csv"), "0"), e1 = Row(File(files, "equal_flops.csv"), "1");
  EXPECT_EQ(e0["t2a_r1_mean"], "0.17");
  EXPECT_EQ(e0["flops"], "1.6e+11");
  EXPECT_EQ(e1["t2a_r1_mean"], "0.365");
  EXPECT_TRUE(Contains(md, "| 0 | mask.ratio=0 | 2 | 17.0% ± 1.4 |")) << md;
}

TEST(Report, PairedDifferencesAgainstTheBaselineArm) {
  auto files = BuildReport(Published(), ReportOptions());
  // Cell 1 minus cell 0 (the first value of mask.ratio), seed by seed: validation 0.35 - 0.40 and
  // 0.38 - 0.42: mean -0.045, sd 0.00707, half-width 12.706 * 0.00707 / sqrt(2) = 0.0635.
  // Test: 0.23 - 0.38 and 0.36 - 0.40: mean -0.095.
  auto p1 = Row(File(files, "paired.csv"), "1");
  EXPECT_EQ(p1["pairs"], "2");
  EXPECT_EQ(p1["t2a_r1_val_diff"], "-0.045");
  EXPECT_EQ(p1["t2a_r1_val_ci95_low"], "-0.10853");
  EXPECT_EQ(p1["t2a_r1_test_diff"], "-0.095");
  const std::string md = File(files, "report.md");
  EXPECT_TRUE(Contains(md, "the baseline cell 0 (mask.ratio=0), the lowest cell whose factors all take their first"))
      << md;
  EXPECT_TRUE(Contains(md, "| 1 | mask.ratio=0.75 | 2 | -4.5 [-10.9, +1.9] | -9.5 [")) << md;
  EXPECT_TRUE(Contains(md, "| 0 | mask.ratio=0 | (baseline) | - | - |")) << md;
  // One seed in common: the difference without an interval.
  ReportInput in = Published();
  in.records[3].state = TrialState::kFailed;
  auto one = Row(File(BuildReport(in, ReportOptions()), "paired.csv"), "1");
  EXPECT_EQ(one["pairs"], "1");
  EXPECT_EQ(one["t2a_r1_val_diff"], "-0.05");
  EXPECT_EQ(one["t2a_r1_val_ci95_low"], "");
  // Both seeds differ by the same amount (0.35 - 0.40 and 0.37 - 0.42): said, not shown as an
  // interval of zero width.
  ReportInput alike = Published();
  for (MetricPoint& p : alike.metrics) {
    if (p.trial_id == "t0003" && p.kind == MetricKind::kEval && p.step == 400) p.values["t2a_r1"] = 0.37;
  }
  const std::string alike_md = File(BuildReport(alike, ReportOptions()), "report.md");
  EXPECT_TRUE(Contains(alike_md, "| 1 | mask.ratio=0.75 | 2 | -5.0 (no spread over 2 seeds) |")) << alike_md;
}

// Nothing that decides reads a TEST record: with TEST records whose figures invert every
// ranking (and meet the target at once), the primary metric's target, time to target, the
// validation figures, the effects, speed and the equal-FLOPs point are those without them.
TEST(Report, TestRecordsChangeNoDecisionAndNoValidationFigure) {
  ReportInput with = Published(), without = Published();
  without.metrics.erase(std::remove_if(without.metrics.begin(), without.metrics.end(),
                                       [](const MetricPoint& p) { return p.kind == MetricKind::kTest; }),
                        without.metrics.end());
  for (auto& p : with.metrics) {
    if (p.kind != MetricKind::kTest) continue;
    p.step = 50;  // even before the validation's first evaluation
    for (auto& [k, v] : p.values) {
      if (k.rfind("t2a", 0) == 0 || k.rfind("a2t", 0) == 0 || k.rfind("map10", 0) == 0) v = 1 - v;
    }
    p.values["flops"] = 1;
    p.values["train_seconds"] = 0.001;
  }
  for (const ReportOptions& o : {ReportOptions(), [] {
                                   ReportOptions x;
                                   x.metric = "map10";  // default target: 80% of the best final
                                   return x;
                                 }()}) {
    const auto a = BuildReport(with, o), b = BuildReport(without, o);
    for (const char* name : {"budget.csv", "effects.csv", "speed.csv", "equal_flops.csv"}) {
      EXPECT_EQ(File(a, name), File(b, name)) << name;
    }
    for (const char* column : {"t2a_r1", "map10", "time_to_target_s", "flops_to_target", "eval_step"}) {
      for (const char* trial : {"t0000", "t0001", "t0002", "t0003"}) {
        EXPECT_EQ(Row(File(a, "trials.csv"), trial)[column], Row(File(b, "trials.csv"), trial)[column])
            << trial << " " << column;
      }
    }
  }
}

// Every number in report.md is formatted: at most one decimal (percentages, seconds, samples/s,
// FLOPs' mantissa, percentage points), no exponent; the user's own factor values and the sets'
// hex hashes aside. No percentage outside [0, 100] and no negative time.
void ExpectFormatted(const ReportInput& in, const std::string& what) {
  std::string md = File(BuildReport(in, ReportOptions()), "report.md");
  std::set<std::string> factor_values;
  for (const auto& t : in.trials) {
    for (const auto& [k, v] : t.factors) factor_values.insert(v);
  }
  for (const auto& v : factor_values) {
    for (const std::string& as : {"=" + v, "| " + v + " |"}) {
      for (size_t at = md.find(as); at != std::string::npos; at = md.find(as)) md.replace(at, as.size(), "| FACTOR |");
    }
  }
  md = std::regex_replace(md, std::regex("\\b[0-9a-f]{12}\\b"), "HASH");
  std::smatch m;
  for (const auto& [pattern, why] : std::vector<std::pair<std::string, std::string>>{
           {"[0-9]+\\.[0-9]{2,}", "more than one decimal"},
           {"[0-9]\\.?[0-9]*[eE][+-]?[0-9]", "an exponent"},
           {"-[0-9]+(\\.[0-9]+)? s\\b", "a negative time"},
           {"-[0-9]+(\\.[0-9]+)?%", "a negative percentage"},
           {"\\b(1[0-9][0-9]\\.[1-9]|[2-9][0-9][0-9](\\.[0-9])?|[0-9]{4,}(\\.[0-9])?)%", "a percentage over 100"}}) {
    const std::regex re(pattern);
    std::string rest = md;
    while (std::regex_search(rest, m, re)) {
      const size_t begin = md.size() - rest.size() + static_cast<size_t>(m.position(0));
      const size_t line_start = md.rfind('\n', begin) + 1, line_end = md.find('\n', begin);
      ADD_FAILURE() << what << ": " << why << " '" << m.str(0) << "' in: " << md.substr(line_start, line_end - line_start);
      rest = m.suffix();
    }
  }
}

// Validation's choice per cell without TEST records: within a trial its best evaluation by
// ckpt.metric (map10 by default: the final one here), across the cell's completed trials the best
// objective there; the selected step's checkpoint named beside the latest reported one.
TEST(Report, SelectBestTakesEachCellsBestCompletedTrialAndNamesItsCheckpoint) {
  ReportInput in = TwoCells();
  for (TrialRecord& r : in.records) {
    r.checkpoint = "root/r-" + r.id + "/000000000120";
    r.checkpoint_step = 120;
  }
  in.records[2].state = TrialState::kStopped;  // the best of cell 0, but not completed
  in.records[5].checkpoint = "elsewhere/latest";
  const BestChoices best = SelectBest(in, ReportOptions());
  EXPECT_EQ(best.metric, "map10");
  EXPECT_TRUE(best.max_mode);
  ASSERT_EQ(best.cells.size(), 2u);
  const CellChoice& c0 = best.cells[0];
  ASSERT_NE(c0.trial, nullptr);
  EXPECT_EQ(c0.trial->id, in.trials[1].id);
  EXPECT_EQ(c0.candidates, 2);
  EXPECT_EQ(c0.selected_step, 100);
  EXPECT_DOUBLE_EQ(c0.objective, 0.20);
  EXPECT_EQ(c0.checkpoint, "root/r-" + in.trials[1].id + "/000000000100");
  EXPECT_EQ(c0.label, "loss.recon_weight=0");
  EXPECT_TRUE(c0.test.empty());
  const CellChoice& c1 = best.cells[1];
  ASSERT_NE(c1.trial, nullptr);
  EXPECT_EQ(c1.trial->id, in.trials[5].id);
  EXPECT_EQ(c1.checkpoint, "");
  EXPECT_TRUE(Contains(c1.reason, "'elsewhere/latest' (step 120) does not end in its step's folder")) << c1.reason;

  // ckpt.metric from the base config: t2a_r1, which only the final evaluations carry.
  in.base_config = "[ckpt]\nmetric = t2a_r1\n";
  for (MetricPoint& p : in.metrics) {
    if (p.kind == MetricKind::kEval && p.step == 50) p.values["t2a_r1"] = 1.0;  // now the best by t2a_r1
  }
  const BestChoices by_t2a = SelectBest(in, ReportOptions());
  EXPECT_EQ(by_t2a.cells[0].selected_step, 50);
  EXPECT_DOUBLE_EQ(by_t2a.cells[0].objective, 0.10);  // map10 at step 50 of trial 1
  EXPECT_EQ(by_t2a.cells[0].checkpoint, "root/r-" + in.trials[1].id + "/000000000050");

  // A cell without a completed trial has no choice, and says why.
  for (TrialRecord& r : in.records) r.state = TrialState::kRunning;
  const BestChoices none = SelectBest(in, ReportOptions());
  EXPECT_EQ(none.cells[0].trial, nullptr);
  EXPECT_EQ(none.cells[0].reason, "no completed trial (3 running)");
}

TEST(Report, EveryFigureOfTheRenderedReportIsFormatted) {
  ExpectFormatted(Published(), "published");
  ExpectFormatted(Budgeted(), "budgeted");  // older records: no FLOPs, bounds or sets
  ExpectFormatted(TwoCells(), "two cells");
  // Two seeds far apart: the Student t bounds of the effects would be negative and over 100%.
  ReportInput wide = Published();
  for (auto& p : wide.metrics) {
    if (p.trial_id == "t0000" && p.kind == MetricKind::kEval) p.values["t2a_r1"] = p.step == 400 ? 0.99 : 0.5;
    if (p.trial_id == "t0001" && p.kind == MetricKind::kEval) p.values["t2a_r1"] = p.step == 400 ? 0.01 : 0.005;
  }
  ExpectFormatted(wide, "wide");
  const std::string md = File(BuildReport(wide, ReportOptions()), "report.md");
  EXPECT_TRUE(Contains(md, "| mask.ratio | 0 | 2 | 50.0% | [0.0%, 100.0%] |")) << md;
  // The speed table's samples/s, one decimal.
  EXPECT_TRUE(Contains(File(BuildReport(Published(), ReportOptions()), "report.md"), "| 26.5 |")) << md;
}

TEST(Report, FlopsAndHashesAreReadable) {
  EXPECT_EQ(Flops(3.21e12), "3.2 TFLOP");
  EXPECT_EQ(Flops(1.6e11), "160.0 GFLOP");
  EXPECT_EQ(Flops(999), "999.0 FLOP");
  EXPECT_EQ(Flops(999.97), "1.0 kFLOP");
  EXPECT_EQ(Flops(0), "0.0 FLOP");
  EXPECT_EQ(Flops(std::nan("")), "n/a");
  EXPECT_EQ(HashHex(0xabcdef012345), "abcdef012345");
  EXPECT_EQ(HashHex(0xfff), "000000000fff");
  EXPECT_EQ(HashHex(281474976710655.0), "ffffffffffff");
  EXPECT_EQ(HashHex(281474976710656.0), "n/a");
  EXPECT_EQ(HashHex(-1), "n/a");
  EXPECT_EQ(HashHex(1.5), "n/a");
  EXPECT_EQ(HashHex(std::nan("")), "n/a");
}

TEST(Report, ValueAtInterpolatesAlongAnyUnit) {
  std::vector<EvalPoint> points = {{10, 100, 0.10}, {20, 200, 0.20}, {30, 300, 0.40}};
  points[0].flops = 1e9;
  points[1].flops = 2e9;
  points[2].flops = 3e9;
  EXPECT_DOUBLE_EQ(ValueAt(points, TrainingUnit::kFlops, 2.5e9), 0.30);
  EXPECT_DOUBLE_EQ(ValueAt(points, TrainingUnit::kSeconds, 15), 0.15);
  EXPECT_DOUBLE_EQ(ValueAt(points, TrainingUnit::kSamples, 300), 0.40);
  EXPECT_DOUBLE_EQ(ValueAt(points, TrainingUnit::kFlops, 1e9), 0.10);
  EXPECT_TRUE(std::isnan(ValueAt(points, TrainingUnit::kFlops, 0.5e9)));  // before the first
  EXPECT_TRUE(std::isnan(ValueAt(points, TrainingUnit::kFlops, 4e9)));    // past the last
  points[1].flops = std::nan("");
  EXPECT_TRUE(std::isnan(ValueAt(points, TrainingUnit::kFlops, 1.5e9)));  // unknown around it
  // TimeToTarget places the crossing in every unit with the same interpolation.
  points[1].flops = 2e9;
  const TargetCrossing c = TimeToTarget(points, 0.30, true);
  EXPECT_DOUBLE_EQ(c.At(TrainingUnit::kFlops), 2.5e9);
  EXPECT_DOUBLE_EQ(c.At(TrainingUnit::kSeconds), 25);
  EXPECT_DOUBLE_EQ(c.At(TrainingUnit::kSamples), 250);
}

}  // namespace
}  // namespace flap::coordinator
