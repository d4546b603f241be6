// Every row of a coordinator's state store as text, one item a line, field by field: what a
// coordinator restores from. The journal format tests compare a journal's rows with a checked-in
// rendering (tests/fixtures/journal_v*/expected_state.txt) and flap_journal_fixture writes that
// rendering beside a journal it makes. The same rows always render to the same text; doubles
// print with 17 significant digits (NaN as "nan"), strings in double quotes with newlines,
// quotes and backslashes escaped.
//
// Thread-safety: as StateStore's reads.
#pragma once

#include <string>

#include "common/status.h"
#include "coordinator/state_store.h"

namespace flap::coordinator::testing {

// Every row of every table of `store` (counters, sweeps, ASHA states, groups, trials, metric
// records, lease tables and their leases); the first read error otherwise.
StatusOr<std::string> DumpState(const StateStore& store);

}  // namespace flap::coordinator::testing
