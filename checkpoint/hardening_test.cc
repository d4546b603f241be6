// Regression tests of the checkpoint store's hardening (issue 16): a reindex while a worker holds
// the index, retention and gc deleting only step folders and never through a symbolic link, a
// full disk during a save, and the atomic file writes every part uses (unique temporary files:
// no planted link followed, no collision between concurrent writers).
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "checkpoint/store.h"
#include "checkpoint/testing/forwarding_env.h"
#include "common/atomic_file.h"
#include "common/file_util.h"
#include "common/testing/testing.h"
#include "tests/tmpfs.h"

namespace flap::checkpoint {
namespace {
namespace fs = std::filesystem;

using ::flap::testing::TempDir;

testing::RunResult Flapctl(const std::string& args) {
  return testing::RunCommand(std::string(FLAPCTL_PATH) + " " + args);
}

void Write(const std::string& path, const std::string& data) {
  fs::create_directories(fs::path(path).parent_path());
  ASSERT_TRUE(testing::WriteFile(path, data)) << path;
}

std::map<std::string, std::string> Files(int64_t step, size_t model_bytes = 4096) {
  return {{"model.bin", std::string(model_bytes, static_cast<char>('a' + step % 26))},
          {"state.json", "{\"step\": " + std::to_string(step) + "}"}};
}

Metadata Meta() {
  Metadata m;
  m.config_hash = "cafef00d";
  return m;
}

std::unique_ptr<Store> OpenStore(const std::string& root) {
  auto store = Store::Open(root);
  EXPECT_OK(store);
  return std::move(store).value();
}

std::vector<int64_t> Steps(const std::vector<Entry>& entries) {
  std::vector<int64_t> steps;
  for (const Entry& e : entries) steps.push_back(e.step);
  return steps;
}

std::vector<std::string> Names(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// ---- 1. reindex while a worker runs; the orphan sweep of an index nothing verifies ----------

// The worker (this process) holds the trial's index open while `flapctl ckpt reindex` runs:
// the reindex must be refused, leaving the index in place, so that the worker's later commits
// and retention still go to the index that names its checkpoints.
TEST(HardeningCkptReindex, RefusedWhileAWorkerHoldsTheIndex) {
  TempDir tmp;
  auto worker = OpenStore(tmp.path());
  for (int64_t step : {1, 2, 3}) ASSERT_OK(worker->Save("t", step, Files(step), Meta()));

  auto r = Flapctl("ckpt reindex " + tmp.path() + " --trial t");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("locked"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("stop it before rebuilding the index"), std::string::npos) << r.output;
  EXPECT_EQ(Names(tmp / "index"), std::vector<std::string>{"t"});  // nothing moved aside

  // The worker goes on: it saves and applies retention, and every checkpoint it keeps is
  // still indexed and verifies.
  for (int64_t step : {4, 5}) {
    ASSERT_OK(worker->Save("t", step, Files(step), Meta()));
    GcOptions keep2;
    keep2.keep_last = 2;
    ASSERT_OK(worker->Gc("t", keep2));
  }
  EXPECT_EQ(Steps(*worker->List("t")), (std::vector<int64_t>{5, 4}));
  worker.reset();  // the worker ends

  // Once nothing holds the index, the reindex runs and finds the same checkpoints.
  r = Flapctl("ckpt reindex " + tmp.path() + " --trial t");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("indexed 2 checkpoints"), std::string::npos) << r.output;
  r = Flapctl("ckpt gc " + tmp.path() + " --trial t --keep-last 2");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = Flapctl("ckpt verify " + tmp.path() + " --trial t");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("2 checkpoints verified"), std::string::npos) << r.output;
}

// A second Store of the same process (RocksDB's lock is per process, its own table catches
// this) is refused too.
TEST(HardeningCkptReindex, RefusedWhileAnotherStoreOfThisProcessHoldsTheIndex) {
  TempDir tmp;
  auto worker = OpenStore(tmp.path());
  ASSERT_OK(worker->Save("t", 1, Files(1), Meta()));
  auto tool = OpenStore(tmp.path());
  auto n = tool->RebuildIndex("t", nullptr);
  ASSERT_EQ(n.status().code(), Status::Code::kFailedPrecondition) << n.status().ToString();
  EXPECT_EQ(Names(tmp / "index"), std::vector<std::string>{"t"});  // nothing moved aside
  EXPECT_OK(worker->Save("t", 2, Files(2), Meta()));
  EXPECT_EQ(Steps(*worker->List("t")), (std::vector<int64_t>{2, 1}));
}

// The state the unlocked reindex left behind: an index whose entries name folders the old
// worker's retention deleted, and the good checkpoints (written after the reindex) unindexed.
// Gc must not sweep them as garbage.
TEST(HardeningCkptGc, NoSweepOfUnindexedFoldersWhileNoIndexedCheckpointVerifies) {
  TempDir tmp;
  auto store = OpenStore(tmp.path());
  for (int64_t step : {1, 2, 3, 4}) ASSERT_OK(store->Save("t", step, Files(step), Meta()));
  store->CloseIndex("t");
  {
    rocksdb::DB* raw = nullptr;
    ASSERT_OK(rocksdb::DB::Open(rocksdb::Options(), store->IndexDir("t"), &raw));
    std::unique_ptr<rocksdb::DB> db(raw);
    rocksdb::WriteOptions wo;
    wo.sync = true;
    ASSERT_OK(db->Delete(wo, "000000000003"));
    ASSERT_OK(db->Delete(wo, "000000000004"));
  }
  fs::remove_all(store->CheckpointDir("t", 1));
  fs::remove_all(store->CheckpointDir("t", 2));

  GcOptions options;
  options.keep_last = 1;
  auto report = store->Gc("t", options);
  ASSERT_OK(report);
  EXPECT_TRUE(report->removed_orphans.empty());
  EXPECT_EQ(report->newest_verified, -1);
  bool warned = false;
  for (const std::string& w : report->warnings) warned |= w.find("left in place") != std::string::npos;
  EXPECT_TRUE(warned);
  EXPECT_TRUE(fs::exists(store->CheckpointDir("t", 3) + "/MANIFEST.json"));
  EXPECT_TRUE(fs::exists(store->CheckpointDir("t", 4) + "/MANIFEST.json"));

  // Through the CLI as well, and the reindex then recovers both.
  store.reset();
  auto r = Flapctl("ckpt gc " + tmp.path() + " --trial t --keep-last 1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("removed unindexed"), std::string::npos) << r.output;
  store = OpenStore(tmp.path());
  ASSERT_EQ(*store->RebuildIndex("t", nullptr), 2);
  EXPECT_EQ(store->LatestVerified("t", "cafef00d")->entry.step, 4);
}

// ---- 2. only step folders are deleted, never through a symbolic link -------------------------

TEST(HardeningCkptGc, DeletesOnlyStepFoldersUnderTheTrial) {
  TempDir tmp;
  auto store = OpenStore(tmp.path());
  for (int64_t step : {1, 2}) ASSERT_OK(store->Save("t", step, Files(step), Meta()));
  const std::string trial = tmp / "t";
  Write(trial + "/projectA/data.txt", "keep me");
  Write(trial + "/notes/todo.txt", "keep me too");
  Write(trial + "/12345/x", "not 12 digits");
  Write(trial + "/0000000000099/x", "13 digits");
  Write(trial + "/000000000009/model.bin.partial", "an interrupted save");  // an orphan

  GcOptions options;
  options.keep_last = 1;
  auto report = store->Gc("t", options);  // what the worker's retention runs after each save
  ASSERT_OK(report);
  EXPECT_EQ(report->deleted, std::vector<int64_t>{1});
  EXPECT_EQ(report->removed_orphans, std::vector<std::string>{"t/000000000009"});
  EXPECT_EQ(Names(trial), (std::vector<std::string>{"000000000002", "0000000000099", "12345", "notes", "projectA"}));
  EXPECT_EQ(testing::ReadFile(trial + "/projectA/data.txt"), "keep me");

  // A trial without an index (no save ever committed) as well.
  Write(tmp / "u/projectB/data.txt", "keep me");
  Write(tmp / "u/000000000001/model.bin", "half a save");
  report = store->Gc("u", options);
  ASSERT_OK(report);
  EXPECT_EQ(report->removed_orphans, std::vector<std::string>{"u/000000000001"});
  EXPECT_EQ(testing::ReadFile(tmp / "u/projectB/data.txt"), "keep me");

  // And through flapctl.
  store.reset();
  auto r = Flapctl("ckpt gc " + tmp.path() + " --trial t --keep-last 1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(testing::ReadFile(trial + "/notes/todo.txt"), "keep me too");
}

// The reported case: ck/t5 -> ../victim, and `flapctl ckpt gc` removed victim/projectA.
TEST(HardeningCkptGc, RefusesASymlinkedTrialFolder) {
  TempDir tmp;
  const std::string root = tmp / "ck";
  auto store = OpenStore(root);
  Write(tmp / "victim/projectA/data.txt", "precious");
  Write(tmp / "victim/000000000007/data.txt", "precious too");
  fs::create_directory_symlink("../victim", root + "/t5");

  auto r = Flapctl("ckpt gc " + root + " --trial t5 --keep-last 1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("symbolic link"), std::string::npos) << r.output;
  EXPECT_EQ(testing::ReadFile(tmp / "victim/projectA/data.txt"), "precious");
  EXPECT_EQ(testing::ReadFile(tmp / "victim/000000000007/data.txt"), "precious too");

  auto gc = store->Gc("t5", GcOptions{});
  EXPECT_EQ(gc.status().code(), Status::Code::kFailedPrecondition) << gc.status().ToString();
  auto saved = store->Save("t5", 8, Files(8), Meta());
  EXPECT_EQ(saved.status().code(), Status::Code::kFailedPrecondition) << saved.status().ToString();
  auto rebuilt = store->RebuildIndex("t5", nullptr);
  EXPECT_EQ(rebuilt.status().code(), Status::Code::kFailedPrecondition);
  EXPECT_EQ(Names(tmp / "victim"), (std::vector<std::string>{"000000000007", "projectA"}));
  EXPECT_EQ(testing::ReadFile(tmp / "victim/projectA/data.txt"), "precious");
}

// Links inside a trial's folder: one named like a step, and links within an orphan folder.
// Gc removes links, never what they point to.
TEST(HardeningCkptGc, NeverFollowsASymbolicLinkInsideTheTrialFolder) {
  TempDir tmp;
  const std::string root = tmp / "ck";
  auto store = OpenStore(root);
  for (int64_t step : {1, 2}) ASSERT_OK(store->Save("t", step, Files(step), Meta()));
  Write(tmp / "victim1/data.txt", "precious");
  Write(tmp / "victim2/sub/data.txt", "precious");
  Write(tmp / "victim3.txt", "precious");
  fs::create_directory_symlink(tmp / "victim1", root + "/t/000000000005");
  Write(root + "/t/000000000006/model.bin", "orphan");
  fs::create_directory_symlink(tmp / "victim2", root + "/t/000000000006/dir-link");
  fs::create_symlink(tmp / "victim3.txt", root + "/t/000000000006/file-link");
  // An indexed checkpoint whose folder was replaced by a link: deleted by retention.
  fs::remove_all(store->CheckpointDir("t", 1));
  fs::create_directory_symlink(tmp / "victim1", store->CheckpointDir("t", 1));

  GcOptions options;
  options.keep_last = 1;
  auto report = store->Gc("t", options);
  ASSERT_OK(report);
  EXPECT_EQ(report->removed_orphans, std::vector<std::string>{"t/000000000006"});
  EXPECT_FALSE(fs::exists(fs::symlink_status(store->CheckpointDir("t", 1))));
  EXPECT_EQ(testing::ReadFile(tmp / "victim1/data.txt"), "precious");
  EXPECT_EQ(testing::ReadFile(tmp / "victim2/sub/data.txt"), "precious");
  EXPECT_EQ(testing::ReadFile(tmp / "victim3.txt"), "precious");
  EXPECT_TRUE(fs::is_symlink(root + "/t/000000000005"));  // not a step folder: left alone
}

// Issue 32, item 3: the trial folder swapped for a symbolic link after Gc checked it, just
// before its first removal. Removal used to open the whole path (O_NOFOLLOW guards its last
// component only), so it deleted the step folders the link pointed at, outside the root; it
// now walks down from the root's descriptor and refuses the link. Against the code before the
// fix this test failed: outside/000000000001 was deleted.
class SwapTrialAtFirstRemovalEnv : public ForwardingEnv {
 public:
  std::string trial_dir, outside;
  bool armed = false;  // swap at the next RemoveAll
  Status RemoveAll(const std::string& root, const std::string& relative) override {
    if (armed) {
      armed = false;
      fs::rename(trial_dir, trial_dir + ".real");
      fs::create_directory_symlink(outside, trial_dir);
    }
    return ForwardingEnv::RemoveAll(root, relative);
  }
};

TEST(HardeningCkptGc, ATrialFolderSwappedForALinkDuringGcDeletesNothingOutsideTheRoot) {
  TempDir tmp;
  const std::string root = tmp / "ck";
  SwapTrialAtFirstRemovalEnv env;
  env.trial_dir = root + "/t";
  env.outside = tmp / "outside";
  StoreOptions options;
  options.env = &env;
  auto store = Store::Open(root, options);
  ASSERT_OK(store);
  for (int64_t step : {1, 2, 3}) ASSERT_OK((*store)->Save("t", step, Files(step), Meta()));
  for (const char* step : {"000000000001", "000000000002"}) Write(tmp / "outside/" + step + "/data.txt", "precious");

  GcOptions gc;
  gc.keep_last = 1;
  env.armed = true;
  auto report = (*store)->Gc("t", gc);
  EXPECT_FALSE(report.ok()) << "gc removed through the link";
  EXPECT_NE(report.status().message().find("symbolic link"), std::string::npos) << report.status().ToString();
  EXPECT_EQ(Names(tmp / "outside"), (std::vector<std::string>{"000000000001", "000000000002"}));
  for (const char* step : {"000000000001", "000000000002"}) {
    EXPECT_EQ(testing::ReadFile(tmp / "outside/" + step + "/data.txt"), "precious") << step;
  }
  // The real trial folder, moved aside, still holds every step: nothing was removed anywhere.
  EXPECT_EQ(Names(root + "/t.real"), (std::vector<std::string>{"000000000001", "000000000002", "000000000003"}));
}

// The walk itself: a folder of the relative path that is a link refuses the removal; a link
// at the path is removed itself; a path that climbs out of the root is refused.
TEST(HardeningCkptGc, RemovalBelowTheRootNeverGoesThroughALink) {
  TempDir tmp;
  const std::string root = tmp / "ck";
  Write(tmp / "outside/000000000001/data.txt", "precious");
  Write(root + "/t/000000000002/data.txt", "garbage");
  fs::create_directory_symlink(tmp / "outside", root + "/linked");
  fs::create_directory_symlink(tmp / "outside/000000000001", root + "/t/000000000003");
  Env* env = Env::Default();

  Status through = env->RemoveAll(root, "linked/000000000001");
  EXPECT_EQ(through.code(), Status::Code::kFailedPrecondition) << through.ToString();
  EXPECT_NE(through.message().find("symbolic link"), std::string::npos) << through.ToString();
  EXPECT_EQ(env->RemoveAll(root, "../outside/000000000001").code(), Status::Code::kInvalidArgument);
  EXPECT_OK(env->RemoveAll(root, "t/000000000003"));  // the link goes, not its target
  EXPECT_FALSE(fs::exists(fs::symlink_status(root + "/t/000000000003")));
  EXPECT_EQ(testing::ReadFile(tmp / "outside/000000000001/data.txt"), "precious");
  EXPECT_OK(env->RemoveAll(root, "t/000000000002"));
  EXPECT_FALSE(fs::exists(root + "/t/000000000002"));
  EXPECT_OK(env->RemoveAll(root, "missing/000000000001"));  // nothing there: nothing to do
}

// ---- 3. a full disk during a save ------------------------------------------------------------

// A save that runs out of space removes its partial folder, so that the space is free for the
// next one and nothing half-written stays under the root; the previous checkpoint is intact.
TEST(HardeningCkptSave, FullDiskLeavesNoPartialFolder) {
  TempDir tmp;
  flap::testing::TmpfsMount disk(tmp / "disk", 2u << 20);
  if (!disk.mounted()) GTEST_SKIP() << disk.why();
  auto store = OpenStore(disk.path() + "/ck");
  ASSERT_OK(store->Save("t", 1, Files(1, 300 << 10), Meta()));

  // 800 + 1000 KiB do not fit in what is left (about 1.6 MiB): the second file fails.
  std::map<std::string, std::string> big = {{"model.bin", std::string(800 << 10, 'm')},
                                            {"optimizer.bin", std::string(1000 << 10, 'o')},
                                            {"state.json", "{}"}};
  const uint64_t free_before = disk.Free();
  auto failed = store->Save("t", 2, big, Meta());
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), Status::Code::kIOError) << failed.status().ToString();
  EXPECT_NE(failed.status().message().find("No space left"), std::string::npos) << failed.status().ToString();
  EXPECT_NE(failed.status().message().find("partial folder was removed"), std::string::npos)
      << failed.status().ToString();
  EXPECT_FALSE(fs::exists(store->CheckpointDir("t", 2)));
  EXPECT_EQ(Names(disk.path() + "/ck/t"), std::vector<std::string>{"000000000001"});
  EXPECT_GE(disk.Free() + (64u << 10), free_before);  // the space is back
  EXPECT_EQ(store->LatestVerified("t", "cafef00d")->entry.step, 1);

  // The next save fits in the space the failed one gave back.
  auto next = store->Save("t", 3, Files(3, 900 << 10), Meta());
  ASSERT_OK(next);
  EXPECT_EQ(store->LatestVerified("t", "cafef00d")->entry.step, 3);
}

// A trial's first save on a full disk, where making its index fails. Against the code before
// the fix this aborted the process (RocksDB's own info log asserted on its next line after a
// failed write: this test binary died with SIGABRT, as flap-worker did in the chaos soak,
// tests/chaos_soak.cc); with only that mended, the half-made index folder stayed, and every
// later save of the trial failed even with room again ("CURRENT: does not exist"). Now the save
// fails with an I/O error, leaves no index folder, and the next save, once there is room,
// succeeds.
TEST(HardeningCkptSave, AFullDiskWhileATrialsIndexIsMadeLeavesNothingAndTheNextSaveWorks) {
  TempDir tmp;
  flap::testing::TmpfsMount disk(tmp / "disk", 2u << 20);
  if (!disk.mounted()) GTEST_SKIP() << disk.why();
  auto store = OpenStore(disk.path() + "/ck");
  disk.Fill("filler", 16 << 10);
  auto failed = store->Save("t", 1, Files(1, 4 << 10), Meta());
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), Status::Code::kIOError) << failed.status().ToString();
  EXPECT_NE(failed.status().message().find("No space left"), std::string::npos) << failed.status().ToString();
  EXPECT_FALSE(fs::exists(disk.path() + "/ck/index/t"));

  fs::remove(disk.path() + "/filler");
  ASSERT_OK(store->Save("t", 2, Files(2, 4 << 10), Meta()));
  EXPECT_EQ(store->LatestVerified("t", "cafef00d")->entry.step, 2);
}

// ---- 8. atomic writes: unique temporary files --------------------------------------------------

// A link planted at the old fixed temporary name ("<path>.tmp") is neither followed nor left
// at the path.
TEST(HardeningAtomicWrite, DoesNotFollowALinkPlantedAtTheTemporaryName) {
  TempDir tmp;
  Write(tmp / "victim.txt", "precious");
  const std::string path = tmp / "shared/cache.bin";
  fs::create_directories(tmp / "shared");
  fs::create_symlink(tmp / "victim.txt", path + ".tmp");
  ASSERT_OK(WriteFileAtomic(path, "new contents"));
  EXPECT_EQ(testing::ReadFile(tmp / "victim.txt"), "precious");
  EXPECT_FALSE(fs::is_symlink(path));
  EXPECT_EQ(testing::ReadFile(path), "new contents");
  // A link at the path itself is replaced, not written through.
  fs::remove(path);
  fs::create_symlink(tmp / "victim.txt", path);
  ASSERT_OK(flap::WriteFileAtomic(path, "newer"));
  EXPECT_EQ(testing::ReadFile(tmp / "victim.txt"), "precious");
  EXPECT_FALSE(fs::is_symlink(path));
  EXPECT_EQ(testing::ReadFile(path), "newer");
}

// Writers of one path at once (workers filling a shared fbank cache): every write succeeds and
// the file always holds one writer's contents, whole; no temporary file is left.
TEST(HardeningAtomicWrite, ConcurrentWritersOfOnePathNeverMix) {
  TempDir tmp;
  const std::string path = tmp / "cache.bin";
  constexpr int kWriters = 4, kRounds = 40;
  std::vector<std::string> contents;
  for (int w = 0; w < kWriters; ++w) contents.push_back(std::string(256 << 10, static_cast<char>('A' + w)));
  std::atomic<int> failures{0}, torn{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < kRounds; ++i) {
        if (!WriteFileAtomic(path, contents[w]).ok()) ++failures;
        const std::string now = testing::ReadFile(path);
        bool whole = false;
        for (const std::string& c : contents) whole |= now == c;
        if (!whole) ++torn;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(torn.load(), 0);
  EXPECT_EQ(Names(tmp.path()), std::vector<std::string>{"cache.bin"});
}

// AtomicFile: nothing appears before Commit; an abandoned file leaves nothing behind.
TEST(HardeningAtomicWrite, AtomicFileAppearsOnlyOnCommit) {
  TempDir tmp;
  const std::string path = tmp / "out.bin";
  {
    auto f = AtomicFile::Create(path);
    ASSERT_OK(f);
    ASSERT_OK(f.value()->Write("abandoned"));
    EXPECT_EQ(fs::path(f.value()->temp_path()).parent_path(), fs::path(tmp.path()));
    EXPECT_FALSE(fs::exists(path));
  }
  EXPECT_TRUE(fs::is_empty(tmp.path()));
  auto f = AtomicFile::Create(path, 0600);
  ASSERT_OK(f);
  ASSERT_OK(f.value()->Write("committed"));
  ASSERT_OK(f.value()->Commit());
  EXPECT_EQ(testing::ReadFile(path), "committed");
  EXPECT_EQ(fs::status(path).permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
  EXPECT_EQ(Names(tmp.path()), std::vector<std::string>{"out.bin"});
}

}  // namespace
}  // namespace flap::checkpoint
