// The ablation report (report.h): its tables, each as CSV and (but trials.csv) as Markdown:
// trials, cells (mean and spread over seeds), equal budgets and time to target, main effects,
// and speed against masking with the data of its plots.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "coordinator/report.h"
#include "coordinator/report_internal.h"

namespace flap::coordinator::report_internal {

CellGroups GroupCells(const ReportFacts& rf) {
  CellGroups cells;
  for (const auto& f : rf.trials) {
    cells.spec.emplace(f.spec->cell, f.spec);
    if (Completed(f)) cells.members[f.spec->cell].push_back(&f);
  }
  return cells;
}

Table TrialsTable(const ReportFacts& rf) {
  const ReportInput& in = *rf.in;
  const std::vector<TrialFacts>& facts = rf.trials;
  std::vector<std::string> factor_names;
  for (const auto& fs : in.spec.factors) factor_names.push_back(fs.name);
  const auto& rm = RetrievalMetrics();
  std::ostringstream trials_csv;
  trials_csv << "trial,cell,seed";
  for (const auto& f : factor_names) trials_csv << "," << Csv(f);
  trials_csv << ",state,attempts,step,eval_step";
  for (const auto& m : rm) trials_csv << "," << m;
  trials_csv << ",samples_per_second,time_to_target_s,samples_to_target,train_seconds,samples,last_error\n";
  for (const auto& f : facts) {
    trials_csv << f.spec->id << "," << f.spec->cell << "," << f.spec->seed;
    for (const auto& name : factor_names) trials_csv << "," << Csv(FactorValue(*f.spec, name));
    trials_csv << "," << (f.record ? TrialStateName(f.record->state) : "") << "," << (f.record ? f.record->attempt : 0)
               << "," << (f.record ? f.record->step : 0) << ","
               << (f.final_eval_step >= 0 ? std::to_string(f.final_eval_step) : "");
    for (const auto& m : rm) trials_csv << "," << Num(Value(f.final_eval, m));
    trials_csv << "," << Num(f.samples_per_second) << "," << Num(f.time_to_target_s) << "," << Num(f.samples_to_target)
               << "," << Num(Value(f.final_eval, "train_seconds")) << "," << Num(Value(f.final_eval, "samples")) << ","
               << Csv(f.record ? f.record->last_error : "") << "\n";
  }
  return {trials_csv.str(), ""};
}

Table CellsTable(const CellGroups& groups) {
  const auto& rm = RetrievalMetrics();
  std::ostringstream cells_csv, cells_md;
  cells_csv << "cell,factors,n";
  for (const auto& m : rm) cells_csv << "," << m << "_mean," << m << "_sd";
  cells_csv << "\n";
  cells_md << "| cell | factors | n |";
  for (const auto& m : rm) cells_md << " " << m << " |";
  cells_md << "\n|---|---|---|";
  for (size_t i = 0; i < rm.size(); ++i) cells_md << "---|";
  cells_md << "\n";
  for (const auto& [cell, spec] : groups.spec) {
    const auto& members = groups.Members(cell);
    cells_csv << cell << "," << Csv(CellLabel(*spec)) << "," << members.size();
    cells_md << "| " << cell << " | " << CellLabel(*spec) << " | " << members.size() << " |";
    for (const auto& m : rm) {
      std::vector<double> xs;
      for (const TrialFacts* f : members) xs.push_back(Value(f->final_eval, m));
      Stats s = Summarise(xs);
      cells_csv << "," << Num(s.mean) << "," << Num(s.sd);
      cells_md << " " << MeanSd(s, IsFractionMetric(m)) << " |";
    }
    cells_csv << "\n";
    cells_md << "\n";
  }
  return {cells_csv.str(), cells_md.str()};
}

Table BudgetTable(const ReportFacts& rf, const CellGroups& groups) {
  const std::string& target_metric = rf.target_metric;
  const std::string& target_text = rf.target_text;
  std::vector<std::string> budget_metrics = {target_metric};
  for (const char* m : {"t2a_r1", "a2t_r1"}) {
    if (m != target_metric) budget_metrics.push_back(m);
  }
  std::ostringstream budget_csv, budget_md;
  budget_csv << "cell,factors,n,train_seconds,samples";
  for (const auto& m : budget_metrics) budget_csv << "," << m << "_mean," << m << "_ci95";
  budget_csv << ",time_to_target_s,time_to_target_ci95,samples_to_target,samples_to_target_ci95,reached\n";
  budget_md << "| cell | factors | n | train s | samples |";
  for (const auto& m : budget_metrics) budget_md << " " << m << " |";
  budget_md << " time to " << target_text << " | samples to target | reached |\n|---|---|---|---|---|";
  for (size_t i = 0; i < budget_metrics.size(); ++i) budget_md << "---|";
  budget_md << "---|---|---|\n";
  for (const auto& [cell, spec] : groups.spec) {
    const auto& members = groups.Members(cell);
    std::vector<double> secs, samples, ttt, stt;
    for (const TrialFacts* f : members) {
      secs.push_back(Value(f->final_eval, "train_seconds"));
      samples.push_back(Value(f->final_eval, "samples"));
      if (f->reached) {
        ttt.push_back(f->time_to_target_s);
        stt.push_back(f->samples_to_target);
      }
    }
    const Stats sec = Summarise(secs), smp = Summarise(samples), tt = Summarise(ttt), st = Summarise(stt);
    const int reached = static_cast<int>(ttt.size());
    budget_csv << cell << "," << Csv(CellLabel(*spec)) << "," << members.size() << "," << Num(sec.mean) << ","
               << Num(smp.mean);
    budget_md << "| " << cell << " | " << CellLabel(*spec) << " | " << members.size() << " | " << Seconds(sec.mean)
              << " | " << Count(smp.mean) << " |";
    for (const auto& m : budget_metrics) {
      std::vector<double> xs;
      for (const TrialFacts* f : members) xs.push_back(Value(f->final_eval, m));
      const Stats ms = Summarise(xs);
      const bool pct = IsFractionMetric(m);
      budget_csv << "," << Num(ms.mean) << "," << Num(ms.ci);
      budget_md << " " << MeanCi(ms, [pct](double v) { return Show(v, pct); }) << " |";
    }
    budget_csv << "," << Num(tt.mean) << "," << Num(tt.ci) << "," << Num(st.mean) << "," << Num(st.ci) << "," << reached
               << "\n";
    budget_md << " "
              << (members.empty() ? "-"
                  : reached == 0  ? "not reached"
                                  : MeanCi(tt, [](double v) { return Seconds(v); }))
              << " | " << (reached == 0 || st.n == 0 ? "-" : MeanCi(st, [](double v) { return Count(v); })) << " | "
              << reached << "/" << members.size() << " |\n";
  }
  return {budget_csv.str(), budget_md.str()};
}

Table EffectsTable(const ReportFacts& rf, Stats* grand_out) {
  const std::vector<TrialFacts>& facts = rf.trials;
  const std::string& metric = rf.metric;
  const bool metric_pct = rf.metric_pct;
  std::vector<double> all;
  for (const auto& f : facts) {
    if (Completed(f)) all.push_back(Value(f.final_eval, metric));
  }
  const Stats grand = Summarise(all);
  std::ostringstream effects_csv, effects_md;
  effects_csv << "factor,level,n,mean,ci95_low,ci95_high,effect\n";
  effects_md << "| factor | level | n | mean " << metric << " | 95% CI | effect vs grand mean |\n"
             << "|---|---|---|---|---|---|\n";
  for (const auto& fs : rf.in->spec.factors) {
    std::vector<std::string> levels = fs.values;
    std::map<std::string, std::vector<double>> by_level;
    for (const auto& f : facts) {
      if (!Completed(f)) continue;
      const std::string level = FactorValue(*f.spec, fs.name);
      if (std::find(levels.begin(), levels.end(), level) == levels.end()) levels.push_back(level);
      by_level[level].push_back(Value(f.final_eval, metric));
    }
    for (const auto& level : levels) {
      Stats s = Summarise(by_level[level]);
      const double lo = s.mean - s.ci, hi = s.mean + s.ci;
      effects_csv << Csv(fs.name) << "," << Csv(level) << "," << s.n << "," << Num(s.mean) << "," << Num(lo) << ","
                  << Num(hi) << "," << Num(s.mean - grand.mean) << "\n";
      effects_md << "| " << fs.name << " | " << level << " | " << s.n << " | " << Show(s.mean, metric_pct) << " | "
                 << (std::isnan(s.ci) ? "-" : "[" + Show(lo, metric_pct) + ", " + Show(hi, metric_pct) + "]") << " | "
                 << (s.n ? ShowDelta(s.mean - grand.mean, metric_pct) : "-") << " |\n";
    }
  }
  *grand_out = grand;
  return {effects_csv.str(), effects_md.str()};
}

SpeedTable Speed(const ReportFacts& rf) {
  const std::vector<TrialFacts>& facts = rf.trials;
  // Every trial with records counts.
  struct SpeedCell {
    std::vector<double> sps, ttt;
    int n = 0;
  };
  std::map<std::pair<std::string, std::string>, SpeedCell> speed;  // (strategy, ratio)
  for (const auto& f : facts) {
    if (std::isnan(f.samples_per_second) && f.final_eval_step < 0) continue;
    std::string ratio = FactorValue(*f.spec, "mask.ratio");
    std::string strategy = FactorValue(*f.spec, "mask.strategy");
    if (ratio == "-") ratio = "base";
    if (strategy == "-") strategy = "base";
    SpeedCell& c = speed[{strategy, ratio}];
    c.n++;
    c.sps.push_back(f.samples_per_second);
    c.ttt.push_back(f.time_to_target_s);
  }
  std::ostringstream speed_csv, speed_md;
  speed_csv << "mask.strategy,mask.ratio,n,samples_per_second,time_to_target_s,reached\n";
  speed_md << "| mask.strategy | mask.ratio | trials | samples/s | time to target (training s) | reached |\n"
           << "|---|---|---|---|---|---|\n";
  std::map<std::string, std::vector<std::pair<double, std::pair<double, double>>>> plot;
  for (const auto& [key, c] : speed) {
    Stats sps = Summarise(c.sps), ttt = Summarise(c.ttt);
    speed_csv << Csv(key.first) << "," << Csv(key.second) << "," << c.n << "," << Num(sps.mean) << "," << Num(ttt.mean)
              << "," << ttt.n << "\n";
    speed_md << "| " << key.first << " | " << key.second << " | " << c.n << " | " << (sps.n ? Num(sps.mean) : "-")
             << " | " << (ttt.n ? Num(ttt.mean) : "-") << " | " << ttt.n << "/" << c.n << " |\n";
    char* end = nullptr;
    const double r = std::strtod(key.second.c_str(), &end);
    if (end && *end == '\0' && !key.second.empty()) plot[key.first].push_back({r, {sps.mean, ttt.mean}});
  }

  std::ostringstream dat;
  std::vector<std::string> series;
  for (auto& [strategy, points] : plot) {
    std::sort(points.begin(), points.end());
    dat << "# mask.strategy " << strategy << "\n# ratio samples_per_second time_to_target_s\n";
    for (const auto& [r, v] : points) {
      dat << Num(r) << " " << (std::isnan(v.first) ? "NaN" : Num(v.first)) << " "
          << (std::isnan(v.second) ? "NaN" : Num(v.second)) << "\n";
    }
    dat << "\n\n";
    series.push_back(strategy);
  }
  return {{speed_csv.str(), speed_md.str()}, dat.str(), series};
}

}  // namespace flap::coordinator::report_internal
