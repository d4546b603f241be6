// Asha (asha.h): ASHA stop-or-continue decisions and their JSON state.
#include "coordinator/asha.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <utility>

#include "coordinator/json_util.h"

namespace flap::coordinator {
namespace {

namespace ji = json_internal;

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

nlohmann::json AshaConfig::ToJson() const {
  // Whole rungs as integers: the records of sweeps whose rungs count steps keep their bytes.
  nlohmann::json points = nlohmann::json::array();
  for (double r : rungs) {
    if (r == std::floor(r) && std::fabs(r) < 9007199254740992.0) {
      points.push_back(static_cast<int64_t>(r));
    } else {
      points.push_back(r);
    }
  }
  nlohmann::json j = {{"metric", metric}, {"mode", AshaModeName(mode)}, {"rungs", points}, {"reduction", reduction}};
  if (!unit.empty()) j["unit"] = unit;
  return j;
}

StatusOr<AshaConfig> AshaConfig::FromJson(const nlohmann::json& j, const std::string& what) {
  AshaConfig c;
  std::string mode;
  FLAP_RETURN_IF_ERROR(ji::Get(j, "metric", what, &c.metric));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "mode", what, &mode));
  FLAP_RETURN_IF_ERROR(ji::GetArray(j, "rungs", what, &c.rungs));
  if (j.contains("unit")) FLAP_RETURN_IF_ERROR(ji::Get(j, "unit", what, &c.unit));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "reduction", what, &c.reduction));
  auto m = ParseAshaMode(mode);
  if (!m.ok()) return Status::Corruption(what + ": " + m.status().message());
  c.mode = *m;
  Status s = c.Validate();
  if (!s.ok()) return Status::Corruption(what + ": " + s.message());
  return c;
}

nlohmann::json AshaDecision::ToJson() const {
  return {{"action", AshaActionName(action)},
          {"rung", rung},
          {"rank", rank},
          {"num_results", num_results},
          {"num_promoted", num_promoted}};
}

StatusOr<AshaDecision> AshaDecision::FromJson(const nlohmann::json& j, const std::string& what) {
  AshaDecision d;
  std::string action;
  FLAP_RETURN_IF_ERROR(ji::Get(j, "action", what, &action));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "rung", what, &d.rung));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "rank", what, &d.rank));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "num_results", what, &d.num_results));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "num_promoted", what, &d.num_promoted));
  if (action == "continue") {
    d.action = AshaAction::kContinue;
  } else if (action == "stop") {
    d.action = AshaAction::kStop;
  } else {
    return Status::Corruption(what + ": field 'action' must be continue or stop, got '" + action + "'");
  }
  return d;
}

Asha::Asha(AshaConfig config) : config_(std::move(config)), rungs_(config_.rungs.size()) {}

StatusOr<Asha> Asha::Create(AshaConfig config) {
  FLAP_RETURN_IF_ERROR(config.Validate());
  return Asha(std::move(config));
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

nlohmann::json Asha::ToJson() const {
  nlohmann::json rungs = nlohmann::json::array();
  for (const auto& rung : rungs_) {
    nlohmann::json results = nlohmann::json::array();
    for (const auto& [trial, result] : rung) {
      results.push_back(
          {{"trial", trial}, {"value", ji::Number(result.value)}, {"decision", result.decision.ToJson()}});
    }
    rungs.push_back(std::move(results));
  }
  return {{"config", config_.ToJson()}, {"rungs", std::move(rungs)}};
}

StatusOr<Asha> Asha::FromJson(const nlohmann::json& j, const std::string& what) {
  if (!j.is_object() || !j.contains("config")) {
    return Status::Corruption(what + ": ASHA state has no 'config'");
  }
  FLAP_ASSIGN_OR_RETURN(AshaConfig config, AshaConfig::FromJson(j["config"], what + ": config"));
  Asha asha(std::move(config));
  auto rungs = j.find("rungs");
  if (rungs == j.end() || !rungs->is_array() || rungs->size() != asha.rungs_.size()) {
    return Status::Corruption(what + ": field 'rungs' must be an array of " + std::to_string(asha.rungs_.size()) +
                              " rungs");
  }
  for (size_t k = 0; k < rungs->size(); ++k) {
    const nlohmann::json& results = (*rungs)[k];
    const std::string where = what + ": rungs[" + std::to_string(k) + "]";
    if (!results.is_array()) return Status::Corruption(where + " is not an array");
    for (size_t i = 0; i < results.size(); ++i) {
      const std::string at = where + "[" + std::to_string(i) + "]";
      std::string trial;
      Result r;
      FLAP_RETURN_IF_ERROR(ji::Get(results[i], "trial", at, &trial));
      FLAP_RETURN_IF_ERROR(ji::Get(results[i], "value", at, &r.value));
      if (!results[i].contains("decision")) return ji::Bad(at, "decision", "present");
      FLAP_ASSIGN_OR_RETURN(r.decision, AshaDecision::FromJson(results[i]["decision"], at));
      if (trial.empty() || r.decision.rung != static_cast<int>(k) || !asha.rungs_[k].emplace(trial, r).second) {
        return Status::Corruption(at + ": empty, duplicate or misplaced trial '" + trial + "'");
      }
    }
  }
  return asha;
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
