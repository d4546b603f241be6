// Asha: early-stopping decisions by asynchronous successive halving (ASHA, Li et al. 2018), in
// its "stop or continue" form. It is the pure decision logic only: it records metric values and
// answers; it does not talk to workers, persist itself or know about steps beyond the rungs.
//
// How it runs. A sweep's [asha] section names an evaluation metric, a mode (max or min), rungs
// (points at which trials are compared, increasing) counted in a unit, and a reduction factor
// eta. The unit is the sweep's budget unit: steps, samples, flops (model FLOPs: at equal FLOPs a
// masked arm has had the compute of the unmasked one, where at equal steps it has had a third of
// it) or seconds; a sweep with a FLOPs budget counts its rungs in FLOPs unless it says otherwise
// (ResolveAshaUnit). A trial evaluates at the first step boundary at or past each rung; its value
// at the rung is interpolated between that evaluation and its one before (ValueAtRung), so
// trials whose evaluations do not line up are compared at the same point. When a trial's
// evaluation at rung k arrives, Decide() records the value among all the values recorded
// at rung k so far (from every trial of the sweep, in arrival order) and answers:
//   - fewer than eta results at rung k (counting this one): continue;
//   - otherwise, with n results, the top floor(n / eta) continue and the rest stop. A trial's
//     rank is the number of results at rung k strictly better than its own and it continues
//     when rank < floor(n / eta); tied values share a rank, so a tie straddling the boundary
//     continues as a whole;
//   - a NaN value is the worst of all: it ranks below every number and stops as soon as the
//     rung has eta results (a diverged run is never promoted by a tie with another NaN).
// A decision is final: results that arrive later at the same rung never revise it (promotion
// in ASHA is never taken back). A trial reporting the same rung again (an RPC retry, or a trial
// resumed from a checkpoint before the rung) gets its first decision back, and the new value is
// ignored. A trial stopped at rung k that reports a later rung is refused. A trial may skip a
// rung (its evaluation cadence may miss one); it is simply absent from that rung's ranking.
//
// Thread-safety: not thread-safe; the coordinator calls it under its own lock. Values of the
// plain structs are safe to copy between threads.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace flap::coordinator {

enum class AshaMode { kMax, kMin };  // kMax: a larger metric is better

// "max" / "min", and back (InvalidArgument for anything else).
const char* AshaModeName(AshaMode mode);
StatusOr<AshaMode> ParseAshaMode(const std::string& text);

// The units rungs are counted in (AshaConfig::unit).
const std::vector<std::string>& AshaUnits();

// The [asha] section of a sweep.
struct AshaConfig {
  std::string metric;  // evaluation metric name, e.g. "map10"; [A-Za-z0-9_.@-]+
  AshaMode mode = AshaMode::kMax;
  // steps | samples | flops | seconds; empty in a sweep file that does not say: the sweep's
  // budget unit is filled in at submission (ResolveAshaUnit in sweep.h).
  std::string unit;
  std::vector<double> rungs;  // in `unit`, > 0 and strictly increasing; at least one
  int reduction = 3;          // eta >= 2: the top 1/eta continue at each rung

  // The unit, "steps" when none was given.
  const std::string& Unit() const;
  // Every problem, as (key, message) pairs: key is "metric", "unit", "rungs" or "reduction".
  std::vector<std::pair<std::string, std::string>> Problems() const;
  // OK, or InvalidArgument listing every problem ("; "-separated) as "key: message".
  Status Validate() const;
};

enum class AshaAction { kContinue, kStop };
const char* AshaActionName(AshaAction action);  // "continue" / "stop"
// And back: InvalidArgument for anything else.
StatusOr<AshaAction> ParseAshaAction(const std::string& name);

// One decision, as made when the result arrived.
struct AshaDecision {
  AshaAction action = AshaAction::kContinue;
  int rung = 0;          // rung index
  int rank = 0;          // results at this rung strictly better than this one, when decided
  int num_results = 0;   // results at this rung when decided, this one included
  int num_promoted = 0;  // floor(num_results / eta) (0 when num_results < eta: all continue)

  bool operator==(const AshaDecision& o) const {
    return action == o.action && rung == o.rung && rank == o.rank && num_results == o.num_results &&
           num_promoted == o.num_promoted;
  }
};

// One trial's result at a rung: its value there and the decision it got.
struct AshaResult {
  std::string trial;
  double value = 0;
  AshaDecision decision;
};

class Asha {
 public:
  // InvalidArgument when `config` does not validate.
  static StatusOr<Asha> Create(AshaConfig config);
  // A state restored from storage: `config` and, per rung, the results recorded there
  // (ResultsAt). Corruption naming `what` when the config does not validate, the rungs are not
  // one per configured rung, or a result has an empty, duplicate or misplaced trial (its
  // decision's rung is not the rung it is stored at).
  static StatusOr<Asha> Restore(AshaConfig config, const std::vector<std::vector<AshaResult>>& rungs,
                                const std::string& what);

  const AshaConfig& config() const { return config_; }

  // Records `value` as `trial_id`'s result at rung `rung_index` and returns the decision (see the
  // file comment). Repeating a (trial, rung) returns the first decision unchanged.
  // InvalidArgument: empty trial id, rung_index outside [0, rungs). FailedPrecondition: the
  // trial was stopped at an earlier rung.
  StatusOr<AshaDecision> Decide(const std::string& trial_id, int rung_index, double value);

  // The decision recorded for (trial, rung), if any.
  std::optional<AshaDecision> DecisionFor(const std::string& trial_id, int rung_index) const;
  // The rung at which `trial_id` was stopped, if it was.
  std::optional<int> StoppedAt(const std::string& trial_id) const;
  // Number of results recorded at a rung (0 for an index out of range).
  int NumResults(int rung_index) const;
  // The index of the last rung at or below `position` (in the unit), or nullopt before the first.
  std::optional<int> RungReachedAt(double position) const;
  // The results recorded at rung `rung_index` (none for an index out of range), by trial id.
  std::vector<AshaResult> ResultsAt(int rung_index) const;

 private:
  struct Result {
    double value = 0;
    AshaDecision decision;
  };
  explicit Asha(AshaConfig config);

  // True when `a` is strictly better than `b` (NaN is worse than every number).
  bool Better(double a, double b) const;

  AshaConfig config_;
  // Per rung: trial id -> its result. Arrival order does not matter for later decisions (only
  // the set of values does), so a map keeps the state canonical.
  std::vector<std::map<std::string, Result>> rungs_;
};

// Where an evaluation record lies in `unit`: its step, or its values' "samples", "flops" or
// "train_seconds"; nullopt when the record does not carry it (a worker that does not count it).
std::optional<double> RecordPosition(const std::string& unit, int64_t step, const std::map<std::string, double>& values);

// A trial's metric at `point` from its evaluation (x1, y1) at or past the point and the one
// before it, (x0, y0), if any: linear between them when x0 < point <= x1, else y1.
double ValueAtRung(double point, std::optional<std::pair<double, double>> before, double x1, double y1);

}  // namespace flap::coordinator
