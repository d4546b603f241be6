// The ablation report (report.h): the facts of each trial (final evaluation, speed, time to
// target) and BuildReport, which puts report.md together from the tables of report_tables.cc.
#include "coordinator/report.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <sstream>

#include "coordinator/report_internal.h"

namespace flap::coordinator {
namespace report_internal {

namespace {

// Each trial's facts: its evaluations (the last one its final), its test record, its speed.
std::vector<TrialFacts> TrialsFacts(const ReportInput& in) {
  std::map<std::string, std::vector<const MetricPoint*>> by_trial;
  for (const auto& m : in.metrics) by_trial[m.trial_id].push_back(&m);
  std::vector<TrialFacts> facts(in.trials.size());
  for (size_t i = 0; i < in.trials.size(); ++i) {
    TrialFacts& f = facts[i];
    f.spec = &in.trials[i];
    f.record = i < in.records.size() ? &in.records[i] : nullptr;
    auto& points = by_trial[in.trials[i].id];
    std::sort(points.begin(), points.end(), [](const MetricPoint* a, const MetricPoint* b) {
      return a->step != b->step ? a->step < b->step : a->time_ms < b->time_ms;
    });
    std::vector<double> sps;
    if (!points.empty()) f.t0_ms = points.front()->time_ms;
    for (const MetricPoint* p : points) {
      f.t0_ms = std::min(f.t0_ms, p->time_ms);
      if (p->kind == MetricKind::kEval) {
        f.evals.push_back(p);
        if (p->step >= f.final_eval_step) {
          f.final_eval = p->values;
          f.final_eval_step = p->step;
        }
      }
      // The test split's record: reported, never part of a decision below.
      if (p->kind == MetricKind::kTest && p->step >= f.test_step) {
        f.test = p->values;
        f.test_step = p->step;
      }
      if (p->kind == MetricKind::kTrain) sps.push_back(Value(p->values, "samples_per_second"));
    }
    f.samples_per_second = Summarise(sps).mean;
  }
  return facts;
}

// The target of time-to-target: the options', the sweep's, else 80% of the best final value.
double Target(const ReportInput& in, const ReportOptions& options, const std::vector<TrialFacts>& facts,
              const std::string& metric, bool max_mode) {
  const double given = options.target > 0 ? options.target : in.spec.report_target ? in.spec.report_target->value : 0;
  if (given != 0) return given;
  double best = kNaN;
  for (const auto& f : facts) {
    if (!Completed(f)) continue;
    double v = Value(f.final_eval, metric);
    if (std::isnan(v)) continue;
    if (std::isnan(best) || (max_mode ? v > best : v < best)) best = v;
  }
  return std::isnan(best) ? kNaN : 0.8 * best;
}

// The baseline arm: the lowest cell whose factors all take their first value (or do not
// apply); else the lowest cell. -1 without trials.
int BaselineCell(const ReportInput& in, const std::vector<TrialFacts>& facts, const TrialSpec** baseline_spec) {
  int baseline = -1, lowest = -1;
  *baseline_spec = nullptr;
  for (const TrialFacts& f : facts) {
    if (lowest < 0 || f.spec->cell < lowest) lowest = f.spec->cell;
    bool first_values = true;
    for (const auto& fs : in.spec.factors) {
      const std::string v = FactorValue(*f.spec, fs.name);
      if (v != "-" && !fs.values.empty() && v != fs.values.front()) first_values = false;
      if (v != "-" && fs.values.empty()) first_values = false;  // a drawn value: no first one
    }
    if (first_values && (baseline < 0 || f.spec->cell < baseline)) {
      baseline = f.spec->cell;
      *baseline_spec = f.spec;
    }
  }
  if (baseline < 0 && lowest >= 0) {
    baseline = lowest;
    for (const TrialFacts& f : facts) {
      if (f.spec->cell == lowest) *baseline_spec = f.spec;
    }
  }
  return baseline;
}

// Equal FLOPs: the least final FLOPs over the completed trials that report FLOPs.
double EqualFlops(const std::vector<TrialFacts>& facts) {
  double equal_flops = kNaN;
  for (const TrialFacts& f : facts) {
    if (!Completed(f)) continue;
    double reached = kNaN;
    for (const MetricPoint* p : f.evals) {
      const double x = Value(p->values, "flops");
      if (!std::isnan(x) && (std::isnan(reached) || x > reached)) reached = x;
    }
    if (!std::isnan(reached) && (std::isnan(equal_flops) || reached < equal_flops)) equal_flops = reached;
  }
  return equal_flops;
}

}  // namespace

ReportFacts GatherFacts(const ReportInput& in, const ReportOptions& options) {
  const std::optional<ReportTarget>& spec_target = in.spec.report_target;
  const std::string metric = !options.metric.empty() ? options.metric
                             : in.spec.asha          ? in.spec.asha->metric
                             : spec_target           ? spec_target->metric
                                                     : "map10";
  const bool max_mode = !in.spec.asha || in.spec.asha->metric != metric || in.spec.asha->mode == AshaMode::kMax;
  // The target's metric and direction.
  const std::string target_metric = spec_target ? spec_target->metric : metric;
  const bool target_max =
      !in.spec.asha || in.spec.asha->metric != target_metric || in.spec.asha->mode == AshaMode::kMax;

  std::vector<TrialFacts> facts = TrialsFacts(in);
  const double target = Target(in, options, facts, metric, max_mode);
  for (TrialFacts& f : facts) {
    if (f.evals.empty() || std::isnan(target)) continue;
    const TargetCrossing c = TimeToTarget(f.Along(target_metric), target, target_max);
    f.reached = c.reached;
    if (c.reached) {
      f.time_to_target_s = c.seconds;
      f.samples_to_target = c.samples;
      f.flops_to_target = c.flops;
    }
  }

  ReportFacts out;
  out.in = &in;
  out.metric = metric;
  out.max_mode = max_mode;
  out.target_metric = target_metric;
  out.target_max = target_max;
  out.metric_pct = IsFractionMetric(metric);
  out.target_pct = IsFractionMetric(target_metric);
  out.target = target;
  out.target_text = target_metric + (target_max ? " >= " : " <= ") +
                    (std::isnan(target) ? "-" : out.target_pct ? Percent(target) : Plain(target));
  const TrialSpec* baseline_spec = nullptr;
  out.baseline_cell = BaselineCell(in, facts, &baseline_spec);
  out.baseline_label = baseline_spec ? CellLabel(*baseline_spec) : "";
  out.equal_flops = EqualFlops(facts);
  out.trials = std::move(facts);
  return out;
}

}  // namespace report_internal

using namespace report_internal;  // NOLINT: this part's own helpers

std::vector<ReportFile> BuildReport(const ReportInput& in, const ReportOptions& options) {
  const ReportFacts rf = GatherFacts(in, options);
  const std::vector<TrialFacts>& facts = rf.trials;
  const std::string& metric = rf.metric;
  const bool metric_pct = rf.metric_pct;
  const std::string& target_text = rf.target_text;
  const CellGroups cells = GroupCells(rf);
  const Table trials = TrialsTable(rf);
  const Table per_cell = CellsTable(cells);
  const Table budget = BudgetTable(rf, cells);
  std::string set_flags;
  const Table sets = SetsTable(rf, cells, &set_flags);
  const Table paired = PairedTable(rf, cells);
  const Table equal_flops = EqualFlopsTable(rf, cells);
  Stats grand;
  const Table effects = EffectsTable(rf, &grand);
  const SpeedTable speed = Speed(rf);
  const bool have_plots = !speed.series.empty();

  std::ostringstream md;
  std::map<std::string, int> states;
  for (const auto& f : facts) states[f.record ? TrialStateName(f.record->state) : "?"]++;
  md << "# Ablation report: " << in.sweep_id << "\n\n"
     << "Sweep state: " << in.state << "; " << facts.size() << " trials (";
  bool first = true;
  for (const auto& [s, n] : states) {
    md << (first ? "" : ", ") << n << " " << s;
    first = false;
  }
  md << "); search " << SearchKindName(in.spec.search) << "; primary metric " << metric << " ("
     << (rf.max_mode ? "higher" : "lower") << " is better).\n\n"
     << "How to read it:\n\n"
     << "- **val** is the validation split (EVAL records): it selects (ASHA, the checkpoint kept, time to target, "
        "the default target). **test** is the test split (TEST records), evaluated once per trial on the "
        "checkpoint validation selected (its step: \"step\" in the test rows); it is reported, never used to "
        "decide.\n"
     << "- Means use completed trials only, validation at their final evaluation. \"± x\" is the sample "
        "standard deviation over seeds.\n"
     << "- \"[lo, hi]\" after a retrieval figure is the 95% percentile bootstrap over the eval set's queries "
        "(captions for t2a, clips for a2t, both for map10; 1000 resamples), each trial's bounds averaged over "
        "its cell's seeds: the uncertainty from the set's size, there even with one seed.\n"
     << "- Compare the two directions at R@1. a2t ranks every caption of the set, so where clips have several "
        "captions each other clip's paraphrases take several of the k places: a2t R@5 and R@10 come out below "
        "t2a's from that counting alone (docs/benchmarks.md, \"The a2t / t2a asymmetry\").\n"
     << "- Paired differences compare each cell with the baseline cell "
     << (rf.baseline_cell >= 0 ? std::to_string(rf.baseline_cell) + " (" + rf.baseline_label + ")" : std::string("-"))
     << ", the lowest cell whose factors all take their first listed value (or do not apply), seed by seed over "
        "the seeds both completed; \"[lo, hi]\" there is the 95% Student t interval over those seeds.\n"
     << (metric_pct ? "- Retrieval in percent; spreads, effects and differences in percentage points.\n" : "")
     << "\n## Evaluation sets\n\n"
     << "The identity of each set the trials were evaluated on (clips, captions, a hash of its content) and "
        "its chance level; two reports compare the same set only where these agree. \"n/a\": records "
        "without it.\n\n"
     << sets.md << "\n"
     << (set_flags.empty() ? std::string("Every cell's trials agree on each set's hash.\n") : set_flags)
     << "\n## Equal budgets and time to target\n\n"
     << "Each cell's completed trials at the end of their budgets (the final evaluation): training "
        "seconds (evaluations excluded), samples and model FLOPs there, validation retrieval, and the training "
        "seconds, FLOPs and samples at which "
     << target_text
     << " was first reached (interpolated linearly between evaluations; mean ± sd over the seeds that "
        "reached it).\n\n"
     << budget.md << "\n## Retrieval per cell: validation and test\n\n"
     << "Per cell, validation at the final evaluation (\"step\": its steps) and the test split at the "
        "checkpoint validation selected (\"step\": the selected steps; \"FLOPs\": the model FLOPs trained there).\n\n"
     << per_cell.md << "\n## Paired differences against the baseline\n\n"
     << "Each cell minus the baseline cell, seed by seed (mean [95% CI over the paired seeds]; one pair: no "
        "interval).\n\n"
     << paired.md << "\n## Retrieval at equal FLOPs\n\n";
  if (std::isnan(rf.equal_flops)) {
    md << "n/a: no completed trial's evaluations carry flops.\n\n";
  } else {
    md << "Validation retrieval of each completed trial interpolated at " << Flops(rf.equal_flops)
       << ", the largest model FLOPs every completed trial reached (linearly between its evaluations; mean ± sd "
          "over seeds).\n\n"
       << equal_flops.md << "\n";
  }
  md << "## Main effects on " << metric << "\n\n"
     << "Grand mean " << (grand.n ? Show(grand.mean, metric_pct) : "-") << " over " << grand.n
     << " completed trials (validation); 95% confidence intervals (Student t) over the trials at each level.\n\n"
     << effects.md << "\n## Speed against masking\n\n"
     << "Time to target: training seconds and FLOPs to " << target_text << " (as above), over every trial that "
     << "reported.\n\n"
     << speed.table.md << "\n";
  if (have_plots) {
    md << "![samples/s](throughput.svg)\n\n![time to target](time_to_target.svg)\n\n";
  } else {
    md << "(No plot: no trial has a numeric mask.ratio.)\n\n";
  }
  md << "## Trials\n\n| trial | factors | seed | state | step | " << metric << " val | " << metric
     << " test | selected step | samples/s | error |\n|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& f : facts) {
    const double selected = Value(f.test, "selected_step");
    md << "| " << f.spec->id << " | " << CellLabel(*f.spec) << " | " << f.spec->seed << " | "
       << (f.record ? TrialStateName(f.record->state) : "") << " | " << (f.record ? f.record->step : 0) << " | "
       << Show(Value(f.final_eval, metric), metric_pct) << " | " << Show(Value(f.test, metric), metric_pct) << " | "
       << (std::isnan(selected) ? "-" : Count(selected)) << " | " << Rate(f.samples_per_second) << " | "
       << (f.record ? f.record->last_error : "") << " |\n";
  }

  std::vector<ReportFile> files;
  files.push_back({"report.md", md.str()});
  files.push_back({"trials.csv", trials.csv});
  files.push_back({"budget.csv", budget.csv});
  files.push_back({"cells.csv", per_cell.csv});
  files.push_back({"sets.csv", sets.csv});
  files.push_back({"paired.csv", paired.csv});
  files.push_back({"equal_flops.csv", equal_flops.csv});
  files.push_back({"effects.csv", effects.csv});
  files.push_back({"speed.csv", speed.table.csv});
  if (have_plots) {
    files.push_back({"speed.dat", speed.dat});
    for (ReportFile& gp : PlotScripts(in.sweep_id, speed.dat)) files.push_back(std::move(gp));
  }
  return files;
}

}  // namespace flap::coordinator
