// Sweep files (sweep.h): the sweep against the trial configuration (config/trial_config.h):
// the base config's keys (none that a sweep cannot set: SweepKeyProblem), and every trial's
// config checked whole at submission.
#include <map>
#include <optional>
#include <utility>

#include "config/trial_config.h"
#include "coordinator/sweep.h"
#include "coordinator/sweep_internal.h"

namespace flap::coordinator {

std::map<std::string, std::string> ConfigValues(const std::string& text) {
  StatusOr<std::map<std::string, std::string>> values = ParseConfigText(text, "config");
  return values.ok() ? *values : std::map<std::string, std::string>{};
}

std::map<std::string, std::string> TrialOverrides(const std::string& sweep_id, const TrialSpec& trial) {
  std::map<std::string, std::string> out;
  // A sweep submitted before a key was renamed names it by its alias: sent by its current name.
  for (const auto& [name, value] : trial.factors) out[CanonicalConfigKey(name)] = value;
  out["train.seed"] = std::to_string(trial.seed);
  out["train.trial_id"] = sweep_id + "-" + trial.id;
  return out;
}

StatusOr<std::map<std::string, std::string>> TrialConfigValues(const std::string& base_config,
                                                               const std::string& source, const std::string& sweep_id,
                                                               const TrialSpec& trial) {
  FLAP_ASSIGN_OR_RETURN(auto values, ParseConfigText(base_config, source));
  for (auto& [key, value] : TrialOverrides(sweep_id, trial)) values[key] = std::move(value);
  return values;
}

std::optional<std::string> TrialSweepValue(const std::map<std::string, std::string>& base_values,
                                           const TrialSpec& trial, const std::string& key) {
  // A sweep submitted before a key was renamed names its factor by the alias.
  for (const auto& [name, value] : trial.factors) {
    if (CanonicalConfigKey(name) == key) return value;
  }
  const auto base = base_values.find(key);  // ConfigValues: current names already
  if (base != base_values.end()) return base->second;
  return std::nullopt;
}

int64_t TrialGlobalBatch(const std::map<std::string, std::string>& base_values, const TrialSpec& trial) {
  const std::string key = "train.global_batch";
  const std::optional<std::string> value = TrialSweepValue(base_values, trial, key);
  if (!value) return 0;
  TrialConfig c;
  return ApplyConfigValues({{key, *value}}, &c).ok() ? c.train.global_batch : 0;
}

void ResolveAshaUnit(SweepSpec* spec, const std::string& base_config) {
  if (!spec->asha || !spec->asha->unit.empty()) return;
  bool flops = false;
  const std::map<std::string, std::string> base = ConfigValues(base_config);
  if (auto it = base.find("train.max_flops"); it != base.end()) {
    TrialConfig c;
    flops = ApplyConfigValues({*it}, &c).ok() && c.train.max_flops > 0;
  }
  for (const FactorSpec& f : spec->factors) flops = flops || f.name == "train.max_flops";
  spec->asha->unit = flops ? "flops" : "steps";
}

Status CheckTrialConfigs(const SweepSpec& spec, const std::vector<TrialSpec>& trials, const std::string& base_config,
                         const std::string& source) {
  sweep_internal::Errors errors(source, [](const std::string&, const std::string&) { return 0; });
  const std::string base_name = "the base config" + (spec.base_config.empty() ? "" : " (" + spec.base_config + ")");
  StatusOr<std::map<std::string, std::string>> base = ParseConfigText(base_config, base_name);
  if (!base.ok()) {
    errors.AddAt(0, "", "", base.status().message());
    return errors.ToStatus();
  }
  // The base config is sent to every worker as it is: it may not set what a sweep cannot.
  for (const auto& entry : *base) {
    const std::string& key = entry.first;
    if (std::string p = sweep_internal::SweepKeyProblem(key, /*in_base=*/true); !p.empty()) {
      errors.AddAt(0, "", "", base_name + " sets " + key + ": " + p);
    }
  }
  if (!errors.empty()) return errors.ToStatus();
  // Each distinct problem once, with the first trial that shows it and how many more do.
  struct Seen {
    std::string first;
    int more = 0;
  };
  std::map<std::string, Seen> problems;
  std::vector<std::string> order;
  for (const TrialSpec& t : trials) {
    std::map<std::string, std::string> values = *base;
    for (auto& [key, value] : TrialOverrides(spec.name, t)) values[key] = std::move(value);
    TrialConfig config;
    Status s = ApplyConfigValues(values, &config);
    if (s.ok()) s = config.Validate();
    if (s.ok()) continue;
    auto [it, added] = problems.emplace(s.message(), Seen{});
    if (!added) {
      ++it->second.more;
      continue;
    }
    std::string factors;
    for (const auto& [key, value] : t.factors) factors += (factors.empty() ? "" : ", ") + key + "=" + value;
    it->second.first =
        "trial " + t.id + " (" + (factors.empty() ? "" : factors + ", ") + "seed " + std::to_string(t.seed) + ")";
    order.push_back(s.message());
  }
  for (const std::string& message : order) {
    const Seen& seen = problems.at(message);
    errors.AddAt(0, "", "",
                 seen.first + " on " + base_name + ": " + message +
                     (seen.more > 0 ? " (and " + std::to_string(seen.more) + " more trials)" : ""));
  }
  return errors.ToStatus();
}

}  // namespace flap::coordinator
