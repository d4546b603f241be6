// Internal to coordinator/: what the report's sources share (report.cc: the facts of each
// trial and report.md; report_tables.cc: the tables of trials, cells, equal budgets, effects
// and speed; report_stats.cc: statistics, number formats, metric records; report_write.cc:
// gnuplot scripts and writing the files). coordinator/report.h is the part's contract.
//
// Thread-safety: values and pure functions.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/report.h"

namespace flap::coordinator::report_internal {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
inline constexpr double kInf = std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------------------------
// Statistics, formats and lookups (report_stats.cc).

struct Stats {
  int n = 0;
  double mean = kNaN;
  double sd = kNaN;  // sample standard deviation (n - 1); NaN for n < 2
  double ci = kNaN;  // half-width of the 95% interval; NaN for n < 2
};
// Over the values that are not NaN.
Stats Summarise(const std::vector<double>& xs);

// A number with 6 significant digits; "" for NaN.
std::string Num(double v);
// A CSV field, quoted when it holds a comma, a quote or a newline.
std::string Csv(const std::string& s);
// A metric's value for people: a percentage for retrieval fractions, else as is.
std::string Show(double v, bool fraction);
// A difference or a spread: percentage points for retrieval fractions.
std::string ShowDelta(double v, bool fraction);
// A metric's value that is not a retrieval fraction: 3 significant digits.
std::string Plain(double v);
// A difference in percentage points (fractions) with its sign: "+3.2", "-0.4".
std::string SignedDelta(double v, bool fraction);
// "mean ± sd" over seeds; the mean alone for one seed, "-" for none.
std::string MeanSd(const Stats& s, bool fraction);
// "mean [lo, hi]" with the 95% interval over seeds, its bounds kept in [floor, ceiling] (a
// fraction in [0, 1], a time >= 0); the mean alone for one seed.
std::string MeanCi(const Stats& s, const std::function<std::string(double)>& show, double floor = -kInf,
                   double ceiling = kInf);
// The 95% interval over seeds, its bounds kept in [floor, ceiling]: {mean - ci, mean + ci}.
std::pair<double, double> Interval(const Stats& s, double floor = -kInf, double ceiling = kInf);
// "12.5 s", "1234", "26.0" (samples/s); "-" for NaN.
std::string Seconds(double v);
std::string Count(double v);
std::string Rate(double v);
// A factor's value in a trial, "-" where it does not apply.
std::string FactorValue(const TrialSpec& t, const std::string& factor);
// "mask.ratio=0.5, mask.strategy=2d"; "(base)" without factors.
std::string CellLabel(const TrialSpec& t);
// m[k], NaN when absent.
double Value(const std::map<std::string, double>& m, const std::string& k);

// The identity of an evaluation set as its records carry it (set_clips, set_captions,
// set_hash, chance_t2a_r1 ... chance_a2t_r10); NaN where a record lacks it.
struct SetIdentity {
  double clips = kNaN, captions = kNaN, hash = kNaN;
  double chance[6] = {kNaN, kNaN, kNaN, kNaN, kNaN, kNaN};  // t2a R@1, 5, 10, a2t R@1, 5, 10
  bool known() const { return !std::isnan(clips) || !std::isnan(hash); }
  bool operator<(const SetIdentity& o) const;
};
SetIdentity IdentityOf(const std::map<std::string, double>& values);
// The names of SetIdentity::chance, in order.
const std::vector<std::string>& ChanceMetrics();

// ---------------------------------------------------------------------------------------------
// What the report knows (report.cc).

// What the report knows about one trial.
struct TrialFacts {
  const TrialSpec* spec = nullptr;
  const TrialRecord* record = nullptr;
  std::map<std::string, double> final_eval;  // the EVAL record with the highest step
  int64_t final_eval_step = -1;
  std::vector<const MetricPoint*> evals;  // its EVAL records (validation), by step
  std::map<std::string, double> test;     // the TEST record with the highest step (none: empty)
  int64_t test_step = -1;
  double samples_per_second = kNaN;  // mean over TRAIN records
  double time_to_target_s = kNaN;    // training seconds to the target; NaN: not reached
  double samples_to_target = kNaN;
  double flops_to_target = kNaN;
  bool reached = false;
  // Where its evaluations stand along training (wall seconds from its first record where the
  // records lack train_seconds), with `metric`'s values.
  std::vector<EvalPoint> Along(const std::string& metric) const;
  int64_t t0_ms = 0;  // its first metric record (wall clock)
};

// Completed trials make the means and effects (report.h).
inline bool Completed(const TrialFacts& f) { return f.record && f.record->state == TrialState::kCompleted; }

// The facts of every trial and what the report measures them by.
struct ReportFacts {
  const ReportInput* in = nullptr;
  std::string metric;         // the primary metric
  bool max_mode = true;       // higher is better for it
  std::string target_metric;  // the metric of the target
  bool target_max = true;
  bool metric_pct = false;  // printed as percentages
  bool target_pct = false;
  double target = kNaN;            // NaN: no target (nothing completed to take 80% of)
  std::string target_text;         // "t2a_r1 >= 30.0%"
  std::vector<TrialFacts> trials;  // in trial order
  // The baseline arm of paired differences: the lowest cell in which every factor takes its
  // first listed value or does not apply (else the lowest cell); -1 without trials.
  int baseline_cell = -1;
  std::string baseline_label;
  // Equal FLOPs: the largest FLOPs that every completed trial reporting FLOPs reached (the
  // least of their final evaluations'); NaN when none reports FLOPs.
  double equal_flops = kNaN;
};
ReportFacts GatherFacts(const ReportInput& in, const ReportOptions& options);

// ---------------------------------------------------------------------------------------------
// Tables (report_tables.cc).

struct Table {
  std::string csv;
  std::string md;  // "" for tables only in CSV
};

// The completed trials of each cell, and every cell's spec (cells without completed trials too).
struct CellGroups {
  std::map<int, std::vector<const TrialFacts*>> members;
  std::map<int, const TrialSpec*> spec;

  // The completed trials of `cell` (none for a cell without any).
  const std::vector<const TrialFacts*>& Members(int cell) const {
    static const std::vector<const TrialFacts*> kNone;
    auto it = members.find(cell);
    return it == members.end() ? kNone : it->second;
  }
};
CellGroups GroupCells(const ReportFacts& facts);

Table TrialsTable(const ReportFacts& facts);  // trials.csv (report.md lists trials itself)
// Retrieval per cell, validation (final evaluation) and test (the checkpoint validation
// selected): mean ± sd over seeds [the query bootstrap's bounds, averaged over seeds].
Table CellsTable(const CellGroups& cells);
// The evaluation sets (sets.csv): each identity seen per split, with its trials; `flags` gets
// the lines naming cells whose trials disagree on a set's hash.
Table SetsTable(const ReportFacts& facts, const CellGroups& cells, std::string* flags);
// Paired differences against the baseline cell over the seeds both completed (paired.csv).
Table PairedTable(const ReportFacts& facts, const CellGroups& cells);
// Validation metrics interpolated at ReportFacts::equal_flops (equal_flops.csv).
Table EqualFlopsTable(const ReportFacts& facts, const CellGroups& cells);
Table BudgetTable(const ReportFacts& facts, const CellGroups& cells);
// Main effects on the primary metric; `grand` gets the grand mean over completed trials.
Table EffectsTable(const ReportFacts& facts, Stats* grand);

struct SpeedTable {
  Table table;
  std::string dat;                  // speed.dat: one "# mask.strategy S" block per series
  std::vector<std::string> series;  // the strategies plotted; empty: no plot
};
SpeedTable Speed(const ReportFacts& facts);

}  // namespace flap::coordinator::report_internal
