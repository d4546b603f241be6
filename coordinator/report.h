// The ablation report of a sweep: Markdown, CSV and gnuplot plots, built from the sweep's
// spec, its trials' records and their metric history. BuildReport is a pure function (the same
// input gives the same files); WriteReport writes the files to a folder and runs gnuplot.
//
// What the report holds (report.md; the numbers also in the CSV files; docs/sweeps.md shows it):
//   - Splits: EVAL records are the validation split, which decides (ASHA, the default target,
//     time to target, the final evaluation); the TEST record of a trial (the test split for the
//     checkpoint validation selected, with selected_step) is reported and never decides.
//   - Per trial (trials.csv): factors, seed, state, step, the final evaluation (the EVAL record
//     with the highest step: t2a_r1/r5/r10, a2t_r1/r5/r10, map10), mean samples/s over its
//     TRAIN records, time, samples and FLOPs to target, the training seconds, samples and FLOPs
//     of the final evaluation, the set hashes, and its TEST record (selected_step, test_<metric>).
//   - Evaluation sets (sets.csv): each identity per split (set_clips, set_captions, set_hash,
//     chance_*) with its trials; report.md flags a split whose hash differs between trials, a
//     cell whose trials disagree on a set's hash, and a trial tested on its validation set.
//   - Equal budgets and time to target per cell (budget.csv): the cell's completed trials at
//     the end of their budgets (the final evaluation), with their training seconds, samples and
//     FLOPs there, the target metric, t2a_r1 and a2t_r1 (mean, 95% interval over seeds in the
//     CSV, and the bootstrap bounds over queries averaged over seeds), and time, samples and
//     FLOPs to target (over the seeds that reached it, with how many did; "not reached" when
//     none did).
//   - Per cell (cells.csv): validation (final evaluation) and test (the selected checkpoint):
//     mean, sample standard deviation over seeds and averaged bootstrap bounds of each metric.
//   - Paired differences (paired.csv) against the baseline cell (the lowest cell whose factors
//     all take their first listed value or do not apply): per cell and metric (the primary,
//     t2a_r1, a2t_r1), validation and test, the mean difference over the seeds both completed
//     and its 95% Student t interval over those pairs.
//   - Equal FLOPs (equal_flops.csv): validation metrics interpolated at the largest FLOPs every
//     completed trial reached.
//   - Main effects (effects.csv): for each factor and each of its levels ("-" where the factor
//     does not apply), the mean of the primary metric over completed trials at that level, its
//     95% confidence interval (Student t over those trials; a fraction's kept in [0, 1]), and the
//     effect: that mean minus the grand mean.
//   - Speed (speed.csv, throughput.svg, time_to_target.svg): mean samples/s and time (and FLOPs)
//     to target against mask.ratio, one line per mask.strategy (values from the factors, else
//     "base").
// Stopped, failed and cancelled trials are listed with their latest evaluation but kept out of
// the means and effects: their results are from fewer steps. Speed uses every trial that
// reported anything (samples/s does not depend on how far a trial got).
//
// Primary metric: ReportOptions::metric, else the sweep's ASHA metric, else the metric of the
// sweep's [report] target, else map10.
// Target: the sweep's [report] target (metric and value; ReportOptions::target, when > 0,
// replaces the value), else ReportOptions::target or 80% of the best final primary metric
// among completed trials, on the primary metric.
// Time-to-target (TimeToTarget below): the training seconds, samples and FLOPs at which a
// trial's target metric first reaches the target (>= for max mode, <= for min), interpolated
// linearly between the two evaluations around the crossing; the first evaluation's own when it
// already reaches it (there is no evaluation before training); empty when never reached.
// Training seconds, samples and FLOPs are those each EVAL record carries (train_seconds,
// samples, flops: the worker's budget counters, evaluation time excluded); records without
// train_seconds (groups that do not send them) count wall seconds from the trial's first metric
// record; without samples or flops those read "n/a".
//
// report.md formats every figure: retrieval metrics (RetrievalMetrics() and t2a_map10 /
// a2t_map10) as percentages with one decimal ("62.3%"; spreads, effects and differences in
// percentage points), seconds and samples/s with one decimal, FLOPs as "3.2 TFLOP", other
// metrics with 3 significant digits; recall bounds within [0, 100%], time bounds >= 0. The CSV
// files keep the fractions and plain numbers.
//
// Thread-safety: pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/sweep.h"
#include "coordinator/trial_state.h"

namespace flap::coordinator {

// One metric record of a trial, as the coordinator stores it.
struct MetricPoint {
  std::string trial_id;
  int attempt = 0;
  MetricKind kind = MetricKind::kTrain;  // eval: validation; test: the test split (never decides)
  int64_t step = 0;
  int epoch = 0;
  int64_t time_ms = 0;  // when the coordinator received it (wall clock)
  std::map<std::string, double> values;
};

struct ReportInput {
  std::string sweep_id;
  SweepSpec spec;
  std::string state;                 // running | finished | cancelled
  std::vector<TrialSpec> trials;     // in trial order
  std::vector<TrialRecord> records;  // same order
  std::vector<MetricPoint> metrics;  // any order
  std::string base_config;           // the sweep's base config text (SelectBest: each trial's ckpt.metric)
};

struct ReportOptions {
  std::string metric;  // primary metric; "" = the ASHA metric, else "map10"
  double target = 0;   // time-to-target threshold; 0 = 80% of the best final value
};

struct ReportFile {
  std::string name;  // "report.md", "trials.csv", "throughput.gp", ...
  std::string content;
};

// The retrieval metrics reported per cell, in column order.
const std::vector<std::string>& RetrievalMetrics();

// Whether `metric` is a retrieval fraction (printed as a percentage), and `v` so printed:
// "62.3%"; "-" for NaN.
bool IsFractionMetric(const std::string& metric);
std::string Percent(double v);

// What training is measured in: training seconds, samples, model FLOPs (every rank).
enum class TrainingUnit { kSeconds, kSamples, kFlops };

// One evaluation along a trial's training: where (in each unit; NaN when unknown) and a
// metric's value there.
struct EvalPoint {
  double seconds = 0;
  double samples = 0;
  double value = 0;
  double flops = std::numeric_limits<double>::quiet_NaN();
  double At(TrainingUnit unit) const;
};
struct TargetCrossing {
  bool reached = false;
  double seconds = 0;  // NaN when the points' seconds are
  double samples = 0;  // NaN when the points' samples are
  double flops = std::numeric_limits<double>::quiet_NaN();
  double At(TrainingUnit unit) const;
};
// Where `points` (in training order) first reach `target` (>= in max mode, <= in min mode), in
// every unit: linear interpolation between the last point short of it and the first at or past
// it; the first point itself when it already reaches it. Not reached when no point does.
TargetCrossing TimeToTarget(const std::vector<EvalPoint>& points, double target, bool max_mode);
// The metric at `x` in `unit` (points in training order): linear interpolation between the
// evaluations around x (the same interpolation as TimeToTarget's, the other way round); NaN
// before the first evaluation, past the last, or where the points lack the unit.
double ValueAt(const std::vector<EvalPoint>& points, TrainingUnit unit, double x);

// Number formats of report.md: FLOPs "3.2 TFLOP" (one decimal, SI prefix from k to Y, "3.2e27
// FLOP" past it); a 48-bit set hash as 12 hex digits; "n/a" for NaN (a hash: for a value that is
// not an integer in [0, 2^48) too).
std::string Flops(double v);
std::string HashHex(double v);

// Builds report.md, trials.csv, cells.csv, effects.csv, speed.csv and the gnuplot scripts
// (throughput.gp, time_to_target.gp) with their data (speed.dat).
std::vector<ReportFile> BuildReport(const ReportInput& input, const ReportOptions& options);

// Validation's choice in each cell: the trial and checkpoint to keep (flapctl sweep best, the
// GetBest RPC). Test records never take part.
//   - The objective: the primary metric and its direction (above).
//   - Within a trial, the checkpoint validation selected: the step its TEST record names
//     (selected_step, the trainer's own choice: its best evaluation by ckpt.metric, at which it
//     forces a checkpoint); a trial without a TEST record: the step of its EVAL record with the
//     highest ckpt.metric, the earliest of equal ones, as the trainer chooses (the trial's
//     ckpt.metric from its factors, else the base config, else the default map10).
//   - Across the trials of a cell: its completed trials (those its figures in the report are
//     means of), ranked by the objective in the EVAL record at each one's selected step; the
//     first in trial order among equal values. A trial without that value is no candidate.
//   - The checkpoint's reference: the trial's latest reported reference when it is the selected
//     step's, else the selected step's folder (checkpoint/layout.h) beside it; "" (with the
//     reason) when that reference does not end in a step folder.
struct CellChoice {
  int cell = 0;
  std::string label;                           // CellLabel: "mask.ratio=0.5, mask.strategy=2d"
  std::map<std::string, std::string> factors;  // the factors that apply to the cell
  int candidates = 0;                          // completed trials with the objective at their selected step
  const TrialSpec* trial = nullptr;            // the choice; nullptr: none (`reason` says why)
  int64_t selected_step = -1;
  std::string checkpoint;  // "" = unknown (`reason` says why)
  double objective = std::numeric_limits<double>::quiet_NaN();
  std::map<std::string, double> validation;  // the EVAL record at selected_step
  std::map<std::string, double> test;        // the trial's TEST record; empty: none
  std::string reason;
};
struct BestChoices {
  std::string metric;             // the objective
  bool max_mode = true;           // higher is better
  std::vector<CellChoice> cells;  // every cell, in cell order
};
// Points into `input` (CellChoice::trial): keep it alive while the result is used.
BestChoices SelectBest(const ReportInput& input, const ReportOptions& options);

// The gnuplot scripts (throughput.gp, time_to_target.gp) plotting `speed_dat` (speed.dat as
// BuildReport writes it: one "# mask.strategy S" block per series). Made only from data and
// quoted so that nothing in it becomes a gnuplot command: flapctl builds the scripts of a
// report it fetches with this and never runs scripts it receives (gnuplot's `system` runs
// anything). Empty when speed_dat has no series.
std::vector<ReportFile> PlotScripts(const std::string& sweep_id, const std::string& speed_dat);

struct WriteReportOptions {
  bool plots = true;                // run gnuplot on each .gp file
  std::string gnuplot = "gnuplot";  // the program
};

// Writes `files` into `dir` (created if missing; each file written to a temporary name and
// renamed), then runs gnuplot in `dir` on each .gp file, making the .svg files. IOError naming
// the file on a write failure; FailedPrecondition when gnuplot is missing or fails (the text
// files are written all the same).
Status WriteReport(const std::vector<ReportFile>& files, const std::string& dir, const WriteReportOptions& options);

}  // namespace flap::coordinator
