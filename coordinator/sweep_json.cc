// Sweep files (sweep.h): the JSON of sweep specs and trial specs (as the coordinator journals
// them); reading checks every field and validates the spec.
#include <nlohmann/json.hpp>

#include "coordinator/json_util.h"
#include "coordinator/sweep.h"
#include "coordinator/sweep_internal.h"

namespace flap::coordinator {

namespace ji = json_internal;

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
  sweep_internal::Errors errors(what, [](const std::string&, const std::string&) { return 0; });
  sweep_internal::Validate(s, &errors, /*at_submission=*/false);
  Status valid = errors.ToStatus();
  if (!valid.ok()) return Status::Corruption(valid.message());
  return s;
}

nlohmann::json TrialSpec::ToJson() const { return {{"id", id}, {"factors", factors}, {"seed", seed}, {"cell", cell}}; }

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
