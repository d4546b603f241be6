// The ablation report (report.h): statistics over seeds, number formats, the retrieval
// metrics, time to target, and the JSON of metric records.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "coordinator/report.h"
#include "coordinator/report_internal.h"

namespace flap::coordinator {
namespace report_internal {
namespace {

// Two-sided 95% Student t quantile for `df` degrees of freedom.
double T95(int df) {
  static const double kTable[] = {0,     12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                  2.201, 2.179,  2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080,
                                  2.074, 2.069,  2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
  if (df <= 0) return kNaN;
  if (df <= 30) return kTable[df];
  if (df <= 60) return 2.000;
  if (df <= 120) return 1.980;
  return 1.960;
}

}  // namespace

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

std::string Plain(double v) {
  if (std::isnan(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.3g", v);
  return buf;
}

// A metric's value for people: a percentage for retrieval fractions, else 3 significant digits.
std::string Show(double v, bool fraction) { return fraction ? Percent(v) : Plain(v); }
// A difference or a spread: percentage points for retrieval fractions.
std::string ShowDelta(double v, bool fraction) {
  if (!fraction || std::isnan(v)) return Plain(v);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", 100.0 * v);
  return buf;
}

std::string SignedDelta(double v, bool fraction) {
  if (std::isnan(v)) return "-";
  char buf[32];
  if (fraction) {
    std::snprintf(buf, sizeof(buf), "%+.1f", 100.0 * v);
  } else {
    std::snprintf(buf, sizeof(buf), "%+.3g", v);
  }
  return buf;
}

std::string MeanSd(const Stats& s, bool fraction) {
  if (s.n == 0) return "-";
  if (s.n < 2) return Show(s.mean, fraction);
  return Show(s.mean, fraction) + " ± " + ShowDelta(s.sd, fraction);
}

std::pair<double, double> Interval(const Stats& s, double floor, double ceiling) {
  return {std::clamp(s.mean - s.ci, floor, ceiling), std::clamp(s.mean + s.ci, floor, ceiling)};
}

std::string MeanCi(const Stats& s, const std::function<std::string(double)>& show, double floor, double ceiling) {
  if (s.n == 0) return "-";
  if (std::isnan(s.ci)) return show(s.mean);
  const auto [lo, hi] = Interval(s, floor, ceiling);
  return show(s.mean) + " [" + show(lo) + ", " + show(hi) + "]";
}

std::string Seconds(double v) {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f s", v);
  return buf;
}

std::string Rate(double v) {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", v);
  return buf;
}

std::string Count(double v) {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.0f", v);
  return buf;
}

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

const std::vector<std::string>& ChanceMetrics() {
  static const std::vector<std::string> kNames = {"chance_t2a_r1", "chance_t2a_r5", "chance_t2a_r10",
                                                  "chance_a2t_r1", "chance_a2t_r5", "chance_a2t_r10"};
  return kNames;
}

SetIdentity IdentityOf(const std::map<std::string, double>& values) {
  SetIdentity id;
  id.clips = Value(values, "set_clips");
  id.captions = Value(values, "set_captions");
  id.hash = Value(values, "set_hash");
  for (size_t i = 0; i < ChanceMetrics().size(); ++i) id.chance[i] = Value(values, ChanceMetrics()[i]);
  return id;
}

bool SetIdentity::operator<(const SetIdentity& o) const {
  // NaN sorts first and equals NaN.
  auto key = [](double v) { return std::make_pair(!std::isnan(v), std::isnan(v) ? 0.0 : v); };
  if (key(hash) != key(o.hash)) return key(hash) < key(o.hash);
  if (key(clips) != key(o.clips)) return key(clips) < key(o.clips);
  if (key(captions) != key(o.captions)) return key(captions) < key(o.captions);
  for (int i = 0; i < 6; ++i) {
    if (key(chance[i]) != key(o.chance[i])) return key(chance[i]) < key(o.chance[i]);
  }
  return false;
}

std::vector<EvalPoint> TrialFacts::Along(const std::string& metric) const {
  std::vector<EvalPoint> out;
  for (const MetricPoint* p : evals) {
    const double trained = Value(p->values, "train_seconds");
    EvalPoint e;
    e.seconds = std::isnan(trained) ? (p->time_ms - t0_ms) / 1000.0 : trained;
    e.samples = Value(p->values, "samples");
    e.flops = Value(p->values, "flops");
    e.value = Value(p->values, metric);
    out.push_back(e);
  }
  return out;
}

}  // namespace report_internal

namespace {

bool ReachesTarget(double v, double target, bool max_mode) {
  if (std::isnan(v)) return false;
  return max_mode ? v >= target : v <= target;
}

}  // namespace

using report_internal::kNaN;

const std::vector<std::string>& RetrievalMetrics() {
  static const std::vector<std::string> kMetrics = {"t2a_r1", "t2a_r5",  "t2a_r10", "a2t_r1",
                                                    "a2t_r5", "a2t_r10", "map10"};
  return kMetrics;
}

bool IsFractionMetric(const std::string& metric) {
  const auto& rm = RetrievalMetrics();
  return std::find(rm.begin(), rm.end(), metric) != rm.end() || metric == "t2a_map10" || metric == "a2t_map10";
}

std::string Percent(double v) {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f%%", 100.0 * v);
  return buf;
}

double EvalPoint::At(TrainingUnit unit) const {
  return unit == TrainingUnit::kSeconds ? seconds : unit == TrainingUnit::kSamples ? samples : flops;
}

double TargetCrossing::At(TrainingUnit unit) const {
  return unit == TrainingUnit::kSeconds ? seconds : unit == TrainingUnit::kSamples ? samples : flops;
}

namespace {

// a + f (b - a): the one interpolation behind TimeToTarget and ValueAt.
double Lerp(double a, double b, double f) { return a + f * (b - a); }

}  // namespace

TargetCrossing TimeToTarget(const std::vector<EvalPoint>& points, double target, bool max_mode) {
  TargetCrossing c;
  if (std::isnan(target)) return c;
  for (size_t i = 0; i < points.size(); ++i) {
    const EvalPoint& p = points[i];
    if (!ReachesTarget(p.value, target, max_mode)) continue;
    c.reached = true;
    // Where between the previous evaluation (short of it) and this one the target lies: 1 at
    // this one (the first evaluation; or the same value twice).
    double f = 1;
    const EvalPoint* q = &p;
    if (i > 0 && !std::isnan(points[i - 1].value) && p.value != points[i - 1].value) {
      q = &points[i - 1];
      f = (target - q->value) / (p.value - q->value);  // in (0, 1]: q is short of it
    }
    for (TrainingUnit u : {TrainingUnit::kSeconds, TrainingUnit::kSamples, TrainingUnit::kFlops}) {
      const double at = Lerp(q->At(u), p.At(u), f);
      (u == TrainingUnit::kSeconds ? c.seconds : u == TrainingUnit::kSamples ? c.samples : c.flops) = at;
    }
    return c;
  }
  return c;
}

double ValueAt(const std::vector<EvalPoint>& points, TrainingUnit unit, double x) {
  if (std::isnan(x)) return kNaN;
  for (size_t i = 0; i < points.size(); ++i) {
    const EvalPoint& p = points[i];
    const double px = p.At(unit);
    if (std::isnan(px) || px < x) continue;
    if (px == x) return p.value;
    if (i == 0) return kNaN;  // before the first evaluation
    const EvalPoint& q = points[i - 1];
    const double qx = q.At(unit);
    if (std::isnan(qx) || qx > x) return kNaN;
    return Lerp(q.value, p.value, (x - qx) / (px - qx));
  }
  return kNaN;  // past the last evaluation
}

std::string Flops(double v) {
  if (std::isnan(v)) return "n/a";
  static const char* kPrefix[] = {"", "k", "M", "G", "T", "P", "E", "Z", "Y"};
  double m = v;
  int p = 0;
  while (std::fabs(m) >= 999.95 && p < 8) {
    m /= 1000;
    ++p;
  }
  char buf[48];
  if (std::fabs(m) >= 999.95) {
    std::snprintf(buf, sizeof(buf), "%.1e FLOP", v);
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f %sFLOP", m, kPrefix[p]);
  }
  return buf;
}

std::string HashHex(double v) {
  if (std::isnan(v) || v < 0 || v >= 281474976710656.0 || v != std::floor(v)) return "n/a";
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%012llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace flap::coordinator
