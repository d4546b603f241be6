// flap_journal_fixture: writes a coordinator journal of the current format, and its rows, for a
// checked-in journal fixture (tests/fixtures/journal_v*/, read by coordinator/journal_format_test.cc).
//
//   flap_journal_fixture OUT [--coordinator PATH]
//
// Starts flap-coordinator (PATH, default the one built beside this tool) on a fresh state folder
// with heartbeat and lease timeouts of an hour, and drives it with simulated worker groups
// (coordinator/testing/sim_group.h) and direct client calls: one sweep, `fixture` (mask.ratio x
// mask.strategy, a mask.views factor with a `when` condition, ASHA on map10 at rung 10 with
// reduction 2, a [report] target), base config `[model] preset = tiny`, four trials:
//   - t0000: group g-dead (world size 2) runs 7 steps and stops calling; then, as g-dead, its
//     second epoch is begun, a shard leased (left active) and a train and an evaluation record
//     with NaN reported (ASHA's first result);
//   - the next trial: assigned to g-pre and failed as preempted, then rerun;
//   - g1 (world size 1) runs the three other trials to their end (completed, or stopped by ASHA).
// It then stops the coordinator with SIGTERM and writes:
//   OUT/db                  the journal (the state folder's db/; no token), flushed and compacted
//                           (Journal::Compact), without RocksDB's info logs and superseded
//                           OPTIONS files;
//   OUT/expected_state.txt  every row as this build reads it (coordinator/testing/state_dump.h).
// Before it exits it opens a copy of OUT/db and checks that it reads back exactly those rows.
// Exit 0 on success; 1 with the error on stderr otherwise (OUT/db and OUT/expected_state.txt are
// replaced; OUT/work, the coordinator's folder and log, is left on failure).
//
// A test tool: built with the tests, never installed.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/atomic_file.h"
#include "common/file_util.h"
#include "common/status.h"
#include "common/testing/testing.h"
#include "coordinator/client.h"
#include "coordinator/journal.h"
#include "coordinator/state_store.h"
#include "coordinator/testing/service_test_util.h"
#include "coordinator/testing/sim_group.h"
#include "coordinator/testing/state_dump.h"

namespace flap::coordinator {
namespace {

namespace fs = std::filesystem;

Status Check(bool ok, const std::string& what) { return ok ? Status::OK() : Status::Internal(what); }

// g-dead runs 7 steps of the first trial and dies; then, as g-dead, its second epoch is begun,
// a shard leased and a train and an evaluation record with NaN reported.
Status RunDeadGroup(const ClientOptions& co, CoordinatorClient* user, const std::string& sweep_id,
                    sim::SimOptions so) {
  so.die_after_steps = 7;
  {
    FLAP_ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorClient> c, CoordinatorClient::Connect(co));
    sim::SimGroup dead(std::move(c), "g-dead", so);
    FLAP_RETURN_IF_ERROR(dead.Run());
    FLAP_RETURN_IF_ERROR(Check(dead.log().started.size() == 1, "g-dead started other than one trial"));
  }
  FLAP_ASSIGN_OR_RETURN(v1::SweepStatus running, user->GetSweep(sweep_id));
  v1::TrialRef ref;
  ref.set_sweep_id(sweep_id);
  for (const auto& t : running.trials()) {
    if (t.state() == "running") {
      ref.set_trial_id(t.trial_id());
      ref.set_attempt(t.attempt());
    }
  }
  FLAP_RETURN_IF_ERROR(Check(!ref.trial_id().empty(), "no trial left running by g-dead"));
  std::vector<std::pair<std::string, int64_t>> shards;
  for (int i = 0; i < so.shards; ++i) shards.push_back({"shard-" + std::to_string(i) + ".tar", 100});
  FLAP_RETURN_IF_ERROR(user->BeginEpoch("g-dead", ref, 1, shards).status());
  FLAP_ASSIGN_OR_RETURN(ShardLease lease, user->LeaseShard("g-dead", ref, 1, 0));
  FLAP_RETURN_IF_ERROR(Check(lease.kind == ShardLease::Kind::kGranted, "g-dead's shard lease was not granted"));
  FLAP_RETURN_IF_ERROR(
      user->ReportMetrics("g-dead", ref, MetricKind::kTrain, 8, 1, {{"loss", std::nan("")}, {"grad_norm", 1.5}}, 20)
          .status());
  return user->ReportMetrics("g-dead", ref, MetricKind::kEval, 10, 1, {{"map10", std::nan("")}, {"t2a_r1", 0.25}}, 20)
      .status();
}

// g1 runs the three trials left to their end (completed, or stopped by ASHA).
Status RunToTheEnd(const ClientOptions& co, CoordinatorClient* user, const std::string& sweep_id,
                   sim::SimOptions so) {
  so.die_after_steps = -1;
  so.world_size = 1;
  FLAP_ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorClient> c1, CoordinatorClient::Connect(co));
  sim::SimGroup g1(std::move(c1), "g1", so);
  std::atomic<bool> stop{false};
  Status g1_result;
  std::thread runner([&] { g1_result = g1.Run(&stop); });
  int ended = 0;
  for (int i = 0; i < 600 && ended < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto status = user->GetSweep(sweep_id);
    if (!status.ok()) continue;
    ended = 0;
    for (const auto& t : status->trials()) ended += (t.state() == "completed" || t.state() == "stopped") ? 1 : 0;
  }
  stop = true;
  runner.join();
  FLAP_RETURN_IF_ERROR(g1_result);
  return Check(ended == 3, "g1 ended " + std::to_string(ended) + " trials in 60 s, not 3");
}

// Runs the scenario above against the coordinator at `port` whose state folder is `state`.
Status DriveCoordinator(int port, const std::string& state) {
  ClientOptions co;
  co.target = "127.0.0.1:" + std::to_string(port);
  co.deadline_ms = 5000;
  FLAP_ASSIGN_OR_RETURN(co.token, ReadToken(state + "/token"));
  FLAP_ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorClient> user, CoordinatorClient::Connect(co));
  const std::string sweep = testing::MaskSweep("fixture", "1",
                                               "\n[factor.mask.views]\nvalues = 2\nwhen = mask.ratio != 0.75\n\n"
                                               "[asha]\nmetric = map10\nmode = max\nrungs = 10\nreduction = 2\n\n"
                                               "[report]\ntarget = t2a_r1:30%\n");
  FLAP_ASSIGN_OR_RETURN(v1::SubmitSweepResponse sub, user->SubmitSweep(sweep, "fixture.ini", "[model]\npreset = tiny\n"));
  FLAP_RETURN_IF_ERROR(Check(sub.num_trials() == 4, "the sweep has " + std::to_string(sub.num_trials()) + " trials"));
  sim::SimOptions so;
  so.steps = 20;
  so.epochs = 2;
  so.shards = 3;
  FLAP_RETURN_IF_ERROR(RunDeadGroup(co, user.get(), sub.sweep_id(), so));
  // g-pre takes the next trial and is preempted.
  FLAP_RETURN_IF_ERROR(user->Register("g-pre", "g-pre-1", 1, "spot-host", {"spot-host:9400"}).status());
  FLAP_ASSIGN_OR_RETURN(NextTrialResult pre, user->NextTrial("g-pre"));
  FLAP_RETURN_IF_ERROR(Check(pre.assigned, "g-pre got no trial"));
  FLAP_ASSIGN_OR_RETURN(TrialState requeued,
                        user->Fail("g-pre", pre.assignment.trial, FailureCause::kPreemption, "spot instance reclaimed"));
  FLAP_RETURN_IF_ERROR(Check(requeued == TrialState::kPending, "the preempted trial was not requeued"));
  return RunToTheEnd(co, user.get(), sub.sweep_id(), so);
}

// Flushes and compacts the journal in `db`, then removes RocksDB's info logs and every OPTIONS
// file but the newest (RocksDB needs none of them to open the folder).
Status CompactFolder(const std::string& db) {
  {
    FLAP_ASSIGN_OR_RETURN(std::unique_ptr<Journal> journal, Journal::Open(db, JournalOptions()));
    FLAP_RETURN_IF_ERROR(journal->Compact());
  }
  std::vector<std::string> options;
  for (const auto& e : fs::directory_iterator(db)) {
    const std::string name = e.path().filename().string();
    if (name == "LOG" || name.rfind("LOG.old", 0) == 0) fs::remove(e.path());
    if (name.rfind("OPTIONS-", 0) == 0) options.push_back(name);
  }
  std::sort(options.begin(), options.end());
  for (size_t i = 0; i + 1 < options.size(); ++i) fs::remove(db + "/" + options[i]);
  return Status::OK();
}

// The rows of the journal in `db`, read from a copy of it in `scratch` (opening writes).
StatusOr<std::string> RowsOfCopy(const std::string& db, const std::string& scratch) {
  std::error_code ec;
  fs::remove_all(scratch, ec);
  fs::copy(db, scratch, fs::copy_options::recursive, ec);
  if (ec) return Status::IOError("copying " + db + " to " + scratch + ": " + ec.message());
  FLAP_ASSIGN_OR_RETURN(std::unique_ptr<StateStore> store, StateStore::Open(scratch, JournalOptions()));
  return testing::DumpState(*store);
}

Status MakeFixture(const std::string& out, const std::string& coordinator_bin) {
  const std::string work = out + "/work";
  const std::string state = work + "/state";
  std::error_code ec;
  fs::remove_all(work, ec);
  fs::remove_all(out + "/db", ec);
  FLAP_RETURN_IF_ERROR(MakeDirs(work));
  flap::testing::ChildProcess::Options po;
  po.pipe_stdout = true;
  po.log_path = work + "/coordinator.log";
  flap::testing::ChildProcess proc = flap::testing::ChildProcess::Exec(
      {coordinator_bin, "--state-dir", state, "--listen", "127.0.0.1:0", "--heartbeat-interval-ms", "100",
       "--heartbeat-timeout-ms", "3600000", "--lease-ttl-ms", "3600000"},
      po);
  const int port = testing::ListeningPort(proc);
  FLAP_RETURN_IF_ERROR(Check(port > 0, coordinator_bin + " did not say where it listens (" + po.log_path + ")"));
  FLAP_RETURN_IF_ERROR(DriveCoordinator(port, state));
  const int code = proc.Kill(SIGTERM, 30);
  FLAP_RETURN_IF_ERROR(Check(code == 0, "flap-coordinator exited " + std::to_string(code) + " on SIGTERM"));

  FLAP_ASSIGN_OR_RETURN(const std::string rows, RowsOfCopy(state + "/db", work + "/read"));
  fs::copy(state + "/db", out + "/db", fs::copy_options::recursive, ec);
  if (ec) return Status::IOError("copying the journal to " + out + "/db: " + ec.message());
  FLAP_RETURN_IF_ERROR(CompactFolder(out + "/db"));
  FLAP_ASSIGN_OR_RETURN(const std::string compacted, RowsOfCopy(out + "/db", work + "/read"));
  FLAP_RETURN_IF_ERROR(Check(compacted == rows, "the compacted journal in " + out + "/db reads other rows"));
  FLAP_RETURN_IF_ERROR(WriteFileAtomic(out + "/expected_state.txt", rows));
  fs::remove_all(work, ec);
  return Status::OK();
}

}  // namespace
}  // namespace flap::coordinator

int main(int argc, char** argv) {
  std::string out;
  std::string coordinator = FLAP_COORDINATOR_BIN;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--coordinator" && i + 1 < argc) {
      coordinator = argv[++i];
    } else if (out.empty() && !arg.empty() && arg[0] != '-') {
      out = arg;
    } else {
      out.clear();
      break;
    }
  }
  if (out.empty()) {
    std::cerr << "usage: flap_journal_fixture OUT [--coordinator PATH]\n";
    return 2;
  }
  const flap::Status s = flap::coordinator::MakeFixture(out, coordinator);
  if (!s.ok()) {
    std::cerr << "flap_journal_fixture: " << s.ToString() << "\n";
    return 1;
  }
  std::cout << "wrote " << out << "/db and " << out << "/expected_state.txt\n";
  return 0;
}
