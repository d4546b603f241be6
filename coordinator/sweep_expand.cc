// Sweep files (sweep.h): expansion into trials: the order conditions impose, the grid, and
// random draws from our own generator.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "coordinator/sweep.h"
#include "coordinator/sweep_internal.h"

namespace flap::coordinator {
namespace sweep_internal {

// A topological order of the factors (each after the factor its condition names), preferring
// file order. Conditions on unknown factors are ignored here (the validator reports them).
// Returns false, with the factors left over in `cycle`, when the conditions form a cycle.
bool ConditionOrder(const SweepSpec& spec, std::vector<int>* order, std::vector<std::string>* cycle) {
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

namespace {

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
  uint64_t Below(uint64_t n) { return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * n) >> 64); }

 private:
  uint64_t state_;
};

std::string Draw(const FactorSpec& f, SplitMix64* rng) {
  if (!f.has_range) return f.values[rng->Below(f.values.size())];
  if (f.integer) {
    const int64_t lo = static_cast<int64_t>(f.lo), hi = static_cast<int64_t>(f.hi);
    if (f.log) {
      double v = std::floor(
          std::exp(std::log(static_cast<double>(lo)) +
                   rng->Uniform() * (std::log(static_cast<double>(hi) + 1) - std::log(static_cast<double>(lo)))));
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

}  // namespace

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

}  // namespace sweep_internal

using namespace sweep_internal;  // NOLINT: this part's own helpers

std::string TrialId(int index) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "t%04d", index);
  return buf;
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

}  // namespace flap::coordinator
