// The ablation report (report.h): its tables, each as CSV and (but trials.csv) as Markdown:
// trials, cells (mean and spread over seeds), equal budgets and time to target, main effects,
// and speed against masking with the data of its plots.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <sstream>

#include "coordinator/report.h"
#include "coordinator/report_internal.h"

namespace flap::coordinator::report_internal {
namespace {

using Getter = std::function<const std::map<std::string, double>&(const TrialFacts&)>;
const std::map<std::string, double>& ValOf(const TrialFacts& f) { return f.final_eval; }
const std::map<std::string, double>& TestOf(const TrialFacts& f) { return f.test; }

// The members that have a record of the split (validation: a final evaluation; test: a TEST record).
std::vector<const TrialFacts*> WithSplit(const std::vector<const TrialFacts*>& members, bool test) {
  std::vector<const TrialFacts*> out;
  for (const TrialFacts* f : members) {
    if (test ? f->test_step >= 0 : f->final_eval_step >= 0) out.push_back(f);
  }
  return out;
}

Stats Over(const std::vector<const TrialFacts*>& members, const Getter& of, const std::string& metric) {
  std::vector<double> xs;
  for (const TrialFacts* f : members) xs.push_back(Value(of(*f), metric));
  return Summarise(xs);
}

// The query bootstrap's 95% bounds (metric_lo, metric_hi) averaged over the members (the seeds
// share the set's queries); NaN unless every member carries them. Kept in [0, 1].
std::pair<double, double> QueryBounds(const std::vector<const TrialFacts*>& members, const Getter& of,
                                      const std::string& metric) {
  if (members.empty()) return {kNaN, kNaN};
  double lo = 0, hi = 0;
  for (const TrialFacts* f : members) {
    const double l = Value(of(*f), metric + "_lo"), h = Value(of(*f), metric + "_hi");
    if (std::isnan(l) || std::isnan(h)) return {kNaN, kNaN};
    lo += l;
    hi += h;
  }
  const double n = static_cast<double>(members.size());
  return {std::clamp(lo / n, 0.0, 1.0), std::clamp(hi / n, 0.0, 1.0)};
}

// "20.0% ± 10.0 [17.1%, 23.0%]": mean ± sd over seeds, then the query bootstrap's bounds.
std::string Figure(const Stats& s, bool pct, const std::pair<double, double>& q) {
  std::string out = MeanSd(s, pct);
  if (s.n > 0 && !std::isnan(q.first)) out += " [" + Show(q.first, pct) + ", " + Show(q.second, pct) + "]";
  return out;
}

// "400" or "300, 400": the distinct steps.
std::string Steps(const std::vector<double>& steps) {
  std::vector<double> v;
  for (double x : steps) {
    if (!std::isnan(x) && std::find(v.begin(), v.end(), x) == v.end()) v.push_back(x);
  }
  std::sort(v.begin(), v.end());
  if (v.empty()) return "n/a";
  std::string out;
  for (double x : v) out += (out.empty() ? "" : ", ") + Count(x);
  return out;
}

// "12.5 s ± 3.1 s"-like: the mean and, over two or more, the spread.
std::string MeanSdOf(const Stats& s, const std::function<std::string(double)>& show) {
  if (s.n == 0) return "-";
  return s.n < 2 ? show(s.mean) : show(s.mean) + " ± " + show(s.sd);
}

// A chance level: one decimal, "<0.1%" below it.
std::string Chance(double v) {
  if (std::isnan(v)) return "n/a";
  return v > 0 && v < 0.0005 ? "<0.1%" : Percent(v);
}

void Unique(std::vector<std::string>* v) {
  std::vector<std::string> out;
  for (const auto& x : *v) {
    if (std::find(out.begin(), out.end(), x) == out.end()) out.push_back(x);
  }
  *v = out;
}

}  // namespace

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
  trials_csv << ",samples_per_second,time_to_target_s,samples_to_target,train_seconds,samples,flops,flops_to_target,"
                "val_set_hash,selected_step,test_step";
  for (const auto& m : rm) trials_csv << ",test_" << m;
  trials_csv << ",test_set_hash,last_error\n";
  for (const auto& f : facts) {
    trials_csv << f.spec->id << "," << f.spec->cell << "," << f.spec->seed;
    for (const auto& name : factor_names) trials_csv << "," << Csv(FactorValue(*f.spec, name));
    trials_csv << "," << (f.record ? TrialStateName(f.record->state) : "") << "," << (f.record ? f.record->attempt : 0)
               << "," << (f.record ? f.record->step : 0) << ","
               << (f.final_eval_step >= 0 ? std::to_string(f.final_eval_step) : "");
    for (const auto& m : rm) trials_csv << "," << Num(Value(f.final_eval, m));
    const double val_hash = Value(f.final_eval, "set_hash"), test_hash = Value(f.test, "set_hash");
    trials_csv << "," << Num(f.samples_per_second) << "," << Num(f.time_to_target_s) << "," << Num(f.samples_to_target)
               << "," << Num(Value(f.final_eval, "train_seconds")) << "," << Num(Value(f.final_eval, "samples")) << ","
               << Num(Value(f.final_eval, "flops")) << "," << Num(f.flops_to_target) << ","
               << (std::isnan(val_hash) ? "" : HashHex(val_hash)) << "," << Num(Value(f.test, "selected_step")) << ","
               << (f.test_step >= 0 ? std::to_string(f.test_step) : "");
    for (const auto& m : rm) trials_csv << "," << Num(Value(f.test, m));
    trials_csv << "," << (std::isnan(test_hash) ? "" : HashHex(test_hash)) << ","
               << Csv(f.record ? f.record->last_error : "") << "\n";
  }
  return {trials_csv.str(), ""};
}

Table CellsTable(const CellGroups& groups) {
  const auto& rm = RetrievalMetrics();
  std::ostringstream cells_csv, cells_md;
  cells_csv << "cell,factors,n";
  for (const auto& m : rm) cells_csv << "," << m << "_mean," << m << "_sd," << m << "_qlo," << m << "_qhi";
  cells_csv << ",test_n";
  for (const auto& m : rm) {
    cells_csv << ",test_" << m << "_mean,test_" << m << "_sd,test_" << m << "_qlo,test_" << m << "_qhi";
  }
  cells_csv << "\n";
  cells_md << "| cell | factors | split | n | step | FLOPs |";
  for (const auto& m : rm) cells_md << " " << m << " |";
  cells_md << "\n|---|---|---|---|---|---|";
  for (size_t i = 0; i < rm.size(); ++i) cells_md << "---|";
  cells_md << "\n";
  for (const auto& [cell, spec] : groups.spec) {
    const auto& members = groups.Members(cell);
    const std::vector<const TrialFacts*> tested = WithSplit(members, true);
    cells_csv << cell << "," << Csv(CellLabel(*spec)) << "," << members.size();
    std::ostringstream val_md, test_md;
    std::vector<double> val_steps, test_steps;
    for (const TrialFacts* f : members) val_steps.push_back(f->final_eval_step >= 0 ? f->final_eval_step : kNaN);
    for (const TrialFacts* f : tested) test_steps.push_back(Value(f->test, "selected_step"));
    // The model FLOPs trained at the final evaluation, and at the checkpoint the test evaluated.
    const double val_flops = Over(members, ValOf, "flops").mean, test_flops = Over(tested, TestOf, "flops").mean;
    val_md << "| " << cell << " | " << CellLabel(*spec) << " | val | " << members.size() << " | "
           << (members.empty() ? "-" : Steps(val_steps)) << " | " << Flops(val_flops) << " |";
    test_md << "| | | test | " << tested.size() << " | " << (tested.empty() ? "-" : Steps(test_steps)) << " | "
            << Flops(test_flops) << " |";
    for (const auto& m : rm) {
      const Stats s = Over(members, ValOf, m);
      const auto q = QueryBounds(members, ValOf, m);
      cells_csv << "," << Num(s.mean) << "," << Num(s.sd) << "," << Num(q.first) << "," << Num(q.second);
      val_md << " " << Figure(s, IsFractionMetric(m), q) << " |";
    }
    cells_csv << "," << tested.size();
    for (const auto& m : rm) {
      const Stats s = Over(tested, TestOf, m);
      const auto q = QueryBounds(tested, TestOf, m);
      cells_csv << "," << Num(s.mean) << "," << Num(s.sd) << "," << Num(q.first) << "," << Num(q.second);
      test_md << " " << Figure(s, IsFractionMetric(m), q) << " |";
    }
    cells_csv << "\n";
    cells_md << val_md.str() << "\n" << test_md.str() << "\n";
  }
  return {cells_csv.str(), cells_md.str()};
}

Table SetsTable(const ReportFacts& rf, const CellGroups& groups, std::string* flags) {
  std::ostringstream csv, md, fl;
  csv << "split,clips,captions,hash";
  for (const auto& c : ChanceMetrics()) csv << "," << c;
  csv << ",trials\n";
  md << "| split | clips | captions | hash | chance t2a R@1 | R@5 | R@10 | chance a2t R@1 | R@5 | R@10 | trials |\n"
     << "|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const bool test : {false, true}) {
    const char* split = test ? "test" : "val";
    // Each identity, with the trials whose records carry it (validation: every EVAL record).
    std::map<SetIdentity, std::vector<std::string>> seen;
    std::map<int, std::vector<double>> cell_hashes;
    for (const TrialFacts& f : rf.trials) {
      std::vector<const std::map<std::string, double>*> records;
      if (test) {
        if (f.test_step >= 0) records.push_back(&f.test);
      } else {
        for (const MetricPoint* p : f.evals) records.push_back(&p->values);
      }
      for (const auto* values : records) {
        const SetIdentity id = IdentityOf(*values);
        auto& trials = seen[id];
        if (std::find(trials.begin(), trials.end(), f.spec->id) == trials.end()) trials.push_back(f.spec->id);
        auto& hashes = cell_hashes[f.spec->cell];
        if (!std::isnan(id.hash) && std::find(hashes.begin(), hashes.end(), id.hash) == hashes.end()) {
          hashes.push_back(id.hash);
        }
      }
    }
    int known_hashes = 0;
    for (const auto& [id, trials] : seen) {
      known_hashes += !std::isnan(id.hash);
      csv << split << "," << Num(id.clips) << "," << Num(id.captions) << ","
          << (std::isnan(id.hash) ? "" : HashHex(id.hash));
      for (double c : id.chance) csv << "," << Num(c);
      std::string names;
      for (const auto& t : trials) names += (names.empty() ? "" : " ") + t;
      csv << "," << Csv(names) << "\n";
      md << "| " << split << " | " << (std::isnan(id.clips) ? "n/a" : Count(id.clips)) << " | "
         << (std::isnan(id.captions) ? "n/a" : Count(id.captions)) << " | " << HashHex(id.hash) << " |";
      for (double c : id.chance) md << " " << Chance(c) << " |";
      md << " " << trials.size() << " |\n";
    }
    if (seen.empty()) md << "| " << split << " | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | 0 |\n";
    if (known_hashes > 1) {
      fl << "- **The " << split << " set differs between trials** (" << known_hashes
         << " hashes): figures across cells may not compare the same set.\n";
    }
    for (const auto& [cell, hashes] : cell_hashes) {
      if (hashes.size() < 2) continue;
      std::string list;
      for (double h : hashes) list += (list.empty() ? "" : ", ") + HashHex(h);
      auto spec = groups.spec.find(cell);
      fl << "- **Cell " << cell << " (" << (spec != groups.spec.end() ? CellLabel(*spec->second) : "?")
         << "): its trials disagree on the " << split << " set's hash** (" << list << ").\n";
    }
  }
  // A test set that is the validation set selects and reports at once.
  for (const TrialFacts& f : rf.trials) {
    const double v = Value(f.final_eval, "set_hash"), t = Value(f.test, "set_hash");
    if (!std::isnan(v) && v == t) {
      fl << "- **Trial " << f.spec->id << " was tested on its validation set** (hash " << HashHex(v)
         << "): its test figures are not held out.\n";
    }
  }
  *flags = fl.str();
  return {csv.str(), md.str()};
}

Table PairedTable(const ReportFacts& rf, const CellGroups& groups) {
  std::vector<std::string> metrics = {rf.metric, "t2a_r1", "a2t_r1"};
  Unique(&metrics);
  std::ostringstream csv, md;
  csv << "cell,factors,pairs";
  md << "| cell | factors | seeds paired |";
  for (const auto& m : metrics) {
    for (const char* split : {"val", "test"}) {
      csv << "," << m << "_" << split << "_diff," << m << "_" << split << "_ci95_low," << m << "_" << split
          << "_ci95_high";
      md << " Δ " << m << " " << split << " |";
    }
  }
  csv << "\n";
  md << "\n|---|---|---|";
  for (size_t i = 0; i < 2 * metrics.size(); ++i) md << "---|";
  md << "\n";
  std::map<uint64_t, const TrialFacts*> base;
  for (const TrialFacts* f : groups.Members(rf.baseline_cell)) base[f->spec->seed] = f;
  for (const auto& [cell, spec] : groups.spec) {
    const bool is_base = cell == rf.baseline_cell;
    std::vector<std::pair<const TrialFacts*, const TrialFacts*>> pairs;  // (this cell, baseline)
    for (const TrialFacts* f : groups.Members(cell)) {
      auto b = base.find(f->spec->seed);
      if (b != base.end()) pairs.push_back({f, b->second});
    }
    csv << cell << "," << Csv(CellLabel(*spec)) << "," << pairs.size();
    md << "| " << cell << " | " << CellLabel(*spec) << " | " << (is_base ? "(baseline)" : std::to_string(pairs.size()))
       << " |";
    for (const auto& m : metrics) {
      const bool pct = IsFractionMetric(m);
      for (const bool test : {false, true}) {
        std::vector<double> d;
        for (const auto& [f, b] : pairs) {
          const auto& fv = test ? f->test : f->final_eval;
          const auto& bv = test ? b->test : b->final_eval;
          d.push_back(Value(fv, m) - Value(bv, m));
        }
        const Stats s = Summarise(d);
        const auto [lo, hi] = pct ? Interval(s, -1.0, 1.0) : Interval(s);
        csv << "," << Num(s.mean) << "," << Num(lo) << "," << Num(hi);
        if (is_base) {
          md << " - |";
        } else if (s.n == 0) {
          md << " n/a |";
        } else if (s.n >= 2 && s.sd <= 1e-9 * std::max(1.0, std::abs(s.mean))) {
          // Every seed differs by the same amount: an interval of zero width would claim a
          // certainty that so few seeds cannot give.
          md << " " << SignedDelta(s.mean, pct) << " (no spread over " << s.n << " seeds) |";
        } else {
          md << " " << SignedDelta(s.mean, pct)
             << (std::isnan(s.ci) ? "" : " [" + SignedDelta(lo, pct) + ", " + SignedDelta(hi, pct) + "]") << " |";
        }
      }
    }
    csv << "\n";
    md << "\n";
  }
  return {csv.str(), md.str()};
}

Table EqualFlopsTable(const ReportFacts& rf, const CellGroups& groups) {
  std::vector<std::string> metrics = {rf.metric, "t2a_r1", "t2a_r10", "a2t_r1", "a2t_r10"};
  Unique(&metrics);
  std::ostringstream csv, md;
  csv << "cell,factors,flops,n";
  md << "| cell | factors | n |";
  for (const auto& m : metrics) {
    csv << "," << m << "_mean," << m << "_sd";
    md << " " << m << " |";
  }
  csv << "\n";
  md << "\n|---|---|---|";
  for (size_t i = 0; i < metrics.size(); ++i) md << "---|";
  md << "\n";
  if (std::isnan(rf.equal_flops)) return {csv.str(), ""};
  for (const auto& [cell, spec] : groups.spec) {
    std::map<std::string, std::vector<double>> at;
    int n = 0;
    for (const TrialFacts* f : groups.Members(cell)) {
      bool any = false;
      for (const auto& m : metrics) {
        const double v = ValueAt(f->Along(m), TrainingUnit::kFlops, rf.equal_flops);
        at[m].push_back(v);
        any = any || !std::isnan(v);
      }
      n += any;
    }
    csv << cell << "," << Csv(CellLabel(*spec)) << "," << Num(rf.equal_flops) << "," << n;
    md << "| " << cell << " | " << CellLabel(*spec) << " | " << n << " |";
    for (const auto& m : metrics) {
      const Stats s = Summarise(at[m]);
      csv << "," << Num(s.mean) << "," << Num(s.sd);
      md << " " << MeanSd(s, IsFractionMetric(m)) << " |";
    }
    csv << "\n";
    md << "\n";
  }
  return {csv.str(), md.str()};
}

Table BudgetTable(const ReportFacts& rf, const CellGroups& groups) {
  const std::string& target_metric = rf.target_metric;
  const std::string& target_text = rf.target_text;
  std::vector<std::string> budget_metrics = {target_metric, "t2a_r1", "a2t_r1"};
  Unique(&budget_metrics);
  std::ostringstream budget_csv, budget_md;
  budget_csv << "cell,factors,n,train_seconds,samples,flops";
  for (const auto& m : budget_metrics) budget_csv << "," << m << "_mean," << m << "_ci95," << m << "_qlo," << m << "_qhi";
  budget_csv << ",time_to_target_s,time_to_target_ci95,samples_to_target,samples_to_target_ci95,flops_to_target,"
                "flops_to_target_ci95,reached\n";
  budget_md << "| cell | factors | n | train s | samples | FLOPs |";
  for (const auto& m : budget_metrics) budget_md << " " << m << " |";
  budget_md << " time to " << target_text << " | FLOPs to target | samples to target | reached |\n|---|---|---|---|---|---|";
  for (size_t i = 0; i < budget_metrics.size(); ++i) budget_md << "---|";
  budget_md << "---|---|---|---|\n";
  for (const auto& [cell, spec] : groups.spec) {
    const auto& members = groups.Members(cell);
    std::vector<double> ttt, stt, ftt;
    for (const TrialFacts* f : members) {
      if (f->reached) {
        ttt.push_back(f->time_to_target_s);
        stt.push_back(f->samples_to_target);
        ftt.push_back(f->flops_to_target);
      }
    }
    const Stats sec = Over(members, ValOf, "train_seconds"), smp = Over(members, ValOf, "samples"),
                flp = Over(members, ValOf, "flops");
    const Stats tt = Summarise(ttt), st = Summarise(stt), ft = Summarise(ftt);
    const int reached = static_cast<int>(ttt.size());
    budget_csv << cell << "," << Csv(CellLabel(*spec)) << "," << members.size() << "," << Num(sec.mean) << ","
               << Num(smp.mean) << "," << Num(flp.mean);
    budget_md << "| " << cell << " | " << CellLabel(*spec) << " | " << members.size() << " | " << Seconds(sec.mean)
              << " | " << Count(smp.mean) << " | " << (members.empty() ? "-" : Flops(flp.mean)) << " |";
    for (const auto& m : budget_metrics) {
      const Stats ms = Over(members, ValOf, m);
      const auto q = QueryBounds(members, ValOf, m);
      budget_csv << "," << Num(ms.mean) << "," << Num(ms.ci) << "," << Num(q.first) << "," << Num(q.second);
      budget_md << " " << Figure(ms, IsFractionMetric(m), q) << " |";
    }
    budget_csv << "," << Num(tt.mean) << "," << Num(tt.ci) << "," << Num(st.mean) << "," << Num(st.ci) << ","
               << Num(ft.mean) << "," << Num(ft.ci) << "," << reached << "\n";
    budget_md << " "
              << (members.empty() ? "-"
                  : reached == 0  ? "not reached"
                                  : MeanSdOf(tt, [](double v) { return Seconds(v); }))
              << " | " << (reached == 0 ? "-" : ft.n == 0 ? "n/a" : MeanSdOf(ft, [](double v) { return Flops(v); }))
              << " | " << (reached == 0 || st.n == 0 ? "-" : MeanSdOf(st, [](double v) { return Count(v); })) << " | "
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
      const auto [lo, hi] = metric_pct ? Interval(s, 0.0, 1.0) : Interval(s);
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
    std::vector<double> sps, ttt, ftt;
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
    c.ftt.push_back(f.flops_to_target);
  }
  std::ostringstream speed_csv, speed_md;
  speed_csv << "mask.strategy,mask.ratio,n,samples_per_second,time_to_target_s,flops_to_target,reached\n";
  speed_md << "| mask.strategy | mask.ratio | trials | samples/s | time to target (training s) | FLOPs to target | "
              "reached |\n"
           << "|---|---|---|---|---|---|---|\n";
  std::map<std::string, std::vector<std::pair<double, std::pair<double, double>>>> plot;
  for (const auto& [key, c] : speed) {
    Stats sps = Summarise(c.sps), ttt = Summarise(c.ttt), ftt = Summarise(c.ftt);
    speed_csv << Csv(key.first) << "," << Csv(key.second) << "," << c.n << "," << Num(sps.mean) << "," << Num(ttt.mean)
              << "," << Num(ftt.mean) << "," << ttt.n << "\n";
    speed_md << "| " << key.first << " | " << key.second << " | " << c.n << " | " << Rate(sps.mean) << " | "
             << Seconds(ttt.mean) << " | " << (ttt.n == 0 ? "-" : Flops(ftt.mean)) << " | " << ttt.n << "/" << c.n
             << " |\n";
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
