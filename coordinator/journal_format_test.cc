// The journal's on-disk format across releases (coordinator/state_store.h, "Formats").
// tests/fixtures/journal_v1 holds a journal that flap-coordinator wrote in format 1 (JSON
// values) and, beside it, every row as that release read it back (expected_state.txt, rendered
// by DumpState below); see its README. This release opens it, migrating it in place to format
// 2 (protobuf), and must read back exactly those rows. DISABLED_WriteStateFolder is how such
// a folder is made.
#include <gtest/gtest.h>
#include <signal.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/file_util.h"
#include "common/testing/testing.h"
#include "coordinator/client.h"
#include "coordinator/journal.h"
#include "coordinator/service.h"
#include "coordinator/state_store.h"
#include "coordinator/testing/service_test_util.h"
#include "coordinator/testing/sim_group.h"

namespace flap::coordinator {
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
    out << "metric " << key << " " << m.trial_id << " attempt=" << m.attempt << " " << m.kind << " step=" << m.step
        << " epoch=" << m.epoch << " time_ms=" << m.time_ms << " " << Values(m.values) << "\n";
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

const std::string kFixture = std::string(FLAP_FIXTURE_DIR) + "/journal_v1";

// A copy of the checked-in journal in `dir` (opening it writes to it); its path.
std::string CopyFixture(const flap::testing::TempDir& dir) {
  const std::string db = dir / "db";
  std::error_code ec;
  std::filesystem::copy(kFixture + "/db", db, std::filesystem::copy_options::recursive, ec);
  EXPECT_FALSE(ec) << "copying " << kFixture << "/db: " << ec.message();
  return db;
}

std::string Expected() {
  auto text = ReadFileToString(kFixture + "/expected_state.txt");
  EXPECT_OK(text);
  return text.ok() ? *text : "";
}

// Every (key, value) of the journal in `db`.
std::vector<std::pair<std::string, std::string>> Raw(const std::string& db) {
  auto journal = Journal::Open(db, JournalOptions());
  EXPECT_OK(journal);
  if (!journal.ok()) return {};
  auto rows = (*journal)->Scan("");
  EXPECT_OK(rows);
  return rows.ok() ? *rows : std::vector<std::pair<std::string, std::string>>();
}

// Applies `change` to the journal in `db` as one batch, below the state store.
void ChangeRaw(const std::string& db, const std::function<void(JournalBatch*)>& change) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Journal> journal, Journal::Open(db, JournalOptions()));
  JournalBatch b;
  change(&b);
  ASSERT_OK(journal->Wait(journal->Append(std::move(b))));
}

// Whether every record of `rows` (meta/format_version aside) is a JSON object.
bool AllJson(const std::vector<std::pair<std::string, std::string>>& rows) {
  for (const auto& [key, value] : rows) {
    if (key != "meta/format_version" && !nlohmann::json::accept(value)) return false;
  }
  return true;
}

// Fails against a release that cannot read format 1 (it reads no rows, or refuses them).
TEST(JournalFormat, AFormat1JournalOpensWithEveryRowAsTheReleaseThatWroteItReadThem) {
  flap::testing::TempDir dir("journal_v1");
  const std::string db = CopyFixture(dir);
  ASSERT_TRUE(AllJson(Raw(db)));
  const std::string expected = Expected();
  ASSERT_FALSE(expected.empty());
  {
    ::testing::internal::CaptureStderr();
    auto store = StateStore::Open(db, JournalOptions());
    const std::string log = ::testing::internal::GetCapturedStderr();
    ASSERT_OK(store);
    EXPECT_NE(log.find("migrated the coordinator state in " + db + " from journal format 1 (JSON) to 2 (protobuf)"),
              std::string::npos)
        << log;
    ASSERT_OK_AND_ASSIGN(std::string rows, DumpState(**store));
    EXPECT_EQ(rows, expected);
  }
  // Migrated in place: the format is recorded and no record is JSON any more.
  const auto migrated = Raw(db);
  ASSERT_FALSE(migrated.empty());
  for (const auto& [key, value] : migrated) {
    if (key == "meta/format_version") {
      EXPECT_EQ(value, std::to_string(kJournalFormat));
    } else {
      EXPECT_FALSE(nlohmann::json::accept(value)) << key;
    }
  }
  // Opened again (format 2 now): the same rows, and the bytes stay as they are.
  {
    ::testing::internal::CaptureStderr();
    auto store = StateStore::Open(db, JournalOptions());
    EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
    ASSERT_OK(store);
    ASSERT_OK_AND_ASSIGN(std::string rows, DumpState(**store));
    EXPECT_EQ(rows, expected);
  }
  EXPECT_EQ(Raw(db), migrated);
  // A coordinator restores from it: the sweep, its four trials, the three groups and the
  // running trial's two epochs' lease tables (one lease active); it keeps no lease table of
  // an ended trial.
  ServiceOptions o;
  o.state_dir = db;
  o.token = flap::testing::kTestToken;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<CoordinatorService> service, CoordinatorService::Create(o));
  const CoordinatorService::MemoryStats m = service->memory_stats();
  EXPECT_EQ(m.sweeps, 1u);
  EXPECT_EQ(m.trials, 4u);
  EXPECT_EQ(m.groups, 3u);
  EXPECT_EQ(m.lease_tables, 2u);
  EXPECT_EQ(service->MetricsSnapshot().leases_active, 1);
}

TEST(JournalFormat, ANewerFormatIsRefusedNamingItAndTheFolder) {
  flap::testing::TempDir dir("journal_v3");
  const std::string db = dir / "db";
  ASSERT_NO_FATAL_FAILURE(ChangeRaw(db, [](JournalBatch* b) {
    b->Put("meta/format_version", "3");
    b->Put("sweep/s", "written by a later release");
  }));
  auto store = StateStore::Open(db, JournalOptions());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("journal format 3"), std::string::npos) << store.status().message();
  EXPECT_NE(store.status().message().find(db), std::string::npos) << store.status().message();
  const auto raw = Raw(db);
  ASSERT_EQ(raw.size(), 2u);
  EXPECT_EQ(raw[0].second, "3");
  EXPECT_EQ(raw[1].second, "written by a later release");
}

TEST(JournalFormat, AFormat1RecordThatDoesNotReadFailsTheOpenAndLeavesTheJournalAsItWas) {
  flap::testing::TempDir dir("journal_v1_damaged");
  const std::string db = CopyFixture(dir);
  ASSERT_NO_FATAL_FAILURE(ChangeRaw(db, [](JournalBatch* b) {
    b->Put("trial/fixture/t0004", R"({"spec": {"id": "t0004", "cell": 4}, "record": {"state": "paused"}})");
  }));
  const auto before = Raw(db);
  auto store = StateStore::Open(db, JournalOptions());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), Status::Code::kCorruption);
  EXPECT_NE(store.status().message().find("trial/fixture/t0004"), std::string::npos) << store.status().message();
  EXPECT_EQ(Raw(db), before);  // still format 1, every record
  ASSERT_NO_FATAL_FAILURE(ChangeRaw(db, [](JournalBatch* b) { b->Delete("trial/fixture/t0004"); }));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<StateStore> repaired, StateStore::Open(db, JournalOptions()));
  ASSERT_OK_AND_ASSIGN(std::string rows, DumpState(*repaired));
  EXPECT_EQ(rows, Expected());
}

TEST(JournalFormat, AJournalThatSaysFormat1IsMigratedToo) {
  flap::testing::TempDir dir("journal_says_v1");
  const std::string db = CopyFixture(dir);
  ASSERT_NO_FATAL_FAILURE(ChangeRaw(db, [](JournalBatch* b) { b->Put("meta/format_version", "1"); }));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<StateStore> store, StateStore::Open(db, JournalOptions()));
  ASSERT_OK_AND_ASSIGN(std::string rows, DumpState(*store));
  EXPECT_EQ(rows, Expected());
}

TEST(JournalFormat, ANewJournalRecordsItsFormat) {
  flap::testing::TempDir dir("journal_new");
  ASSERT_OK(StateStore::Open(dir / "db", JournalOptions()));
  const auto raw = Raw(dir / "db");
  ASSERT_EQ(raw.size(), 1u);
  EXPECT_EQ(raw[0].first, "meta/format_version");
  EXPECT_EQ(raw[0].second, "2");
}

// Makes a state folder with flap-coordinator as built: an ASHA sweep of four trials (one
// preempted and rerun, some completed or stopped by ASHA, one left running by a group that
// died mid-epoch with a live shard lease and records of NaN, one ASHA's first result), three
// groups; the coordinator is then stopped with SIGTERM. Writes its journal (the state folder's
// db/, without the token) to $FLAP_JOURNAL_FOLDER_OUT/state/db and its rows (DumpState) to
// .../expected_state.txt.
TEST(JournalFormat, DISABLED_WriteStateFolder) {
  const char* out_env = std::getenv("FLAP_JOURNAL_FOLDER_OUT");
  if (out_env == nullptr) GTEST_SKIP() << "set FLAP_JOURNAL_FOLDER_OUT to the folder to write";
  const std::string out = out_env;
  flap::testing::TempDir dir("journal_folder");
  const std::string state = dir / "state";
  flap::testing::ChildProcess::Options po;
  po.pipe_stdout = true;
  po.log_path = dir / "coordinator.log";
  // Long heartbeat and lease timeouts: the dead group keeps its trial and its lease.
  flap::testing::ChildProcess proc = flap::testing::ChildProcess::Exec(
      {FLAP_COORDINATOR_BIN, "--state-dir", state, "--listen", "127.0.0.1:0", "--heartbeat-interval-ms", "100",
       "--heartbeat-timeout-ms", "3600000", "--lease-ttl-ms", "3600000"},
      po);
  const int port = testing::ListeningPort(proc);
  ASSERT_GT(port, 0);
  ClientOptions co;
  co.target = "127.0.0.1:" + std::to_string(port);
  co.deadline_ms = 5000;
  ASSERT_OK_AND_ASSIGN(co.token, ReadToken(state + "/token"));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<CoordinatorClient> user, CoordinatorClient::Connect(co));
  const std::string sweep = testing::MaskSweep("fixture", "1",
                                               "\n[factor.mask.views]\nvalues = 2\nwhen = mask.ratio != 0.75\n\n"
                                               "[asha]\nmetric = map10\nmode = max\nrungs = 10\nreduction = 2\n\n"
                                               "[report]\ntarget = t2a_r1:30%\n");
  ASSERT_OK_AND_ASSIGN(v1::SubmitSweepResponse sub,
                       user->SubmitSweep(sweep, "fixture.ini", "[model]\npreset = tiny\n"));
  ASSERT_EQ(sub.num_trials(), 4);

  // g-dead runs 7 steps of the first trial and dies; then, as g-dead, begin its second epoch,
  // lease a shard and report a train and an evaluation record with NaN (ASHA's first value).
  sim::SimOptions so;
  so.steps = 20;
  so.epochs = 2;
  so.shards = 3;
  so.die_after_steps = 7;
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<CoordinatorClient> c, CoordinatorClient::Connect(co));
    sim::SimGroup dead(std::move(c), "g-dead", so);
    ASSERT_OK(dead.Run());
    ASSERT_EQ(dead.log().started.size(), 1u);
  }
  ASSERT_OK_AND_ASSIGN(v1::SweepStatus running, user->GetSweep(sub.sweep_id()));
  v1::TrialRef ref;
  ref.set_sweep_id(sub.sweep_id());
  for (const auto& t : running.trials()) {
    if (t.state() == "running") {
      ref.set_trial_id(t.trial_id());
      ref.set_attempt(t.attempt());
    }
  }
  ASSERT_FALSE(ref.trial_id().empty());
  std::vector<std::pair<std::string, int64_t>> shards;
  for (int i = 0; i < so.shards; ++i) shards.push_back({"shard-" + std::to_string(i) + ".tar", 100});
  ASSERT_OK(user->BeginEpoch("g-dead", ref, 1, shards));
  ASSERT_OK_AND_ASSIGN(ShardLease lease, user->LeaseShard("g-dead", ref, 1, 0));
  ASSERT_EQ(lease.kind, ShardLease::Kind::kGranted);
  ASSERT_OK(
      user->ReportMetrics("g-dead", ref, MetricKind::kTrain, 8, 1, {{"loss", std::nan("")}, {"grad_norm", 1.5}}, 20));
  ASSERT_OK(
      user->ReportMetrics("g-dead", ref, MetricKind::kEval, 10, 1, {{"map10", std::nan("")}, {"t2a_r1", 0.25}}, 20));

  // g-pre takes the next trial and is preempted.
  ASSERT_OK(user->Register("g-pre", "g-pre-1", 1, "spot-host", {"spot-host:9400"}));
  ASSERT_OK_AND_ASSIGN(NextTrialResult pre, user->NextTrial("g-pre"));
  ASSERT_TRUE(pre.assigned);
  ASSERT_OK_AND_ASSIGN(TrialState requeued,
                       user->Fail("g-pre", pre.assignment.trial, FailureCause::kPreemption, "spot instance reclaimed"));
  ASSERT_EQ(requeued, TrialState::kPending);

  // g1 runs the three other trials to their end (completed, or stopped by ASHA).
  so.die_after_steps = -1;
  so.world_size = 1;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<CoordinatorClient> c1, CoordinatorClient::Connect(co));
  sim::SimGroup g1(std::move(c1), "g1", so);
  std::atomic<bool> stop{false};
  Status g1_result;
  std::thread runner([&] { g1_result = g1.Run(&stop); });
  int ended = 0;
  for (int i = 0; i < 600 && ended < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto status = user->GetSweep(sub.sweep_id());
    if (!status.ok()) continue;
    ended = 0;
    for (const auto& t : status->trials()) ended += (t.state() == "completed" || t.state() == "stopped") ? 1 : 0;
  }
  stop = true;
  runner.join();
  ASSERT_OK(g1_result);
  ASSERT_EQ(ended, 3);
  EXPECT_EQ(proc.Kill(SIGTERM, 30), 0);

  // The folder as the coordinator left it; the rows as it reads them back (from the original).
  std::error_code ec;
  std::filesystem::remove_all(out + "/state", ec);
  std::filesystem::create_directories(out + "/state", ec);
  std::filesystem::copy(state + "/db", out + "/state/db", std::filesystem::copy_options::recursive, ec);
  ASSERT_FALSE(ec) << ec.message();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<StateStore> store, StateStore::Open(state + "/db", JournalOptions()));
  ASSERT_OK_AND_ASSIGN(std::string rows, DumpState(*store));
  std::ofstream(out + "/expected_state.txt") << rows;
}

}  // namespace
}  // namespace flap::coordinator
