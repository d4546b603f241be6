// Validation's choice per cell (report.h SelectBest): over the report's facts and cells
// (report.cc GatherFacts, report_tables.cc GroupCells), the checkpoint each trial's validation
// selected and the cell's best trial by the objective there.
#include <cmath>
#include <map>
#include <string>

#include "checkpoint/layout.h"
#include "config/trial_config.h"
#include "coordinator/report.h"
#include "coordinator/report_internal.h"
#include "coordinator/sweep.h"

namespace flap::coordinator {
using namespace report_internal;  // NOLINT: this part's own helpers

namespace {

// The trial's ckpt.metric: its factors, else the base config, else the default.
std::string CkptMetric(const ReportInput& in, const TrialSpec& trial) {
  StatusOr<std::map<std::string, std::string>> values =
      TrialConfigValues(in.base_config, "the base config", in.sweep_id, trial);
  const std::map<std::string, std::string> v = values.ok() ? *values : TrialOverrides(in.sweep_id, trial);
  auto it = v.find("ckpt.metric");
  return it != v.end() ? it->second : TrialConfig().ckpt.metric;
}

// The step validation selected within the trial: its TEST record's selected_step, else its
// best EVAL record by ckpt.metric (the earliest of equal ones); -1 when neither exists.
int64_t SelectedStep(const ReportInput& in, const TrialFacts& f) {
  const double named = Value(f.test, "selected_step");
  if (!std::isnan(named)) return static_cast<int64_t>(named);
  const std::string metric = CkptMetric(in, *f.spec);
  int64_t step = -1;
  double best = kNaN;
  for (const MetricPoint* p : f.evals) {  // by step
    const double v = Value(p->values, metric);
    if (std::isfinite(v) && (step < 0 || v > best)) {
      step = p->step;
      best = v;
    }
  }
  return step;
}

// The EVAL record at `step`; nullptr when there is none.
const MetricPoint* EvalAt(const TrialFacts& f, int64_t step) {
  for (const MetricPoint* p : f.evals) {
    if (p->step == step) return p;
  }
  return nullptr;
}

// The reference of the checkpoint at `step`, from the trial's latest reported one ("" and *why
// when it cannot be named).
std::string CheckpointAt(const TrialRecord& r, int64_t step, std::string* why) {
  if (r.checkpoint.empty()) {
    *why = "the trial reported no checkpoint";
    return "";
  }
  if (r.checkpoint_step == step) return r.checkpoint;
  const size_t slash = r.checkpoint.rfind('/');
  int64_t named = -1;
  if (slash == std::string::npos || !checkpoint::ParseStepDirName(r.checkpoint.substr(slash + 1), &named) ||
      named != r.checkpoint_step) {
    *why = "the trial's latest checkpoint reference '" + r.checkpoint + "' (step " + std::to_string(r.checkpoint_step) +
           ") does not end in its step's folder, so step " + std::to_string(step) + "'s cannot be named";
    return "";
  }
  return r.checkpoint.substr(0, slash + 1) + checkpoint::StepDirName(step);
}

}  // namespace

BestChoices SelectBest(const ReportInput& in, const ReportOptions& options) {
  const ReportFacts rf = GatherFacts(in, options);
  const CellGroups cells = GroupCells(rf);
  BestChoices out;
  out.metric = rf.metric;
  out.max_mode = rf.max_mode;
  for (const auto& [cell, spec] : cells.spec) {
    CellChoice c;
    c.cell = cell;
    c.label = CellLabel(*spec);
    c.factors = spec->factors;
    const std::vector<const TrialFacts*>& members = cells.Members(cell);
    for (const TrialFacts* f : members) {
      const int64_t step = SelectedStep(in, *f);
      const MetricPoint* eval = step >= 0 ? EvalAt(*f, step) : nullptr;
      const double v = eval ? Value(eval->values, rf.metric) : kNaN;
      if (std::isnan(v)) continue;
      ++c.candidates;
      if (c.trial != nullptr && !(rf.max_mode ? v > c.objective : v < c.objective)) continue;
      c.trial = f->spec;
      c.selected_step = step;
      c.objective = v;
      c.validation = eval->values;
      c.test = f->test;
      c.reason.clear();
      c.checkpoint = f->record ? CheckpointAt(*f->record, step, &c.reason) : "";
    }
    if (members.empty()) {
      std::map<std::string, int> states;
      for (const TrialFacts& f : rf.trials) {
        if (f.spec->cell == cell) states[f.record ? TrialStateName(f.record->state) : "unknown"]++;
      }
      std::string list;
      for (const auto& [state, n] : states) list += (list.empty() ? "" : ", ") + std::to_string(n) + " " + state;
      c.reason = "no completed trial (" + list + ")";
    } else if (c.trial == nullptr) {
      c.reason = "none of its " + std::to_string(members.size()) + " completed trials has a validation " + rf.metric +
                 " at the step validation selected";
    }
    out.cells.push_back(std::move(c));
  }
  return out;
}

}  // namespace flap::coordinator
