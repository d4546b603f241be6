#include "coordinator/testing/state_dump.h"

#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "coordinator/asha.h"
#include "coordinator/lease.h"
#include "coordinator/trial_state.h"

namespace flap::coordinator::testing {
namespace {

std::string Num(double v) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

// `s` in double quotes, with newlines, quotes and backslashes escaped.
std::string Quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '"' || c == '\\') {
      out += std::string("\\") + c;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

template <typename T, typename F>
std::string List(const std::vector<T>& items, F each) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + each(items[i]);
  return out + "]";
}

std::string Values(const std::map<std::string, double>& values) {
  std::string out = "{";
  for (const auto& [k, v] : values) out += (out.size() > 1 ? ", " : "") + k + ": " + Num(v);
  return out + "}";
}

std::string AshaConfigText(const AshaConfig& c) {
  return "metric=" + c.metric + " mode=" + AshaModeName(c.mode) + " unit=" + Quoted(c.unit) +
         " rungs=" + List(c.rungs, Num) + " reduction=" + std::to_string(c.reduction);
}

std::string DecisionText(const AshaDecision& d) {
  return std::string(AshaActionName(d.action)) + " rung=" + std::to_string(d.rung) + " rank=" + std::to_string(d.rank) +
         " results=" + std::to_string(d.num_results) + " promoted=" + std::to_string(d.num_promoted);
}

std::string LeaseText(const Lease& l) {
  return "lease " + std::to_string(l.id) + " shard=" + std::to_string(l.shard) + " " + l.shard_name +
         " rank=" + l.rank + " granted_ms=" + std::to_string(l.granted_ms) +
         " deadline_ms=" + std::to_string(l.deadline_ms) + " " + LeaseStateName(l.state);
}

}  // namespace

// Every row of every table of `store`, field by field, one item a line: what a coordinator
// restores from.
StatusOr<std::string> DumpState(const StateStore& store) {
  std::ostringstream out;
  FLAP_ASSIGN_OR_RETURN(Counters counters, store.ReadCounters());
  out << "counters next_group=" << counters.next_group << " next_order=" << counters.next_order << "\n";
  FLAP_ASSIGN_OR_RETURN(Rows<SweepRecord> sweeps, store.Sweeps());
  for (const auto& [id, s] : sweeps) {
    out << "sweep " << id << " state=" << SweepStateName(s.state) << " order=" << s.order
        << " source=" << Quoted(s.source) << " trials=" << List(s.trial_ids, Quoted) << "\n";
    out << "  text=" << Quoted(s.text) << "\n  base_config=" << Quoted(s.base_config) << "\n";
    const SweepSpec& p = s.spec;
    out << "  spec name=" << p.name << " search=" << SearchKindName(p.search) << " budget=" << p.budget
        << " seeds=" << List(p.seeds, [](uint64_t v) { return std::to_string(v); }) << " priority=" << p.priority
        << " base_config=" << Quoted(p.base_config) << " search_seed=" << p.search_seed
        << " report_target=" << (p.report_target ? p.report_target->ToString() : "(none)") << "\n";
    for (const FactorSpec& f : p.factors) {
      out << "  factor " << f.name << " values=" << List(f.values, Quoted);
      if (f.has_range)
        out << " range=" << Num(f.lo) << ".." << Num(f.hi) << " log=" << f.log << " integer=" << f.integer;
      out << " when=" << (f.when ? f.when->ToString() : "(none)") << "\n";
    }
    out << "  asha " << (p.asha ? AshaConfigText(*p.asha) : "(none)") << "\n";
  }
  FLAP_ASSIGN_OR_RETURN(Rows<Asha> ashas, store.Ashas());
  for (const auto& [id, a] : ashas) {
    out << "asha " << id << " " << AshaConfigText(a.config()) << "\n";
    for (int k = 0; k < static_cast<int>(a.config().rungs.size()); ++k) {
      for (const AshaResult& r : a.ResultsAt(k)) {
        out << "  rung " << k << " " << r.trial << " value=" << Num(r.value) << " " << DecisionText(r.decision) << "\n";
      }
    }
  }
  FLAP_ASSIGN_OR_RETURN(Rows<GroupRecord> groups, store.Groups());
  for (const auto& [id, g] : groups) {
    out << "group " << id << " incarnation=" << g.incarnation << " host=" << Quoted(g.host)
        << " world_size=" << g.world_size << " endpoints=" << List(g.metrics_endpoints, Quoted) << "\n";
  }
  FLAP_ASSIGN_OR_RETURN(Rows<TrialRow> trials, store.Trials());
  for (const auto& [key, t] : trials) {
    const TrialRecord& r = t.record;
    out << "trial " << key << " spec id=" << t.spec.id << " seed=" << t.spec.seed << " cell=" << t.spec.cell
        << " factors=";
    for (const auto& [k, v] : t.spec.factors) out << k << "=" << v << ";";
    out << " total_steps=" << t.total_steps << "\n";
    out << "  record id=" << r.id << " " << TrialStateName(r.state) << " attempt=" << r.attempt
        << " group=" << Quoted(r.group) << " step=" << r.step << " checkpoint=" << Quoted(r.checkpoint) << "@"
        << r.checkpoint_step << " budgets=" << r.budgets.preemption << "/" << r.budgets.node_fault << "/"
        << r.budgets.trial_error << " failures=" << r.preemptions << "/" << r.node_faults << "/" << r.trial_errors
        << " last_error=" << Quoted(r.last_error) << "\n";
  }
  FLAP_ASSIGN_OR_RETURN(Rows<MetricPoint> metrics, store.Metrics());
  for (const auto& [key, m] : metrics) {
    out << "metric " << key << " " << m.trial_id << " attempt=" << m.attempt << " " << MetricKindName(m.kind)
        << " step=" << m.step << " epoch=" << m.epoch << " time_ms=" << m.time_ms << " " << Values(m.values) << "\n";
  }
  FLAP_ASSIGN_OR_RETURN(Rows<LeaseTable> tables, store.LeaseTables());
  for (const auto& [key, t] : tables) {
    out << "epoch " << key << " ttl_ms=" << t.ttl_ms() << " order="
        << (t.order_key() ? std::to_string(t.order_key()->seed) + "/" + std::to_string(t.order_key()->epoch) : "(none)")
        << " shards="
        << List(t.shards(), [](const EpochShard& s) { return s.name + ":" + std::to_string(s.num_samples); })
        << " done=" << t.done_shards() << " active=" << t.active_leases() << " done_samples=" << t.done_samples()
        << "\n";
    for (const Lease& l : t.leases()) out << "  " << LeaseText(l) << "\n";
  }
  return out.str();
}

}  // namespace flap::coordinator::testing
