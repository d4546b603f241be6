// Sweep files (sweep.h): the text of values: the helpers that read and check them, factor
// values, conditions, report targets and search kinds.
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "config/trial_config.h"
#include "coordinator/sweep.h"
#include "coordinator/sweep_internal.h"

namespace flap::coordinator {
namespace sweep_internal {

// Splits on ',' and trims each item; keeps empty items so that callers can refuse them.
std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> items;
  size_t start = 0;
  while (true) {
    size_t comma = s.find(',', start);
    items.push_back(Trim(std::string_view(s).substr(start, comma - start)));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return items;
}

// A finite decimal number, the whole string ("1e-4", "0.5", "-2"; not "0x1p3", "inf", "1 2").
bool ParseDouble(const std::string& s, double* out) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-')) {
      return false;
    }
  }
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

bool ParseBool(const std::string& s, bool* out) {
  if (s == "true") {
    *out = true;
  } else if (s == "false") {
    *out = false;
  } else {
    return false;
  }
  return true;
}

// Same value, comparing numerically when both are numbers ("0.5" == "0.50").
bool SameValue(const std::string& a, const std::string& b) {
  double x = 0, y = 0;
  if (ParseDouble(a, &x) && ParseDouble(b, &y)) return x == y;
  return a == b;
}

namespace {

bool IsWord(std::string_view s) {
  if (s.empty() || !(s[0] >= 'a' && s[0] <= 'z')) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

}  // namespace

// "<section>.<key>", each a word.
bool IsFactorName(const std::string& s) {
  size_t dot = s.find('.');
  if (dot == std::string::npos) return false;
  return IsWord(std::string_view(s).substr(0, dot)) && IsWord(std::string_view(s).substr(dot + 1));
}

std::string FormatReal(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

std::string FormatEndpoint(double v, bool integer) {
  if (integer) return std::to_string(static_cast<long long>(v));
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

// Empty when `value` is valid for `factor` on its own (config/trial_config.h), else what is
// wrong. A factor that is no trial config key has only to be non-empty (the validator names the
// key itself).
std::string ValueProblem(const std::string& factor, const std::string& value) {
  if (value.empty()) return "expected a value, got ''";
  if (FindConfigKey(factor) == nullptr) return "";
  const Status s = CheckConfigValue(factor, value);
  if (s.ok()) return "";
  // "mask.ratio: expected a number, got 'x'": the section names the key already.
  const std::string prefix = factor + ": ";
  return s.message().rfind(prefix, 0) == 0 ? s.message().substr(prefix.size()) : s.message();
}

// Keys whose values are words, not numbers: they cannot have a range.
bool IsWordValued(const std::string& factor) {
  const ConfigKey* key = FindConfigKey(factor);
  return key != nullptr && !key->numeric;
}

}  // namespace sweep_internal

using namespace sweep_internal;  // NOLINT: this part's own helpers

std::string ReportTarget::ToString() const {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.10g", value);
  return metric + ":" + buf;
}

StatusOr<ReportTarget> ParseReportTarget(const std::string& text) {
  const std::string t = Trim(text);
  const size_t colon = t.rfind(':');
  const auto bad = [&t](const std::string& why) {
    return Status::InvalidArgument(why + " in '" + t + "' (expected METRIC:VALUE, e.g. t2a_r1:0.30 or t2a_r1:30%)");
  };
  if (colon == std::string::npos) return bad("no ':'");
  ReportTarget r;
  r.metric = Trim(std::string_view(t).substr(0, colon));
  std::string value = Trim(std::string_view(t).substr(colon + 1));
  if (r.metric.empty() || r.metric.size() > 64 ||
      r.metric.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_.@") != std::string::npos) {
    return bad("the metric must be 1 to 64 characters of [a-z0-9_.@]");
  }
  const bool percent = !value.empty() && value.back() == '%';
  if (percent) value = Trim(std::string_view(value).substr(0, value.size() - 1));
  double x = 0;
  if (!ParseDouble(value, &x) || std::isnan(x)) return bad("the value is not a number");
  if (percent) x /= 100.0;
  if (!(x > 0 && x <= 1)) return bad(percent ? "the value must be in (0%, 100%]" : "the value must be in (0, 1]");
  r.value = x;
  return r;
}

const char* SearchKindName(SearchKind kind) { return kind == SearchKind::kGrid ? "grid" : "random"; }

bool Condition::HoldsFor(const std::string& value) const {
  switch (op) {
    case Op::kEq:
      return !values.empty() && SameValue(value, values[0]);
    case Op::kNe:
      return !values.empty() && !SameValue(value, values[0]);
    case Op::kIn:
      return std::any_of(values.begin(), values.end(), [&value](const std::string& v) { return SameValue(value, v); });
  }
  return false;
}

bool Condition::Holds(const std::map<std::string, std::string>& applied) const {
  auto it = applied.find(factor);
  return it != applied.end() && HoldsFor(it->second);
}

std::string Condition::ToString() const {
  std::string list;
  for (const std::string& v : values) list += (list.empty() ? "" : ", ") + v;
  switch (op) {
    case Op::kEq:
      return factor + " == " + list;
    case Op::kNe:
      return factor + " != " + list;
    case Op::kIn:
      return factor + " in " + list;
  }
  return factor;
}

StatusOr<Condition> ParseCondition(const std::string& text) {
  const std::string t = Trim(text);
  auto usage = [&t](const std::string& why) {
    return Status::InvalidArgument(why + " in condition '" + t + "' (expected 'F == v', 'F != v' or 'F in v1, v2')");
  };
  Condition c;
  std::string rhs;
  size_t p = std::string::npos;
  if ((p = t.find("==")) != std::string::npos || (p = t.find("!=")) != std::string::npos) {
    c.op = t[p] == '=' ? Condition::Op::kEq : Condition::Op::kNe;
    c.factor = Trim(std::string_view(t).substr(0, p));
    rhs = Trim(std::string_view(t).substr(p + 2));
    if (rhs.find(',') != std::string::npos) {
      return usage("several values need 'in'");
    }
    c.values = {rhs};
  } else {
    size_t sp = t.find_first_of(" \t");
    if (sp == std::string::npos) return usage("no comparison");
    c.factor = t.substr(0, sp);
    std::string rest = Trim(std::string_view(t).substr(sp));
    if (rest.size() < 3 || rest.compare(0, 2, "in") != 0 || !IsSpace(rest[2])) {
      return usage("unknown comparison");
    }
    c.op = Condition::Op::kIn;
    c.values = SplitList(rest.substr(2));
  }
  if (!IsFactorName(c.factor)) return usage("'" + c.factor + "' is not a factor name");
  for (const std::string& v : c.values) {
    if (v.empty()) return usage("empty value");
  }
  return c;
}

Status ValidateFactorValue(const std::string& factor, const std::string& value) {
  if (FindConfigKey(factor) == nullptr) return Status::InvalidArgument(UnknownKeyMessage(factor));
  std::string p = ValueProblem(factor, value);
  if (p.empty()) return Status::OK();
  return Status::InvalidArgument(factor + ": " + p);
}

}  // namespace flap::coordinator
