// The ablation report of a sweep: Markdown, CSV and gnuplot plots, built from the sweep's
// spec, its trials' records and their metric history. BuildReport is a pure function (the same
// input gives the same files); WriteReport writes the files to a folder and runs gnuplot.
//
// What the report holds (report.md; the numbers also in the CSV files):
//   - Per trial (trials.csv): factors, seed, state, step, the final evaluation (the EVAL record
//     with the highest step: t2a_r1/r5/r10, a2t_r1/r5/r10, map10), mean samples/s over its
//     TRAIN records, and time-to-target.
//   - Per cell (cells.csv): the cell's completed trials (one per seed): mean and sample
//     standard deviation of each retrieval metric over seeds.
//   - Main effects (effects.csv): for each factor and each of its levels ("-" where the factor
//     does not apply), the mean of the primary metric over completed trials at that level, its
//     95% confidence interval (Student t over those trials), and the effect: that mean minus
//     the grand mean.
//   - Speed (speed.csv, throughput.svg, time_to_target.svg): mean samples/s and time-to-target
//     against mask.ratio, one line per mask.strategy (values from the factors, else "base").
// Stopped, failed and cancelled trials are listed with their latest evaluation but kept out of
// the means and effects: their results are from fewer steps. Speed uses every trial that
// reported anything (samples/s does not depend on how far a trial got).
//
// Primary metric: ReportOptions::metric, else the sweep's ASHA metric, else map10.
// Time-to-target: wall seconds from a trial's first metric record to its first EVAL record
// whose primary metric reaches the target (>= for max mode, <= for min); empty when never
// reached. Target: ReportOptions::target, else 80% of the best final primary metric among
// completed trials.
//
// Thread-safety: pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
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
  std::string kind;  // "train" | "eval"
  int64_t step = 0;
  int epoch = 0;
  int64_t time_ms = 0;  // when the coordinator received it (wall clock)
  std::map<std::string, double> values;

  nlohmann::json ToJson() const;
  static StatusOr<MetricPoint> FromJson(const nlohmann::json& j, const std::string& what);
};

struct ReportInput {
  std::string sweep_id;
  SweepSpec spec;
  std::string state;                   // running | finished | cancelled
  std::vector<TrialSpec> trials;       // in trial order
  std::vector<TrialRecord> records;    // same order
  std::vector<MetricPoint> metrics;    // any order
};

struct ReportOptions {
  std::string metric;   // primary metric; "" = the ASHA metric, else "map10"
  double target = 0;    // time-to-target threshold; 0 = 80% of the best final value
};

struct ReportFile {
  std::string name;     // "report.md", "trials.csv", "throughput.gp", ...
  std::string content;
};

// The retrieval metrics reported per cell, in column order.
const std::vector<std::string>& RetrievalMetrics();

// Builds report.md, trials.csv, cells.csv, effects.csv, speed.csv and the gnuplot scripts
// (throughput.gp, time_to_target.gp) with their data (speed.dat).
std::vector<ReportFile> BuildReport(const ReportInput& input, const ReportOptions& options);

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
Status WriteReport(const std::vector<ReportFile>& files, const std::string& dir,
                   const WriteReportOptions& options);

}  // namespace flap::coordinator
