// StateStore (state_store.h): the tables' keys and the encoding and decoding of their records.
#include "coordinator/state_store.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/json_util.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>

#include "coordinator/state_records.h"

namespace flap::coordinator {
namespace {

namespace pb = google::protobuf;

// `m` in protobuf's binary encoding, with maps in key order: the same record gives the same
// bytes.
std::string Serialise(const pb::MessageLite& m) {
  std::string out;
  {
    pb::io::StringOutputStream stream(&out);
    pb::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    m.SerializeToCodedStream(&coded);
  }
  return out;
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

void StateBatch::Put(Table table, const std::string& key, const pb::MessageLite& value) {
  batch_.Put(TablePrefix(table) + key, Serialise(value));
}

using state_records::Encode;

void StateBatch::PutCounters(const Counters& counters) { Put(Table::kCounters, "", Encode(counters)); }

void StateBatch::PutSweep(const std::string& sweep_id, const SweepRecord& sweep) {
  Put(Table::kSweep, sweep_id, Encode(sweep));
}

void StateBatch::PutAsha(const std::string& sweep_id, const Asha& asha) { Put(Table::kAsha, sweep_id, Encode(asha)); }

void StateBatch::PutGroup(const std::string& group_id, const GroupRecord& group) {
  Put(Table::kGroup, group_id, Encode(group));
}

void StateBatch::PutTrial(const std::string& trial_key, const TrialRow& trial) {
  Put(Table::kTrial, trial_key, Encode(trial));
}

namespace {
// A metric record's key within its table.
std::string MetricKey(const std::string& trial_key, MetricKind kind, int64_t step) {
  return trial_key + "/" + MetricKindName(kind) + "/" + Padded("%012llu", static_cast<unsigned long long>(step));
}
}  // namespace

void StateBatch::PutMetric(const std::string& trial_key, const MetricPoint& point) {
  Put(Table::kMetric, MetricKey(trial_key, point.kind, point.step), Encode(point));
}

void StateBatch::PutEpoch(const std::string& epoch_key, const LeaseTable& table) {
  Put(Table::kEpoch, epoch_key, state_records::EncodeHeader(table));
}

void StateBatch::PutLeases(const std::string& epoch_key, const std::vector<Lease>& leases) {
  for (const Lease& l : leases) {
    Put(Table::kLease, epoch_key + "/" + Padded("%012llu", static_cast<unsigned long long>(l.id)), Encode(l));
  }
}

// ---------------------------------------------------------------------------------------------
// The store

// ---------------------------------------------------------------------------------------------
// The format: its version, and the migration from format 1 (JSON values)

namespace {

constexpr char kFormatKey[] = "meta/format_version";

// Format 1 wrote a double as a number, NaN as null and the infinities as "inf" / "-inf";
// protobuf's JSON mapping spells those "NaN", "Infinity" and "-Infinity".
void NormaliseDouble(nlohmann::json& v) {
  if (v.is_null()) {
    v = "NaN";
  } else if (v == "inf") {
    v = "Infinity";
  } else if (v == "-inf") {
    v = "-Infinity";
  }
}

void NormaliseMessage(const pb::Descriptor& type, nlohmann::json& j);

// One value of `field` (an element of it, if repeated).
void NormaliseValue(const pb::FieldDescriptor& field, nlohmann::json& v) {
  if (field.cpp_type() == pb::FieldDescriptor::CPPTYPE_DOUBLE) {
    NormaliseDouble(v);
  } else if (field.cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
    const pb::Descriptor& type = *field.message_type();
    // Format 1 wrote a message of one repeated field (an ASHA rung) as that field's array.
    if (v.is_array() && type.field_count() == 1 && type.field(0)->is_repeated()) {
      nlohmann::json wrapped = nlohmann::json::object();
      wrapped[std::string(type.field(0)->name())] = std::move(v);
      v = std::move(wrapped);
    }
    NormaliseMessage(type, v);
  }
}

// Rewrites format 1's JSON of a `type` message into protobuf's JSON mapping of it (the field
// names are already the same: journal.proto keeps format 1's keys).
void NormaliseMessage(const pb::Descriptor& type, nlohmann::json& j) {
  if (!j.is_object()) return;
  for (auto& [key, v] : j.items()) {
    const pb::FieldDescriptor* field = type.FindFieldByName(key);
    if (field == nullptr) continue;  // the parser names it
    if (field->is_map()) {
      if (!v.is_object()) continue;
      for (auto& [k, element] : v.items()) NormaliseValue(*field->message_type()->map_value(), element);
    } else if (field->is_repeated()) {
      if (!v.is_array()) continue;
      for (auto& element : v) NormaliseValue(*field, element);
    } else {
      NormaliseValue(*field, v);
    }
  }
}

// Whether `key` is a row of `table`.
bool IsTable(const std::string& key, Table table) { return key.rfind(TablePrefix(table), 0) == 0; }

// Format 1's value of `key` as the current format's: parsed into the table's message, decoded
// by `check` (so it is checked as reads check it; `check` may rewrite it) and serialised.
// Corruption naming the key when it is not a record of its table.
template <typename Message, typename Check>
StatusOr<std::string> Reencode(const std::string& key, const std::string& value, Check check) {
  nlohmann::json j = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::Corruption("stored value of " + key + " is not JSON");
  Message m;
  NormaliseMessage(*Message::descriptor(), j);
  pb::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto parsed = pb::util::JsonStringToMessage(j.dump(), &m, options);
  if (!parsed.ok()) {
    return Status::Corruption("stored value of " + key + " is not a " + std::string(Message::descriptor()->name()) +
                              " record: " + std::string(parsed.message()));
  }
  FLAP_RETURN_IF_ERROR(check(m, key));
  return Serialise(m);
}

template <typename Message>
Status CheckDecodes(const Message& m, const std::string& key) {
  return state_records::Decode(m, key).status();
}

// A metric record of format 1, checked, as this release writes it (the kind as the enum).
Status CheckAndEncodeMetric(journal::Metric& m, const std::string& key) {
  FLAP_ASSIGN_OR_RETURN(const MetricPoint point, state_records::Decode(m, key));
  m = state_records::Encode(point);
  return Status::OK();
}

// Every record of format 1 in `journal`, re-encoded, and the format key, staged in one batch.
StatusOr<JournalBatch> MigrationFromJson(const Journal& journal, size_t* records) {
  FLAP_ASSIGN_OR_RETURN(auto stored, journal.Scan(""));
  JournalBatch batch;
  *records = 0;
  for (const auto& [key, value] : stored) {
    if (key == kFormatKey) continue;  // "1", if a journal says so
    StatusOr<std::string> v = Status::Corruption("unknown key " + key + " in " + journal.dir());
    if (key == TablePrefix(Table::kCounters)) {
      v = Reencode<journal::Counters>(key, value, CheckDecodes<journal::Counters>);
    } else if (IsTable(key, Table::kSweep)) {
      v = Reencode<journal::Sweep>(key, value, CheckDecodes<journal::Sweep>);
    } else if (IsTable(key, Table::kAsha)) {
      v = Reencode<journal::Asha>(key, value, CheckDecodes<journal::Asha>);
    } else if (IsTable(key, Table::kGroup)) {
      v = Reencode<journal::Group>(key, value, CheckDecodes<journal::Group>);
    } else if (IsTable(key, Table::kTrial)) {
      v = Reencode<journal::Trial>(key, value, CheckDecodes<journal::Trial>);
    } else if (IsTable(key, Table::kMetric)) {
      v = Reencode<journal::Metric>(key, value, CheckAndEncodeMetric);
    } else if (IsTable(key, Table::kEpoch)) {
      // A header is checked with its leases when the table is read.
      v = Reencode<journal::Epoch>(key, value, [](const journal::Epoch&, const std::string&) { return Status::OK(); });
    } else if (IsTable(key, Table::kLease)) {
      v = Reencode<journal::Lease>(key, value, CheckDecodes<journal::Lease>);
    }
    if (!v.ok()) return v.status();
    batch.Put(key, *std::move(v));
    ++*records;
  }
  batch.Put(kFormatKey, std::to_string(kJournalFormat));
  return batch;
}

// The journal's format: format_version's value; 1 for a journal of records without it (format
// 1 did not record its version); 0 for an empty journal.
StatusOr<int> ReadFormat(const Journal& journal) {
  auto stored = journal.Get(kFormatKey);
  if (stored.ok()) {
    int version = 0;
    const char* end = stored->data() + stored->size();
    auto [p, ec] = std::from_chars(stored->data(), end, version);
    if (ec != std::errc() || p != end || version < 1) {
      return Status::Corruption("the coordinator state in " + journal.dir() + " has a damaged " + kFormatKey + ": '" +
                                *stored + "'");
    }
    return version;
  }
  if (stored.status().code() != Status::Code::kNotFound) return stored.status();
  FLAP_ASSIGN_OR_RETURN(auto any, journal.Scan(""));
  return any.empty() ? 0 : 1;
}

}  // namespace

StatusOr<std::unique_ptr<StateStore>> StateStore::Open(const std::string& dir, const JournalOptions& options) {
  FLAP_ASSIGN_OR_RETURN(std::unique_ptr<Journal> journal, Journal::Open(dir, options));
  FLAP_ASSIGN_OR_RETURN(const int format, ReadFormat(*journal));
  if (format > kJournalFormat) {
    return Status::FailedPrecondition("the coordinator state in " + dir + " is in journal format " +
                                      std::to_string(format) + ", newer than this flap-coordinator reads (format " +
                                      std::to_string(kJournalFormat) + "): run the release that wrote it");
  }
  if (format == 1) {
    size_t records = 0;
    FLAP_ASSIGN_OR_RETURN(JournalBatch batch, MigrationFromJson(*journal, &records));
    FLAP_RETURN_IF_ERROR(journal->Wait(journal->Append(std::move(batch))));
    std::cerr << "flap-coordinator: migrated the coordinator state in " << dir << " from journal format 1 (JSON) to "
              << kJournalFormat << " (protobuf): " << records << " records, in one write" << std::endl;
  } else if (format < kJournalFormat) {  // a new journal, or format 2: its records read as they are
    JournalBatch batch;
    batch.Put(kFormatKey, std::to_string(kJournalFormat));
    FLAP_RETURN_IF_ERROR(journal->Wait(journal->Append(std::move(batch))));
    if (format > 0) {
      std::cerr << "flap-coordinator: the coordinator state in " << dir << " is now journal format " << kJournalFormat
                << " (was " << format << "; its records are read as they are)" << std::endl;
    }
  }
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
    FLAP_ASSIGN_OR_RETURN(T row, decode(value, key));
    out.emplace_back(key.substr(prefix_size), std::move(row));
  }
  return out;
}

namespace {

// A stored value as a `Message`, then decoded (state_records.h); Corruption naming the key
// when it is not one.
template <typename Message>
StatusOr<Message> Parse(const std::string& value, const std::string& key) {
  Message m;
  if (!m.ParseFromString(value)) {
    return Status::Corruption("stored value of " + key + " is not a " + std::string(Message::descriptor()->name()) +
                              " record");
  }
  return m;
}

template <typename Message>
auto Decoded(const std::string& value, const std::string& key) -> decltype(state_records::Decode(Message(), key)) {
  FLAP_ASSIGN_OR_RETURN(Message m, Parse<Message>(value, key));
  return state_records::Decode(m, key);
}

}  // namespace

StatusOr<Counters> StateStore::ReadCounters() const {
  FLAP_ASSIGN_OR_RETURN(Rows<Counters> rows, Scan<Counters>(Table::kCounters, "", Decoded<journal::Counters>));
  return rows.empty() ? Counters() : rows.back().second;
}

StatusOr<Rows<SweepRecord>> StateStore::Sweeps() const {
  return Scan<SweepRecord>(Table::kSweep, "", Decoded<journal::Sweep>);
}

StatusOr<Rows<Asha>> StateStore::Ashas() const { return Scan<Asha>(Table::kAsha, "", Decoded<journal::Asha>); }

StatusOr<Rows<GroupRecord>> StateStore::Groups() const {
  return Scan<GroupRecord>(Table::kGroup, "", Decoded<journal::Group>);
}

StatusOr<Rows<TrialRow>> StateStore::Trials() const {
  return Scan<TrialRow>(Table::kTrial, "", Decoded<journal::Trial>);
}

StatusOr<Rows<MetricPoint>> StateStore::Metrics(const std::string& sweep_id, const std::string& trial_id) const {
  const std::string under = sweep_id.empty() ? "" : sweep_id + "/" + (trial_id.empty() ? "" : trial_id + "/");
  FLAP_ASSIGN_OR_RETURN(Rows<MetricPoint> rows, Scan<MetricPoint>(Table::kMetric, under, Decoded<journal::Metric>));
  for (auto& [key, point] : rows) key = key.substr(0, key.find('/', key.find('/') + 1));  // the trial key
  return rows;
}

StatusOr<bool> StateStore::HasMetric(const std::string& trial_key, MetricKind kind, int64_t step) const {
  FLAP_ASSIGN_OR_RETURN(auto stored, journal_->Scan(TablePrefix(Table::kMetric) + MetricKey(trial_key, kind, step)));
  return !stored.empty();
}

StatusOr<Rows<LeaseTable>> StateStore::LeaseTables() const {
  FLAP_ASSIGN_OR_RETURN(Rows<journal::Epoch> headers, Scan<journal::Epoch>(Table::kEpoch, "", Parse<journal::Epoch>));
  Rows<LeaseTable> out;
  for (const auto& [ekey, h] : headers) {
    FLAP_ASSIGN_OR_RETURN(Rows<Lease> leases, Scan<Lease>(Table::kLease, ekey + "/", Decoded<journal::Lease>));
    std::vector<Lease> granted;
    for (auto& [lkey, lease] : leases) granted.push_back(std::move(lease));
    FLAP_ASSIGN_OR_RETURN(LeaseTable table, state_records::Decode(h, granted, TablePrefix(Table::kEpoch) + ekey));
    out.emplace_back(ekey, std::move(table));
  }
  return out;
}

}  // namespace flap::coordinator
