// End-to-end sweeps on this machine through `flapctl sweep run`: a real flap-coordinator and
// real worker groups (`flap-worker agent`, tiny FLAP on synthetic data) over 127.0.0.1. The
// tests kill a worker group and the coordinator with SIGKILL mid-sweep, interrupt the whole
// run with SIGINT and resume it, and check through the coordinator's own records that every
// trial completed once, resumed from its checkpoint, with its metric history intact; and they
// export each cell's model that validation selects from a run's folder (`sweep best --dir`,
// `sweep run --export-best`) with the real `flap-worker export`.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "checkpoint/layout.h"
#include "coordinator/client.h"
#include "tests/sweep_checks.h"
#include "tests/test_util.h"
#include "tests/tmpfs.h"

namespace flap::testing {
namespace {

namespace v1 = coordinator::v1;
namespace fs = std::filesystem;

// kTinyTrialConfig: 32 steps per trial on one rank (half as many with a group of two ranks).
constexpr const char* kBaseConfig = kTinyTrialConfig;
constexpr int kStepsPerTrial = kTinyTrialSteps;

class SweepRun : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = new TempDir("sweep-data");
    const RunResult r = RunCommand(std::string(FLAPCTL_BIN) + " data synth --out " + data_->path() +
                                   " --train 128 --val 32 --shard-size 16 --seed 3");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  static void TearDownTestSuite() {
    delete data_;
    data_ = nullptr;
  }
  void TearDown() override {
    // Nothing may be left running, whatever failed; the folder goes once they are gone.
    const std::vector<pid_t> pids = AllPids();
    if (run_ > 0 && kill(run_, 0) == 0) {
      kill(run_, SIGKILL);
      WaitExit(run_, 10);
    }
    for (pid_t pid : pids) kill(pid, SIGKILL);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (pid_t pid : pids) {
      while (kill(pid, 0) == 0 && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  }

  // Writes the sweep file (with the base config beside it) and returns its path.
  std::string WriteSweep(const std::string& name, const std::string& factors) {
    WriteFile(dir_.path() + "/base.ini", kBaseConfig);
    const std::string path = dir_.path() + "/" + name + ".ini";
    WriteFile(path, "[sweep]\nname = " + name + "\nsearch = grid\nseeds = 1\nbase_config = base.ini\n" + factors);
    return path;
  }
  std::string RunDir() const { return dir_.path() + "/run"; }
  // A sweep file's text and its base config's (written by WriteSweep), as submitted.
  struct LocalSweepText {
    std::string text, base_config;
  };
  LocalSweepText ReadLocalSweep(const std::string& path) const {
    return {ReadFile(path), ReadFile(dir_.path() + "/base.ini")};
  }
  std::string Command(const std::string& sweep_file, int groups, int ranks = 1) const {
    return CommandIn(RunDir(), sweep_file, groups, ranks);
  }
  std::string CommandIn(const std::string& run_dir, const std::string& sweep_file, int groups, int ranks) const {
    return std::string(FLAPCTL_BIN) + " sweep run " + sweep_file + " --dir " + run_dir + " --groups " +
           std::to_string(groups) + " --ranks " + std::to_string(ranks) + " --data " + data_->path() +
           " --interval 1 --heartbeat-timeout-ms 4000 --no-plots";
  }
  pid_t Start(const std::string& command, const std::string& log) {
    run_ = Spawn(command, {}, dir_.path() + "/" + log);
    return run_;
  }

  nlohmann::json RunFile() const { return run_folder_.RunFile(); }
  std::vector<pid_t> AllPids() const { return run_folder_.AllPids(); }

  // A client of the coordinator the run started (waits for run.json and the token).
  std::unique_ptr<coordinator::CoordinatorClient> Client(double timeout_s = 60) {
    return run_folder_.Client(timeout_s);
  }

  // The sweep's state and metric history from its journal: a coordinator started afresh on
  // the run's state folder after the run ended.
  using Final = SweepRunFolder::Final;
  Final ReadBack(const std::string& sweep) {
    return run_folder_.ReadBack(FLAP_COORDINATOR_BIN, sweep, dir_.path() + "/readback.log");
  }

  static void ExpectCompleteAndIntact(const Final& f, size_t trials, int64_t steps_per_trial = kStepsPerTrial) {
    flap::testing::ExpectCompleteAndIntact(f.status, f.records, trials, steps_per_trial);
  }

  static TempDir* data_;
  TempDir dir_{"sweep-run"};
  SweepRunFolder run_folder_{RunDir()};
  pid_t run_ = -1;  // the flapctl sweep run started by Start()
};

TempDir* SweepRun::data_ = nullptr;

TEST_F(SweepRun, SmallSweepCompletesWithEveryTrialAndAReport) {
  const std::string sweep =
      WriteSweep("small", "[factor.mask.strategy]\nvalues = 1d, 2d\n[factor.loss.recon_weight]\nvalues = 0, 0.5\n");
  const RunResult r = RunCommand(Command(sweep, 2));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("4 trials (4 completed)"), std::string::npos) << r.output;
  for (pid_t pid : AllPids()) EXPECT_NE(kill(pid, 0), 0) << "process " << pid << " is still running";

  const std::string report = ReadFile(RunDir() + "/report/report.md");
  EXPECT_NE(report.find("mask.strategy"), std::string::npos) << report;
  EXPECT_NE(report.find("loss.recon_weight"), std::string::npos) << report;
  const std::string csv = ReadFile(RunDir() + "/report/trials.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 5) << csv;  // header + 4 trials

  const Final f = ReadBack("small");
  ExpectCompleteAndIntact(f, 4);
  // Both groups ran trials, four in all.
  int finished = 0;
  for (int g = 0; g < 2; ++g) {
    const std::string log = ReadFile(RunDir() + "/logs/group-" + std::to_string(g) + "-rank-0.log");
    int here = 0;
    for (size_t at = log.find("finished at step"); at != std::string::npos; at = log.find("finished at step", at + 1))
      ++here;
    EXPECT_GE(here, 1) << "group " << g << " ran no trial:\n" << log;
    finished += here;
  }
  EXPECT_EQ(finished, 4);
}

// A base config may set keys local to each worker (data.path, data.fbank_cache), as the shipped
// configs/demo.ini does: the coordinator refuses them (issue 32, item 2), so sweep run, whose
// workers are this machine's, gives them to its workers as their own config instead. The sweep
// runs without --data, on the base config's data.path, and the features go to its cache folder.
TEST_F(SweepRun, TheBaseConfigsLocalKeysBecomeTheWorkersOwn) {
  const std::string cache = dir_.path() + "/fbank-cache";
  WriteFile(dir_.path() + "/base.ini",
            std::string(kBaseConfig) + "path = " + data_->path() + "\nfbank_cache = " + cache + "\n");
  const std::string sweep = dir_.path() + "/local.ini";
  WriteFile(sweep, "[sweep]\nname = local\nseeds = 1\nbase_config = base.ini\n[factor.loss.recon_weight]\nvalues = 0\n");
  std::string command = Command(sweep, 1);
  command.replace(command.find(" --data " + data_->path()), 8 + data_->path().size(), "");
  const RunResult r = RunCommand(command);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("1 trials (1 completed)"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(cache) && !fs::is_empty(cache)) << "nothing cached in " << cache;
  ExpectCompleteAndIntact(ReadBack("local"), 1);
}

TEST_F(SweepRun, KilledWorkerGroupsTrialResumesFromItsCheckpointAndCompletes) {
  const std::string sweep = WriteSweep("groupkill", "[factor.loss.recon_weight]\nvalues = 0, 0.5\n");
  const pid_t run = Start(Command(sweep, 2), "run.log");
  auto c = Client();
  ASSERT_TRUE(c);
  // A trial with a checkpoint at step 8 or later, still running: kill its group.
  const v1::SweepStatus st = WaitForSweep(*c, "groupkill", 300, [](const v1::SweepStatus& s) {
    for (const auto& t : s.trials()) {
      if (t.state() == "running" && t.checkpoint_step() >= 8 && t.step() < kStepsPerTrial - 8) return true;
    }
    return false;
  });
  std::string victim_trial, victim_group;
  int64_t ckpt_step = 0;
  for (const auto& t : st.trials()) {
    if (t.state() == "running" && t.checkpoint_step() >= 8) {
      victim_trial = t.trial_id();
      victim_group = t.group_id();
      ckpt_step = t.checkpoint_step();
      break;
    }
  }
  ASSERT_FALSE(victim_trial.empty());
  int killed = 0;
  const nlohmann::json run_file = RunFile();
  for (const auto& g : run_file["groups"]) {
    if (g["group"].get<std::string>() != victim_group) continue;
    for (const auto& p : g["pids"]) {
      const int rc = kill(p.get<pid_t>(), SIGKILL);
      if (rc != 0) ADD_FAILURE() << "kill " << p << ": " << std::strerror(errno);
      killed += rc == 0;
    }
  }
  ASSERT_EQ(killed, 1) << "no rank of group '" << victim_group << "' in " << RunFile().dump();
  const int code = WaitExit(run, 600);
  run_ = -1;
  ASSERT_EQ(code, 0) << ReadFile(dir_.path() + "/run.log");
  EXPECT_NE(ReadFile(dir_.path() + "/run.log").find("restarting the group"), std::string::npos);

  const Final f = ReadBack("groupkill");
  ExpectCompleteAndIntact(f, 2);
  for (const auto& t : f.status.trials()) {
    if (t.trial_id() != victim_trial) continue;
    EXPECT_GE(t.attempt(), 2);
    EXPECT_GE(t.node_faults(), 1);
    EXPECT_EQ(t.trial_errors(), 0);
    // The next attempt resumed from the checkpoint: its first training record comes after it.
    const int64_t first = FirstTrainStepFrom(f.records, victim_trial, t.attempt());
    EXPECT_GT(first, ckpt_step) << "attempt " << t.attempt() << " started over instead of resuming at step "
                                << ckpt_step;
  }
  const std::string logs =
      ReadFile(RunDir() + "/logs/group-0-rank-0.log") + ReadFile(RunDir() + "/logs/group-1-rank-0.log");
  EXPECT_NE(logs.find("resumed from checkpoint"), std::string::npos);
}

TEST_F(SweepRun, KilledCoordinatorIsRestartedAndTheSweepLosesAndDoublesNothing) {
  const std::string sweep =
      WriteSweep("coordkill", "[factor.mask.strategy]\nvalues = 1d, 2d\n[factor.loss.recon_weight]\nvalues = 0, 0.5\n");
  const pid_t run = Start(Command(sweep, 2), "run.log");
  auto c = Client();
  ASSERT_TRUE(c);
  WaitForSweep(*c, "coordkill", 300, [](const v1::SweepStatus& s) {
    int done = 0;
    int64_t steps = 0;
    for (const auto& t : s.trials()) {
      done += t.state() == "completed";
      steps += t.step();
    }
    return done >= 1 && steps >= kStepsPerTrial + 8;
  });
  auto before = c->GetMetrics("coordkill");
  ASSERT_OK(before);
  const pid_t coordinator = RunFile()["coordinator"]["pid"].get<pid_t>();
  ASSERT_EQ(kill(coordinator, SIGKILL), 0);

  const int code = WaitExit(run, 600);
  run_ = -1;
  ASSERT_EQ(code, 0) << ReadFile(dir_.path() + "/run.log");
  EXPECT_NE(ReadFile(dir_.path() + "/run.log").find("restarting it from its journal"), std::string::npos);

  const Final f = ReadBack("coordkill");
  ExpectCompleteAndIntact(f, 4);
  // Every record answered before the kill is still there.
  std::set<std::tuple<std::string, std::string, int64_t>> after;
  for (const auto& r : f.records) after.insert({r.trial_id(), r.kind(), r.step()});
  for (const auto& r : *before) {
    EXPECT_TRUE(after.count({r.trial_id(), r.kind(), r.step()}))
        << r.trial_id() << " lost " << r.kind() << " at " << r.step();
  }
}

// The coordinator's journal disk full for a few seconds: the coordinator exits 74, and the
// restarts that find the disk still full fail at start. sweep run tries again (1, 2, 4 s later)
// until one starts, while the groups keep their records for it, and the sweep ends intact. Found
// by the chaos soak (tests/chaos_soak.cc): against the code before the fix sweep run gave up
// at the first failed restart ("exited with 1 at start"), stopped the groups while no
// coordinator ran, and records still in their memory were lost.
TEST_F(SweepRun, ARestartOnAFullJournalDiskIsTriedAgainUntilTheCoordinatorStarts) {
  TmpfsMount state(RunDir() + "/state", 64u << 20);
  if (!state.mounted()) GTEST_SKIP() << state.why();
  ASSERT_EQ(chmod(state.path().c_str(), 0700), 0);
  const std::string sweep = WriteSweep("journalfull", "[factor.loss.recon_weight]\nvalues = 0, 0.5\n");
  const pid_t run = Start(Command(sweep, 2) + " --max-restarts 20", "run.log");
  auto c = Client();
  ASSERT_TRUE(c);
  WaitForSweep(*c, "journalfull", 300, [](const v1::SweepStatus& s) {
    for (const auto& t : s.trials()) {
      if (t.state() == "running" && t.step() >= 4 && t.step() < kStepsPerTrial - 8) return true;
    }
    return false;
  });
  state.Fill("filler", 0);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (ReadFile(dir_.path() + "/run.log").find("did not start; trying again") == std::string::npos &&
         std::chrono::steady_clock::now() < until && kill(run, 0) == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::this_thread::sleep_for(std::chrono::seconds(3));
  fs::remove(state.path() + "/filler");
  const int code = WaitExit(run, 600);
  run_ = -1;
  const std::string log = ReadFile(dir_.path() + "/run.log");
  ASSERT_EQ(code, 0) << log;
  EXPECT_NE(log.find("did not start; trying again"), std::string::npos) << log;
  // Every trial completed. (Whether every training record survives a journal write that fails
  // is not checked here: in this test a record of the step the coordinator failed on was
  // sometimes missing afterwards, an open fault docs/reliability.md describes.)
  const Final f = ReadBack("journalfull");
  EXPECT_EQ(f.status.state(), "finished");
  ASSERT_EQ(f.status.trials_size(), 2);
  for (const auto& t : f.status.trials()) EXPECT_EQ(t.state(), "completed") << t.trial_id() << ": " << t.last_error();
}

// A two-rank group interrupted mid-epoch: its trial's checkpoint is taken at the stop, and the
// resumed run replays the epoch from there (rank r reads positions r, r + 2, ... of the seed's
// shard order: worker/lease_source.h), so each trial ends with the weights of an uninterrupted
// run of the sweep, byte for byte. With shards leased first come, first served, the two runs
// read other samples in other batches and ended with other weights.
TEST_F(SweepRun, InterruptStopsEverythingAndTheSameCommandResumesWithATwoRankGroup) {
  const std::string sweep = WriteSweep("interrupt", "[factor.loss.recon_weight]\nvalues = 0, 0.5\n");
  // One group of two ranks: both must stop at the same step, and the group hands its trial
  // back once.
  const pid_t run = Start(Command(sweep, 1, 2), "run.log");
  auto c = Client();
  ASSERT_TRUE(c);
  WaitForSweep(*c, "interrupt", 300, [](const v1::SweepStatus& s) {
    for (const auto& t : s.trials()) {
      if (t.checkpoint_step() >= 8 && t.state() == "running") return true;
    }
    return false;
  });
  const std::vector<pid_t> children = AllPids();
  kill(run, SIGINT);
  EXPECT_EQ(WaitExit(run, 120), 128 + SIGINT) << ReadFile(dir_.path() + "/run.log");
  run_ = -1;
  for (pid_t pid : children) EXPECT_NE(kill(pid, 0), 0) << "process " << pid << " outlived the interrupt";

  const RunResult again = RunCommand(Command(sweep, 1, 2));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("resuming sweep interrupt"), std::string::npos) << again.output;
  const Final f = ReadBack("interrupt");
  ExpectCompleteAndIntact(f, 2, kStepsPerTrial / 2);  // two ranks: a global batch of 16
  int preempted = 0;
  for (const auto& t : f.status.trials()) {
    preempted += t.preemptions();
    EXPECT_EQ(t.node_faults() + t.trial_errors(), 0) << t.trial_id() << ": an interrupt is a preemption, not a fault";
  }
  EXPECT_GE(preempted, 1);

  const std::string uninterrupted = dir_.path() + "/uninterrupted";
  const RunResult clean = RunCommand(CommandIn(uninterrupted, sweep, 1, 2));
  ASSERT_EQ(clean.exit_code, 0) << clean.output;
  for (const auto& t : f.status.trials()) {
    const std::string model = "/ckpt/interrupt-" + t.trial_id() + "/" + checkpoint::StepDirName(kStepsPerTrial / 2) +
                              "/model.pt";
    const std::string resumed = ReadFile(RunDir() + model), whole = ReadFile(uninterrupted + model);
    ASSERT_FALSE(whole.empty()) << uninterrupted + model;
    EXPECT_TRUE(resumed == whole) << t.trial_id() << " (" << t.attempt() << " attempt(s), " << t.preemptions()
                                  << " preemption(s)) ends with other weights than an uninterrupted run";
  }
}

// A trial that fixes its global batch moves between group sizes: started by a group of two
// ranks (2 x 8), interrupted, and finished by a group of one (1 x 16) from the two-rank group's
// checkpoint, with the same steps and every record intact; its train records show both world
// sizes at a global batch of 16 (docs/sweeps.md, "Group sizes").
TEST_F(SweepRun, ATrialStartedByTwoRanksIsFinishedByOneWithItsGlobalBatch) {
  const std::string sweep = WriteSweep("resize", "[factor.train.global_batch]\nvalues = 16\n");
  const pid_t run = Start(Command(sweep, 1, 2), "run.log");
  auto c = Client();
  ASSERT_TRUE(c);
  WaitForSweep(*c, "resize", 300, [](const v1::SweepStatus& s) {
    for (const auto& t : s.trials()) {
      if (t.checkpoint_step() >= 4 && t.state() == "running") return true;
    }
    return false;
  });
  kill(run, SIGINT);
  EXPECT_EQ(WaitExit(run, 120), 128 + SIGINT) << ReadFile(dir_.path() + "/run.log");
  run_ = -1;

  const RunResult again = RunCommand(Command(sweep, 1, 1));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  const Final f = ReadBack("resize");
  ExpectCompleteAndIntact(f, 1, kStepsPerTrial / 2);  // a global batch of 16 on any group
  std::set<double> sizes;
  int64_t first_alone = -1;  // the first step one rank logged: past the checkpoint it resumed from
  for (const auto& r : f.records) {
    if (r.kind() != "train") continue;
    ASSERT_TRUE(r.values().count("world_size")) << "train record at step " << r.step();
    sizes.insert(r.values().at("world_size"));
    if (r.values().at("world_size") == 1 && (first_alone < 0 || r.step() < first_alone)) first_alone = r.step();
    EXPECT_EQ(r.values().at("global_batch"), 16) << "train record at step " << r.step();
    EXPECT_EQ(r.values().at("per_rank_batch") * r.values().at("world_size"), 16) << "step " << r.step();
  }
  EXPECT_EQ(sizes, (std::set<double>{1, 2}));
  EXPECT_GT(first_alone, 4) << "the one-rank group started the trial again instead of resuming it";
  EXPECT_GE(f.status.trials(0).preemptions(), 1);
  EXPECT_EQ(f.status.trials(0).node_faults() + f.status.trials(0).trial_errors(), 0);
}

// Issue 32, item 5: `kill -9` of `flapctl sweep run` left the coordinator and the worker
// groups running, and the same command then failed ("flap-coordinator exited with 1 at
// start": the orphaned coordinator held the journal's lock) until they were killed by hand.
// The children now die with the run (a parent-death signal set before exec), and the same
// command resumes the sweep. Against the code before the fix this test failed: every child
// was still alive after 30 s.
TEST_F(SweepRun, KilledRunTakesItsChildrenAlongAndTheSameCommandResumes) {
  const std::string sweep = WriteSweep("runkill", "[factor.loss.recon_weight]\nvalues = 0, 0.5\n");
  const pid_t run = Start(Command(sweep, 1), "run.log");
  auto c = Client();
  ASSERT_TRUE(c);
  WaitForSweep(*c, "runkill", 300, [](const v1::SweepStatus& s) {
    for (const auto& t : s.trials()) {
      if (t.checkpoint_step() >= 4 && t.state() == "running") return true;
    }
    return false;
  });
  const std::vector<pid_t> children = AllPids();
  ASSERT_EQ(children.size(), 2u);
  ASSERT_EQ(kill(run, SIGKILL), 0);
  EXPECT_EQ(WaitExit(run, 30), 128 + SIGKILL);
  run_ = -1;
  const std::vector<pid_t> left = WaitGone(children, 30);
  EXPECT_TRUE(left.empty()) << left.size() << " child process(es) outlived the killed run, e.g. " << left.front();

  const RunResult again = RunCommand(Command(sweep, 1));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("resuming sweep runkill"), std::string::npos) << again.output;
  ExpectCompleteAndIntact(ReadBack("runkill"), 2);
  // The state folder and the journal are private to this user (issue 32, item 7: they were
  // 0755).
  for (const std::string& folder : {RunDir() + "/state", RunDir() + "/state/db"}) {
    EXPECT_EQ(fs::status(folder).permissions() & fs::perms::all, fs::perms::owner_all) << folder;
  }
}

// Cancelling a sweep reaches the running groups through their heartbeats: each stops its
// trial between two steps (no failure reported), and the run ends.
TEST_F(SweepRun, CancelledSweepStopsTheRunningTrialsAndTheRunEnds) {
  const std::string sweep =
      WriteSweep("cancel", "[factor.loss.recon_weight]\nvalues = 0, 0.5\n[factor.mask.strategy]\nvalues = 1d, 2d\n");
  const pid_t run = Start(Command(sweep, 2), "run.log");
  auto c = Client();
  ASSERT_TRUE(c);
  WaitForSweep(*c, "cancel", 300, [](const v1::SweepStatus& s) {
    int running = 0;
    for (const auto& t : s.trials())
      running += t.state() == "running" && t.step() >= 8 && t.step() < kStepsPerTrial - 8;
    return running >= 1;
  });
  auto cancelled = c->CancelSweep("cancel");
  ASSERT_OK(cancelled);
  EXPECT_GE(*cancelled, 1);
  EXPECT_EQ(WaitExit(run, 120), 0) << ReadFile(dir_.path() + "/run.log");
  run_ = -1;
  const Final f = ReadBack("cancel");
  EXPECT_EQ(f.status.state(), "cancelled");
  int stopped_mid_trial = 0;
  for (const auto& t : f.status.trials()) {
    EXPECT_TRUE(t.state() == "cancelled" || t.state() == "completed") << t.trial_id() << " " << t.state();
    EXPECT_EQ(t.preemptions() + t.node_faults() + t.trial_errors(), 0) << t.trial_id();
    stopped_mid_trial += t.state() == "cancelled" && t.step() > 0;
  }
  EXPECT_GE(stopped_mid_trial, 1);
  const std::string logs =
      ReadFile(RunDir() + "/logs/group-0-rank-0.log") + ReadFile(RunDir() + "/logs/group-1-rank-0.log");
  EXPECT_NE(logs.find("stopped at step"), std::string::npos) << logs;
}

// `flapctl sweep best --dir` on a `sweep run` folder, with the real flap-worker: while the run
// runs, its own coordinator is asked; once it has ended, a coordinator started on the run's state
// answers, and each cell's choice is exported to a folder that `flap-worker embed` loads on its
// own, its card naming the cell, trial, step and factors. `sweep run --export-best` exports the
// same choices at the end of the run, and --dir passes the run's data folder to the export. A
// state held by another coordinator is refused, said so. About 25 s.
TEST_F(SweepRun, BestOfARunFolderExportsEachCellsChoiceUsableOnItsOwn) {
  const std::string sweep = WriteSweep("best", "[factor.loss.recon_weight]\nvalues = 0, 0.5\n");
  const std::string at_end = dir_.path() + "/at-end";
  const pid_t run = Start(Command(sweep, 2) + " --export-best " + at_end, "run.log");
  auto c = Client();
  ASSERT_TRUE(c);
  const std::string best = std::string(FLAPCTL_BIN) + " sweep best --dir " + RunDir();
  const RunResult during = RunCommand(best);
  EXPECT_NE(during.output.find("asking the running coordinator of " + RunDir()), std::string::npos) << during.output;
  EXPECT_NE(during.output.find("sweep best ("), std::string::npos) << during.output;
  ASSERT_EQ(WaitExit(run, 300), 0) << ReadFile(dir_.path() + "/run.log");
  run_ = -1;

  const std::string out = dir_.path() + "/models";
  const RunResult r = RunCommand(best + " --export " + out + " -- --data.path " + data_->path());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("asking the running coordinator"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("sweep best (finished)"), std::string::npos) << r.output;
  std::set<std::string> values;
  for (const auto& cell : fs::directory_iterator(out)) {
    const std::string dir = cell.path().string();
    for (const char* file : {"model.safetensors", "config.json", "tokenizer.model", "card.json"}) {
      EXPECT_TRUE(fs::is_regular_file(dir + "/" + file)) << dir << " has no " << file;
    }
    const nlohmann::json card = nlohmann::json::parse(ReadFile(dir + "/card.json"), nullptr, false);
    ASSERT_TRUE(card.is_object() && card.contains("sweep")) << dir << "/card.json: " << ReadFile(dir + "/card.json");
    const nlohmann::json& entry = card["sweep"];
    const std::string value = entry["factors"].value("loss.recon_weight", "");
    values.insert(value);
    EXPECT_EQ(entry["sweep"], "best");
    EXPECT_EQ(entry["cell"], "loss.recon_weight=" + value);
    EXPECT_EQ(cell.path().filename().string().substr(5), "-loss.recon_weight-" + value) << dir;
    const std::string trial = entry.value("trial", "");
    EXPECT_FALSE(trial.empty()) << card.dump(2);
    EXPECT_EQ(card["model"]["trial_id"], "best-" + trial) << card.dump(2);
    const int64_t step = entry.value("selected_step", int64_t{-1});
    EXPECT_GT(step, 0) << card.dump(2);
    EXPECT_EQ(step % 8, 0) << "validation chose step " << step << ", evaluated every 8 steps";
    EXPECT_EQ(card["training"].value("step", int64_t{-2}), step) << "the export is not the selected checkpoint";
    EXPECT_NE(r.output.find("step " + std::to_string(step) + ") to " + dir), std::string::npos) << r.output;
    // The export stands on its own.
    const RunResult e = RunCommand(std::string(FLAP_WORKER_BIN) + " embed --model " + dir +
                                   " --text \"a low hum\" --out " + dir_.path() + "/embedding");
    EXPECT_EQ(e.exit_code, 0) << e.output;
    EXPECT_GT(fs::file_size(dir_.path() + "/embedding.npy"), 0u);
    fs::remove(dir_.path() + "/embedding.npy");
    // --export-best at the end of the run chose the same.
    const std::string same = at_end + "/" + cell.path().filename().string() + "/card.json";
    EXPECT_EQ(nlohmann::json::parse(ReadFile(same), nullptr, false)["sweep"], entry) << same;
  }
  EXPECT_EQ(values, (std::set<std::string>{"0", "0.5"}));

  // Without -- --data.path: the run's data folder.
  const RunResult one = RunCommand(best + " --cell 1 --export " + dir_.path() + "/one");
  ASSERT_EQ(one.exit_code, 0) << one.output;
  int exported = 0;
  for (const auto& cell : fs::directory_iterator(dir_.path() + "/one")) {
    ++exported;
    EXPECT_EQ(cell.path().filename().string().substr(0, 6), "cell1-");
    const nlohmann::json card = nlohmann::json::parse(ReadFile(cell.path().string() + "/card.json"), nullptr, false);
    EXPECT_EQ(card["data"]["path"], fs::path(data_->path()).lexically_normal().string()) << card.dump(2);
  }
  EXPECT_EQ(exported, 1);

  // A state another coordinator holds.
  const int port = FreePort();
  ChildProcess other = ChildProcess::Shell(std::string(FLAP_COORDINATOR_BIN) + " --state-dir " + RunDir() +
                                           "/state --listen 127.0.0.1:" + std::to_string(port));
  std::string error;
  std::unique_ptr<coordinator::CoordinatorClient> held;
  for (int i = 0; i < 100 && !(held && held->ListSweeps().ok()); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    held = ConnectCoordinator("127.0.0.1:" + std::to_string(port), RunDir() + "/state/token", &error);
  }
  ASSERT_TRUE(held && held->ListSweeps().ok()) << error;
  const RunResult refused = RunCommand(best);
  EXPECT_EQ(refused.exit_code, 1) << refused.output;
  EXPECT_NE(refused.output.find(RunDir() + " is in use by another process"),
            std::string::npos)
      << refused.output;
}

// A worker group started before any sweep is submitted waits for one (it is not "all done"),
// runs it once it arrives, and exits 0 when it is finished.
TEST_F(SweepRun, AnAgentStartedBeforeTheFirstSweepWaitsForIt) {
  const int port = FreePort();
  const std::string state = dir_.path() + "/state";
  const pid_t coordinator = Spawn(std::string(FLAP_COORDINATOR_BIN) + " --state-dir " + state +
                                      " --listen 127.0.0.1:" + std::to_string(port) + " --heartbeat-interval-ms 200",
                                  {}, dir_.path() + "/coordinator.log");
  std::string error;
  std::unique_ptr<coordinator::CoordinatorClient> c;
  for (int i = 0; i < 100 && !c; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    c = ConnectCoordinator("127.0.0.1:" + std::to_string(port), state + "/token", &error);
  }
  ASSERT_TRUE(c) << error;
  const pid_t agent =
      Spawn(std::string(FLAP_WORKER_BIN) + " agent --coordinator 127.0.0.1:" + std::to_string(port) + " --token-file " +
                state + "/token --group early --data.path " + data_->path() + " --ckpt.root " + dir_.path() + "/ckpt",
            {}, dir_.path() + "/agent.log");
  std::this_thread::sleep_for(std::chrono::seconds(3));
  int status = 0;
  ASSERT_EQ(waitpid(agent, &status, WNOHANG), 0) << "the agent left before any sweep was submitted:\n"
                                                 << ReadFile(dir_.path() + "/agent.log");
  const LocalSweepText files = ReadLocalSweep(WriteSweep("late", "[factor.loss.recon_weight]\nvalues = 0\n"));
  ASSERT_OK(c->SubmitSweep(files.text, "late.ini", files.base_config));
  EXPECT_EQ(WaitExit(agent, 300), 0) << ReadFile(dir_.path() + "/agent.log");
  auto st = c->GetSweep("late");
  ASSERT_OK(st);
  EXPECT_EQ(st->state(), "finished");
  ASSERT_EQ(st->trials_size(), 1);
  EXPECT_EQ(st->trials(0).state(), "completed");
  kill(coordinator, SIGTERM);
  EXPECT_EQ(WaitExit(coordinator, 30), 0);
}

// The caption-augmentation ablation end to end: augmented captions made by `flapctl data
// augment` (offline templates), a sweep over text.augment off / on / 0.5 with two seeds, and
// the report's main effect of the factor.
TEST_F(SweepRun, CaptionAugmentationAblationRunsAndTheReportShowsItsEffect) {
  TempDir data("augment-data");
  RunResult r = RunCommand(std::string(FLAPCTL_BIN) + " data synth --out " + data.path() +
                           " --train 128 --val 32 --shard-size 16 --seed 5");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = RunCommand(std::string(FLAPCTL_BIN) + " data augment --data " + data.path());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  WriteFile(dir_.path() + "/base.ini", kBaseConfig);
  const std::string sweep = dir_.path() + "/augment.ini";
  WriteFile(sweep,
            "[sweep]\nname = augment\nsearch = grid\nseeds = 1, 2\nbase_config = base.ini\n"
            "[factor.text.augment]\nvalues = off, on, 0.5\n");
  std::string command = Command(sweep, 2);
  command.replace(command.find(data_->path()), data_->path().size(), data.path());
  r = RunCommand(command);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("6 trials (6 completed)"), std::string::npos) << r.output;

  // The report: a main-effect row per level, each over its two seeds, with a confidence
  // interval around its mean.
  const std::string effects = ReadFile(RunDir() + "/report/effects.csv");
  std::map<std::string, std::vector<std::string>> rows;
  std::istringstream lines(effects);
  for (std::string line; std::getline(lines, line);) {
    std::vector<std::string> cells;
    std::istringstream fields(line);
    for (std::string cell; std::getline(fields, cell, ',');) cells.push_back(cell);
    if (cells.size() == 7 && cells[0] == "text.augment") rows[cells[1]] = cells;
  }
  ASSERT_EQ(rows.size(), 3u) << effects;
  for (const char* level : {"off", "on", "0.5"}) {
    ASSERT_TRUE(rows.count(level)) << effects;
    const auto& c = rows[level];
    EXPECT_EQ(c[2], "2") << effects;
    EXPECT_LE(std::stod(c[4]), std::stod(c[3]));
    EXPECT_GE(std::stod(c[5]), std::stod(c[3]));
  }
  const std::string report = ReadFile(RunDir() + "/report/report.md");
  EXPECT_NE(report.find("| text.augment | on |"), std::string::npos) << report;

  // The factor reached training: the same seed trained on other captions ends elsewhere.
  const Final f = ReadBack("augment");
  ASSERT_EQ(f.status.trials_size(), 6);
  std::map<std::pair<std::string, uint64_t>, double> loss;
  for (const auto& t : f.status.trials()) {
    EXPECT_EQ(t.state(), "completed") << t.trial_id() << ": " << t.last_error();
    loss[{t.factors().at("text.augment"), t.seed()}] = t.latest_train().at("loss");
  }
  for (uint64_t seed : {1u, 2u}) {
    const double off = loss[std::make_pair(std::string("off"), seed)];
    EXPECT_NE(off, (loss[std::make_pair(std::string("on"), seed)])) << "seed " << seed;
    EXPECT_NE(off, (loss[std::make_pair(std::string("0.5"), seed)])) << "seed " << seed;
  }
  const std::string log = ReadFile(RunDir() + "/logs/group-0-rank-0.log");
  EXPECT_NE(log.find("augmented captions for"), std::string::npos) << log;
}

}  // namespace
}  // namespace flap::testing
