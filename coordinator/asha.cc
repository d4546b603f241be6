// Asha (asha.h): ASHA stop-or-continue decisions, and their state restored from storage.
#include "coordinator/asha.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <utility>

namespace flap::coordinator {
namespace {


bool IsMetricName(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '@' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

const char* AshaModeName(AshaMode mode) { return mode == AshaMode::kMax ? "max" : "min"; }

StatusOr<AshaMode> ParseAshaMode(const std::string& text) {
  if (text == "max") return AshaMode::kMax;
  if (text == "min") return AshaMode::kMin;
  return Status::InvalidArgument("mode must be max or min, got '" + text + "'");
}

const char* AshaActionName(AshaAction action) { return action == AshaAction::kContinue ? "continue" : "stop"; }

StatusOr<AshaAction> ParseAshaAction(const std::string& name) {
  if (name == "continue") return AshaAction::kContinue;
  if (name == "stop") return AshaAction::kStop;
  return Status::InvalidArgument("action must be continue or stop, got '" + name + "'");
}

const std::vector<std::string>& AshaUnits() {
  static const std::vector<std::string> units = {"steps", "samples", "flops", "seconds"};
  return units;
}

const std::string& AshaConfig::Unit() const {
  static const std::string steps = "steps";
  return unit.empty() ? steps : unit;
}

namespace {
std::string FormatRung(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}
}  // namespace

std::vector<std::pair<std::string, std::string>> AshaConfig::Problems() const {
  std::vector<std::pair<std::string, std::string>> problems;
  if (!IsMetricName(metric)) {
    problems.emplace_back("metric",
                          "expected a metric name of [A-Za-z0-9_.@-] (at most 64 "
                          "characters), got '" +
                              metric + "'");
  }
  if (!unit.empty() && std::find(AshaUnits().begin(), AshaUnits().end(), unit) == AshaUnits().end()) {
    problems.emplace_back("unit", "expected steps, samples, flops or seconds, got '" + unit + "'");
  }
  if (rungs.empty()) problems.emplace_back("rungs", "at least one rung is needed");
  for (size_t i = 0; i < rungs.size(); ++i) {
    if (!(rungs[i] > 0) || !std::isfinite(rungs[i])) {
      problems.emplace_back("rungs", "rungs must be > 0, got " + FormatRung(rungs[i]));
    } else if (i > 0 && rungs[i] <= rungs[i - 1]) {
      problems.emplace_back("rungs", "rungs must be strictly increasing, got " + FormatRung(rungs[i - 1]) + " then " +
                                         FormatRung(rungs[i]));
    } else if (Unit() == "steps" && rungs[i] != std::floor(rungs[i])) {
      problems.emplace_back("rungs", "rungs in steps must be whole numbers, got " + FormatRung(rungs[i]));
    }
  }
  if (reduction < 2) {
    problems.emplace_back("reduction", "must be an integer >= 2, got " + std::to_string(reduction));
  }
  return problems;
}

Status AshaConfig::Validate() const {
  std::string errors;
  for (const auto& [key, message] : Problems()) {
    errors += (errors.empty() ? "" : "; ") + key + ": " + message;
  }
  if (errors.empty()) return Status::OK();
  return Status::InvalidArgument(errors);
}

Asha::Asha(AshaConfig config) : config_(std::move(config)), rungs_(config_.rungs.size()) {}

StatusOr<Asha> Asha::Create(AshaConfig config) {
  FLAP_RETURN_IF_ERROR(config.Validate());
  return Asha(std::move(config));
}

StatusOr<Asha> Asha::Restore(AshaConfig config, const std::vector<std::vector<AshaResult>>& rungs,
                             const std::string& what) {
  Status valid = config.Validate();
  if (!valid.ok()) return Status::Corruption(what + ": config: " + valid.message());
  Asha asha(std::move(config));
  if (rungs.size() != asha.rungs_.size()) {
    return Status::Corruption(what + ": " + std::to_string(rungs.size()) + " rungs stored for " +
                              std::to_string(asha.rungs_.size()) + " configured");
  }
  for (size_t k = 0; k < rungs.size(); ++k) {
    for (size_t i = 0; i < rungs[k].size(); ++i) {
      const AshaResult& r = rungs[k][i];
      if (r.trial.empty() || r.decision.rung != static_cast<int>(k) ||
          !asha.rungs_[k].emplace(r.trial, Result{r.value, r.decision}).second) {
        return Status::Corruption(what + ": rungs[" + std::to_string(k) + "][" + std::to_string(i) +
                                  "]: empty, duplicate or misplaced trial '" + r.trial + "'");
      }
    }
  }
  return asha;
}

bool Asha::Better(double a, double b) const {
  if (std::isnan(a)) return false;
  if (std::isnan(b)) return true;
  return config_.mode == AshaMode::kMax ? a > b : a < b;
}

StatusOr<AshaDecision> Asha::Decide(const std::string& trial_id, int rung_index, double value) {
  if (trial_id.empty()) return Status::InvalidArgument("ASHA: empty trial id");
  if (rung_index < 0 || rung_index >= static_cast<int>(rungs_.size())) {
    return Status::InvalidArgument("ASHA: trial " + trial_id + " reported rung " + std::to_string(rung_index) +
                                   ", but there are " + std::to_string(rungs_.size()) + " rungs");
  }
  auto& rung = rungs_[rung_index];
  if (auto it = rung.find(trial_id); it != rung.end()) return it->second.decision;
  if (auto stopped = StoppedAt(trial_id); stopped && *stopped < rung_index) {
    return Status::FailedPrecondition("ASHA: trial " + trial_id + " was stopped at rung " + std::to_string(*stopped) +
                                      " and cannot report rung " + std::to_string(rung_index));
  }

  AshaDecision d;
  d.rung = rung_index;
  d.num_results = static_cast<int>(rung.size()) + 1;
  for (const auto& [other, result] : rung) {
    if (Better(result.value, value)) ++d.rank;
  }
  if (d.num_results < config_.reduction) {
    d.action = AshaAction::kContinue;
  } else {
    d.num_promoted = d.num_results / config_.reduction;
    bool promoted = !std::isnan(value) && d.rank < d.num_promoted;
    d.action = promoted ? AshaAction::kContinue : AshaAction::kStop;
  }
  rung.emplace(trial_id, Result{value, d});
  return d;
}

std::optional<AshaDecision> Asha::DecisionFor(const std::string& trial_id, int rung_index) const {
  if (rung_index < 0 || rung_index >= static_cast<int>(rungs_.size())) return std::nullopt;
  auto it = rungs_[rung_index].find(trial_id);
  if (it == rungs_[rung_index].end()) return std::nullopt;
  return it->second.decision;
}

std::optional<int> Asha::StoppedAt(const std::string& trial_id) const {
  for (size_t k = 0; k < rungs_.size(); ++k) {
    auto it = rungs_[k].find(trial_id);
    if (it != rungs_[k].end() && it->second.decision.action == AshaAction::kStop) {
      return static_cast<int>(k);
    }
  }
  return std::nullopt;
}

int Asha::NumResults(int rung_index) const {
  if (rung_index < 0 || rung_index >= static_cast<int>(rungs_.size())) return 0;
  return static_cast<int>(rungs_[rung_index].size());
}

std::optional<int> Asha::RungReachedAt(double position) const {
  std::optional<int> reached;
  for (size_t k = 0; k < config_.rungs.size() && config_.rungs[k] <= position; ++k) {
    reached = static_cast<int>(k);
  }
  return reached;
}

std::vector<AshaResult> Asha::ResultsAt(int rung_index) const {
  std::vector<AshaResult> out;
  if (rung_index < 0 || rung_index >= static_cast<int>(rungs_.size())) return out;
  for (const auto& [trial, result] : rungs_[rung_index]) out.push_back({trial, result.value, result.decision});
  return out;
}

std::optional<double> RecordPosition(const std::string& unit, int64_t step, const std::map<std::string, double>& values) {
  if (unit.empty() || unit == "steps") return static_cast<double>(step);
  const std::string key = unit == "seconds" ? "train_seconds" : unit;
  auto it = values.find(key);
  if (it == values.end() || !std::isfinite(it->second)) return std::nullopt;
  return it->second;
}

double ValueAtRung(double point, std::optional<std::pair<double, double>> before, double x1, double y1) {
  if (!before || !(before->first < point) || !(point <= x1) || !(x1 > before->first)) return y1;
  const double w = (point - before->first) / (x1 - before->first);
  return before->second + w * (y1 - before->second);
}

}  // namespace flap::coordinator
