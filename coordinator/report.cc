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
  const bool metric_pct = IsFractionMetric(metric), target_pct = IsFractionMetric(target_metric);

  // Gather each trial's facts.
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
    for (const MetricPoint* p : points) {
      if (p->kind == "eval" && p->step >= f.final_eval_step) {
        f.final_eval = p->values;
        f.final_eval_step = p->step;
      }
      if (p->kind == "train") sps.push_back(Value(p->values, "samples_per_second"));
    }
    f.samples_per_second = Summarise(sps).mean;
  }

  // Target for time-to-target.
  double target = options.target > 0 ? options.target : spec_target ? spec_target->value : 0;
  if (target == 0) {
    double best = kNaN;
    for (const auto& f : facts) {
      if (!Completed(f)) continue;
      double v = Value(f.final_eval, metric);
      if (std::isnan(v)) continue;
      if (std::isnan(best) || (max_mode ? v > best : v < best)) best = v;
    }
    target = std::isnan(best) ? kNaN : 0.8 * best;
  }
  for (size_t i = 0; i < facts.size(); ++i) {
    const auto& points = by_trial[in.trials[i].id];
    if (points.empty() || std::isnan(target)) continue;
    int64_t t0 = points.front()->time_ms;
    for (const MetricPoint* p : points) t0 = std::min(t0, p->time_ms);
    std::vector<EvalPoint> evals;
    for (const MetricPoint* p : points) {
      if (p->kind != "eval") continue;
      const double trained = Value(p->values, "train_seconds");
      evals.push_back({std::isnan(trained) ? (p->time_ms - t0) / 1000.0 : trained, Value(p->values, "samples"),
                       Value(p->values, target_metric)});
    }
    const TargetCrossing c = TimeToTarget(evals, target, target_max);
    facts[i].reached = c.reached;
    if (c.reached) {
      facts[i].time_to_target_s = c.seconds;
      facts[i].samples_to_target = c.samples;
    }
  }
  const std::string target_text = target_metric + (target_max ? " >= " : " <= ") +
                                  (std::isnan(target) ? "-"
                                   : target_pct       ? Percent(target)
                                                      : Num(target));

  ReportFacts out;
  out.in = &in;
  out.metric = metric;
  out.max_mode = max_mode;
  out.target_metric = target_metric;
  out.target_max = target_max;
  out.metric_pct = metric_pct;
  out.target_pct = target_pct;
  out.target = target;
  out.target_text = target_text;
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
     << "Means and effects use completed trials only, each at its final evaluation; spread is "
        "the sample standard deviation over seeds"
     << (metric_pct ? "; retrieval in percent, spreads and effects in percentage points" : "") << ".\n\n"
     << "## Equal budgets and time to target\n\n"
     << "Each cell's completed trials at the end of their budgets (the final evaluation): training "
        "seconds (evaluations excluded) and samples there, retrieval as mean [95% CI over seeds], and "
        "the training seconds and samples at which "
     << target_text
     << " was first reached (interpolated linearly between evaluations; mean [95% CI] over the seeds "
        "that reached it).\n\n"
     << budget.md << "\n## Retrieval per cell (mean ± sd over seeds)\n\n"
     << per_cell.md << "\n## Main effects on " << metric << "\n\n"
     << "Grand mean " << (grand.n ? Show(grand.mean, metric_pct) : "-") << " over " << grand.n
     << " completed trials; 95% confidence intervals (Student t) over the trials at each level.\n\n"
     << effects.md << "\n## Speed against masking\n\n"
     << "Time to target: training seconds to " << target_text << " (as above), over every trial that "
     << "reported.\n\n"
     << speed.table.md << "\n";
  if (have_plots) {
    md << "![samples/s](throughput.svg)\n\n![time to target](time_to_target.svg)\n\n";
  } else {
    md << "(No plot: no trial has a numeric mask.ratio.)\n\n";
  }
  md << "## Trials\n\n| trial | factors | seed | state | step | " << metric
     << " | samples/s | error |\n|---|---|---|---|---|---|---|---|\n";
  for (const auto& f : facts) {
    md << "| " << f.spec->id << " | " << CellLabel(*f.spec) << " | " << f.spec->seed << " | "
       << (f.record ? TrialStateName(f.record->state) : "") << " | " << (f.record ? f.record->step : 0) << " | "
       << Show(Value(f.final_eval, metric), metric_pct) << " | " << Num(f.samples_per_second) << " | "
       << (f.record ? f.record->last_error : "") << " |\n";
  }

  std::vector<ReportFile> files;
  files.push_back({"report.md", md.str()});
  files.push_back({"trials.csv", trials.csv});
  files.push_back({"budget.csv", budget.csv});
  files.push_back({"cells.csv", per_cell.csv});
  files.push_back({"effects.csv", effects.csv});
  files.push_back({"speed.csv", speed.table.csv});
  if (have_plots) {
    files.push_back({"speed.dat", speed.dat});
    for (ReportFile& gp : PlotScripts(in.sweep_id, speed.dat)) files.push_back(std::move(gp));
  }
  return files;
}

}  // namespace flap::coordinator
