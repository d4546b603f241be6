// StateStore (state_store.h): the tables' keys and the encoding and decoding of their records.
#include "coordinator/state_store.h"

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "coordinator/json_util.h"

namespace flap::coordinator {
namespace {

namespace ji = json_internal;

StatusOr<nlohmann::json> ParseJson(const std::string& text, const std::string& key) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::Corruption("stored value of " + key + " is not JSON");
  return j;
}

// ---------------------------------------------------------------------------------------------
// Records, each to JSON and back (`what`: the stored key, named in errors).

nlohmann::json Encode(const Counters& c) { return {{"next_group", c.next_group}, {"next_order", c.next_order}}; }

StatusOr<Counters> DecodeCounters(const nlohmann::json& j, const std::string& what) {
  Counters c;
  FLAP_RETURN_IF_ERROR(ji::Get(j, "next_group", what, &c.next_group));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "next_order", what, &c.next_order));
  return c;
}

nlohmann::json Encode(const SweepRecord& s) {
  return {
      {"spec", s.spec.ToJson()},          {"text", s.text},   {"source", s.source},      {"base_config", s.base_config},
      {"state", SweepStateName(s.state)}, {"order", s.order}, {"trial_ids", s.trial_ids}};
}

StatusOr<SweepRecord> DecodeSweep(const nlohmann::json& j, const std::string& what) {
  SweepRecord s;
  if (!j.is_object() || !j.contains("spec")) return Status::Corruption(what + ": no spec");
  FLAP_ASSIGN_OR_RETURN(s.spec, SweepSpec::FromJson(j["spec"], what));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "text", what, &s.text));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "source", what, &s.source));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "base_config", what, &s.base_config));
  std::string state;
  FLAP_RETURN_IF_ERROR(ji::Get(j, "state", what, &state));
  FLAP_ASSIGN_OR_RETURN(s.state, ParseSweepState(state, what));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "order", what, &s.order));
  FLAP_RETURN_IF_ERROR(ji::GetArray(j, "trial_ids", what, &s.trial_ids));
  return s;
}

nlohmann::json Encode(const GroupRecord& g) {
  return {{"incarnation", g.incarnation},
          {"host", g.host},
          {"world_size", g.world_size},
          {"metrics_endpoints", g.metrics_endpoints}};
}

StatusOr<GroupRecord> DecodeGroup(const nlohmann::json& j, const std::string& what) {
  GroupRecord g;
  FLAP_RETURN_IF_ERROR(ji::Get(j, "incarnation", what, &g.incarnation));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "host", what, &g.host));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "world_size", what, &g.world_size));
  if (j.contains("metrics_endpoints")) {  // absent in journals written before endpoints
    FLAP_RETURN_IF_ERROR(ji::GetArray(j, "metrics_endpoints", what, &g.metrics_endpoints));
  }
  return g;
}

nlohmann::json Encode(const TrialRow& t) {
  return {{"spec", t.spec.ToJson()}, {"record", t.record.ToJson()}, {"total_steps", t.total_steps}};
}

StatusOr<TrialRow> DecodeTrial(const nlohmann::json& j, const std::string& what) {
  if (!j.is_object() || !j.contains("spec") || !j.contains("record")) {
    return Status::Corruption(what + ": fields 'spec' and 'record' are required");
  }
  TrialRow t;
  FLAP_ASSIGN_OR_RETURN(t.spec, TrialSpec::FromJson(j["spec"], what));
  FLAP_ASSIGN_OR_RETURN(t.record, TrialRecord::FromJson(j["record"], what));
  FLAP_RETURN_IF_ERROR(ji::Get(j, "total_steps", what, &t.total_steps));
  return t;
}

std::string Padded(const char* format, unsigned long long n) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), format, n);
  return buf;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Names and keys

const char* SweepStateName(SweepState state) {
  switch (state) {
    case SweepState::kRunning:
      return "running";
    case SweepState::kFinished:
      return "finished";
    case SweepState::kCancelled:
      return "cancelled";
  }
  return "running";
}

StatusOr<SweepState> ParseSweepState(const std::string& name, const std::string& what) {
  for (SweepState s : {SweepState::kRunning, SweepState::kFinished, SweepState::kCancelled}) {
    if (name == SweepStateName(s)) return s;
  }
  return Status::Corruption(what + ": unknown sweep state '" + name + "'");
}

const char* TablePrefix(Table table) {
  switch (table) {
    case Table::kCounters:
      return "meta/counters";
    case Table::kSweep:
      return "sweep/";
    case Table::kAsha:
      return "asha/";
    case Table::kGroup:
      return "group/";
    case Table::kTrial:
      return "trial/";
    case Table::kMetric:
      return "metric/";
    case Table::kEpoch:
      return "epoch/";
    case Table::kLease:
      return "lease/";
  }
  return "";
}

std::string TrialKey(const std::string& sweep_id, const std::string& trial_id) { return sweep_id + "/" + trial_id; }

std::string EpochKey(const std::string& trial_key, int epoch) {
  return trial_key + "/" + Padded("%06llu", static_cast<unsigned long long>(epoch));
}

std::pair<std::string, std::string> SplitTrialKey(const std::string& trial_key) {
  const size_t slash = trial_key.find('/');
  return {trial_key.substr(0, slash), trial_key.substr(slash + 1)};
}

// ---------------------------------------------------------------------------------------------
// Staging

void StateBatch::Put(Table table, const std::string& key, const nlohmann::json& value) {
  batch_.Put(TablePrefix(table) + key, value.dump());
}

void StateBatch::PutCounters(const Counters& counters) { Put(Table::kCounters, "", Encode(counters)); }

void StateBatch::PutSweep(const std::string& sweep_id, const SweepRecord& sweep) {
  Put(Table::kSweep, sweep_id, Encode(sweep));
}

void StateBatch::PutAsha(const std::string& sweep_id, const Asha& asha) { Put(Table::kAsha, sweep_id, asha.ToJson()); }

void StateBatch::PutGroup(const std::string& group_id, const GroupRecord& group) {
  Put(Table::kGroup, group_id, Encode(group));
}

void StateBatch::PutTrial(const std::string& trial_key, const TrialRow& trial) {
  Put(Table::kTrial, trial_key, Encode(trial));
}

namespace {
// A metric record's key within its table.
std::string MetricKey(const std::string& trial_key, const std::string& kind, int64_t step) {
  return trial_key + "/" + kind + "/" + Padded("%012llu", static_cast<unsigned long long>(step));
}
}  // namespace

void StateBatch::PutMetric(const std::string& trial_key, const MetricPoint& point) {
  Put(Table::kMetric, MetricKey(trial_key, point.kind, point.step), point.ToJson());
}

void StateBatch::PutEpoch(const std::string& epoch_key, const LeaseTable& table) {
  Put(Table::kEpoch, epoch_key, table.HeaderToJson());
}

void StateBatch::PutLeases(const std::string& epoch_key, const std::vector<Lease>& leases) {
  for (const Lease& l : leases) {
    Put(Table::kLease, epoch_key + "/" + Padded("%012llu", static_cast<unsigned long long>(l.id)), l.ToJson());
  }
}

// ---------------------------------------------------------------------------------------------
// The store

StatusOr<std::unique_ptr<StateStore>> StateStore::Open(const std::string& dir, const JournalOptions& options) {
  FLAP_ASSIGN_OR_RETURN(std::unique_ptr<Journal> journal, Journal::Open(dir, options));
  return std::unique_ptr<StateStore>(new StateStore(std::move(journal)));
}

uint64_t StateStore::Append(StateBatch batch) { return journal_->Append(std::move(batch.batch_)); }
uint64_t StateStore::appended() const { return journal_->appended(); }
void StateStore::WhenDurable(uint64_t seq, std::function<void(const Status&)> done) {
  journal_->WhenDurable(seq, std::move(done));
}
Status StateStore::Wait(uint64_t seq) { return journal_->Wait(seq); }
bool StateStore::healthy() const { return journal_->healthy(); }
Status StateStore::status() const { return journal_->status(); }

template <typename T, typename Decode>
StatusOr<Rows<T>> StateStore::Scan(Table table, const std::string& under, Decode decode) const {
  const size_t prefix_size = std::strlen(TablePrefix(table));
  FLAP_ASSIGN_OR_RETURN(auto stored, journal_->Scan(TablePrefix(table) + under));
  Rows<T> out;
  for (const auto& [key, value] : stored) {
    FLAP_ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(value, key));
    FLAP_ASSIGN_OR_RETURN(T row, decode(j, key));
    out.emplace_back(key.substr(prefix_size), std::move(row));
  }
  return out;
}

StatusOr<Counters> StateStore::ReadCounters() const {
  FLAP_ASSIGN_OR_RETURN(Rows<Counters> rows, Scan<Counters>(Table::kCounters, "", DecodeCounters));
  return rows.empty() ? Counters() : rows.back().second;
}

StatusOr<Rows<SweepRecord>> StateStore::Sweeps() const { return Scan<SweepRecord>(Table::kSweep, "", DecodeSweep); }

StatusOr<Rows<Asha>> StateStore::Ashas() const { return Scan<Asha>(Table::kAsha, "", Asha::FromJson); }

StatusOr<Rows<GroupRecord>> StateStore::Groups() const { return Scan<GroupRecord>(Table::kGroup, "", DecodeGroup); }

StatusOr<Rows<TrialRow>> StateStore::Trials() const { return Scan<TrialRow>(Table::kTrial, "", DecodeTrial); }

StatusOr<Rows<MetricPoint>> StateStore::Metrics(const std::string& sweep_id, const std::string& trial_id) const {
  const std::string under = sweep_id.empty() ? "" : sweep_id + "/" + (trial_id.empty() ? "" : trial_id + "/");
  FLAP_ASSIGN_OR_RETURN(Rows<MetricPoint> rows, Scan<MetricPoint>(Table::kMetric, under, MetricPoint::FromJson));
  for (auto& [key, point] : rows) key = key.substr(0, key.find('/', key.find('/') + 1));  // the trial key
  return rows;
}

StatusOr<bool> StateStore::HasMetric(const std::string& trial_key, const std::string& kind, int64_t step) const {
  FLAP_ASSIGN_OR_RETURN(auto stored, journal_->Scan(TablePrefix(Table::kMetric) + MetricKey(trial_key, kind, step)));
  return !stored.empty();
}

StatusOr<Rows<LeaseTable>> StateStore::LeaseTables() const {
  const auto header = [](const nlohmann::json& j, const std::string&) -> StatusOr<nlohmann::json> { return j; };
  FLAP_ASSIGN_OR_RETURN(Rows<nlohmann::json> headers, Scan<nlohmann::json>(Table::kEpoch, "", header));
  Rows<LeaseTable> out;
  for (const auto& [ekey, h] : headers) {
    FLAP_ASSIGN_OR_RETURN(Rows<Lease> leases, Scan<Lease>(Table::kLease, ekey + "/", Lease::FromJson));
    std::vector<Lease> granted;
    for (auto& [lkey, lease] : leases) granted.push_back(std::move(lease));
    FLAP_ASSIGN_OR_RETURN(LeaseTable table, LeaseTable::FromHeader(h, granted, TablePrefix(Table::kEpoch) + ekey));
    out.emplace_back(ekey, std::move(table));
  }
  return out;
}

}  // namespace flap::coordinator
