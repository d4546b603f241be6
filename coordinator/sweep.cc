// Sweep files (sweep.h): the INI line parser, validation that lists every error, grid and
// random expansion, and the JSON of specs and trials.
#include "coordinator/sweep.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>
#include <string_view>
#include <utility>

#include "common/local_keys.h"
#include "common/path_name.h"
#include "coordinator/json_util.h"

namespace flap::coordinator {
namespace {

namespace ji = json_internal;

// ---------------------------------------------------------------------------------------------
// Text helpers.

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && IsSpace(s[b])) ++b;
  while (e > b && IsSpace(s[e - 1])) --e;
  return std::string(s.substr(b, e - b));
}

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

template <typename T>
bool ParseInteger(const std::string& s, T* out) {
  if (s.empty()) return false;
  const char* first = s.data();
  if constexpr (std::is_unsigned_v<T>) {
    if (s[0] == '-' || s[0] == '+') return false;
  } else {
    if (s[0] == '+') ++first;
  }
  T v{};
  auto [ptr, ec] = std::from_chars(first, s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size()) return false;
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

bool IsWord(std::string_view s) {
  if (s.empty() || !(s[0] >= 'a' && s[0] <= 'z')) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

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

// Empty when `value` is valid for `factor`, else "expected ..., got '...'".
std::string ValueProblem(const std::string& factor, const std::string& value) {
  auto bad = [&value](const char* expected) {
    return std::string("expected ") + expected + ", got '" + value + "'";
  };
  if (value.empty()) return bad("a value");
  double x = 0;
  if (factor == "mask.ratio") {
    if (!ParseDouble(value, &x) || x < 0 || x >= 1) return bad("a number in [0, 1)");
  } else if (factor == "mask.strategy") {
    if (value != "1d" && value != "2d") return bad("1d or 2d");
  } else if (factor == "recon.weight") {
    if (!ParseDouble(value, &x) || x < 0) return bad("a number >= 0");
  } else if (factor == "text.augment") {
    if (value != "off" && value != "on" && (!ParseDouble(value, &x) || x < 0 || x > 1)) {
      return bad("off, on or a probability in [0, 1]");
    }
  } else if (factor == "optim.lr") {
    if (!ParseDouble(value, &x) || x <= 0) return bad("a number > 0");
  } else if (factor == "model.preset") {
    if (value != "tiny" && value != "base") return bad("tiny or base");
  } else if (factor == "train.seed") {
    uint64_t u = 0;
    if (!ParseInteger(value, &u)) return bad("a non-negative integer");
  }
  return "";
}

// Known factors whose values are words, not numbers: they cannot have a range.
bool IsWordValued(const std::string& factor) {
  return factor == "mask.strategy" || factor == "model.preset";
}

// ---------------------------------------------------------------------------------------------
// Error collection. Every error names where it is: "<source>[:<line>]: [<section>] <key>: ...".

class Errors {
 public:
  // The line where (section, key) was written: the key's line, else its section header's; 0
  // when unknown (a spec that did not come from a file).
  using Locator = std::function<int(const std::string&, const std::string&)>;

  Errors(std::string source, Locator locate)
      : source_(std::move(source)), locate_(std::move(locate)) {}

  void Add(const std::string& section, const std::string& key, const std::string& message) {
    if (silenced_.count({section, key}) != 0) return;
    AddAt(locate_(section, key), section, key, message);
  }
  void AddAt(int line, const std::string& section, const std::string& key,
             const std::string& message) {
    std::string e = source_ + (line > 0 ? ":" + std::to_string(line) : "") + ": ";
    if (!section.empty()) e += "[" + section + "]";
    if (!key.empty()) e += (section.empty() ? "" : " ") + key;
    if (!section.empty() || !key.empty()) e += ": ";
    list_.push_back({line, e + message});
  }
  // Later errors about (section, key) are dropped: its text was already refused, so what the
  // spec holds there is a default, not what was written.
  void Silence(const std::string& section, const std::string& key) {
    silenced_.insert({section, key});
  }
  bool empty() const { return list_.empty(); }

  // InvalidArgument listing the errors in file order (those without a line last), or OK.
  Status ToStatus() const {
    if (list_.empty()) return Status::OK();
    std::vector<std::pair<int, std::string>> sorted = list_;
    std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
      auto key = [](int line) { return line > 0 ? line : std::numeric_limits<int>::max(); };
      return key(a.first) < key(b.first);
    });
    std::string msg = source_ + ": " + std::to_string(sorted.size()) +
                      (sorted.size() == 1 ? " error" : " errors") + " in the sweep:";
    for (const auto& e : sorted) msg += "\n  " + e.second;
    return Status::InvalidArgument(msg);
  }

 private:
  std::string source_;
  Locator locate_;
  std::set<std::pair<std::string, std::string>> silenced_;
  std::vector<std::pair<int, std::string>> list_;  // (line, text) in the order found
};

// ---------------------------------------------------------------------------------------------
// Condition order and expansion.

std::string FactorSection(const std::string& name) { return "factor." + name; }

// A topological order of the factors (each after the factor its condition names), preferring
// file order. Conditions on unknown factors are ignored here (the validator reports them).
// Returns false, with the factors left over in `cycle`, when the conditions form a cycle.
bool ConditionOrder(const SweepSpec& spec, std::vector<int>* order,
                    std::vector<std::string>* cycle) {
  const int n = static_cast<int>(spec.factors.size());
  std::map<std::string, int> index;
  for (int i = 0; i < n; ++i) index.emplace(spec.factors[i].name, i);
  std::vector<bool> placed(n, false);
  order->clear();
  while (static_cast<int>(order->size()) < n) {
    bool progress = false;
    for (int i = 0; i < n; ++i) {
      if (placed[i]) continue;
      const auto& when = spec.factors[i].when;
      int dep = -1;
      if (when) {
        auto it = index.find(when->factor);
        if (it != index.end()) dep = it->second;
      }
      if (dep >= 0 && !placed[dep]) continue;
      placed[i] = true;
      order->push_back(i);
      progress = true;
      break;  // restart from the top so file order wins
    }
    if (!progress) {
      cycle->clear();
      for (int i = 0; i < n; ++i) {
        if (!placed[i]) cycle->push_back(spec.factors[i].name);
      }
      return false;
    }
  }
  return true;
}

using Cell = std::map<std::string, std::string>;

// Appends the grid's cells to `cells`; false once more than `limit` cells would be produced.
bool GridCells(const SweepSpec& spec, const std::vector<int>& order, size_t pos, Cell* current,
               std::vector<Cell>* cells, size_t limit) {
  if (pos == order.size()) {
    if (cells->size() >= limit) return false;
    cells->push_back(*current);
    return true;
  }
  const FactorSpec& f = spec.factors[order[pos]];
  if (f.when && !f.when->Holds(*current)) {
    return GridCells(spec, order, pos + 1, current, cells, limit);
  }
  for (const std::string& v : f.values) {
    (*current)[f.name] = v;
    if (!GridCells(spec, order, pos + 1, current, cells, limit)) return false;
  }
  current->erase(f.name);
  return true;
}

// SplitMix64 (Steele et al.): tiny, and the same sequence everywhere.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1), 53 bits.
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  // Uniform in [0, n), n >= 1 (multiply-shift; the bias is below 2^-40 for our n).
  uint64_t Below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * n) >> 64);
  }

 private:
  uint64_t state_;
};

std::string Draw(const FactorSpec& f, SplitMix64* rng) {
  if (!f.has_range) return f.values[rng->Below(f.values.size())];
  if (f.integer) {
    const int64_t lo = static_cast<int64_t>(f.lo), hi = static_cast<int64_t>(f.hi);
    if (f.log) {
      double v = std::floor(std::exp(std::log(static_cast<double>(lo)) +
                                     rng->Uniform() * (std::log(static_cast<double>(hi) + 1) -
                                                       std::log(static_cast<double>(lo)))));
      int64_t i = std::clamp(static_cast<int64_t>(v), lo, hi);
      return std::to_string(i);
    }
    return std::to_string(lo + static_cast<int64_t>(rng->Below(static_cast<uint64_t>(hi - lo) + 1)));
  }
  const double u = rng->Uniform();
  if (f.log) {
    return FormatReal(std::exp(std::log(f.lo) + u * (std::log(f.hi) - std::log(f.lo))));
  }
  return FormatReal(f.lo + u * (f.hi - f.lo));
}

// Draws up to spec.budget distinct cells.
std::vector<Cell> RandomCells(const SweepSpec& spec, const std::vector<int>& order) {
  SplitMix64 rng(spec.search_seed);
  std::vector<Cell> cells;
  std::set<Cell> seen;
  const int64_t max_draws = spec.budget * 100;
  for (int64_t d = 0; static_cast<int64_t>(cells.size()) < spec.budget && d < max_draws; ++d) {
    Cell cell;
    bool valid = true;
    for (int i : order) {
      const FactorSpec& f = spec.factors[i];
      if (f.when && !f.when->Holds(cell)) continue;
      std::string v = Draw(f, &rng);
      // A real rounded to 6 digits can land on an excluded end (0.9999996 -> "1"): redraw.
      if (!ValueProblem(f.name, v).empty()) valid = false;
      cell[f.name] = std::move(v);
    }
    if (valid && seen.insert(cell).second) cells.push_back(std::move(cell));
  }
  return cells;
}

// ---------------------------------------------------------------------------------------------
// Validation (shared by the parser and by ValidateSweep / FromJson).

void ValidateFactor(const SweepSpec& spec, const FactorSpec& f,
                    const std::map<std::string, int>& names, Errors* errors) {
  const std::string section = FactorSection(f.name);
  const bool grid = spec.search == SearchKind::kGrid;
  if (!IsFactorName(f.name)) {
    errors->Add(section, "", "a factor is a trial config key '<section>.<key>', each word of "
                             "[a-z0-9_] starting with a letter; got '" + f.name + "'");
  } else if (f.name == "train.seed") {
    errors->Add(section, "", "the trial seed is not a factor: list replicate seeds in [sweep] "
                             "seeds = 1, 2, 3");
  } else if (IsLocalOnlyKey(f.name)) {
    errors->Add(section, "", f.name + " is local to each worker (a folder, endpoint or device of "
                             "its machine), not a sweep factor: set it in the worker's config "
                             "or flags");
  }

  const bool has_values = !f.values.empty();
  if (!has_values && !f.has_range) {
    errors->Add(section, "values",
                grid ? "the factor has no values: give values = v1, v2, ..."
                     : "the factor has no values: give values = v1, v2, ... or range = lo, hi");
  }
  if (has_values && f.has_range) errors->Add(section, "range", "give values or range, not both");
  if (f.has_range && grid) {
    errors->Add(section, "range", "range is for random search only; give values for a grid");
  }
  if (!f.has_range && f.log) errors->Add(section, "log", "log applies to a range only");
  if (!f.has_range && f.integer) errors->Add(section, "integer", "integer applies to a range only");

  if (f.values.size() > static_cast<size_t>(kMaxFactorValues)) {
    // Refused before looking at each value: the error is about the count.
    errors->Add(section, "values", "lists " + std::to_string(f.values.size()) + " values; a factor takes at most " +
                                       std::to_string(kMaxFactorValues));
  } else {
    // Repeats, found in n log n: numbers by value (SameValue: "0.5" == "0.50"), the rest by text.
    std::map<double, size_t> numbers;
    std::map<std::string, size_t> words;
    for (size_t i = 0; i < f.values.size(); ++i) {
      if (std::string p = ValueProblem(f.name, f.values[i]); !p.empty()) {
        errors->Add(section, "values", p);
        continue;
      }
      double x = 0;
      size_t first = i;
      if (ParseDouble(f.values[i], &x)) {
        if (!std::isnan(x)) first = numbers.emplace(x, i).first->second;
      } else {
        first = words.emplace(f.values[i], i).first->second;
      }
      if (first != i) errors->Add(section, "values", "value '" + f.values[i] + "' repeats '" + f.values[first] + "'");
    }
  }

  if (f.has_range) {
    if (IsWordValued(f.name)) {
      errors->Add(section, "range", f.name + " takes words; list them with values = ...");
    } else {
      if (!(f.lo < f.hi)) {
        errors->Add(section, "range", "needs lo < hi, got " + FormatEndpoint(f.lo, false) +
                                          ", " + FormatEndpoint(f.hi, false));
      }
      if (f.log && !(f.lo > 0)) errors->Add(section, "log", "a log-uniform range needs lo > 0");
      if (f.integer && (f.lo != std::floor(f.lo) || f.hi != std::floor(f.hi) ||
                        std::fabs(f.lo) > 9e15 || std::fabs(f.hi) > 9e15)) {
        errors->Add(section, "integer", "an integer range needs integer ends");
      } else {
        for (double end : {f.lo, f.hi}) {
          if (std::string p = ValueProblem(f.name, FormatEndpoint(end, f.integer)); !p.empty()) {
            errors->Add(section, "range", p);
          }
        }
      }
    }
  }

  if (f.when) {
    const Condition& c = *f.when;
    auto it = names.find(c.factor);
    if (c.values.empty()) {
      errors->Add(section, "when", "the condition compares with no value");
    } else if (c.factor == f.name) {
      errors->Add(section, "when", "a factor's condition cannot name the factor itself");
    } else if (it == names.end()) {
      errors->Add(section, "when", "the condition '" + c.ToString() + "' refers to '" + c.factor +
                                       "', which is not a factor of this sweep");
    } else {
      const FactorSpec& dep = spec.factors[it->second];
      if (!dep.has_range && !dep.values.empty() &&
          std::none_of(dep.values.begin(), dep.values.end(),
                       [&c](const std::string& v) { return c.HoldsFor(v); })) {
        std::string listed;
        for (const std::string& v : dep.values) listed += (listed.empty() ? "" : ", ") + v;
        errors->Add(section, "when", "the condition '" + c.ToString() + "' never holds (" +
                                         dep.name + " takes " + listed +
                                         "), so the factor would never apply");
      }
    }
  }
}

void Validate(const SweepSpec& spec, Errors* errors) {
  if (std::string p = PathNameProblem(spec.name); !p.empty()) {
    errors->Add("sweep", "name", "a sweep needs a name of [A-Za-z0-9_.-] (at most 64 "
                                 "characters, not starting with a dot); '" + spec.name + "' " + p);
  }
  if (spec.budget < 0) {
    errors->Add("sweep", "budget", "must be >= 0, got " + std::to_string(spec.budget));
  } else if (spec.search == SearchKind::kRandom && spec.budget < 1) {
    errors->Add("sweep", "budget", "random search needs budget >= 1 (configurations to draw)");
  }
  if (spec.seeds.empty()) errors->Add("sweep", "seeds", "at least one seed is needed");
  if (spec.seeds.size() > static_cast<size_t>(kMaxTrials)) {
    errors->Add("sweep", "seeds", "lists " + std::to_string(spec.seeds.size()) + " seeds; a sweep holds at most " +
                                      std::to_string(kMaxTrials) + " trials");
  } else {
    std::set<decltype(spec.seeds)::value_type> seen;
    for (const auto& seed : spec.seeds) {
      if (!seen.insert(seed).second) errors->Add("sweep", "seeds", "seed " + std::to_string(seed) + " repeats");
    }
  }
  if (spec.factors.empty()) {
    errors->Add("", "", "no [factor.<section>.<key>] section: a sweep needs at least one factor");
  } else if (spec.factors.size() > static_cast<size_t>(kMaxFactors)) {
    errors->Add("", "", "the sweep has " + std::to_string(spec.factors.size()) + " factors; at most " +
                            std::to_string(kMaxFactors) + " are allowed");
    return;
  }

  std::map<std::string, int> names;
  for (int i = 0; i < static_cast<int>(spec.factors.size()); ++i) {
    if (!names.emplace(spec.factors[i].name, i).second) {
      errors->Add(FactorSection(spec.factors[i].name), "", "the factor appears twice");
    }
  }
  for (const FactorSpec& f : spec.factors) ValidateFactor(spec, f, names, errors);

  std::vector<int> order;
  std::vector<std::string> cycle;
  if (!ConditionOrder(spec, &order, &cycle)) {
    std::string members;
    for (const std::string& c : cycle) members += (members.empty() ? "" : ", ") + c;
    errors->Add(FactorSection(cycle.front()), "when", "the conditions form a cycle among " + members);
  }

  if (spec.asha) {
    for (const auto& [key, message] : spec.asha->Problems()) errors->Add("asha", key, message);
  }
  if (spec.report_target) {
    auto t = ParseReportTarget(spec.report_target->ToString());
    if (!t.ok()) errors->Add("report", "target", t.status().message());
  }

  if (!errors->empty()) return;  // the size is only meaningful for a well-formed spec
  const int64_t seeds = static_cast<int64_t>(spec.seeds.size());
  if (spec.search == SearchKind::kGrid) {
    std::vector<Cell> cells;
    Cell current;
    const size_t limit = static_cast<size_t>(kMaxTrials / seeds);
    if (!GridCells(spec, order, 0, &current, &cells, limit)) {
      errors->Add("sweep", "", "the grid exceeds " + std::to_string(kMaxTrials) +
                                   " trials (cells x seeds)");
    } else if (spec.budget > 0 && static_cast<int64_t>(cells.size()) > spec.budget) {
      errors->Add("sweep", "budget", "the grid has " + std::to_string(cells.size()) +
                                         " cells, more than the budget of " +
                                         std::to_string(spec.budget) +
                                         " (raise it, or 0 for no limit)");
    }
  } else if (spec.budget > kMaxTrials / seeds) {
    errors->Add("sweep", "budget", "budget x seeds exceeds " + std::to_string(kMaxTrials) +
                                       " trials");
  }
}

// ---------------------------------------------------------------------------------------------
// The INI layer.

struct RawKey {
  std::string value;
  int line = 0;
};

struct RawSection {
  std::string name;
  int line = 0;
  std::map<std::string, RawKey> keys;
  std::vector<std::string> order;  // keys in file order
};

std::string StripComment(const std::string& line) {
  for (size_t i = 0; i < line.size(); ++i) {
    if ((line[i] == '#' || line[i] == ';') && (i == 0 || IsSpace(line[i - 1]))) {
      return line.substr(0, i);
    }
  }
  return line;
}

bool IsKey(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || c == '_')) return false;
  }
  return true;
}

std::vector<RawSection> ParseIni(const std::string& text, Errors* errors) {
  std::vector<RawSection> sections;
  std::istringstream in(text);
  std::string raw;
  int line = 0;
  int current = -1;       // index into sections, -1 before any (or after a refused) header
  bool ignoring = false;  // inside a refused section header: skip its keys quietly
  while (std::getline(in, raw)) {
    ++line;
    const std::string s = Trim(StripComment(raw));
    if (s.empty()) continue;
    if (s.front() == '[') {
      std::string name = s.back() == ']' ? Trim(std::string_view(s).substr(1, s.size() - 2)) : "";
      current = -1;
      ignoring = true;
      if (name.empty()) {
        errors->AddAt(line, "", "", "malformed section header '" + s + "'");
        continue;
      }
      auto dup = std::find_if(sections.begin(), sections.end(),
                              [&name](const RawSection& r) { return r.name == name; });
      if (dup != sections.end()) {
        errors->AddAt(line, name, "",
                      "the section repeats (first at line " + std::to_string(dup->line) + ")");
        continue;
      }
      sections.push_back(RawSection{name, line, {}, {}});
      current = static_cast<int>(sections.size()) - 1;
      ignoring = false;
      continue;
    }
    const size_t eq = s.find('=');
    if (eq == std::string::npos) {
      errors->AddAt(line, current >= 0 ? sections[current].name : "", "",
                    "expected '[section]' or 'key = value', got '" + s + "'");
      continue;
    }
    const std::string key = Trim(std::string_view(s).substr(0, eq));
    const std::string value = Trim(std::string_view(s).substr(eq + 1));
    if (current < 0) {
      if (!ignoring) errors->AddAt(line, "", key, "the key is outside any [section]");
      continue;
    }
    RawSection& sec = sections[current];
    if (!IsKey(key)) {
      errors->AddAt(line, sec.name, "", "malformed key '" + key + "'");
      continue;
    }
    if (auto it = sec.keys.find(key); it != sec.keys.end()) {
      errors->AddAt(line, sec.name, key,
                    "the key repeats (first at line " + std::to_string(it->second.line) + ")");
      continue;
    }
    sec.keys.emplace(key, RawKey{value, line});
    sec.order.push_back(key);
    if (value.empty()) {
      errors->AddAt(line, sec.name, key, "the key has no value");
    }
  }
  return sections;
}

// Reads typed keys of one raw section, reporting text that does not convert (and silencing
// later errors about that key: the spec holds a default there, not what was written).
class SectionReader {
 public:
  SectionReader(const RawSection& sec, Errors* errors) : sec_(sec), errors_(errors) {}

  // The raw text of `key`, or nullptr when absent or empty (empty was reported by ParseIni).
  const RawKey* Find(const std::string& key) {
    auto it = sec_.keys.find(key);
    if (it == sec_.keys.end()) return nullptr;
    if (it->second.value.empty()) {
      errors_->Silence(sec_.name, key);
      return nullptr;
    }
    return &it->second;
  }

  void Refuse(const std::string& key, const RawKey& raw, const std::string& message) {
    errors_->AddAt(raw.line, sec_.name, key, message);
    errors_->Silence(sec_.name, key);
  }

  void String(const std::string& key, std::string* out) {
    if (const RawKey* raw = Find(key)) *out = raw->value;
  }

  template <typename T>
  void Integer(const std::string& key, T* out) {
    const RawKey* raw = Find(key);
    if (raw == nullptr) return;
    if (!ParseInteger(raw->value, out)) {
      Refuse(key, *raw, std::string("expected ") +
                            (std::is_unsigned_v<T> ? "a non-negative integer" : "an integer") +
                            ", got '" + raw->value + "'");
    }
  }

  template <typename T>
  void IntegerList(const std::string& key, std::vector<T>* out) {
    const RawKey* raw = Find(key);
    if (raw == nullptr) return;
    out->clear();
    for (const std::string& item : SplitList(raw->value)) {
      T v{};
      if (!ParseInteger(item, &v)) {
        Refuse(key, *raw, std::string("expected a list of ") +
                              (std::is_unsigned_v<T> ? "non-negative integers" : "integers") +
                              ", got '" + item + "' in '" + raw->value + "'");
        return;
      }
      out->push_back(v);
    }
  }

  void Bool(const std::string& key, bool* out) {
    const RawKey* raw = Find(key);
    if (raw != nullptr && !ParseBool(raw->value, out)) {
      Refuse(key, *raw, "expected true or false, got '" + raw->value + "'");
    }
  }

  // Refuses every key not in `known`.
  void RefuseUnknown(const std::vector<std::string>& known) {
    for (const std::string& key : sec_.order) {
      if (std::find(known.begin(), known.end(), key) != known.end()) continue;
      std::string list;
      for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
      Refuse(key, sec_.keys.at(key), "unknown key; [" + SectionKind() + "] takes " + list);
    }
  }

 private:
  std::string SectionKind() const {
    return sec_.name.rfind("factor.", 0) == 0 ? "factor.*" : sec_.name;
  }

  const RawSection& sec_;
  Errors* errors_;
};

void ReadSweepSection(SectionReader* r, SweepSpec* spec) {
  r->RefuseUnknown(
      {"name", "search", "budget", "seeds", "priority", "base_config", "search_seed"});
  r->String("name", &spec->name);
  if (const RawKey* raw = r->Find("search")) {
    if (raw->value == "grid") {
      spec->search = SearchKind::kGrid;
    } else if (raw->value == "random") {
      spec->search = SearchKind::kRandom;
    } else {
      r->Refuse("search", *raw, "expected grid or random, got '" + raw->value + "'");
    }
  }
  r->Integer("budget", &spec->budget);
  r->IntegerList("seeds", &spec->seeds);
  r->Integer("priority", &spec->priority);
  r->String("base_config", &spec->base_config);
  r->Integer("search_seed", &spec->search_seed);
}

void ReadFactorSection(SectionReader* r, const std::string& section, Errors* errors,
                       FactorSpec* f) {
  r->RefuseUnknown({"values", "range", "log", "integer", "when"});
  if (const RawKey* raw = r->Find("values")) {
    for (const std::string& item : SplitList(raw->value)) {
      if (item.empty()) {
        r->Refuse("values", *raw, "empty item in the list '" + raw->value + "'");
        f->values.clear();
        break;
      }
      f->values.push_back(item);
    }
  }
  if (const RawKey* raw = r->Find("range")) {
    std::vector<std::string> ends = SplitList(raw->value);
    if (ends.size() != 2 || !ParseDouble(ends[0], &f->lo) || !ParseDouble(ends[1], &f->hi)) {
      r->Refuse("range", *raw, "expected 'lo, hi' (two numbers), got '" + raw->value + "'");
      errors->Silence(section, "values");  // a range was meant: "no values" would mislead
      errors->Silence(section, "log");
      errors->Silence(section, "integer");
    } else {
      f->has_range = true;
    }
  }
  r->Bool("log", &f->log);
  r->Bool("integer", &f->integer);
  if (const RawKey* raw = r->Find("when")) {
    auto c = ParseCondition(raw->value);
    if (c.ok()) {
      f->when = std::move(c).value();
    } else {
      r->Refuse("when", *raw, c.status().message());
    }
  }
}

void ReadAshaSection(SectionReader* r, AshaConfig* asha) {
  r->RefuseUnknown({"metric", "mode", "rungs", "reduction"});
  r->String("metric", &asha->metric);
  if (const RawKey* raw = r->Find("mode")) {
    auto m = ParseAshaMode(raw->value);
    if (m.ok()) {
      asha->mode = *m;
    } else {
      r->Refuse("mode", *raw, "expected max or min, got '" + raw->value + "'");
    }
  }
  r->IntegerList("rungs", &asha->rungs);
  r->Integer("reduction", &asha->reduction);
}

void ReadReportSection(SectionReader* r, std::optional<ReportTarget>* target) {
  r->RefuseUnknown({"target"});
  if (const RawKey* raw = r->Find("target")) {
    auto t = ParseReportTarget(raw->value);
    if (t.ok()) {
      *target = *t;
    } else {
      r->Refuse("target", *raw, t.status().message());
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public functions.

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

const char* SearchKindName(SearchKind kind) {
  return kind == SearchKind::kGrid ? "grid" : "random";
}

bool Condition::HoldsFor(const std::string& value) const {
  switch (op) {
    case Op::kEq: return !values.empty() && SameValue(value, values[0]);
    case Op::kNe: return !values.empty() && !SameValue(value, values[0]);
    case Op::kIn:
      return std::any_of(values.begin(), values.end(),
                         [&value](const std::string& v) { return SameValue(value, v); });
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
    case Op::kEq: return factor + " == " + list;
    case Op::kNe: return factor + " != " + list;
    case Op::kIn: return factor + " in " + list;
  }
  return factor;
}

StatusOr<Condition> ParseCondition(const std::string& text) {
  const std::string t = Trim(text);
  auto usage = [&t](const std::string& why) {
    return Status::InvalidArgument(why + " in condition '" + t +
                                   "' (expected 'F == v', 'F != v' or 'F in v1, v2')");
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
  std::string p = ValueProblem(factor, value);
  if (p.empty()) return Status::OK();
  return Status::InvalidArgument(factor + ": " + p);
}

std::string TrialId(int index) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "t%04d", index);
  return buf;
}

Status ValidateSweep(const SweepSpec& spec, const std::string& source) {
  Errors errors(source, [](const std::string&, const std::string&) { return 0; });
  Validate(spec, &errors);
  return errors.ToStatus();
}

std::map<std::string, std::string> ConfigValues(const std::string& text) {
  Errors ignored("config", [](const std::string&, const std::string&) { return 0; });
  std::map<std::string, std::string> out;
  for (const RawSection& s : ParseIni(text, &ignored)) {
    for (const auto& [key, raw] : s.keys) out[s.name + "." + key] = raw.value;
  }
  return out;
}

StatusOr<SweepSpec> ParseSweepText(const std::string& text, const std::string& source) {
  std::vector<RawSection> sections;
  // Errors point at the line of the key (or of its section's header).
  Errors errors(source, [&sections](const std::string& section, const std::string& key) {
    for (const RawSection& s : sections) {
      if (s.name != section) continue;
      auto it = s.keys.find(key);
      return it != s.keys.end() ? it->second.line : s.line;
    }
    return 0;
  });
  sections = ParseIni(text, &errors);

  if (sections.empty() && errors.empty()) {
    errors.AddAt(0, "", "", "the file is empty: a sweep needs a [sweep] section and at least "
                            "one [factor.<section>.<key>] section");
    return errors.ToStatus();
  }

  SweepSpec spec;
  bool have_sweep = false;
  for (const RawSection& sec : sections) {
    SectionReader reader(sec, &errors);
    if (sec.name == "sweep") {
      have_sweep = true;
      ReadSweepSection(&reader, &spec);
    } else if (sec.name == "asha") {
      spec.asha.emplace();
      ReadAshaSection(&reader, &*spec.asha);
    } else if (sec.name == "report") {
      ReadReportSection(&reader, &spec.report_target);
    } else if (sec.name.rfind("factor.", 0) == 0) {
      FactorSpec f;
      f.name = sec.name.substr(std::string("factor.").size());
      ReadFactorSection(&reader, sec.name, &errors, &f);
      spec.factors.push_back(std::move(f));
    } else {
      errors.AddAt(sec.line, sec.name, "",
                   "unknown section; expected [sweep], [asha], [report] or [factor.<section>.<key>]");
    }
  }
  if (!have_sweep) {
    errors.AddAt(0, "", "", "no [sweep] section (it names the sweep)");
    errors.Silence("sweep", "name");
  }
  Validate(spec, &errors);
  FLAP_RETURN_IF_ERROR(errors.ToStatus());
  return spec;
}

StatusOr<SweepSpec> ParseSweepFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("sweep file '" + path + "' cannot be opened");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Status::IOError("sweep file '" + path + "' cannot be read");
  return ParseSweepText(text.str(), path);
}

StatusOr<std::vector<TrialSpec>> ExpandSweep(const SweepSpec& spec) {
  FLAP_RETURN_IF_ERROR(ValidateSweep(spec, "sweep '" + spec.name + "'"));
  std::vector<int> order;
  std::vector<std::string> cycle;
  ConditionOrder(spec, &order, &cycle);  // validated: no cycle
  std::vector<Cell> cells;
  if (spec.search == SearchKind::kGrid) {
    Cell current;
    GridCells(spec, order, 0, &current, &cells, static_cast<size_t>(kMaxTrials));
  } else {
    cells = RandomCells(spec, order);
  }
  std::vector<TrialSpec> trials;
  trials.reserve(cells.size() * spec.seeds.size());
  for (size_t c = 0; c < cells.size(); ++c) {
    for (uint64_t seed : spec.seeds) {
      TrialSpec t;
      t.id = TrialId(static_cast<int>(trials.size()));
      t.factors = cells[c];
      t.seed = seed;
      t.cell = static_cast<int>(c);
      trials.push_back(std::move(t));
    }
  }
  return trials;
}

// ---------------------------------------------------------------------------------------------
// JSON.

nlohmann::json SweepSpec::ToJson() const {
  nlohmann::json factors_json = nlohmann::json::array();
  for (const FactorSpec& f : factors) {
    nlohmann::json j = {{"name", f.name}, {"values", f.values}};
    if (f.has_range) {
      j["range"] = {f.lo, f.hi};
      j["log"] = f.log;
      j["integer"] = f.integer;
    }
    if (f.when) j["when"] = f.when->ToString();
    factors_json.push_back(std::move(j));
  }
  nlohmann::json j = {{"name", name},
                      {"search", SearchKindName(search)},
                      {"budget", budget},
                      {"seeds", seeds},
                      {"priority", priority},
                      {"base_config", base_config},
                      {"search_seed", search_seed},
                      {"factors", std::move(factors_json)},
                      {"asha", asha ? asha->ToJson() : nlohmann::json(nullptr)}};
  if (report_target) j["report_target"] = report_target->ToString();  // absent in earlier journals
  return j;
}

StatusOr<SweepSpec> SweepSpec::FromJson(const nlohmann::json& j, const std::string& what) {
  SweepSpec s;
  std::string search;
  FLAP_RETURN_IF_ERROR(ji::Get(j, "name", what, &s.name));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "search", what, &search));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "budget", what, &s.budget));
  FLAP_RETURN_IF_ERROR(ji::GetArray(j, "seeds", what, &s.seeds));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "priority", what, &s.priority));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "base_config", what, &s.base_config));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "search_seed", what, &s.search_seed));
  if (search == "grid") {
    s.search = SearchKind::kGrid;
  } else if (search == "random") {
    s.search = SearchKind::kRandom;
  } else {
    return Status::Corruption(what + ": field 'search' must be grid or random");
  }
  if (!j.contains("factors") || !j["factors"].is_array()) {
    return ji::Bad(what, "factors", "an array");
  }
  for (size_t i = 0; i < j["factors"].size(); ++i) {
    const nlohmann::json& fj = j["factors"][i];
    const std::string at = what + ": factors[" + std::to_string(i) + "]";
    FactorSpec f;
    FLAP_RETURN_IF_ERROR(ji::Get(fj, "name", at, &f.name));
    FLAP_RETURN_IF_ERROR(ji::GetArray(fj, "values", at, &f.values));
    if (fj.contains("range")) {
      std::vector<double> range;
      FLAP_RETURN_IF_ERROR(ji::GetArray(fj, "range", at, &range));
      if (range.size() != 2) return ji::Bad(at, "range", "two numbers");
      f.has_range = true;
      f.lo = range[0];
      f.hi = range[1];
      FLAP_RETURN_IF_ERROR(ji::Get(fj, "log", at, &f.log));
      FLAP_RETURN_IF_ERROR(ji::Get(fj, "integer", at, &f.integer));
    }
    if (fj.contains("when")) {
      std::string when;
      FLAP_RETURN_IF_ERROR(ji::Get(fj, "when", at, &when));
      auto c = ParseCondition(when);
      if (!c.ok()) return Status::Corruption(at + ": " + c.status().message());
      f.when = std::move(c).value();
    }
    s.factors.push_back(std::move(f));
  }
  if (j.contains("asha") && !j["asha"].is_null()) {
    FLAP_ASSIGN_OR_RETURN(AshaConfig a, AshaConfig::FromJson(j["asha"], what + ": asha"));
    s.asha = std::move(a);
  }
  if (j.contains("report_target") && !j["report_target"].is_null()) {
    std::string text;
    FLAP_RETURN_IF_ERROR(ji::Get(j, "report_target", what, &text));
    auto t = ParseReportTarget(text);
    if (!t.ok()) return Status::Corruption(what + ": report_target: " + t.status().message());
    s.report_target = *t;
  }
  Status valid = ValidateSweep(s, what);
  if (!valid.ok()) return Status::Corruption(valid.message());
  return s;
}

nlohmann::json TrialSpec::ToJson() const {
  return {{"id", id}, {"factors", factors}, {"seed", seed}, {"cell", cell}};
}

StatusOr<TrialSpec> TrialSpec::FromJson(const nlohmann::json& j, const std::string& what) {
  TrialSpec t;
  FLAP_RETURN_IF_ERROR(ji::Get(j, "id", what, &t.id));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "seed", what, &t.seed));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "cell", what, &t.cell));
  if (t.id.empty() || t.cell < 0) return Status::Corruption(what + ": empty id or negative cell");
  if (!j.contains("factors") || !j["factors"].is_object()) {
    return ji::Bad(what, "factors", "an object");
  }
  for (const auto& [k, v] : j["factors"].items()) {
    std::string value;
    FLAP_RETURN_IF_ERROR(ji::Convert(v, what, "factors." + k, &value));
    t.factors[k] = value;
  }
  return t;
}

}  // namespace flap::coordinator
