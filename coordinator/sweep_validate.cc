// Sweep files (sweep.h): validation of a spec, listing every error (shared by the parser,
// ValidateSweep and the journal's reader of a stored spec).
#include <cmath>

#include "common/path_name.h"
#include "config/trial_config.h"
#include "coordinator/sweep.h"
#include "coordinator/sweep_internal.h"

namespace flap::coordinator {
namespace sweep_internal {
namespace {

void ValidateFactor(const SweepSpec& spec, const FactorSpec& f, const std::map<std::string, int>& names,
                    bool at_submission, Errors* errors) {
  const std::string section = FactorSection(f.name);
  const bool grid = spec.search == SearchKind::kGrid;
  if (!IsFactorName(f.name)) {
    errors->Add(section, "",
                "a factor is a trial config key '<section>.<key>', each word of "
                "[a-z0-9_] starting with a letter; got '" +
                    f.name + "'");
  } else if (at_submission && FindConfigKey(f.name) == nullptr) {
    const std::string close = ClosestConfigKey(f.name);
    errors->Add(section, "",
                "unknown key " + f.name + " in [" + section + "]" +
                    (close.empty() ? "" : "; did you mean " + close + "?") +
                    " (a factor is a trial config key: flap-worker train --help "
                    "lists them)");
  } else if (const ConfigKey* key = FindConfigKey(f.name); at_submission && key->name != f.name) {
    errors->Add(section, "",
                f.name + " is the earlier name of " + key->name + ", still read in trial configs but not in a new "
                "sweep: write [" + FactorSection(key->name) + "]");
  } else if (std::string p = SweepKeyProblem(f.name, /*in_base=*/false); at_submission && !p.empty()) {
    errors->Add(section, "", p);
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
    errors->Add(section, "values",
                "lists " + std::to_string(f.values.size()) + " values; a factor takes at most " +
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
        errors->Add(section, "range",
                    "needs lo < hi, got " + FormatEndpoint(f.lo, false) + ", " + FormatEndpoint(f.hi, false));
      }
      if (f.log && !(f.lo > 0)) errors->Add(section, "log", "a log-uniform range needs lo > 0");
      if (f.integer &&
          (f.lo != std::floor(f.lo) || f.hi != std::floor(f.hi) || std::fabs(f.lo) > 9e15 || std::fabs(f.hi) > 9e15)) {
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
    } else if (std::string p = SweepKeyProblem(c.factor, /*in_base=*/false); at_submission && !p.empty()) {
      errors->Add(section, "when", "the condition '" + c.ToString() + "': " + p);
    } else if (it == names.end()) {
      errors->Add(
          section, "when",
          "the condition '" + c.ToString() + "' refers to '" + c.factor + "', which is not a factor of this sweep");
    } else {
      const FactorSpec& dep = spec.factors[it->second];
      if (!dep.has_range && !dep.values.empty() &&
          std::none_of(dep.values.begin(), dep.values.end(), [&c](const std::string& v) { return c.HoldsFor(v); })) {
        std::string listed;
        for (const std::string& v : dep.values) listed += (listed.empty() ? "" : ", ") + v;
        errors->Add(section, "when",
                    "the condition '" + c.ToString() + "' never holds (" + dep.name + " takes " + listed +
                        "), so the factor would never apply");
      }
    }
  }
}

}  // namespace

std::string SweepKeyProblem(const std::string& key, bool in_base) {
  if (IsLocalOnlyKey(key)) {
    return key +
           " is local to each worker (a folder, endpoint or device of its machine): a sweep cannot set it; set it "
           "in the worker's own config or flags";
  }
  if (key == "train.trial_id") {
    return key +
           " is set by the coordinator for each trial (<sweep>-<trial>: it names the trial's checkpoints): a sweep "
           "cannot set it";
  }
  if (key == "train.seed" && !in_base) return "the trial seed is not a factor: list replicate seeds in [sweep] seeds";
  return "";
}

void Validate(const SweepSpec& spec, Errors* errors, bool at_submission) {
  if (std::string p = PathNameProblem(spec.name); !p.empty()) {
    errors->Add("sweep", "name",
                "a sweep needs a name of [A-Za-z0-9_.-] (at most 64 "
                "characters, not starting with a dot); '" +
                    spec.name + "' " + p);
  }
  if (spec.budget < 0) {
    errors->Add("sweep", "budget", "must be >= 0, got " + std::to_string(spec.budget));
  } else if (spec.search == SearchKind::kRandom && spec.budget < 1) {
    errors->Add("sweep", "budget", "random search needs budget >= 1 (configurations to draw)");
  }
  if (spec.seeds.empty()) errors->Add("sweep", "seeds", "at least one seed is needed");
  if (spec.seeds.size() > static_cast<size_t>(kMaxTrials)) {
    errors->Add("sweep", "seeds",
                "lists " + std::to_string(spec.seeds.size()) + " seeds; a sweep holds at most " +
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
    errors->Add("", "",
                "the sweep has " + std::to_string(spec.factors.size()) + " factors; at most " +
                    std::to_string(kMaxFactors) + " are allowed");
    return;
  }

  std::map<std::string, int> names;
  for (int i = 0; i < static_cast<int>(spec.factors.size()); ++i) {
    if (!names.emplace(spec.factors[i].name, i).second) {
      errors->Add(FactorSection(spec.factors[i].name), "", "the factor appears twice");
    }
  }
  for (const FactorSpec& f : spec.factors) ValidateFactor(spec, f, names, at_submission, errors);

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
      errors->Add("sweep", "", "the grid exceeds " + std::to_string(kMaxTrials) + " trials (cells x seeds)");
    } else if (spec.budget > 0 && static_cast<int64_t>(cells.size()) > spec.budget) {
      errors->Add("sweep", "budget",
                  "the grid has " + std::to_string(cells.size()) + " cells, more than the budget of " +
                      std::to_string(spec.budget) + " (raise it, or 0 for no limit)");
    }
  } else if (spec.budget > kMaxTrials / seeds) {
    errors->Add("sweep", "budget", "budget x seeds exceeds " + std::to_string(kMaxTrials) + " trials");
  }
}

}  // namespace sweep_internal

Status ValidateSweep(const SweepSpec& spec, const std::string& source) {
  sweep_internal::Errors errors(source, [](const std::string&, const std::string&) { return 0; });
  sweep_internal::Validate(spec, &errors);
  return errors.ToStatus();
}

}  // namespace flap::coordinator
