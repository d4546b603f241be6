// Internal to coordinator/: what the sweep sources share (sweep.cc: the readers of a sweep
// file's sections, lexed by config/ini.h; sweep_values.cc: values, conditions and report
// targets; sweep_validate.cc: validation listing every error; sweep_expand.cc: grid and random
// expansion). coordinator/sweep.h is the part's contract; nothing here is.
//
// Thread-safety: free functions without state; an Errors is used by one thread.
#pragma once

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/status.h"
#include "config/ini.h"
#include "coordinator/sweep.h"

namespace flap::coordinator::sweep_internal {

// ---------------------------------------------------------------------------------------------
// Text helpers (sweep_values.cc).

using ini::IsSpace;
using ini::Trim;
// Splits on ',' and trims each item; keeps empty items so that callers can refuse them.
std::vector<std::string> SplitList(const std::string& s);
// A finite decimal number, the whole string ("1e-4", "0.5", "-2"; not "0x1p3", "inf", "1 2").
bool ParseDouble(const std::string& s, double* out);
// An integer, the whole string; no sign for an unsigned T, an optional '+' otherwise.
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
bool ParseBool(const std::string& s, bool* out);
// Same value, comparing numerically when both are numbers ("0.5" == "0.50").
bool SameValue(const std::string& a, const std::string& b);
// "<section>.<key>", each a word of [a-z0-9_] starting with a letter.
bool IsFactorName(const std::string& s);
// A drawn real: 6 significant digits.
std::string FormatReal(double v);
// A range end as written back in errors: an integer, or a real with every digit.
std::string FormatEndpoint(double v, bool integer);
// Empty when `value` is valid for `factor` on its own (its trial config key's domain,
// config/trial_config.h), else what is wrong ("mask.ratio must be in [0, 1), got '1.5'").
std::string ValueProblem(const std::string& factor, const std::string& value);
// Trial config keys whose values are words, not numbers: they cannot have a range.
bool IsWordValued(const std::string& factor);

inline std::string FactorSection(const std::string& name) { return "factor." + name; }

// ---------------------------------------------------------------------------------------------
// Error collection: config/ini.h's, every error "<source>[:<line>]: [<section>] <key>: ...",
// under the summary "<source>: N errors in the sweep:".

class Errors : public ini::Errors {
 public:
  Errors(std::string source, Locator locate) : ini::Errors(std::move(source), "the sweep", std::move(locate)) {}
};

// ---------------------------------------------------------------------------------------------
// Validation (sweep_validate.cc), shared by the parser, ValidateSweep and the journal's reader
// (state_records.cc: a stored spec, with at_submission false).

// Adds every problem of `spec` to `errors`. `at_submission` adds the checks of a new
// submission: a factor that is no trial config key (naming the closest key), and a factor or
// condition naming a key the coordinator sets for each trial (SweepKeyProblem); a stored spec is
// read back without them, so that a key removed or reserved since its submission does not make
// the journal unreadable.
void Validate(const SweepSpec& spec, Errors* errors, bool at_submission = true);

// Why a sweep may not set the trial config key `key` (in a factor or a condition, or, with
// `in_base`, in its base config), or "" when it may:
//   - a key local to each worker (ConfigKey::local_only: its folders, device, metrics
//     endpoint), whoever writes it: the worker's own config sets it;
//   - train.trial_id, which the coordinator sets for each trial (<sweep>-<trial>; it names the
//     trial's checkpoints);
//   - train.seed as a factor ([sweep] seeds sets it; a base config may hold it, as a worker's
//     config file does, and the sweep's seeds replace it).
std::string SweepKeyProblem(const std::string& key, bool in_base);

// ---------------------------------------------------------------------------------------------
// Condition order and expansion (sweep_expand.cc).

using Cell = std::map<std::string, std::string>;

// A topological order of the factors (each after the factor its condition names), preferring
// file order. Conditions on unknown factors are ignored here (the validator reports them).
// Returns false, with the factors left over in `cycle`, when the conditions form a cycle.
bool ConditionOrder(const SweepSpec& spec, std::vector<int>* order, std::vector<std::string>* cycle);
// Appends the grid's cells to `cells`; false once more than `limit` cells would be produced.
bool GridCells(const SweepSpec& spec, const std::vector<int>& order, size_t pos, Cell* current,
               std::vector<Cell>* cells, size_t limit);
// Draws up to spec.budget distinct cells.
std::vector<Cell> RandomCells(const SweepSpec& spec, const std::vector<int>& order);

}  // namespace flap::coordinator::sweep_internal
