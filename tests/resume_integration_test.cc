// Exact resume: a training run killed with SIGKILL at random points (during steps and during
// saves) and resumed each time ends with the same parameters, bit for bit, as an uninterrupted
// run; SIGTERM leads to a last checkpoint and exit code 75; a changed config is refused.
//
// The data: 11 training shards (10 of 6 clips, one of 4) read in blocks of 4 shards, in the
// shard order the seed draws anew every epoch (docs/data.md, "Shard order"), so the runs resume
// mid-epoch and mid-block inside permuted blocks that differ from epoch to epoch, with batches
// of 8 that straddle shards and blocks.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "sharding/synth.h"
#include "tests/test_util.h"
#include "tests/tmpfs.h"

namespace flap {
namespace {

using testing::RunCommand;
using testing::TempDir;

class Resume : public ::testing::Test {
 public:
  static const TempDir& Dir() { return *dir_; }

 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("resume");
    const sharding::SynthOptions o = sharding::SmallSynth(64, 16, 1.0, 6, 64);
    ASSERT_OK(sharding::GenerateSynthetic(o, (*dir_) / "data"));
    auto r = RunCommand(Command("ref"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  static void TearDownTestSuite() { delete dir_; }

 public:
  // The training command of run `name` (checkpoints and outputs in their own folders).
  static std::string Command(const std::string& name, const std::string& extra = "", const std::string& ckpt_of = "") {
    return std::string(FLAP_WORKER_BIN) + " train --data.path " + (*dir_) / "data" +
           " --model.target_frames 96 --train.batch_size 8 --train.epochs 4 --train.log_every 8"
           " --mask.ratio 0.5 --loss.recon_weight 0.5 --train.eval_every 16 --ckpt.every 2 --train.trial_id t"
           " --data.shuffle_shards 4"
           " --ckpt.root " +
           (*dir_) / ("ckpt_" + (ckpt_of.empty() ? name : ckpt_of)) + " --train.output_dir " +
           (*dir_) / ("out_" + name) + " " + extra;
  }
  static std::string Model(const std::string& name) {
    return testing::ReadFile((*dir_) / ("out_" + name) + "/model.pt");
  }

  // Starts `command` in the background.
  static testing::ChildProcess Start(const std::string& command) { return testing::ChildProcess::Shell(command); }

 protected:
  static TempDir* dir_;
};
TempDir* Resume::dir_ = nullptr;

// The newest checkpoint step in `dir`/t, 0 when none.
long NewestStep(const std::string& dir) {
  long newest = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/t", ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() == 12 && name.find_first_not_of("0123456789") == std::string::npos) {
      newest = std::max(newest, std::stol(name));
    }
  }
  return newest;
}

// Kill points are set by the run's progress, not by the clock: attempt k waits until the run has
// checkpointed step `4k + 2`, then kills it after a random 0 to 400 ms (during a step or a
// save). A faster LibTorch or machine moves the kills in time, not in number: the run has 32
// steps, so the four kills land before its end however fast it trains. One more kill, at a
// random moment in the first 500 ms, lands in start-up or restore.
TEST_F(Resume, KilledAtRandomPointsAndResumedIsBitIdentical) {
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> delay_ms(0, 400);
  const std::string ckpt = Dir() / "ckpt_killed";
  int kills = 0;
  for (int attempt = 0; attempt < 5; ++attempt) {
    testing::ChildProcess run = Start(Command("killed", "--resume"));
    if (attempt < 4) {
      const long past = 4L * attempt + 2;
      for (int i = 0; i < 1200 && NewestStep(ckpt) < past; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng) + 100));
    }
    const int code = run.Kill(SIGKILL);
    if (code == 0) break;  // it finished before the kill
    EXPECT_EQ(code, 128 + SIGKILL);
    ++kills;
  }
  EXPECT_GE(kills, 4);
  auto r = RunCommand(Command("killed", "--resume"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from checkpoint t/"), std::string::npos) << r.output;
  const std::string ref = Model("ref");
  ASSERT_FALSE(ref.empty());
  EXPECT_TRUE(ref == Model("killed")) << "final parameters differ from the uninterrupted run";
  // Retention kept a bounded number of checkpoints.
  auto list = RunCommand(std::string(FLAPCTL_BIN) + " ckpt verify " + (*dir_) / "ckpt_killed");
  EXPECT_EQ(list.exit_code, 0) << list.output;
}

// Starts run `name`, waits for its first checkpoint, sends `sig`; returns the exit code.
int StopAfterFirstCheckpoint(const std::string& name, int sig, const std::string& extra = "") {
  testing::ChildProcess run = Resume::Start(Resume::Command(name, extra));
  const std::string first = Resume::Dir() / ("ckpt_" + name + "/t/000000000002");
  for (int i = 0; i < 600 && !std::filesystem::exists(first); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(std::filesystem::exists(first));
  run.Signal(sig);
  return run.Wait(600);
}

TEST_F(Resume, SigtermTakesALastCheckpointAndExitsWith75) {
  const int code = StopAfterFirstCheckpoint("term", SIGTERM);
  if (code == 0) GTEST_SKIP() << "training finished before the signal arrived; nothing to check";
  ASSERT_EQ(code, 75);
  auto list = RunCommand(std::string(FLAPCTL_BIN) + " ckpt list " + Dir() / "ckpt_term");
  EXPECT_EQ(list.exit_code, 0) << list.output;
  auto r = RunCommand(Command("term", "--resume"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from checkpoint"), std::string::npos) << r.output;
  EXPECT_TRUE(Model("ref") == Model("term"));
}

TEST_F(Resume, Sigusr1AsFromSbatchSignalStopsTheSameWay) {
  const int code = StopAfterFirstCheckpoint("usr1", SIGUSR1);
  if (code == 0) GTEST_SKIP() << "training finished before the signal arrived; nothing to check";
  ASSERT_EQ(code, 75);
  auto r = RunCommand(Command("usr1", "--resume"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Model("ref") == Model("usr1"));
}

TEST_F(Resume, StopDeadlineExitsAtOnceAndResumeIsStillExact) {
  // A zero deadline: the watchdog exits as soon as the signal lands, mid-step or mid-save.
  const int code = StopAfterFirstCheckpoint("deadline", SIGTERM, "--ckpt.stop_deadline 0");
  if (code == 0) GTEST_SKIP() << "training finished before the signal arrived; nothing to check";
  ASSERT_EQ(code, 75);
  auto r = RunCommand(Command("deadline", "--resume"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Model("ref") == Model("deadline"));
}

TEST_F(Resume, ChangedConfigIsRefusedUnlessForced) {
  auto r = RunCommand(Command("changed", "--resume --optim.lr 0.002", "ref"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("config"), std::string::npos) << r.output;
  r = RunCommand(Command("changed", "--resume --optim.lr 0.002 --force", "ref"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from checkpoint"), std::string::npos) << r.output;
}

// `command` (Resume::Command) with ckpt.every 0: the final save is the run's only one.
std::string OnlyFinalSave(std::string command) {
  const size_t at = command.find("--ckpt.every 2");
  if (at != std::string::npos) command.replace(at, 14, "--ckpt.every 0");
  return command;
}

// The final checkpoint holds the run's model: a save of it that fails (here: the checkpoint root
// is full) is tried again, and once there is room it is saved; a save during training that
// fails is passed over instead (HardeningCheckpointer.SaveThatRunsOutOfSpaceLeavesTrainingGoingOn).
// Found by the chaos soak (tests/chaos_soak.cc): a trial that ended while the checkpoint disk was
// full for a few seconds completed with no checkpoint at its last step. Against the code before
// the fix this test failed: the run exited 0 right after "the save at step 32 FAILED", with no
// checkpoint at step 32.
TEST_F(Resume, AFailedFinalSaveIsTriedAgainAndSavedOnceThereIsRoom) {
  testing::TmpfsMount disk(Dir() / "ckpt_finalroom", 128 << 20);
  if (!disk.mounted()) GTEST_SKIP() << disk.why();
  disk.Fill("filler", 16 << 10);
  const std::string log = Dir() / "finalroom.log";
  testing::ChildProcess::Options o;
  o.log_path = log;
  testing::ChildProcess run = testing::ChildProcess::Shell(OnlyFinalSave(Command("finalroom")), o);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  while (testing::ReadFile(log).find("the save at step 32 FAILED") == std::string::npos &&
         std::chrono::steady_clock::now() < until && run.Wait(0) < 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::filesystem::remove(disk.path() + "/filler");
  ASSERT_EQ(run.Wait(300), 0) << testing::ReadFile(log);
  EXPECT_NE(testing::ReadFile(log).find("the save at step 32 FAILED"), std::string::npos) << testing::ReadFile(log);
  auto verify = RunCommand(std::string(FLAPCTL_BIN) + " ckpt verify " + disk.path());
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  EXPECT_TRUE(std::filesystem::exists(disk.path() + "/t/000000000032/MANIFEST.json")) << testing::ReadFile(log);
  EXPECT_TRUE(Model("ref") == Model("finalroom"));
}

// A final save that keeps failing ends the run with the checkpoint storage fault (the agent's
// node fault: the trial resumes from its previous checkpoint elsewhere), not with success.
// Against the code before the fix the run exited 0 with no checkpoint at step 32.
TEST_F(Resume, AFinalSaveThatKeepsFailingEndsTheRunWithAStorageFault) {
  testing::TmpfsMount disk(Dir() / "ckpt_finalfull", 128 << 20);
  if (!disk.mounted()) GTEST_SKIP() << disk.why();
  disk.Fill("filler", 16 << 10);
  auto r = RunCommand(OnlyFinalSave(Command("finalfull")));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("3 checkpoint saves in a row failed"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(disk.path() + "/t/000000000032")) << r.output;
}

}  // namespace
}  // namespace flap
