// The journal's records to their protobuf messages and back (state_records.h).
#include "coordinator/state_records.h"

#include "coordinator/sweep_internal.h"

namespace flap::coordinator::state_records {
namespace {

// `status` (a parser's InvalidArgument) as Corruption naming `what`.
Status Damaged(const std::string& what, const Status& status) {
  return Status::Corruption(what + ": " + status.message());
}

void EncodeConfig(const AshaConfig& c, journal::AshaConfig* m) {
  m->set_metric(c.metric);
  m->set_mode(AshaModeName(c.mode));
  for (double r : c.rungs) m->add_rungs(r);
  m->set_reduction(c.reduction);
  m->set_unit(c.unit);
}

StatusOr<AshaConfig> DecodeConfig(const journal::AshaConfig& m, const std::string& what) {
  AshaConfig c;
  c.metric = m.metric();
  auto mode = ParseAshaMode(m.mode());
  if (!mode.ok()) return Damaged(what, mode.status());
  c.mode = *mode;
  c.rungs.assign(m.rungs().begin(), m.rungs().end());
  c.reduction = m.reduction();
  c.unit = m.unit();
  Status valid = c.Validate();
  if (!valid.ok()) return Damaged(what, valid);
  return c;
}

void EncodeSpec(const SweepSpec& s, journal::SweepSpec* m) {
  m->set_name(s.name);
  m->set_search(SearchKindName(s.search));
  m->set_budget(s.budget);
  for (uint64_t seed : s.seeds) m->add_seeds(seed);
  m->set_priority(s.priority);
  m->set_base_config(s.base_config);
  m->set_search_seed(s.search_seed);
  for (const FactorSpec& f : s.factors) {
    journal::Factor* fm = m->add_factors();
    fm->set_name(f.name);
    for (const std::string& v : f.values) fm->add_values(v);
    if (f.has_range) {
      fm->add_range(f.lo);
      fm->add_range(f.hi);
      fm->set_log(f.log);
      fm->set_integer(f.integer);
    }
    if (f.when) fm->set_when(f.when->ToString());
  }
  if (s.asha) EncodeConfig(*s.asha, m->mutable_asha());
  if (s.report_target) m->set_report_target(s.report_target->ToString());
}

StatusOr<SweepSpec> DecodeSpec(const journal::SweepSpec& m, const std::string& what) {
  SweepSpec s;
  s.name = m.name();
  if (m.search() == SearchKindName(SearchKind::kGrid)) {
    s.search = SearchKind::kGrid;
  } else if (m.search() == SearchKindName(SearchKind::kRandom)) {
    s.search = SearchKind::kRandom;
  } else {
    return Status::Corruption(what + ": field 'search' must be grid or random, got '" + m.search() + "'");
  }
  s.budget = m.budget();
  s.seeds.assign(m.seeds().begin(), m.seeds().end());
  s.priority = m.priority();
  s.base_config = m.base_config();
  s.search_seed = m.search_seed();
  for (int i = 0; i < m.factors_size(); ++i) {
    const journal::Factor& fm = m.factors(i);
    const std::string at = what + ": factors[" + std::to_string(i) + "]";
    FactorSpec f;
    f.name = fm.name();
    f.values.assign(fm.values().begin(), fm.values().end());
    if (fm.range_size() != 0) {
      if (fm.range_size() != 2) return Status::Corruption(at + ": field 'range' must be two numbers");
      f.has_range = true;
      f.lo = fm.range(0);
      f.hi = fm.range(1);
      f.log = fm.log();
      f.integer = fm.integer();
    }
    if (!fm.when().empty()) {
      auto c = ParseCondition(fm.when());
      if (!c.ok()) return Damaged(at, c.status());
      f.when = std::move(c).value();
    }
    s.factors.push_back(std::move(f));
  }
  if (m.has_asha()) {
    FLAP_ASSIGN_OR_RETURN(AshaConfig a, DecodeConfig(m.asha(), what + ": asha"));
    s.asha = std::move(a);
  }
  if (!m.report_target().empty()) {
    auto t = ParseReportTarget(m.report_target());
    if (!t.ok()) return Damaged(what + ": report_target", t.status());
    s.report_target = *t;
  }
  // The checks of a submitted sweep but those of its keys against the configuration (a key
  // renamed since does not keep a stored sweep from loading).
  sweep_internal::Errors errors(what, [](const std::string&, const std::string&) { return 0; });
  sweep_internal::Validate(s, &errors, /*at_submission=*/false);
  Status valid = errors.ToStatus();
  if (!valid.ok()) return Status::Corruption(valid.message());
  return s;
}

void EncodePerCause(int preemption, int node_fault, int trial_error, journal::PerCause* m) {
  m->set_preemption(preemption);
  m->set_node_fault(node_fault);
  m->set_trial_error(trial_error);
}

}  // namespace

journal::Counters Encode(const Counters& c) {
  journal::Counters m;
  m.set_next_group(c.next_group);
  m.set_next_order(c.next_order);
  return m;
}

StatusOr<Counters> Decode(const journal::Counters& m, const std::string&) {
  Counters c;
  c.next_group = m.next_group();
  c.next_order = m.next_order();
  return c;
}

journal::Sweep Encode(const SweepRecord& s) {
  journal::Sweep m;
  EncodeSpec(s.spec, m.mutable_spec());
  m.set_text(s.text);
  m.set_source(s.source);
  m.set_base_config(s.base_config);
  m.set_state(SweepStateName(s.state));
  m.set_order(s.order);
  for (const std::string& id : s.trial_ids) m.add_trial_ids(id);
  return m;
}

StatusOr<SweepRecord> Decode(const journal::Sweep& m, const std::string& what) {
  if (!m.has_spec()) return Status::Corruption(what + ": no spec");
  SweepRecord s;
  FLAP_ASSIGN_OR_RETURN(s.spec, DecodeSpec(m.spec(), what));
  s.text = m.text();
  s.source = m.source();
  s.base_config = m.base_config();
  FLAP_ASSIGN_OR_RETURN(s.state, ParseSweepState(m.state(), what));
  s.order = m.order();
  s.trial_ids.assign(m.trial_ids().begin(), m.trial_ids().end());
  return s;
}

journal::Asha Encode(const Asha& asha) {
  journal::Asha m;
  EncodeConfig(asha.config(), m.mutable_config());
  for (int k = 0; k < static_cast<int>(asha.config().rungs.size()); ++k) {
    journal::AshaRung* rung = m.add_rungs();
    for (const AshaResult& r : asha.ResultsAt(k)) {
      journal::AshaResult* rm = rung->add_results();
      rm->set_trial(r.trial);
      rm->set_value(r.value);
      journal::AshaDecision* d = rm->mutable_decision();
      d->set_action(AshaActionName(r.decision.action));
      d->set_rung(r.decision.rung);
      d->set_rank(r.decision.rank);
      d->set_num_results(r.decision.num_results);
      d->set_num_promoted(r.decision.num_promoted);
    }
  }
  return m;
}

StatusOr<Asha> Decode(const journal::Asha& m, const std::string& what) {
  if (!m.has_config()) return Status::Corruption(what + ": ASHA state has no 'config'");
  FLAP_ASSIGN_OR_RETURN(AshaConfig config, DecodeConfig(m.config(), what + ": config"));
  std::vector<std::vector<AshaResult>> rungs;
  for (int k = 0; k < m.rungs_size(); ++k) {
    rungs.emplace_back();
    for (int i = 0; i < m.rungs(k).results_size(); ++i) {
      const journal::AshaResult& rm = m.rungs(k).results(i);
      const std::string at = what + ": rungs[" + std::to_string(k) + "][" + std::to_string(i) + "]";
      if (!rm.has_decision()) return Status::Corruption(at + ": no decision");
      AshaResult r;
      r.trial = rm.trial();
      r.value = rm.value();
      auto action = ParseAshaAction(rm.decision().action());
      if (!action.ok()) return Damaged(at, action.status());
      r.decision.action = *action;
      r.decision.rung = rm.decision().rung();
      r.decision.rank = rm.decision().rank();
      r.decision.num_results = rm.decision().num_results();
      r.decision.num_promoted = rm.decision().num_promoted();
      rungs.back().push_back(std::move(r));
    }
  }
  return Asha::Restore(std::move(config), rungs, what);
}

journal::Group Encode(const GroupRecord& g) {
  journal::Group m;
  m.set_incarnation(g.incarnation);
  m.set_host(g.host);
  m.set_world_size(g.world_size);
  for (const std::string& e : g.metrics_endpoints) m.add_metrics_endpoints(e);
  return m;
}

StatusOr<GroupRecord> Decode(const journal::Group& m, const std::string&) {
  GroupRecord g;
  g.incarnation = m.incarnation();
  g.host = m.host();
  g.world_size = m.world_size();
  g.metrics_endpoints.assign(m.metrics_endpoints().begin(), m.metrics_endpoints().end());
  return g;
}

journal::Trial Encode(const TrialRow& t) {
  journal::Trial m;
  journal::TrialSpec* spec = m.mutable_spec();
  spec->set_id(t.spec.id);
  for (const auto& [k, v] : t.spec.factors) (*spec->mutable_factors())[k] = v;
  spec->set_seed(t.spec.seed);
  spec->set_cell(t.spec.cell);
  const TrialRecord& r = t.record;
  journal::TrialRecord* rm = m.mutable_record();
  rm->set_id(r.id);
  rm->set_state(TrialStateName(r.state));
  rm->set_attempt(r.attempt);
  rm->set_group(r.group);
  rm->set_step(r.step);
  rm->set_checkpoint(r.checkpoint);
  rm->set_checkpoint_step(r.checkpoint_step);
  EncodePerCause(r.budgets.preemption, r.budgets.node_fault, r.budgets.trial_error, rm->mutable_budgets());
  EncodePerCause(r.preemptions, r.node_faults, r.trial_errors, rm->mutable_failures());
  rm->set_last_error(r.last_error);
  m.set_total_steps(t.total_steps);
  return m;
}

StatusOr<TrialRow> Decode(const journal::Trial& m, const std::string& what) {
  if (!m.has_spec() || !m.has_record()) return Status::Corruption(what + ": fields 'spec' and 'record' are required");
  TrialRow t;
  t.spec.id = m.spec().id();
  t.spec.factors.insert(m.spec().factors().begin(), m.spec().factors().end());
  t.spec.seed = m.spec().seed();
  t.spec.cell = m.spec().cell();
  if (t.spec.id.empty() || t.spec.cell < 0) return Status::Corruption(what + ": empty id or negative cell");
  const journal::TrialRecord& rm = m.record();
  if (!rm.has_budgets() || !rm.has_failures()) {
    return Status::Corruption(what + ": fields 'budgets' and 'failures' are required");
  }
  TrialRecord r;
  r.id = rm.id();
  auto state = ParseTrialState(rm.state());
  if (!state.ok()) return Damaged(what, state.status());
  r.state = *state;
  r.attempt = rm.attempt();
  r.group = rm.group();
  r.step = rm.step();
  r.checkpoint = rm.checkpoint();
  r.checkpoint_step = rm.checkpoint_step();
  r.budgets.preemption = rm.budgets().preemption();
  r.budgets.node_fault = rm.budgets().node_fault();
  r.budgets.trial_error = rm.budgets().trial_error();
  r.preemptions = rm.failures().preemption();
  r.node_faults = rm.failures().node_fault();
  r.trial_errors = rm.failures().trial_error();
  r.last_error = rm.last_error();
  auto consistent = Trial::FromRecord(r);
  if (!consistent.ok()) return Damaged(what, consistent.status());
  t.record = std::move(r);
  t.total_steps = m.total_steps();
  return t;
}

journal::Metric Encode(const MetricPoint& p) {
  journal::Metric m;
  m.set_trial_id(p.trial_id);
  m.set_attempt(p.attempt);
  m.set_kind_value(p.kind == MetricKind::kEval   ? journal::METRIC_EVAL
                   : p.kind == MetricKind::kTest ? journal::METRIC_TEST
                                                 : journal::METRIC_TRAIN);
  m.set_step(p.step);
  m.set_epoch(p.epoch);
  m.set_time_ms(p.time_ms);
  for (const auto& [k, v] : p.values) (*m.mutable_values())[k] = v;
  return m;
}

StatusOr<MetricPoint> Decode(const journal::Metric& m, const std::string& what) {
  MetricPoint p;
  p.trial_id = m.trial_id();
  p.attempt = m.attempt();
  switch (m.kind_value()) {
    case journal::METRIC_TRAIN:
      p.kind = MetricKind::kTrain;
      break;
    case journal::METRIC_EVAL:
      p.kind = MetricKind::kEval;
      break;
    case journal::METRIC_TEST:
      p.kind = MetricKind::kTest;
      break;
    case journal::METRIC_KIND_UNSET: {  // a record of format 1 or 2: the kind's name
      const StatusOr<MetricKind> kind = ParseMetricKind(m.kind());
      if (!kind.ok()) return Status::Corruption(what + ": field 'kind' is '" + m.kind() + "', not train, eval or test");
      p.kind = *kind;
      break;
    }
    default:
      return Status::Corruption(what + ": field 'kind_value' is " + std::to_string(m.kind_value()) +
                                ", not a metric kind this release knows");
  }
  p.step = m.step();
  p.epoch = m.epoch();
  p.time_ms = m.time_ms();
  p.values.insert(m.values().begin(), m.values().end());
  return p;
}

journal::Lease Encode(const Lease& l) {
  journal::Lease m;
  m.set_id(l.id);
  m.set_shard(l.shard);
  m.set_shard_name(l.shard_name);
  m.set_rank(l.rank);
  m.set_granted_ms(l.granted_ms);
  m.set_deadline_ms(l.deadline_ms);
  m.set_state(LeaseStateName(l.state));
  m.set_attempt(l.attempt);
  return m;
}

StatusOr<Lease> Decode(const journal::Lease& m, const std::string& what) {
  Lease l;
  l.id = m.id();
  l.shard = m.shard();
  l.shard_name = m.shard_name();
  l.rank = m.rank();
  l.granted_ms = m.granted_ms();
  l.deadline_ms = m.deadline_ms();
  auto state = ParseLeaseState(m.state());
  if (!state.ok()) return Damaged(what, state.status());
  l.state = *state;
  l.attempt = m.attempt();
  return l;
}

journal::Epoch EncodeHeader(const LeaseTable& table) {
  journal::Epoch m;
  m.set_ttl_ms(table.ttl_ms());
  for (const EpochShard& s : table.shards()) {
    journal::EpochShard* sm = m.add_shards();
    sm->set_name(s.name);
    sm->set_num_samples(s.num_samples);
  }
  if (table.order_key()) {
    m.mutable_order()->set_seed(table.order_key()->seed);
    m.mutable_order()->set_epoch(table.order_key()->epoch);
  }
  return m;
}

StatusOr<LeaseTable> Decode(const journal::Epoch& header, const std::vector<Lease>& leases, const std::string& what) {
  LeaseOptions options;
  options.ttl_ms = header.ttl_ms();
  if (header.has_order()) options.order = LeaseOrder{header.order().seed(), header.order().epoch()};
  std::vector<EpochShard> shards;
  for (const journal::EpochShard& s : header.shards()) shards.push_back({s.name(), s.num_samples()});
  return LeaseTable::Restore(std::move(shards), options, leases, what);
}

}  // namespace flap::coordinator::state_records
