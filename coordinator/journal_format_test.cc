// The journal's on-disk format across releases (coordinator/state_store.h, "Formats").
// tests/fixtures/journal_v1 holds a journal that flap-coordinator wrote in format 1 (JSON
// values) and, beside it, every row as that release read it back (expected_state.txt, rendered
// by DumpState, coordinator/testing/state_dump.h); see its README. This release opens it,
// migrating it in place to the current format, and must read back exactly those rows.
//
// How a fixture is made: build flap_journal_fixture (coordinator/testing/journal_fixture.cc)
// and flap-coordinator at the release whose format it is to hold, and run
//   build/coordinator/flap_journal_fixture tests/fixtures/journal_vN
// It drives that flap-coordinator through the fixture's scenario (the fixtures' READMEs say
// what it holds), stops it, and writes the compacted journal to journal_vN/db and its rows to
// journal_vN/expected_state.txt (and checks that the compacted copy reads back the same).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "common/testing/testing.h"
#include "coordinator/client.h"
#include "coordinator/journal.h"
#include "coordinator/service.h"
#include "coordinator/state_store.h"
#include "coordinator/testing/service_test_util.h"
#include "coordinator/testing/state_dump.h"
#include "proto/journal.pb.h"

namespace flap::coordinator {
namespace {

using testing::DumpState;

const std::string kFixtures = FLAP_FIXTURE_DIR;

// A copy of the checked-in journal tests/fixtures/<fixture>/db in `dir` (opening it writes to
// it); its path.
std::string CopyFixture(const flap::testing::TempDir& dir, const std::string& fixture = "journal_v1") {
  const std::string db = dir / "db";
  std::error_code ec;
  std::filesystem::copy(kFixtures + "/" + fixture + "/db", db, std::filesystem::copy_options::recursive, ec);
  EXPECT_FALSE(ec) << "copying " << fixture << "/db: " << ec.message();
  return db;
}

// The fixture's rows as the release that wrote it read them back.
std::string Expected(const std::string& fixture = "journal_v1") {
  auto text = ReadFileToString(kFixtures + "/" + fixture + "/expected_state.txt");
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
    EXPECT_NE(log.find("migrated the coordinator state in " + db + " from journal format 1 (JSON) to " +
                       std::to_string(kJournalFormat) + " (protobuf)"),
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
  flap::testing::TempDir dir("journal_newer");
  const std::string db = dir / "db";
  const std::string newer = std::to_string(kJournalFormat + 1);
  ASSERT_NO_FATAL_FAILURE(ChangeRaw(db, [&](JournalBatch* b) {
    b->Put("meta/format_version", newer);
    b->Put("sweep/s", "written by a later release");
  }));
  auto store = StateStore::Open(db, JournalOptions());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("journal format " + newer), std::string::npos) << store.status().message();
  EXPECT_NE(store.status().message().find(db), std::string::npos) << store.status().message();
  const auto raw = Raw(db);
  ASSERT_EQ(raw.size(), 2u);
  EXPECT_EQ(raw[0].second, newer);
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
  EXPECT_EQ(raw[0].second, "3");
}

// The metric records of the journal in `db`, parsed (key, message).
std::vector<std::pair<std::string, journal::Metric>> RawMetrics(const std::string& db) {
  std::vector<std::pair<std::string, journal::Metric>> out;
  for (const auto& [key, value] : Raw(db)) {
    if (key.rfind(TablePrefix(Table::kMetric), 0) != 0) continue;
    journal::Metric m;
    EXPECT_TRUE(m.ParseFromString(value)) << key;
    out.push_back({key, m});
  }
  return out;
}

// tests/fixtures/journal_v2: a journal of format 2 (metric kinds stored as names), made by
// flap_journal_fixture at the last release writing format 2. Fails against a release that
// reads the kind from the enum alone (every metric record is Corruption: kind_value unset), and
// against one that renamed the metric keys.
TEST(JournalFormat, AFormat2JournalOpensWithEveryRowAsTheReleaseThatWroteItReadThem) {
  flap::testing::TempDir dir("journal_v2");
  const std::string db = CopyFixture(dir, "journal_v2");
  const auto before = Raw(db);
  const auto metrics = RawMetrics(db);
  ASSERT_EQ(metrics.size(), 75u);
  for (const auto& [key, m] : metrics) {
    EXPECT_EQ(m.kind_value(), journal::METRIC_KIND_UNSET) << key;
    EXPECT_NE(key.find("/" + m.kind() + "/"), std::string::npos) << key << " holds a " << m.kind() << " record";
  }
  const std::string expected = Expected("journal_v2");
  ASSERT_FALSE(expected.empty());
  {
    ::testing::internal::CaptureStderr();
    auto store = StateStore::Open(db, JournalOptions());
    const std::string log = ::testing::internal::GetCapturedStderr();
    ASSERT_OK(store);
    EXPECT_NE(log.find("the coordinator state in " + db + " is now journal format 3 (was 2"), std::string::npos) << log;
    ASSERT_OK_AND_ASSIGN(std::string rows, DumpState(**store));
    EXPECT_EQ(rows, expected);
  }
  // Only the format key changed; every record is as the release before wrote it.
  auto after = Raw(db);
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].first, before[i].first);
    if (after[i].first == "meta/format_version") {
      EXPECT_EQ(before[i].second, "2");
      EXPECT_EQ(after[i].second, "3");
    } else {
      EXPECT_EQ(after[i].second, before[i].second) << after[i].first;
    }
  }
  // A coordinator restores from it, and a record it adds keeps the key's text with the kind
  // as the enum; old and new records read back alike.
  {
    ServiceOptions o;
    o.state_dir = db;
    o.token = flap::testing::kTestToken;
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<CoordinatorService> service, CoordinatorService::Create(o));
    EXPECT_EQ(service->memory_stats().trials, 4u);
  }
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<StateStore> store, StateStore::Open(db, JournalOptions()));
  StateBatch b;
  MetricPoint p;
  p.trial_id = "t0000";
  p.attempt = 1;
  p.kind = MetricKind::kEval;
  p.step = 20;
  p.values = {{"map10", 0.5}};
  b.PutMetric("fixture/t0000", p);
  ASSERT_OK(store->Wait(store->Append(std::move(b))));
  ASSERT_OK_AND_ASSIGN(Rows<MetricPoint> points, store->Metrics());
  ASSERT_EQ(points.size(), 76u);
  std::multiset<std::string> read_kinds, key_kinds;  // each record's kind: as read, as in its key
  for (const auto& [trial, m] : points) read_kinds.insert(MetricKindName(m.kind));
  store.reset();
  bool found = false;
  for (const auto& [key, m] : RawMetrics(db)) {  // metric/<sweep>/<trial>/<kind>/<step>
    const size_t end = key.rfind('/');
    const size_t begin = key.rfind('/', end - 1) + 1;
    key_kinds.insert(key.substr(begin, end - begin));
    if (key != "metric/fixture/t0000/eval/000000000020") continue;
    found = true;
    EXPECT_EQ(m.kind_value(), journal::METRIC_EVAL);
    EXPECT_EQ(m.kind(), "");
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(read_kinds, key_kinds);
  EXPECT_GT(key_kinds.count("eval"), 0u);
  EXPECT_GT(key_kinds.count("train"), 0u);
}

TEST(JournalFormat, AMetricRecordOfAnUnknownKindIsCorruptionNamingItsKey) {
  flap::testing::TempDir dir("journal_bad_kind");
  const std::string db = CopyFixture(dir, "journal_v2");
  const std::string key = "metric/fixture/t0000/eval/000000000010";
  for (const auto& [kind, value] : std::vector<std::pair<std::string, int>>{{"validation", 0}, {"", 9}}) {
    journal::Metric m;
    m.set_kind(kind);
    m.set_kind_value(static_cast<journal::MetricKind>(value));
    ASSERT_NO_FATAL_FAILURE(ChangeRaw(db, [&](JournalBatch* b) { b->Put(key, m.SerializeAsString()); }));
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<StateStore> store, StateStore::Open(db, JournalOptions()));
    auto points = store->Metrics();
    ASSERT_FALSE(points.ok());
    EXPECT_EQ(points.status().code(), Status::Code::kCorruption);
    EXPECT_NE(points.status().message().find(key), std::string::npos) << points.status().message();
    EXPECT_NE(points.status().message().find(value == 0 ? "'validation'" : "kind_value' is 9"), std::string::npos)
        << points.status().message();
  }
}

}  // namespace
}  // namespace flap::coordinator
