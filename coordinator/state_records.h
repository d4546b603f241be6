// Internal to coordinator/ (StateStore's, state_store.h): the journal's records, each typed
// record to its protobuf message (proto/journal.proto) and back. Decoding checks what the
// coordinator's types require (a spec that validates, a consistent trial record, lease-table
// invariants, known state names) and returns Corruption naming `what` (the stored key) and the
// field otherwise. Not a public header of the part.
//
// Thread-safety: free functions without state.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/asha.h"
#include "coordinator/lease.h"
#include "coordinator/report.h"
#include "coordinator/state_store.h"
#include "proto/journal.pb.h"

namespace flap::coordinator::state_records {

journal::Counters Encode(const Counters& counters);
journal::Sweep Encode(const SweepRecord& sweep);
journal::Asha Encode(const Asha& asha);
journal::Group Encode(const GroupRecord& group);
journal::Trial Encode(const TrialRow& trial);
journal::Metric Encode(const MetricPoint& point);
journal::Lease Encode(const Lease& lease);
// A lease table's header: its ttl, shards and order (its leases are encoded one by one).
journal::Epoch EncodeHeader(const LeaseTable& table);

StatusOr<Counters> Decode(const journal::Counters& m, const std::string& what);
StatusOr<SweepRecord> Decode(const journal::Sweep& m, const std::string& what);
StatusOr<Asha> Decode(const journal::Asha& m, const std::string& what);
StatusOr<GroupRecord> Decode(const journal::Group& m, const std::string& what);
StatusOr<TrialRow> Decode(const journal::Trial& m, const std::string& what);
StatusOr<MetricPoint> Decode(const journal::Metric& m, const std::string& what);
StatusOr<Lease> Decode(const journal::Lease& m, const std::string& what);
// The table from its header and every lease it granted.
StatusOr<LeaseTable> Decode(const journal::Epoch& header, const std::vector<Lease>& leases, const std::string& what);

}  // namespace flap::coordinator::state_records
