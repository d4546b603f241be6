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
#include <memory>
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

namespace flap::coordinator {
namespace {

using testing::DumpState;

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

}  // namespace
}  // namespace flap::coordinator
