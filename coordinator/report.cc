// Implementation of coordinator/report.h.
#include "coordinator/report.h"

#include <sys/stat.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>

#include "common/atomic_file.h"
#include "coordinator/json_util.h"

namespace flap::coordinator {
namespace {

using json_internal::Get;
using json_internal::Number;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string Num(double v) {
  if (std::isnan(v)) return "";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

std::string Csv(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// Two-sided 95% Student t quantile for `df` degrees of freedom.
double T95(int df) {
  static const double kTable[] = {0,     12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365,
                                  2.306, 2.262,  2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
                                  2.120, 2.110,  2.101, 2.093, 2.086, 2.080, 2.074, 2.069,
                                  2.064, 2.060,  2.056, 2.052, 2.048, 2.045, 2.042};
  if (df <= 0) return kNaN;
  if (df <= 30) return kTable[df];
  if (df <= 60) return 2.000;
  if (df <= 120) return 1.980;
  return 1.960;
}

struct Stats {
  int n = 0;
  double mean = kNaN;
  double sd = kNaN;  // sample standard deviation (n - 1); NaN for n < 2
  double ci = kNaN;  // half-width of the 95% interval; NaN for n < 2
};

Stats Summarise(const std::vector<double>& xs) {
  Stats s;
  std::vector<double> v;
  for (double x : xs) {
    if (!std::isnan(x)) v.push_back(x);
  }
  s.n = static_cast<int>(v.size());
  if (v.empty()) return s;
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / v.size();
  if (v.size() >= 2) {
    double ss = 0;
    for (double x : v) ss += (x - s.mean) * (x - s.mean);
    s.sd = std::sqrt(ss / (v.size() - 1));
    s.ci = T95(s.n - 1) * s.sd / std::sqrt(static_cast<double>(s.n));
  }
  return s;
}

// A metric's value for people: a percentage for retrieval fractions, else as is.
std::string Show(double v, bool fraction) { return fraction ? Percent(v) : Num(v); }
// A difference or a spread: percentage points for retrieval fractions.
std::string ShowDelta(double v, bool fraction) {
  if (!fraction || std::isnan(v)) return Num(v);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", 100.0 * v);
  return buf;
}

std::string MeanSd(const Stats& s, bool fraction) {
  if (s.n == 0) return "-";
  if (s.n < 2) return Show(s.mean, fraction);
  return Show(s.mean, fraction) + " ± " + ShowDelta(s.sd, fraction);
}

// "mean [lo, hi]" with the 95% interval over seeds; the mean alone for one seed.
std::string MeanCi(const Stats& s, const std::function<std::string(double)>& show) {
  if (s.n == 0) return "-";
  if (std::isnan(s.ci)) return show(s.mean);
  return show(s.mean) + " [" + show(s.mean - s.ci) + ", " + show(s.mean + s.ci) + "]";
}

std::string Seconds(double v) {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f s", v);
  return buf;
}

std::string Count(double v) {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.0f", v);
  return buf;
}

// What the report knows about one trial.
struct TrialFacts {
  const TrialSpec* spec = nullptr;
  const TrialRecord* record = nullptr;
  std::map<std::string, double> final_eval;  // the EVAL record with the highest step
  int64_t final_eval_step = -1;
  double samples_per_second = kNaN;          // mean over TRAIN records
  double time_to_target_s = kNaN;            // training seconds to the target; NaN: not reached
  double samples_to_target = kNaN;
  bool reached = false;
};

std::string FactorValue(const TrialSpec& t, const std::string& factor) {
  auto it = t.factors.find(factor);
  return it == t.factors.end() ? "-" : it->second;
}

std::string CellLabel(const TrialSpec& t) {
  std::string out;
  for (const auto& [k, v] : t.factors) out += (out.empty() ? "" : ", ") + k + "=" + v;
  return out.empty() ? "(base)" : out;
}

double Value(const std::map<std::string, double>& m, const std::string& k) {
  auto it = m.find(k);
  return it == m.end() ? kNaN : it->second;
}

bool ReachesTarget(double v, double target, bool max_mode) {
  if (std::isnan(v)) return false;
  return max_mode ? v >= target : v <= target;
}

}  // namespace

nlohmann::json MetricPoint::ToJson() const {
  nlohmann::json values_json = nlohmann::json::object();
  for (const auto& [k, v] : values) values_json[k] = Number(v);
  return {{"trial_id", trial_id}, {"attempt", attempt}, {"kind", kind}, {"step", step},
          {"epoch", epoch},       {"time_ms", time_ms}, {"values", values_json}};
}

StatusOr<MetricPoint> MetricPoint::FromJson(const nlohmann::json& j, const std::string& what) {
  MetricPoint p;
  FLAP_RETURN_IF_ERROR(Get(j, "trial_id", what, &p.trial_id));
  FLAP_RETURN_IF_ERROR(Get(j, "attempt", what, &p.attempt));
  FLAP_RETURN_IF_ERROR(Get(j, "kind", what, &p.kind));
  FLAP_RETURN_IF_ERROR(Get(j, "step", what, &p.step));
  FLAP_RETURN_IF_ERROR(Get(j, "epoch", what, &p.epoch));
  FLAP_RETURN_IF_ERROR(Get(j, "time_ms", what, &p.time_ms));
  if (p.kind != "train" && p.kind != "eval") {
    return Status::Corruption(what + ": field 'kind' is '" + p.kind + "', not train or eval");
  }
  auto it = j.find("values");
  if (it == j.end() || !it->is_object()) return json_internal::Bad(what, "values", "an object");
  for (auto v = it->begin(); v != it->end(); ++v) {
    double x = 0;
    FLAP_RETURN_IF_ERROR(json_internal::Convert(v.value(), what, "values." + v.key(), &x));
    p.values[v.key()] = x;
  }
  return p;
}

const std::vector<std::string>& RetrievalMetrics() {
  static const std::vector<std::string> kMetrics = {"t2a_r1", "t2a_r5", "t2a_r10", "a2t_r1",
                                                    "a2t_r5", "a2t_r10", "map10"};
  return kMetrics;
}

bool IsFractionMetric(const std::string& metric) {
  const auto& rm = RetrievalMetrics();
  return std::find(rm.begin(), rm.end(), metric) != rm.end() || metric == "t2a_map10" ||
         metric == "a2t_map10";
}

std::string Percent(double v) {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f%%", 100.0 * v);
  return buf;
}

TargetCrossing TimeToTarget(const std::vector<EvalPoint>& points, double target, bool max_mode) {
  TargetCrossing c;
  if (std::isnan(target)) return c;
  for (size_t i = 0; i < points.size(); ++i) {
    const EvalPoint& p = points[i];
    if (!ReachesTarget(p.value, target, max_mode)) continue;
    c.reached = true;
    c.seconds = p.seconds;
    c.samples = p.samples;
    if (i > 0 && !std::isnan(points[i - 1].value) && p.value != points[i - 1].value) {
      const EvalPoint& q = points[i - 1];
      const double f = (target - q.value) / (p.value - q.value);  // in (0, 1]: q is short of it
      c.seconds = q.seconds + f * (p.seconds - q.seconds);
      c.samples = q.samples + f * (p.samples - q.samples);
    }
    return c;
  }
  return c;
}

std::vector<ReportFile> BuildReport(const ReportInput& in, const ReportOptions& options) {
  const std::optional<ReportTarget>& spec_target = in.spec.report_target;
  const std::string metric = !options.metric.empty() ? options.metric
                             : in.spec.asha          ? in.spec.asha->metric
                             : spec_target           ? spec_target->metric
                                                     : "map10";
  const bool max_mode = !in.spec.asha || in.spec.asha->metric != metric ||
                        in.spec.asha->mode == AshaMode::kMax;
  // The target's metric and direction.
  const std::string target_metric = spec_target ? spec_target->metric : metric;
  const bool target_max = !in.spec.asha || in.spec.asha->metric != target_metric ||
                          in.spec.asha->mode == AshaMode::kMax;
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
  auto completed = [](const TrialFacts& f) {
    return f.record && f.record->state == TrialState::kCompleted;
  };

  // Target for time-to-target.
  double target = options.target > 0 ? options.target : spec_target ? spec_target->value : 0;
  if (target == 0) {
    double best = kNaN;
    for (const auto& f : facts) {
      if (!completed(f)) continue;
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

  std::vector<std::string> factor_names;
  for (const auto& fs : in.spec.factors) factor_names.push_back(fs.name);
  const auto& rm = RetrievalMetrics();

  // trials.csv
  std::ostringstream trials_csv;
  trials_csv << "trial,cell,seed";
  for (const auto& f : factor_names) trials_csv << "," << Csv(f);
  trials_csv << ",state,attempts,step,eval_step";
  for (const auto& m : rm) trials_csv << "," << m;
  trials_csv << ",samples_per_second,time_to_target_s,samples_to_target,train_seconds,samples,last_error\n";
  for (const auto& f : facts) {
    trials_csv << f.spec->id << "," << f.spec->cell << "," << f.spec->seed;
    for (const auto& name : factor_names) trials_csv << "," << Csv(FactorValue(*f.spec, name));
    trials_csv << "," << (f.record ? TrialStateName(f.record->state) : "") << ","
               << (f.record ? f.record->attempt : 0) << "," << (f.record ? f.record->step : 0)
               << "," << (f.final_eval_step >= 0 ? std::to_string(f.final_eval_step) : "");
    for (const auto& m : rm) trials_csv << "," << Num(Value(f.final_eval, m));
    trials_csv << "," << Num(f.samples_per_second) << "," << Num(f.time_to_target_s) << ","
               << Num(f.samples_to_target) << "," << Num(Value(f.final_eval, "train_seconds")) << ","
               << Num(Value(f.final_eval, "samples")) << "," << Csv(f.record ? f.record->last_error : "") << "\n";
  }

  // Cells: completed trials grouped by cell.
  std::map<int, std::vector<const TrialFacts*>> cells;
  std::map<int, const TrialSpec*> cell_spec;
  for (const auto& f : facts) {
    cell_spec.emplace(f.spec->cell, f.spec);
    if (completed(f)) cells[f.spec->cell].push_back(&f);
  }
  std::ostringstream cells_csv, cells_md;
  cells_csv << "cell,factors,n";
  for (const auto& m : rm) cells_csv << "," << m << "_mean," << m << "_sd";
  cells_csv << "\n";
  cells_md << "| cell | factors | n |";
  for (const auto& m : rm) cells_md << " " << m << " |";
  cells_md << "\n|---|---|---|";
  for (size_t i = 0; i < rm.size(); ++i) cells_md << "---|";
  cells_md << "\n";
  for (const auto& [cell, spec] : cell_spec) {
    const auto& members = cells[cell];
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

  // Equal budgets and time to target, per cell (completed trials).
  std::vector<std::string> budget_metrics = {target_metric};
  for (const char* m : {"t2a_r1", "a2t_r1"}) {
    if (m != target_metric) budget_metrics.push_back(m);
  }
  const std::string target_text =
      target_metric + (target_max ? " >= " : " <= ") +
      (std::isnan(target) ? "-" : target_pct ? Percent(target) : Num(target));
  std::ostringstream budget_csv, budget_md;
  budget_csv << "cell,factors,n,train_seconds,samples";
  for (const auto& m : budget_metrics) budget_csv << "," << m << "_mean," << m << "_ci95";
  budget_csv << ",time_to_target_s,time_to_target_ci95,samples_to_target,samples_to_target_ci95,reached\n";
  budget_md << "| cell | factors | n | train s | samples |";
  for (const auto& m : budget_metrics) budget_md << " " << m << " |";
  budget_md << " time to " << target_text << " | samples to target | reached |\n|---|---|---|---|---|";
  for (size_t i = 0; i < budget_metrics.size(); ++i) budget_md << "---|";
  budget_md << "---|---|---|\n";
  for (const auto& [cell, spec] : cell_spec) {
    const auto& members = cells[cell];
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
    budget_csv << "," << Num(tt.mean) << "," << Num(tt.ci) << "," << Num(st.mean) << "," << Num(st.ci) << ","
               << reached << "\n";
    budget_md << " "
              << (members.empty() ? "-" : reached == 0 ? "not reached" : MeanCi(tt, [](double v) { return Seconds(v); }))
              << " | " << (reached == 0 || st.n == 0 ? "-" : MeanCi(st, [](double v) { return Count(v); })) << " | "
              << reached << "/" << members.size() << " |\n";
  }

  // Main effects of each factor on the primary metric.
  std::vector<double> all;
  for (const auto& f : facts) {
    if (completed(f)) all.push_back(Value(f.final_eval, metric));
  }
  const Stats grand = Summarise(all);
  std::ostringstream effects_csv, effects_md;
  effects_csv << "factor,level,n,mean,ci95_low,ci95_high,effect\n";
  effects_md << "| factor | level | n | mean " << metric << " | 95% CI | effect vs grand mean |\n"
             << "|---|---|---|---|---|---|\n";
  for (const auto& fs : in.spec.factors) {
    std::vector<std::string> levels = fs.values;
    std::map<std::string, std::vector<double>> by_level;
    for (const auto& f : facts) {
      if (!completed(f)) continue;
      const std::string level = FactorValue(*f.spec, fs.name);
      if (std::find(levels.begin(), levels.end(), level) == levels.end()) levels.push_back(level);
      by_level[level].push_back(Value(f.final_eval, metric));
    }
    for (const auto& level : levels) {
      Stats s = Summarise(by_level[level]);
      const double lo = s.mean - s.ci, hi = s.mean + s.ci;
      effects_csv << Csv(fs.name) << "," << Csv(level) << "," << s.n << "," << Num(s.mean) << ","
                  << Num(lo) << "," << Num(hi) << "," << Num(s.mean - grand.mean) << "\n";
      effects_md << "| " << fs.name << " | " << level << " | " << s.n << " | " << Show(s.mean, metric_pct)
                 << " | "
                 << (std::isnan(s.ci) ? "-" : "[" + Show(lo, metric_pct) + ", " + Show(hi, metric_pct) + "]")
                 << " | " << (s.n ? ShowDelta(s.mean - grand.mean, metric_pct) : "-") << " |\n";
    }
  }

  // Speed against masking ratio and strategy (every trial with records).
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
    speed_csv << Csv(key.first) << "," << Csv(key.second) << "," << c.n << "," << Num(sps.mean)
              << "," << Num(ttt.mean) << "," << ttt.n << "\n";
    speed_md << "| " << key.first << " | " << key.second << " | " << c.n << " | "
             << (sps.n ? Num(sps.mean) : "-") << " | " << (ttt.n ? Num(ttt.mean) : "-") << " | "
             << ttt.n << "/" << c.n << " |\n";
    char* end = nullptr;
    const double r = std::strtod(key.second.c_str(), &end);
    if (end && *end == '\0' && !key.second.empty()) plot[key.first].push_back({r, {sps.mean, ttt.mean}});
  }

  std::vector<ReportFile> files;
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
  const bool have_plots = !series.empty();

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
     << (max_mode ? "higher" : "lower") << " is better).\n\n"
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
     << budget_md.str() << "\n## Retrieval per cell (mean ± sd over seeds)\n\n"
     << cells_md.str() << "\n## Main effects on " << metric << "\n\n"
     << "Grand mean " << (grand.n ? Show(grand.mean, metric_pct) : "-") << " over " << grand.n
     << " completed trials; 95% confidence intervals (Student t) over the trials at each level.\n\n"
     << effects_md.str() << "\n## Speed against masking\n\n"
     << "Time to target: training seconds to " << target_text << " (as above), over every trial that "
     << "reported.\n\n"
     << speed_md.str() << "\n";
  if (have_plots) {
    md << "![samples/s](throughput.svg)\n\n![time to target](time_to_target.svg)\n\n";
  } else {
    md << "(No plot: no trial has a numeric mask.ratio.)\n\n";
  }
  md << "## Trials\n\n| trial | factors | seed | state | step | " << metric
     << " | samples/s | error |\n|---|---|---|---|---|---|---|---|\n";
  for (const auto& f : facts) {
    md << "| " << f.spec->id << " | " << CellLabel(*f.spec) << " | " << f.spec->seed << " | "
       << (f.record ? TrialStateName(f.record->state) : "") << " | "
       << (f.record ? f.record->step : 0) << " | " << Show(Value(f.final_eval, metric), metric_pct) << " | "
       << Num(f.samples_per_second) << " | " << (f.record ? f.record->last_error : "") << " |\n";
  }

  files.push_back({"report.md", md.str()});
  files.push_back({"trials.csv", trials_csv.str()});
  files.push_back({"budget.csv", budget_csv.str()});
  files.push_back({"cells.csv", cells_csv.str()});
  files.push_back({"effects.csv", effects_csv.str()});
  files.push_back({"speed.csv", speed_csv.str()});
  if (have_plots) {
    files.push_back({"speed.dat", dat.str()});
    for (ReportFile& gp : PlotScripts(in.sweep_id, dat.str())) files.push_back(std::move(gp));
  }
  return files;
}

namespace {

// Only characters that cannot end or escape a gnuplot string or start a command.
std::string GnuplotText(const std::string& s) {
  std::string out;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-' || c == '+' || c == ' ' || c == ':';
    out += ok ? c : '_';
  }
  return out.substr(0, 64);
}

std::string GnuplotScript(const std::string& sweep_id, const std::vector<std::string>& series,
                          const std::string& out, const std::string& ylabel, int column) {
  std::ostringstream gp;
  gp << "# " << out << ": " << ylabel << " against mask.ratio, one line per mask.strategy\n"
     << "set terminal svg size 640,400 dynamic\nset output '" << out << "'\n"
     << "set title '" << GnuplotText(sweep_id) << ": " << ylabel << "'\n"
     << "set xlabel 'mask.ratio'\nset ylabel '" << ylabel << "'\nset key top left\n"
     << "set datafile missing 'NaN'\nset grid\nplot ";
  for (size_t i = 0; i < series.size(); ++i) {
    gp << (i ? ", " : "") << "'speed.dat' index " << i << " using 1:" << column
       << " with linespoints title 'mask.strategy " << GnuplotText(series[i]) << "'";
  }
  gp << "\n";
  return gp.str();
}

}  // namespace

std::vector<ReportFile> PlotScripts(const std::string& sweep_id, const std::string& speed_dat) {
  std::vector<std::string> series;
  std::istringstream in(speed_dat);
  const std::string header = "# mask.strategy ";
  for (std::string line; std::getline(in, line);) {
    if (line.compare(0, header.size(), header) == 0) series.push_back(line.substr(header.size()));
    if (series.size() >= 64) break;
  }
  if (series.empty()) return {};
  return {{"throughput.gp", GnuplotScript(sweep_id, series, "throughput.svg", "samples/s", 2)},
          {"time_to_target.gp",
           GnuplotScript(sweep_id, series, "time_to_target.svg", "time-to-target (s)", 3)}};
}

Status WriteReport(const std::vector<ReportFile>& files, const std::string& dir,
                   const WriteReportOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError("cannot create report folder " + dir + ": " + ec.message());
  for (const auto& f : files) {
    FLAP_RETURN_IF_ERROR(flap::WriteFileAtomic(dir + "/" + f.name, f.content));
  }
  if (!options.plots) return Status::OK();
  for (const auto& f : files) {
    if (f.name.size() < 3 || f.name.compare(f.name.size() - 3, 3, ".gp") != 0) continue;
    // Nothing buffered in this process may be written twice by the child.
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid < 0) return Status::IOError("cannot fork gnuplot");
    if (pid == 0) {
      if (chdir(dir.c_str()) != 0) _exit(126);
      const int null_fd = open("/dev/null", O_WRONLY);
      if (null_fd >= 0) dup2(null_fd, STDOUT_FILENO);
      // Its warnings (an empty plot, say) go to a log beside the plots, not to the terminal.
      const int log_fd = open("gnuplot.log", O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (log_fd >= 0) dup2(log_fd, STDERR_FILENO);
      execlp(options.gnuplot.c_str(), options.gnuplot.c_str(), f.name.c_str(), (char*)nullptr);
      _exit(127);
    }
    int wstatus = 0;
    while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
      const int code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
      return Status::FailedPrecondition(
          code == 127 ? "plots not made: '" + options.gnuplot +
                            "' not found (install gnuplot-nox); the text files are written"
                      : "plots not made: gnuplot failed on " + dir + "/" + f.name +
                            " (exit " + std::to_string(code) + ")");
    }
  }
  return Status::OK();
}

}  // namespace flap::coordinator
