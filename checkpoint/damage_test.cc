// Regression tests of issue 32, item 1 (and item 8's checkpoint part): a damaged newest
// checkpoint must not end a trial. Resume passes a damaged checkpoint over; the next save of its
// step then replaced nothing and failed with "checkpoint t/000000000003 already exists" on
// every rerun, whether a file was altered, the step folder deleted by hand or the index entry
// malformed. A save now moves the damaged folder aside (<step>.damaged-<unix seconds>, kept for
// inspection) and replaces the entry. And checkpoint files or folders that are symbolic links
// out of the root verified and were loaded through the link; they are now refused.
//
// Run against the code before the fix (d6a2f28): every test here failed except
// AVerifiedCheckpointIsNeverReplaced ("already exists" for each replacement, the links
// verified and loaded).
#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "checkpoint/testing/forwarding_env.h"
#include "checkpoint/store.h"
#include "common/testing/testing.h"

namespace flap::checkpoint {
namespace {
namespace fs = std::filesystem;

using ::flap::testing::TempDir;

std::map<std::string, std::string> Files(int64_t step, char fill = 'a') {
  return {{"model.bin", std::string(4096, static_cast<char>(fill + step % 20))},
          {"state.json", "{\"step\": " + std::to_string(step) + "}"}};
}

Metadata Meta() {
  Metadata m;
  m.config_hash = "cafef00d";
  return m;
}

std::unique_ptr<Store> ThreeCheckpoints(const std::string& root, Env* env = nullptr) {
  StoreOptions options;
  options.env = env;
  auto store = Store::Open(root, options);
  EXPECT_OK(store);
  for (int64_t step : {1, 2, 3}) EXPECT_OK((*store)->Save("t", step, Files(step), Meta()));
  return std::move(store).value();
}

void FlipByte(const std::string& path, size_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(c ^ 0x5a));
}

// The folders under the trial's folder holding a checkpoint of `step` moved aside.
std::vector<std::string> Quarantined(const Store& store, int64_t step) {
  const fs::path dir = store.CheckpointDir("t", step);
  const std::string prefix = dir.filename().string() + kQuarantineInfix;
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir.parent_path())) {
    if (e.path().filename().string().rfind(prefix, 0) == 0) out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Resume falls back to step 2, then the save of step 3 (training reaching it again) succeeds and
// resume takes the new step 3.
void ExpectStep3Replaced(Store* store) {
  auto before = store->LatestVerified("t", "cafef00d");
  ASSERT_OK(before);
  EXPECT_EQ(before->entry.step, 2);
  ASSERT_OK(store->Save("t", 3, Files(3, 'A'), Meta()));
  auto after = store->LatestVerified("t", "cafef00d");
  ASSERT_OK(after);
  EXPECT_EQ(after->entry.step, 3);
  EXPECT_TRUE(after->warnings.empty()) << after->warnings.front();
  auto loaded = store->Load(after->entry);
  ASSERT_OK(loaded);
  EXPECT_EQ(loaded->at("model.bin"), Files(3, 'A').at("model.bin"));
  std::vector<std::string> problems;
  EXPECT_OK(store->List("t", &problems));
  EXPECT_TRUE(problems.empty());
}

TEST(HardeningCkptDamage, ASaveReplacesADamagedNewestCheckpointAndKeepsItAside) {
  TempDir tmp;
  auto store = ThreeCheckpoints(tmp.path());
  FlipByte(store->CheckpointDir("t", 3) + "/model.bin", 100);
  const std::string damaged = testing::ReadFile(store->CheckpointDir("t", 3) + "/model.bin");
  ExpectStep3Replaced(store.get());
  // The damaged checkpoint is kept whole for inspection, next to the new one, and retention
  // leaves it alone (it is no step folder).
  auto aside = Quarantined(*store, 3);
  ASSERT_EQ(aside.size(), 1u);
  EXPECT_EQ(testing::ReadFile(aside[0] + "/model.bin"), damaged);
  EXPECT_TRUE(fs::exists(aside[0] + "/MANIFEST.json"));
  GcOptions gc;
  gc.keep_last = 1;
  ASSERT_OK(store->Gc("t", gc));
  EXPECT_TRUE(fs::exists(aside[0] + "/model.bin"));
  // Nor does a rebuilt index take it for a checkpoint.
  store->CloseIndex("t");
  std::vector<std::string> problems;
  EXPECT_EQ(*store->RebuildIndex("t", &problems), 1);
  EXPECT_TRUE(problems.empty()) << problems.front();
}

TEST(HardeningCkptDamage, ASaveReplacesAStepFolderDeletedByHand) {
  TempDir tmp;
  auto store = ThreeCheckpoints(tmp.path());
  fs::remove_all(store->CheckpointDir("t", 3));
  ExpectStep3Replaced(store.get());
  EXPECT_TRUE(Quarantined(*store, 3).empty());  // nothing was left to move aside
}

TEST(HardeningCkptDamage, ASaveReplacesAMalformedIndexEntry) {
  TempDir tmp;
  auto store = ThreeCheckpoints(tmp.path());
  store->CloseIndex("t");
  {
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), store->IndexDir("t"), &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), "000000000003", "{not json").ok());
  }
  ExpectStep3Replaced(store.get());
  // The folder the malformed entry stood for is intact: moved aside, not deleted.
  auto aside = Quarantined(*store, 3);
  ASSERT_EQ(aside.size(), 1u);
  EXPECT_EQ(testing::ReadFile(aside[0] + "/model.bin"), Files(3).at("model.bin"));
}

TEST(HardeningCkptDamage, DamagedTwiceKeepsBothAside) {
  TempDir tmp;
  auto store = ThreeCheckpoints(tmp.path());
  for (int i = 0; i < 2; ++i) {
    FlipByte(store->CheckpointDir("t", 3) + "/model.bin", 10 + i);
    ASSERT_OK(store->Save("t", 3, Files(3, static_cast<char>('A' + i)), Meta()));
  }
  EXPECT_EQ(Quarantined(*store, 3).size(), 2u);
  EXPECT_EQ(store->LatestVerified("t", "cafef00d")->entry.step, 3);
}

TEST(HardeningCkptDamage, AVerifiedCheckpointIsNeverReplaced) {
  TempDir tmp;
  auto store = ThreeCheckpoints(tmp.path());
  auto again = store->Save("t", 3, Files(3, 'A'), Meta());
  ASSERT_EQ(again.status().code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(again.status().message().find("t/000000000003 already exists"), std::string::npos);
  EXPECT_EQ(testing::ReadFile(store->CheckpointDir("t", 3) + "/model.bin"), Files(3).at("model.bin"));
  EXPECT_TRUE(Quarantined(*store, 3).empty());
}

// A failure after the damaged folder was moved aside and before the commit: the old entry
// stays, still damaged, so resume still takes step 2, and the next save of step 3 succeeds.
class FailingWritesEnv : public ForwardingEnv {
 public:
  std::string fail_on;  // WriteFileAtomic of a path containing this fails once
  Status WriteFileAtomic(const std::string& path, const std::string& contents) override {
    if (!fail_on.empty() && path.find(fail_on) != std::string::npos) {
      fail_on.clear();
      return Status::IOError("injected fault: " + path);
    }
    return ForwardingEnv::WriteFileAtomic(path, contents);
  }
};

TEST(HardeningCkptDamage, AReplacementThatFailsBeforeItsCommitChangesNothingVisible) {
  TempDir tmp;
  FailingWritesEnv env;
  auto store = ThreeCheckpoints(tmp.path(), &env);
  FlipByte(store->CheckpointDir("t", 3) + "/model.bin", 100);
  env.fail_on = "MANIFEST.json";
  auto failed = store->Save("t", 3, Files(3, 'A'), Meta());
  ASSERT_EQ(failed.status().code(), Status::Code::kIOError) << failed.status().ToString();
  EXPECT_EQ(Quarantined(*store, 3).size(), 1u);
  ExpectStep3Replaced(store.get());
}

// ---- item 8: checkpoint files and folders that are symbolic links out of the root ----------

TEST(HardeningCkptDamage, AFileThatIsASymbolicLinkOutOfTheRootIsRefused) {
  TempDir tmp;
  auto store = ThreeCheckpoints(tmp.path() + "/root");
  // The link points at a file with the right bytes: only the link itself is wrong.
  const std::string file = store->CheckpointDir("t", 3) + "/model.bin";
  fs::rename(file, tmp.path() + "/outside.bin");
  fs::create_symlink(tmp.path() + "/outside.bin", file);
  auto entries = store->List("t");
  ASSERT_OK(entries);
  const Entry& newest = entries->front();
  ASSERT_EQ(newest.step, 3);
  Status verified = store->Verify(newest);
  EXPECT_EQ(verified.code(), Status::Code::kCorruption);
  EXPECT_NE(verified.message().find("model.bin"), std::string::npos) << verified.message();
  EXPECT_NE(verified.message().find("symbolic link"), std::string::npos) << verified.message();
  EXPECT_EQ(store->Load(newest).status().code(), Status::Code::kCorruption);
  ExpectStep3Replaced(store.get());
  // The link was moved aside with its folder, not followed: the file it named is untouched.
  EXPECT_EQ(testing::ReadFile(tmp.path() + "/outside.bin"), Files(3).at("model.bin"));
}

TEST(HardeningCkptDamage, AStepFolderThatIsASymbolicLinkOutOfTheRootIsRefused) {
  TempDir tmp;
  auto store = ThreeCheckpoints(tmp.path() + "/root");
  const std::string dir = store->CheckpointDir("t", 3);
  fs::rename(dir, tmp.path() + "/outside");
  fs::create_directory_symlink(tmp.path() + "/outside", dir);
  auto entries = store->List("t");
  ASSERT_OK(entries);
  Status verified = store->Verify(entries->front());
  EXPECT_EQ(verified.code(), Status::Code::kCorruption);
  EXPECT_NE(verified.message().find("symbolic link"), std::string::npos) << verified.message();
  EXPECT_EQ(store->Load(entries->front()).status().code(), Status::Code::kCorruption);
  ExpectStep3Replaced(store.get());
  EXPECT_EQ(testing::ReadFile(tmp.path() + "/outside/model.bin"), Files(3).at("model.bin"));
}

}  // namespace
}  // namespace flap::checkpoint
