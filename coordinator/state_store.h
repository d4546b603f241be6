// StateStore: the coordinator service's durable state, typed. Every record the service keeps
// lives in one table of the Journal (coordinator/journal.h), each table a key prefix named by
// Table; this is the one place that knows the prefixes, builds the keys and encodes and
// decodes the records (protobuf messages, proto/journal.proto). Handlers stage typed puts in a
// StateBatch; loading reads typed rows back.
//
// The tables (key = prefix + key within the table; every value a serialised message of
// proto/journal.proto, named after the key):
//   kCounters  meta/counters                       Counters
//   kSweep     sweep/<sweep>                       Sweep (SweepRecord)
//   kAsha      asha/<sweep>                        Asha (coordinator/asha.h)
//   kGroup     group/<group>                       Group (GroupRecord)
//   kTrial     trial/<sweep>/<trial>               Trial (TrialRow)
//   kMetric    metric/<sweep>/<trial>/<kind>/<step, 12 digits>   Metric (MetricPoint, report.h)
//   kEpoch     epoch/<sweep>/<trial>/<epoch, 6 digits>            Epoch (LeaseTable's header, lease.h)
//   kLease     lease/<sweep>/<trial>/<epoch>/<id, 12 digits>      Lease (lease.h)
// and meta/format_version, the journal's format (kJournalFormat) in decimal.
//
// Formats. 1: every value a JSON object (no meta/format_version; releases before the key).
// 2: protobuf messages. 3: as 2, a metric record's kind an enum (Metric.kind_value) instead of
// a name (Metric.kind, still read when kind_value is unset). Open() refuses a format newer than
// kJournalFormat (FailedPrecondition naming it and the folder), writes meta/format_version into
// a new journal, and migrates an older one in place:
//   - format 1: every record is read with protobuf's JSON parser into its message, checked as
//     a read checks it, and rewritten with the format key in one RocksDB WriteBatch, so a crash
//     during the migration leaves format 1 intact (the next open migrates again); a record that
//     does not read leaves the journal untouched and fails the open (Corruption naming its key);
//   - format 2: only the format key is rewritten (its records are format 3 records with the
//     kind as a name), so that a release that reads format 2 only refuses the journal once it
//     holds records without the name.
// Each migration is logged on stderr.
//
// Reads see committed data only (Journal::Scan). A damaged record is Corruption naming its key.
//
// Thread-safety: as Journal: thread-safe; a StateBatch belongs to one thread until appended.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "coordinator/asha.h"
#include "coordinator/journal.h"
#include "coordinator/lease.h"
#include "coordinator/report.h"
#include "coordinator/sweep.h"
#include "coordinator/trial_state.h"

namespace google::protobuf {
class MessageLite;
}  // namespace google::protobuf

namespace flap::coordinator {

// The journal's format that this release writes (see above).
inline constexpr int kJournalFormat = 3;

// A sweep runs until every trial has ended (finished) or a user cancels it (cancelled).
enum class SweepState { kRunning, kFinished, kCancelled };
// "running", "finished", "cancelled" (the API's and the journal's names) and back
// (Corruption naming `what` for an unknown name).
const char* SweepStateName(SweepState state);
StatusOr<SweepState> ParseSweepState(const std::string& name, const std::string& what);

// The tables, by key prefix (see above).
enum class Table { kCounters, kSweep, kAsha, kGroup, kTrial, kMetric, kEpoch, kLease };
// "meta/counters", "sweep/", "asha/", "group/", "trial/", "metric/", "epoch/", "lease/".
const char* TablePrefix(Table table);

// Keys within the tables. A trial key is "<sweep>/<trial>"; an epoch key "<trial key>/<epoch>".
std::string TrialKey(const std::string& sweep_id, const std::string& trial_id);
std::string EpochKey(const std::string& trial_key, int epoch);
// The sweep and trial ids of a trial key.
std::pair<std::string, std::string> SplitTrialKey(const std::string& trial_key);

// The service's counters: the next generated group name and the next sweep's submission order.
struct Counters {
  int64_t next_group = 0;
  int64_t next_order = 0;
};

// A submitted sweep as stored.
struct SweepRecord {
  SweepSpec spec;
  std::string text;  // the sweep file as submitted
  std::string source;
  std::string base_config;  // the base config's text
  SweepState state = SweepState::kRunning;
  int64_t order = 0;                   // submission order
  std::vector<std::string> trial_ids;  // in trial order
};

// A registered worker group as stored.
struct GroupRecord {
  std::string incarnation;
  std::string host;
  int world_size = 1;
  std::vector<std::string> metrics_endpoints;  // host:port per rank, or none
};

// A trial as stored: its spec, its state machine's record and its planned steps.
struct TrialRow {
  TrialSpec spec;
  TrialRecord record;
  int64_t total_steps = 0;
};

// Rows read back: (key within the table, record), in key order.
template <typename T>
using Rows = std::vector<std::pair<std::string, T>>;

// Changes staged for one append, applied in order.
class StateBatch {
 public:
  void PutCounters(const Counters& counters);
  void PutSweep(const std::string& sweep_id, const SweepRecord& sweep);
  void PutAsha(const std::string& sweep_id, const Asha& asha);
  void PutGroup(const std::string& group_id, const GroupRecord& group);
  void PutTrial(const std::string& trial_key, const TrialRow& trial);
  // Under the point's kind and step: a step reported again replaces the earlier record.
  void PutMetric(const std::string& trial_key, const MetricPoint& point);
  // The table's header (its leases are journaled one by one with PutLeases).
  void PutEpoch(const std::string& epoch_key, const LeaseTable& table);
  void PutLeases(const std::string& epoch_key, const std::vector<Lease>& leases);
  bool empty() const { return batch_.empty(); }

 private:
  friend class StateStore;
  void Put(Table table, const std::string& key, const google::protobuf::MessageLite& value);
  JournalBatch batch_;
};

class StateStore {
 public:
  // Opens (creating if allowed) the journal in `dir`: IOError as Journal::Open. Checks its
  // format and migrates format 1 (see above): FailedPrecondition for a newer format,
  // Corruption for a record that does not migrate.
  static StatusOr<std::unique_ptr<StateStore>> Open(const std::string& dir, const JournalOptions& options);

  // Staging and durability: as Journal's Append, appended, WhenDurable, Wait, healthy, status.
  uint64_t Append(StateBatch batch);
  uint64_t appended() const;
  void WhenDurable(uint64_t seq, std::function<void(const Status&)> done);
  Status Wait(uint64_t seq);
  bool healthy() const;
  Status status() const;
  // The journal's identity (Journal::identity): the same across restarts from this folder.
  const std::string& identity() const { return journal_->identity(); }

  // The committed rows of each table, keyed within the table.
  StatusOr<Counters> ReadCounters() const;  // zeros when none were stored
  StatusOr<Rows<SweepRecord>> Sweeps() const;
  StatusOr<Rows<Asha>> Ashas() const;
  StatusOr<Rows<GroupRecord>> Groups() const;
  StatusOr<Rows<TrialRow>> Trials() const;
  // The metric records of a sweep, or of one of its trials (trial_id non-empty), or of every
  // sweep (sweep_id empty), keyed by trial key, in key order (trial, kind, step).
  StatusOr<Rows<MetricPoint>> Metrics(const std::string& sweep_id = "", const std::string& trial_id = "") const;
  // Whether a metric record of the trial's `kind` at `step` is committed.
  StatusOr<bool> HasMetric(const std::string& trial_key, MetricKind kind, int64_t step) const;
  // Every lease table restored from its header and its leases, keyed by epoch key.
  StatusOr<Rows<LeaseTable>> LeaseTables() const;

 private:
  explicit StateStore(std::unique_ptr<Journal> journal) : journal_(std::move(journal)) {}
  // The decoded rows of `table` whose key within it starts with `under`.
  template <typename T, typename Decode>
  StatusOr<Rows<T>> Scan(Table table, const std::string& under, Decode decode) const;

  std::unique_ptr<Journal> journal_;
};

}  // namespace flap::coordinator
