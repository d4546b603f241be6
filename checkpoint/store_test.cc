// Tests of checkpoint/store.h against a real RocksDB in a temporary folder: the save/list/load
// round trip, concurrent trials, damage detection and fallback, config hash refusal, retention,
// and crashes (simulated with a fault-injecting Env) during saves and garbage collection.
#include "checkpoint/testing/forwarding_env.h"
#include "checkpoint/store.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>
#include "common/testing/testing.h"

namespace flap::checkpoint {
namespace {
namespace fs = std::filesystem;

using ::flap::testing::TempDir;

// Fails the first call whose path contains `fail_on` (WriteFileAtomic, SyncDir or RemoveAll),
// as a crash at that point would: the calls before it happened, the ones after do not (every
// later change fails too, until the test clears `crashed`, its restart).
class FaultEnv : public ForwardingEnv {
 public:
  std::string fail_on;       // substring of a WriteFileAtomic or RemoveAll path
  std::string fail_sync_of;  // exact directory of a SyncDir
  bool crashed = false;      // set by the injected fault
  Status WriteFileAtomic(const std::string& path, const std::string& contents) override {
    if (crashed) return Status::IOError("crashed: " + path);
    if (Hit(path)) return Status::IOError("injected fault: " + path);
    return Env::Default()->WriteFileAtomic(path, contents);
  }
  Status SyncDir(const std::string& dir) override {
    if (crashed) return Status::IOError("crashed: " + dir);
    if (!fail_sync_of.empty() && dir == fail_sync_of) {
      fail_sync_of.clear();
      crashed = true;
      return Status::IOError("injected fault: " + dir);
    }
    return Env::Default()->SyncDir(dir);
  }
  Status MakeDirs(const std::string& dir) override {
    if (crashed) return Status::IOError("crashed: " + dir);
    return Env::Default()->MakeDirs(dir);
  }
  Status RemoveAll(const std::string& root, const std::string& relative) override {
    const std::string path = root + "/" + relative;
    if (crashed) return Status::IOError("crashed: " + path);
    if (Hit(path)) return Status::IOError("injected fault: " + path);
    return ForwardingEnv::RemoveAll(root, relative);
  }
  Status Rename(const std::string& from, const std::string& to) override {
    if (crashed) return Status::IOError("crashed: " + from);
    return Env::Default()->Rename(from, to);
  }

 private:
  bool Hit(const std::string& path) {
    if (fail_on.empty() || path.find(fail_on) == std::string::npos) return false;
    fail_on.clear();
    crashed = true;
    return true;
  }
};

std::map<std::string, std::string> Files(int64_t step) {
  return {{"model.bin", std::string(4096, static_cast<char>('a' + step % 26)) + std::to_string(step)},
          {"optimizer.bin", std::string(1000, 'o') + std::to_string(step * 7)},
          {"state.json", "{\"step\": " + std::to_string(step) + "}"}};
}

Metadata Meta(int64_t epoch = 0, std::map<std::string, double> metrics = {}) {
  Metadata m;
  m.config_hash = "cafef00d";
  m.epoch = epoch;
  m.metrics = std::move(metrics);
  return m;
}

std::unique_ptr<Store> OpenStore(const std::string& root, Env* env = nullptr) {
  StoreOptions options;
  options.env = env;
  auto store = Store::Open(root, options);
  EXPECT_OK(store);
  return std::move(store).value();
}

std::vector<int64_t> Steps(const std::vector<Entry>& entries) {
  std::vector<int64_t> steps;
  for (const Entry& e : entries) steps.push_back(e.step);
  return steps;
}

void Truncate(const std::string& path) { fs::resize_file(path, fs::file_size(path) / 2); }

void FlipByte(const std::string& path, size_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset);
  char c = 0;
  f.get(c);
  f.seekp(offset);
  f.put(static_cast<char>(c ^ 0x5a));
}

TEST(StoreTest, SaveListLoadRoundTrip) {
  TempDir tmp;
  auto store = OpenStore(tmp.path());
  for (int64_t step : {10, 20, 30}) {
    auto e = store->Save("trial-a", step, Files(step), Meta(step / 10, {{"map10", step * 0.01}}));
    ASSERT_OK(e);
    EXPECT_EQ(e->Name(), "trial-a/" + std::string(10, '0') + std::to_string(step));
  }
  EXPECT_TRUE(fs::exists(tmp.path() + "/trial-a/000000000020/MANIFEST.json"));
  EXPECT_TRUE(fs::is_directory(tmp.path() + "/index/trial-a"));
  auto list = store->List("trial-a");
  ASSERT_OK(list);
  EXPECT_EQ(Steps(*list), (std::vector<int64_t>{30, 20, 10}));
  const Entry& newest = list->front();
  EXPECT_EQ(newest.metadata.epoch, 3);
  EXPECT_DOUBLE_EQ(newest.metadata.metrics.at("map10"), 0.3);
  EXPECT_EQ(newest.metadata.config_hash, "cafef00d");
  EXPECT_EQ(newest.files.size(), 3u);
  EXPECT_OK(store->Verify(newest));
  auto bytes = store->Load(newest);
  ASSERT_OK(bytes);
  EXPECT_EQ(*bytes, Files(30));

  // Reopening sees the same index; a step cannot be saved twice.
  store.reset();
  store = OpenStore(tmp.path());
  EXPECT_EQ(Steps(*store->List("trial-a")), (std::vector<int64_t>{30, 20, 10}));
  EXPECT_EQ(store->Save("trial-a", 20, Files(20), Meta()).status().code(), Status::Code::kFailedPrecondition);
  EXPECT_TRUE(store->List("no-such-trial")->empty());
  auto trials = store->Trials();
  ASSERT_OK(trials);
  EXPECT_EQ(*trials, std::vector<std::string>{"trial-a"});
}

TEST(StoreTest, RejectsBadNames) {
  TempDir tmp;
  auto store = OpenStore(tmp.path());
  EXPECT_EQ(store->Save("index", 1, Files(1), Meta()).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(store->Save("a/b", 1, Files(1), Meta()).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(store->Save("t", 1, {{"MANIFEST.json", "x"}}, Meta()).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(store->Save("t", -1, Files(1), Meta()).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(store->Save("t", 1, Files(1), Metadata()).status().code(), Status::Code::kInvalidArgument);
}

TEST(StoreTest, TwoTrialsSaveConcurrently) {
  TempDir tmp;
  auto store = OpenStore(tmp.path());
  std::atomic<int> failures{0};
  auto run = [&](const std::string& trial) {
    for (int64_t step = 1; step <= 20; ++step) {
      if (!store->Save(trial, step, Files(step), Meta()).ok()) ++failures;
    }
  };
  std::thread a(run, "trial-a"), b(run, "trial-b");
  a.join();
  b.join();
  EXPECT_EQ(failures.load(), 0);
  for (const std::string trial : {"trial-a", "trial-b"}) {
    auto list = store->List(trial);
    ASSERT_OK(list);
    ASSERT_EQ(list->size(), 20u);
    for (const Entry& e : *list) EXPECT_OK(store->Verify(e)) << e.Name();
  }
}

// Saves steps 1..3 and returns the store; tests then damage step 3.
std::unique_ptr<Store> ThreeCheckpoints(const std::string& root) {
  auto store = OpenStore(root);
  for (int64_t step : {1, 2, 3}) EXPECT_OK(store->Save("t", step, Files(step), Meta()));
  return store;
}

void ExpectFallbackTo2(Store* store, const std::string& damage) {
  auto list = store->List("t");
  ASSERT_OK(list);
  Status s = store->Verify(list->front());
  EXPECT_EQ(s.code(), Status::Code::kCorruption);
  EXPECT_NE(s.message().find("t/000000000003"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(damage), std::string::npos) << s.message();
  EXPECT_EQ(store->Load(list->front()).status().code(), Status::Code::kCorruption);
  auto resume = store->LatestVerified("t", "cafef00d");
  ASSERT_OK(resume);
  EXPECT_EQ(resume->entry.step, 2);
  ASSERT_EQ(resume->warnings.size(), 1u);
  EXPECT_NE(resume->warnings[0].find("t/000000000003"), std::string::npos);
  EXPECT_NE(resume->warnings[0].find(damage), std::string::npos) << resume->warnings[0];
}

TEST(StoreDamageTest, TruncatedFile) {
  TempDir tmp;
  auto store = ThreeCheckpoints(tmp.path());
  Truncate(store->CheckpointDir("t", 3) + "/model.bin");
  ExpectFallbackTo2(store.get(), "model.bin");
}

TEST(StoreDamageTest, FlippedByte) {
  TempDir tmp;
  auto store = ThreeCheckpoints(tmp.path());
  FlipByte(store->CheckpointDir("t", 3) + "/optimizer.bin", 17);
  ExpectFallbackTo2(store.get(), "optimizer.bin: checksum");
}

TEST(StoreDamageTest, DeletedFile) {
  TempDir tmp;
  auto store = ThreeCheckpoints(tmp.path());
  fs::remove(store->CheckpointDir("t", 3) + "/state.json");
  ExpectFallbackTo2(store.get(), "state.json: missing");
}

TEST(StoreDamageTest, DeletedManifest) {
  TempDir tmp;
  auto store = ThreeCheckpoints(tmp.path());
  fs::remove(store->CheckpointDir("t", 3) + "/MANIFEST.json");
  ExpectFallbackTo2(store.get(), "MANIFEST.json: missing");
}

TEST(StoreDamageTest, MalformedIndexEntry) {
  TempDir tmp;
  auto store = ThreeCheckpoints(tmp.path());
  store->CloseIndex("t");
  {
    rocksdb::DB* raw = nullptr;
    ASSERT_OK(rocksdb::DB::Open(rocksdb::Options(), store->IndexDir("t"), &raw));
    std::unique_ptr<rocksdb::DB> db(raw);
    ASSERT_OK(db->Put(rocksdb::WriteOptions(), "000000000003", "{not json"));
  }
  auto strict = store->List("t");
  ASSERT_EQ(strict.status().code(), Status::Code::kCorruption);
  EXPECT_NE(strict.status().message().find("t/000000000003"), std::string::npos) << strict.status().message();
  std::vector<std::string> problems;
  EXPECT_EQ(Steps(*store->List("t", &problems)), (std::vector<int64_t>{2, 1}));
  ASSERT_EQ(problems.size(), 1u);
  auto resume = store->LatestVerified("t", "cafef00d");
  ASSERT_OK(resume);
  EXPECT_EQ(resume->entry.step, 2);
  ASSERT_EQ(resume->warnings.size(), 1u);
  EXPECT_NE(resume->warnings[0].find("t/000000000003"), std::string::npos);
  // The files are intact: rebuilding the index from the manifests restores step 3.
  ASSERT_EQ(*store->RebuildIndex("t", nullptr), 3);
  EXPECT_EQ(store->LatestVerified("t", "cafef00d")->entry.step, 3);
}

TEST(StoreDamageTest, GarbageIndexIsReportedAndRebuilt) {
  TempDir tmp;
  auto store = ThreeCheckpoints(tmp.path());
  store->CloseIndex("t");
  for (const auto& f : fs::directory_iterator(store->IndexDir("t"))) {
    std::ofstream(f.path(), std::ios::trunc) << "garbage garbage garbage";
  }
  auto list = store->List("t");
  ASSERT_EQ(list.status().code(), Status::Code::kCorruption) << list.status().ToString();
  EXPECT_NE(list.status().message().find("index of trial t"), std::string::npos);
  EXPECT_NE(list.status().message().find("RebuildIndex"), std::string::npos);
  auto resume = store->LatestVerified("t", "cafef00d");
  EXPECT_EQ(resume.status().code(), Status::Code::kCorruption);
  // Gc deletes nothing while the index is unreadable.
  EXPECT_EQ(store->Gc("t", GcOptions{}).status().code(), Status::Code::kCorruption);
  EXPECT_TRUE(fs::exists(store->CheckpointDir("t", 1) + "/MANIFEST.json"));

  std::vector<std::string> problems;
  auto n = store->RebuildIndex("t", &problems);
  ASSERT_OK(n);
  EXPECT_EQ(*n, 3);
  EXPECT_TRUE(problems.empty());
  EXPECT_EQ(Steps(*store->List("t")), (std::vector<int64_t>{3, 2, 1}));
  EXPECT_EQ(store->LatestVerified("t", "cafef00d")->entry.step, 3);
  // The moved-aside index is not taken for a trial.
  EXPECT_EQ(*store->Trials(), std::vector<std::string>{"t"});
}

TEST(StoreDamageTest, MissingIndexWithCheckpointsIsReported) {
  TempDir tmp;
  auto store = ThreeCheckpoints(tmp.path());
  store->CloseIndex("t");
  fs::remove_all(store->IndexDir("t"));
  EXPECT_EQ(store->List("t").status().code(), Status::Code::kCorruption);
  ASSERT_OK(store->RebuildIndex("t", nullptr));
  EXPECT_EQ(store->List("t")->size(), 3u);
}

TEST(StoreDamageTest, AllDamagedIsCorruptionNamingEach) {
  TempDir tmp;
  auto store = ThreeCheckpoints(tmp.path());
  for (int64_t step : {1, 2, 3}) Truncate(store->CheckpointDir("t", step) + "/model.bin");
  auto resume = store->LatestVerified("t", "cafef00d");
  ASSERT_EQ(resume.status().code(), Status::Code::kCorruption);
  for (const char* name : {"t/000000000001", "t/000000000002", "t/000000000003"}) {
    EXPECT_NE(resume.status().message().find(name), std::string::npos);
  }
  EXPECT_EQ(store->LatestVerified("other", "x").status().code(), Status::Code::kNotFound);
}

TEST(StoreTest, ConfigHashMismatchRefusedUnlessForced) {
  TempDir tmp;
  auto store = ThreeCheckpoints(tmp.path());
  auto refused = store->LatestVerified("t", "deadbeef");
  ASSERT_EQ(refused.status().code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("cafef00d"), std::string::npos);
  EXPECT_NE(refused.status().message().find("deadbeef"), std::string::npos);
  auto forced = store->LatestVerified("t", "deadbeef", /*force=*/true);
  ASSERT_OK(forced);
  EXPECT_EQ(forced->entry.step, 3);
  ASSERT_EQ(forced->warnings.size(), 1u);
  EXPECT_NE(forced->warnings[0].find("forced"), std::string::npos);
}

TEST(StoreGcTest, KeepsNewestAndBest) {
  TempDir tmp;
  auto store = OpenStore(tmp.path());
  // map10 peaks at step 3 and step 5.
  const std::map<int64_t, double> score = {{1, 0.1}, {2, 0.2}, {3, 0.9}, {4, 0.3},
                                           {5, 0.8}, {6, 0.4}, {7, 0.5}, {8, 0.6}};
  for (const auto& [step, m] : score) {
    ASSERT_OK(store->Save("t", step, Files(step), Meta(0, {{"map10", m}})));
  }
  GcOptions options;
  options.keep_last = 2;
  options.keep_best = 2;
  options.metric = "map10";
  auto report = store->Gc("t", options);
  ASSERT_OK(report);
  EXPECT_EQ(report->kept, (std::vector<int64_t>{8, 7, 5, 3}));
  EXPECT_EQ(report->newest_verified, 8);
  EXPECT_EQ(Steps(*store->List("t")), (std::vector<int64_t>{8, 7, 5, 3}));
  for (int64_t step : {1, 2, 4, 6}) EXPECT_FALSE(fs::exists(store->CheckpointDir("t", step)));

  // "min" keeps the lowest.
  options.keep_last = 1;
  options.keep_best = 1;
  options.maximize = false;
  EXPECT_EQ(store->Gc("t", options)->kept, (std::vector<int64_t>{8, 7}));
}

TEST(StoreGcTest, NeverDeletesNewestVerified) {
  TempDir tmp;
  auto store = ThreeCheckpoints(tmp.path());
  ASSERT_OK(store->Save("t", 4, Files(4), Meta()));
  Truncate(store->CheckpointDir("t", 4) + "/model.bin");  // newest is damaged
  GcOptions options;
  options.keep_last = 1;
  auto report = store->Gc("t", options);
  ASSERT_OK(report);
  EXPECT_EQ(report->newest_verified, 3);
  EXPECT_EQ(report->kept, (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(report->warnings.size(), 1u);
  options.keep_last = 0;  // even keep nothing keeps the newest verified
  report = store->Gc("t", options);
  ASSERT_OK(report);
  EXPECT_EQ(report->kept, (std::vector<int64_t>{3}));
  EXPECT_EQ(store->LatestVerified("t", "cafef00d")->entry.step, 3);
}

TEST(StoreCrashTest, CrashMidGcLeavesARootTheNextGcCleans) {
  TempDir tmp;
  FaultEnv env;
  auto store = OpenStore(tmp.path(), &env);
  for (int64_t step : {1, 2, 3}) ASSERT_OK(store->Save("t", step, Files(step), Meta()));
  // The crash: step 2's index entry is deleted, then removing its folder fails (step 1 is
  // never reached).
  env.fail_on = "/t/000000000002";
  GcOptions options;
  options.keep_last = 1;
  EXPECT_FALSE(store->Gc("t", options).ok());
  EXPECT_TRUE(fs::exists(store->CheckpointDir("t", 2)));
  // Reopen (as after a restart): the half-deleted checkpoint is invisible...
  env.crashed = false;
  store.reset();
  store = OpenStore(tmp.path(), &env);
  EXPECT_EQ(Steps(*store->List("t")), (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(store->LatestVerified("t", "cafef00d")->entry.step, 3);
  // ...and the next Gc finishes the job.
  auto report = store->Gc("t", options);
  ASSERT_OK(report);
  EXPECT_EQ(report->deleted, (std::vector<int64_t>{1}));
  EXPECT_EQ(report->removed_orphans, std::vector<std::string>{"t/000000000002"});
  EXPECT_EQ(Steps(*store->List("t")), (std::vector<int64_t>{3}));
  EXPECT_EQ(*Env::Default()->ListSubdirs(tmp.path() + "/t"), std::vector<std::string>{"000000000003"});
}

TEST(StoreCrashTest, CrashMidSaveIsInvisibleAndCleaned) {
  TempDir tmp;
  FaultEnv env;
  auto store = OpenStore(tmp.path(), &env);
  ASSERT_OK(store->Save("t", 1, Files(1), Meta()));
  // Crash before the manifest: a folder with files and no manifest.
  env.fail_on = "000000000002/MANIFEST.json";
  EXPECT_FALSE(store->Save("t", 2, Files(2), Meta()).ok());
  EXPECT_TRUE(fs::exists(store->CheckpointDir("t", 2) + "/model.bin"));
  env.crashed = false;
  // Crash after the manifest, before the index commit (the trial folder's fsync fails).
  env.fail_sync_of = tmp.path() + "/t";
  EXPECT_FALSE(store->Save("t", 3, Files(3), Meta()).ok());
  EXPECT_TRUE(fs::exists(store->CheckpointDir("t", 3) + "/MANIFEST.json"));
  env.crashed = false;
  // A stray temporary file of an interrupted write.
  fs::create_directories(store->CheckpointDir("t", 4));
  std::ofstream(store->CheckpointDir("t", 4) + "/model.bin.tmp") << "partial";

  store.reset();
  store = OpenStore(tmp.path(), &env);
  EXPECT_EQ(Steps(*store->List("t")), (std::vector<int64_t>{1}));
  EXPECT_EQ(store->LatestVerified("t", "cafef00d")->entry.step, 1);
  auto report = store->Gc("t", GcOptions{});
  ASSERT_OK(report);
  EXPECT_EQ(report->removed_orphans, (std::vector<std::string>{"t/000000000002", "t/000000000003", "t/000000000004"}));
  EXPECT_EQ(*Env::Default()->ListSubdirs(tmp.path() + "/t"), std::vector<std::string>{"000000000001"});
  // A save of a step whose leftovers were not yet swept replaces them.
  env.fail_on = "000000000005/MANIFEST.json";
  EXPECT_FALSE(store->Save("t", 5, Files(5), Meta()).ok());
  EXPECT_TRUE(fs::exists(store->CheckpointDir("t", 5) + "/model.bin"));
  env.crashed = false;
  auto saved = store->Save("t", 5, Files(5), Meta());
  ASSERT_OK(saved);
  EXPECT_OK(store->Verify(*saved));
}

TEST(StoreTest, ReadOnlyStoreReadsWhileAWriterHoldsTheIndex) {
  TempDir tmp;
  auto writer = ThreeCheckpoints(tmp.path());
  StoreOptions ro;
  ro.read_only = true;
  auto reader = Store::Open(tmp.path(), ro);
  ASSERT_OK(reader);
  auto list = reader.value()->List("t");
  ASSERT_OK(list);
  EXPECT_EQ(list->size(), 3u);
  EXPECT_EQ(reader.value()->Gc("t", GcOptions{}).status().code(), Status::Code::kFailedPrecondition);
  // A second writer on the same trial is refused by RocksDB's lock.
  auto second = OpenStore(tmp.path());
  EXPECT_FALSE(second->Save("t", 9, Files(9), Meta()).ok());
}

TEST(Store, WriterWaitsForAnIndexHeldByAStoppingWriter) {
  TempDir tmp;
  auto first = ThreeCheckpoints(tmp.path());
  // Without a wait the held index is refused, naming the reason.
  StatusOr<std::unique_ptr<Store>> impatient = Store::Open(tmp.path(), StoreOptions{});
  ASSERT_OK(impatient);
  Status refused = (*impatient)->Save("t", 9, Files(9), Meta()).status();
  EXPECT_EQ(refused.code(), Status::Code::kFailedPrecondition) << refused.ToString();
  EXPECT_NE(refused.message().find("held by another process"), std::string::npos);
  impatient->reset();

  // With a wait, a writer that lets go in the meantime hands the index over.
  StoreOptions patient;
  patient.lock_wait_s = 30;
  StatusOr<std::unique_ptr<Store>> second = Store::Open(tmp.path(), patient);
  ASSERT_OK(second);
  std::thread release([&first] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    first.reset();
  });
  StatusOr<Entry> saved = (*second)->Save("t", 9, Files(9), Meta());
  release.join();
  ASSERT_OK(saved);
  auto list = (*second)->List("t");
  ASSERT_OK(list);
  EXPECT_EQ(list->size(), 4u);

  // A writer that never lets go is still refused once the wait is over.
  StoreOptions short_wait;
  short_wait.lock_wait_s = 0.5;
  StatusOr<std::unique_ptr<Store>> third = Store::Open(tmp.path(), short_wait);
  ASSERT_OK(third);
  EXPECT_EQ((*third)->Save("t", 10, Files(10), Meta()).status().code(), Status::Code::kFailedPrecondition);
}

}  // namespace
}  // namespace flap::checkpoint
