// The chaos soak: a seeded, bounded run of a real sweep on this machine (`flapctl sweep run`:
// a real flap-coordinator on its RocksDB journal, real worker groups of one or two ranks,
// checkpoints on disk) into which faults drawn from the seed are injected:
//   kill-coordinator   kill -9 of the coordinator (sweep run restarts it from its journal);
//   kill-group         kill -9 of a rank of a group running a trial (sweep run restarts the group);
//   flip-byte          one byte of a file of a trial's checkpoint flipped; half of the time in the
//                      trial's newest checkpoint, and its group is then killed, so that the resume
//                      must pass it over and go back to an older one;
//   journal-full       the coordinator's state folder (a tmpfs) filled for 2-6 s, then freed;
//   checkpoints-full   the checkpoint root (a tmpfs) filled for 2-5 s, then freed;
//   stall-rank         SIGSTOP of a rank of a running group, either for 3 s longer than the other
//                      rank's dist.timeout (10 s; a group of one rank: than the heartbeat timeout,
//                      4 s), so that the group fails and is restarted, or for 1-6 s; then SIGCONT.
// The kinds come in rounds (each round every kind once, in an order drawn from the seed), after
// gaps of 2-6 s, during the first --duration seconds of the run; then the run must end on its
// own. A fault that can cost a trial a node fault is aimed only at trials with at least two of
// the coordinator's three node-fault retries left, so a trial may fail only through a fault of
// the software, not by exhausting its budget. If `flapctl sweep run` itself gives up, it is run
// again as an operator would (the same command resumes).
//
// At the end, from the journal read back: every trial completed, no record the coordinator
// answered with during the run is lost, none is doubled, each trial's history is whole
// (AuditRecords), and each trial's final checkpoint verifies. Each trial's final weights are
// compared, byte for byte, with those of a fault-free run of the same sweep made first in the
// same process, and must be equal: rank r of a group reads positions r, r + W, ... of the
// seed's shard order, so a trial's weights are a pure function of its seed and group size, and a
// trial resumed from a checkpoint replays its epoch from there (worker/lease_source.h).
// The figures are printed: faults by kind, survived, records lost and doubled, trials
// completed, final weights equal, the seed to replay and the wall time.
//
// Usage: flap_chaos_soak [--seed N] [--duration S] [--trials N] [--groups N] [--ranks 1|2]
// [gtest flags].
// The suite runs a short version (tests/CMakeLists.txt); docs/reliability.md quotes a full one.
// Needs root for the tmpfs mounts (skipped, saying why, without).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/layout.h"
#include "tests/sweep_checks.h"
#include "tests/test_util.h"
#include "tests/tmpfs.h"

namespace flap::testing {
namespace {

namespace fs = std::filesystem;
namespace v1 = coordinator::v1;
using Clock = std::chrono::steady_clock;

struct SoakOptions {
  uint64_t seed = 1;
  double duration = 60;  // seconds of fault injection in the chaos run
  int trials = 2;
  int groups = 2;
  int ranks = 2;  // per group: 2 lets a stalled rank hold up the other's collectives
};
SoakOptions g_options;

constexpr double kDistTimeout = 10;       // dist.timeout of every rank
constexpr double kHeartbeatTimeout = 4;   // sweep run's --heartbeat-timeout-ms, in seconds
constexpr int kNodeFaultBudget = 3;       // flap-coordinator's --retries.node_fault default
constexpr double kProgressTimeout = 150;  // after a fault, the sweep moves on within this
constexpr const char* kSweep = "chaos";

enum Fault { kKillCoordinator, kKillGroup, kFlipByte, kJournalFull, kCheckpointsFull, kStallRank, kFaultKinds };
const char* FaultName(int f) {
  static const std::array<const char*, kFaultKinds> names = {
      "kill-coordinator", "kill-group", "flip-byte", "journal-full", "checkpoints-full", "stall-rank"};
  return names[static_cast<size_t>(f)];
}

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Regular files under `dir` (recursively) and the sum of their sizes.
uint64_t BytesUnder(const std::string& dir) {
  uint64_t bytes = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->is_regular_file(ec)) bytes += it->file_size(ec);
  }
  return bytes;
}

// The checkpoint steps of `trial` under the root `ckpt` (folders named by the store's layout).
std::vector<int64_t> CheckpointSteps(const std::string& ckpt, const std::string& trial) {
  std::vector<int64_t> steps;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(ckpt + "/" + std::string(kSweep) + "-" + trial, ec)) {
    int64_t step = 0;
    if (checkpoint::ParseStepDirName(e.path().filename().string(), &step)) steps.push_back(step);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}
std::string CheckpointDir(const std::string& ckpt, const std::string& trial, int64_t step) {
  return ckpt + "/" + kSweep + "-" + trial + "/" + checkpoint::StepDirName(step);
}

class ChaosSoak : public ::testing::Test {
 protected:
  void TearDown() override {
    // Nothing may be left running or stopped, whatever failed.
    run_process_ = ChildProcess();
    for (const std::string& dir : {ref_dir_, chaos_dir_}) {
      if (dir.empty()) continue;
      std::vector<pid_t> pids = SweepRunFolder(dir).AllPids();
      for (pid_t pid : pids) {
        if (ProcessAlive(pid)) kill(pid, SIGKILL);
      }
      WaitGone(pids, 10);
    }
    // A failed soak keeps its logs (the work folder goes with the fixture).
    if (HasFailure()) {
      const std::string keep = fs::temp_directory_path().string() + "/flap-chaos-soak-" +
                               std::to_string(g_options.seed) + "-" + std::to_string(getpid());
      std::error_code ec;
      fs::create_directories(keep, ec);
      fs::copy(work_.path() + "/chaos-run.log", keep, ec);
      for (const std::string& dir : {ref_dir_, chaos_dir_}) {
        if (!dir.empty()) fs::copy(dir + "/logs", keep + "/" + fs::path(dir).filename().string() + "-logs",
                                   fs::copy_options::recursive, ec);
      }
      std::cout << "the logs of the failed soak are in " << keep << std::endl;
    }
  }

  std::string Command(const std::string& dir) const {
    return std::string(FLAPCTL_BIN) + " sweep run " + work_.path() + "/sweep.ini --dir " + dir + " --groups " +
           std::to_string(g_options.groups) + " --ranks " + std::to_string(g_options.ranks) + " --data " +
           work_.path() + "/data --interval 1 --heartbeat-timeout-ms " +
           std::to_string(static_cast<int>(kHeartbeatTimeout * 1000)) + " --no-plots --max-restarts 1000 --stop-grace 20" +
           " --worker-arg dist.timeout=" + std::to_string(static_cast<int>(kDistTimeout));
  }

  // Starts `flapctl sweep run` on the chaos folder; it dies with this process.
  void StartRun() {
    ChildProcess::Options o;
    o.env = {"TMPDIR=" + work_.path() + "/tmp"};
    o.in_child = [] { prctl(PR_SET_PDEATHSIG, SIGKILL); };
    run_process_ = ChildProcess::Shell(Command(chaos_dir_) + " >> " + work_.path() + "/chaos-run.log 2>&1", o);
    ASSERT_TRUE(run_process_.running());
  }

  TempDir work_{"chaos-soak"};
  std::string ref_dir_, chaos_dir_;
  ChildProcess run_process_;
};

TEST_F(ChaosSoak, SeededFaultsLoseNothingAndEndBitIdentical) {
  const SoakOptions& opt = g_options;
  const int64_t kSteps = kTinyTrialSteps / opt.ranks;  // the global batch grows with the ranks
  const auto soak_start = Clock::now();
  std::mt19937_64 rng(opt.seed);
  auto uniform = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  auto pick = [&](size_t n) { return static_cast<size_t>(std::uniform_int_distribution<size_t>(0, n - 1)(rng)); };

  // The data and the sweep: `trials` replicate seeds of one configuration.
  RunResult r = RunCommand(std::string(FLAPCTL_BIN) + " data synth --out " + work_.path() +
                           "/data --train 128 --val 32 --shard-size 16 --seed 3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string seeds;
  for (int s = 1; s <= opt.trials; ++s) seeds += (s > 1 ? ", " : "") + std::to_string(s);
  ASSERT_TRUE(WriteFile(work_.path() + "/base.ini", kTinyTrialConfig));
  ASSERT_TRUE(WriteFile(work_.path() + "/sweep.ini", std::string("[sweep]\nname = ") + kSweep +
                                                          "\nsearch = grid\nseeds = " + seeds +
                                                          "\nbase_config = base.ini\n[factor.loss.recon_weight]\n"
                                                          "values = 0.5\n"));
  fs::create_directories(work_.path() + "/tmp");

  // The fault-free run.
  ref_dir_ = work_.path() + "/ref";
  const auto ref_start = Clock::now();
  r = RunCommand(Command(ref_dir_) + " 2>&1");
  const double ref_s = Since(ref_start);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const SweepRunFolder ref(ref_dir_);
  const SweepRunFolder::Final ref_final = ref.ReadBack(FLAP_COORDINATOR_BIN, kSweep, work_.path() + "/readback.log");
  ASSERT_EQ(ref_final.status.trials_size(), opt.trials) << r.output;
  std::map<std::string, std::string> ref_models;
  for (const auto& t : ref_final.status.trials()) {
    ref_models[t.trial_id()] = ReadFile(CheckpointDir(ref_dir_ + "/ckpt", t.trial_id(), kSteps) + "/model.pt");
    ASSERT_FALSE(ref_models[t.trial_id()].empty()) << "the fault-free run left no final model for " << t.trial_id();
  }
  const uint64_t ref_ckpt_bytes = BytesUnder(ref_dir_ + "/ckpt");

  // The chaos run: its journal and its checkpoints on file systems that can be filled.
  chaos_dir_ = work_.path() + "/chaos";
  TmpfsMount state(chaos_dir_ + "/state", 64ull << 20);
  if (!state.mounted()) GTEST_SKIP() << state.why();
  ASSERT_EQ(chmod(state.path().c_str(), 0700), 0) << std::strerror(errno);
  TmpfsMount ckpt(chaos_dir_ + "/ckpt", 2 * ref_ckpt_bytes + (256ull << 20));
  if (!ckpt.mounted()) GTEST_SKIP() << ckpt.why();
  const SweepRunFolder run(chaos_dir_);
  const auto chaos_start = Clock::now();
  StartRun();
  std::unique_ptr<coordinator::CoordinatorClient> client = run.Client();
  ASSERT_TRUE(client);

  std::array<int, kFaultKinds> injected{}, survived{};
  int operator_reruns = 0, flips_in_use = 0, skipped = 0;
  bool ended = false;
  std::set<RecordKey> answered;  // every record the coordinator answered with
  v1::SweepStatus last;          // the last status seen
  auto progress = [](const v1::SweepStatus& s) {
    int64_t p = 0;
    for (const auto& t : s.trials()) p += t.step() + (t.state() == "completed" ? 1 : 0);
    return p;
  };
  auto last_snapshot = Clock::now() - std::chrono::hours(1);
  // Polls the run for `seconds`: restarts `sweep run` as an operator would when it gave up,
  // keeps the records the coordinator answers with, notes the end of the sweep. False once the
  // run has ended (or a fatal failure).
  auto watch = [&](double seconds) -> bool {
    const auto until = Clock::now() + std::chrono::duration<double>(seconds);
    do {
      if (const int code = run_process_.Wait(0); code >= 0) {
        if (code == 0) {
          ended = true;
          return false;
        }
        if (++operator_reruns > 5) {
          ADD_FAILURE() << "flapctl sweep run gave up " << operator_reruns << " times:\n"
                        << ReadFile(work_.path() + "/chaos-run.log");
          return false;
        }
        std::cout << "[" << Since(chaos_start) << " s] flapctl sweep run exited with " << code
                  << "; running it again" << std::endl;
        StartRun();
        if (::testing::Test::HasFatalFailure()) return false;
        std::this_thread::sleep_for(std::chrono::seconds(1));
        client = run.Client();
        if (!client) return false;
      }
      if (auto s = client->GetSweep(kSweep); s.ok()) last = *s;
      if (Since(last_snapshot) >= 2) {
        if (auto m = client->GetMetrics(kSweep); m.ok()) {
          for (const auto& rec : *m) answered.insert(KeyOf(rec));
          last_snapshot = Clock::now();
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    } while (Clock::now() < until);
    return true;
  };
  // Waits until the sweep has moved on past `from` (or ended): whether it did in time.
  auto moved_on = [&](int64_t from) {
    const auto until = Clock::now() + std::chrono::duration<double>(kProgressTimeout);
    while (Clock::now() < until) {
      if (!watch(0.5)) return ended;
      if (progress(last) > from || last.state() == "finished") return true;
    }
    return false;
  };
  // A running trial with at least two node-fault retries left (and, with `with_checkpoint`, a
  // checkpoint), drawn from the seed; nullptr when there is none now.
  auto running_trial = [&](bool with_checkpoint) -> const v1::TrialStatus* {
    std::vector<const v1::TrialStatus*> c;
    for (const auto& t : last.trials()) {
      if (t.state() == "running" && !t.group_id().empty() && t.node_faults() <= kNodeFaultBudget - 2 &&
          t.step() < kSteps - 1 && (!with_checkpoint || t.checkpoint_step() > 0)) {
        c.push_back(&t);
      }
    }
    return c.empty() ? nullptr : c[pick(c.size())];
  };
  auto ranks_of = [&](const std::string& group) {
    const auto groups = run.GroupPids();
    const auto it = groups.find(group);
    return it == groups.end() ? std::vector<pid_t>{} : it->second;
  };

  // One fault of kind `f`: whether it was injected (its target existed).
  auto inject = [&](int f) -> bool {
    if (auto m = client->GetMetrics(kSweep); m.ok()) {
      for (const auto& rec : *m) answered.insert(KeyOf(rec));
    }
    std::string what;
    switch (f) {
      case kKillCoordinator: {
        const pid_t pid = run.CoordinatorPid();
        if (pid <= 0 || kill(pid, SIGKILL) != 0) return false;
        what = "coordinator " + std::to_string(pid);
        break;
      }
      case kKillGroup:
      case kStallRank: {
        const v1::TrialStatus* t = running_trial(false);
        if (!t) return false;
        const std::vector<pid_t> ranks = ranks_of(t->group_id());
        if (ranks.empty()) return false;
        const size_t rank = pick(ranks.size());
        const pid_t pid = ranks[rank];
        what = t->group_id() + " rank " + std::to_string(rank) + " (pid " + std::to_string(pid) + ", trial " +
               t->trial_id() + " at step " + std::to_string(t->step()) + ")";
        if (f == kKillGroup) {
          if (kill(pid, SIGKILL) != 0) return false;
          break;
        }
        const bool long_stall = pick(2) == 0;
        // Long: past the other rank's dist.timeout (one rank: past the heartbeat timeout).
        const double hold = long_stall ? (opt.ranks > 1 ? kDistTimeout : kHeartbeatTimeout) + 3 : uniform(1, 6);
        if (kill(pid, SIGSTOP) != 0) return false;
        std::cout << "[" << Since(chaos_start) << " s] stall-rank: " << what << " stopped for " << hold << " s"
                  << std::endl;
        watch(hold);
        kill(pid, SIGCONT);
        return true;
      }
      case kFlipByte: {
        const v1::TrialStatus* t = running_trial(true);
        if (!t) return false;
        const std::vector<int64_t> steps = CheckpointSteps(ckpt.path(), t->trial_id());
        std::vector<int64_t> open;  // not the final step: its weights are what is compared
        for (int64_t s : steps) {
          if (s < kSteps) open.push_back(s);
        }
        if (open.empty()) return false;
        const bool in_use = pick(2) == 0;
        const int64_t step = in_use ? open.back() : open[pick(open.size())];
        const std::string dir = CheckpointDir(ckpt.path(), t->trial_id(), step);
        std::vector<std::string> files;
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(dir, ec)) {
          if (e.is_regular_file(ec) && e.file_size(ec) > 0) files.push_back(e.path().string());
        }
        if (files.empty()) return false;
        std::sort(files.begin(), files.end());
        const std::string file = files[pick(files.size())];
        const int fd = ::open(file.c_str(), O_RDWR);
        if (fd < 0) return false;
        struct stat st {};
        fstat(fd, &st);
        const off_t at = static_cast<off_t>(pick(static_cast<size_t>(st.st_size)));
        unsigned char byte = 0;
        const unsigned char mask = static_cast<unsigned char>(1 + pick(255));
        bool ok = pread(fd, &byte, 1, at) == 1;
        byte ^= mask;
        ok = ok && pwrite(fd, &byte, 1, at) == 1 && fsync(fd) == 0;
        ::close(fd);
        if (!ok) return false;
        what = file.substr(ckpt.path().size() + 1) + " at byte " + std::to_string(at);
        if (in_use) {
          // The trial's newest checkpoint: its group is killed, so the resume must pass it over.
          const std::vector<pid_t> ranks = ranks_of(t->group_id());
          if (!ranks.empty()) {
            kill(ranks.front(), SIGKILL);
            ++flips_in_use;
            what += ", the newest; " + t->group_id() + " killed";
          }
        }
        break;
      }
      case kJournalFull:
      case kCheckpointsFull: {
        if (f == kCheckpointsFull) {
          // Every running trial may lose a node-fault retry to it.
          for (const auto& t : last.trials()) {
            if (t.state() == "running" && t.node_faults() > kNodeFaultBudget - 2) return false;
          }
        }
        const TmpfsMount& disk = f == kJournalFull ? state : ckpt;
        const double hold = f == kJournalFull ? uniform(2, 6) : uniform(2, 5);
        // Kept full while held: what retention deletes meanwhile is filled again.
        int fillers = 0;
        auto top_up = [&] {
          if (disk.Free() > (64u << 10)) disk.Fill("filler-" + std::to_string(fillers++), 0);
        };
        top_up();
        std::cout << "[" << Since(chaos_start) << " s] " << FaultName(f) << ": " << disk.path() << " full for "
                  << hold << " s (" << disk.Free() << " bytes free)" << std::endl;
        const auto held_until = Clock::now() + std::chrono::duration<double>(hold);
        while (Clock::now() < held_until && watch(0.25)) top_up();
        for (int i = 0; i < fillers; ++i) fs::remove(disk.path() + "/filler-" + std::to_string(i));
        return true;
      }
      default:
        return false;
    }
    std::cout << "[" << Since(chaos_start) << " s] " << FaultName(f) << ": " << what << std::endl;
    return true;
  };

  // Rounds of faults during the first --duration seconds.
  while (!ended && Since(chaos_start) < opt.duration && !::testing::Test::HasFailure()) {
    std::array<int, kFaultKinds> order;
    for (int i = 0; i < kFaultKinds; ++i) order[static_cast<size_t>(i)] = i;
    std::shuffle(order.begin(), order.end(), rng);
    for (int f : order) {
      if (!watch(uniform(2, 6)) || Since(chaos_start) >= opt.duration) break;
      // Wait a little for a target (a running trial, a checkpoint) where there is none yet.
      bool done = false;
      const auto target_until = Clock::now() + std::chrono::seconds(15);
      const int64_t before = progress(last);
      while (!(done = inject(f)) && Clock::now() < target_until && watch(0.5)) {
      }
      if (!done) {
        ++skipped;
        continue;
      }
      ++injected[static_cast<size_t>(f)];
      if (moved_on(before)) {
        ++survived[static_cast<size_t>(f)];
      } else {
        ADD_FAILURE() << "after " << FaultName(f) << " the sweep did not move on within " << kProgressTimeout
                      << " s (last state '" << last.state() << "')";
        break;
      }
      if (ended || ::testing::Test::HasFailure()) break;
    }
  }
  // Then the run ends on its own.
  const double end_bound = std::max(240.0, 3 * ref_s);
  const auto end_until = Clock::now() + std::chrono::duration<double>(end_bound);
  while (!ended && !::testing::Test::HasFailure() && Clock::now() < end_until) watch(1);
  const double chaos_s = Since(chaos_start);
  EXPECT_TRUE(ended) << "the sweep did not end within " << end_bound << " s after the last fault:\n"
                     << ReadFile(work_.path() + "/chaos-run.log");
  run_process_ = ChildProcess();
  const std::vector<pid_t> left = WaitGone(run.AllPids(), 30);
  EXPECT_TRUE(left.empty()) << left.size() << " process(es) of the run outlived it";

  // The invariants, from the journal read back.
  const SweepRunFolder::Final f = run.ReadBack(FLAP_COORDINATOR_BIN, kSweep, work_.path() + "/readback.log");
  const RecordAudit audit = AuditRecords(f.status, f.records, static_cast<size_t>(opt.trials), kSteps);
  for (const std::string& p : audit.problems) ADD_FAILURE() << p;
  const std::vector<RecordKey> lost = LostRecords(answered, f.records);
  for (const auto& [trial, kind, step] : lost) ADD_FAILURE() << trial << " lost its answered " << kind << " record at step " << step;
  // The final weights. Every trial's final checkpoint must verify, and its weights equal the
  // fault-free run's, resumed or not.
  int completed = 0, equal = 0, node_faults = 0, resumed = 0;
  for (const auto& t : f.status.trials()) {
    completed += t.state() == "completed";
    node_faults += t.node_faults();
    resumed += t.attempt() > 1;
    const std::string final_dir = CheckpointDir(ckpt.path(), t.trial_id(), kSteps);
    const RunResult verify = RunCommand(std::string(FLAPCTL_BIN) + " ckpt verify " + ckpt.path() + " --trial " +
                                        kSweep + "-" + t.trial_id() + " 2>&1");
    EXPECT_TRUE(fs::is_directory(final_dir)) << t.trial_id() << " has no checkpoint at step " << kSteps;
    EXPECT_EQ(verify.output.find(fs::path(final_dir).filename().string() + ":"), std::string::npos)
        << t.trial_id() << "'s final checkpoint does not verify: " << verify.output;
    const std::string model = ReadFile(final_dir + "/model.pt");
    const bool same = !model.empty() && model == ref_models[t.trial_id()];
    equal += same;
    EXPECT_TRUE(same) << t.trial_id() << " (" << t.attempt() << " attempt(s)) ends with other weights than the "
                      << "fault-free run's (" << (model.empty() ? "none" : std::to_string(model.size()) + " bytes")
                      << ")";
  }
  int moved_aside = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(ckpt.path(), ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    moved_aside += it->path().filename().string().find(".damaged-") != std::string::npos;
  }
  const std::string run_log = ReadFile(work_.path() + "/chaos-run.log");
  auto count = [&](const std::string& needle) {
    int n = 0;
    for (size_t at = run_log.find(needle); at != std::string::npos; at = run_log.find(needle, at + 1)) ++n;
    return n;
  };

  int total_injected = 0, total_survived = 0;
  std::string by_kind;
  for (int k = 0; k < kFaultKinds; ++k) {
    total_injected += injected[static_cast<size_t>(k)];
    total_survived += survived[static_cast<size_t>(k)];
    by_kind += std::string(k ? ", " : "") + FaultName(k) + " " + std::to_string(injected[static_cast<size_t>(k)]);
  }
  char wall[160];
  std::snprintf(wall, sizeof(wall), "chaos run %.0f s (fault-free run %.0f s), soak %.0f s", chaos_s, ref_s,
                Since(soak_start));
  std::cout << "\nchaos soak, seed " << opt.seed << " (replay: flap_chaos_soak --seed " << opt.seed << " --duration "
            << opt.duration << " --trials " << opt.trials << " --groups " << opt.groups << " --ranks " << opt.ranks
            << ")\n"
            << "  faults injected: " << total_injected << " (" << by_kind << "); " << skipped
            << " drawn without a target\n"
            << "  faults survived: " << total_survived << " of " << total_injected << "\n"
            << "  damaged checkpoints the resume had to pass over: " << flips_in_use << " (moved aside: "
            << moved_aside << ")\n"
            << "  restarts: coordinator " << count("restarting it from its journal") << " (exit 74: "
            << count("flap-coordinator exited with 74") << "), groups " << count("restarting the group")
            << ", sweep run by the operator " << operator_reruns << "; node faults charged " << node_faults << "\n"
            << "  trials completed: " << completed << " of " << opt.trials << "\n"
            << "  records: " << f.records.size() << " at the end, " << answered.size()
            << " answered during the run; lost " << audit.lost + static_cast<int64_t>(lost.size()) << ", doubled "
            << audit.doubled << "\n"
            << "  final weights equal to the fault-free run's: " << equal << " of " << opt.trials << " ("
            << resumed << " resumed after a fault)\n"
            << "  wall time: " << wall << std::endl;
  EXPECT_GE(total_injected, 1) << "no fault was injected";
}

// Reads --seed, --duration, --trials and --groups out of argv (the rest is GoogleTest's).
bool ParseSoakOptions(int* argc, char** argv) {
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) -> const char* {
      if (a != name) return nullptr;
      if (i + 1 >= *argc) {
        std::cerr << "flap_chaos_soak: " << name << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    try {
      if (const char* v = value("--seed")) {
        g_options.seed = std::stoull(v);
      } else if (const char* v = value("--duration")) {
        g_options.duration = std::stod(v);
      } else if (const char* v = value("--trials")) {
        g_options.trials = std::stoi(v);
      } else if (const char* v = value("--groups")) {
        g_options.groups = std::stoi(v);
      } else if (const char* v = value("--ranks")) {
        g_options.ranks = std::stoi(v);
      } else if (a == "--help" || a == "-h") {
        std::cout << "usage: flap_chaos_soak [--seed N] [--duration SECONDS] [--trials N] [--groups N] [--ranks 1|2]\n"
                     "       [gtest flags]\n"
                     "A real sweep (flapctl sweep run, --groups groups of --ranks ranks) with faults drawn from the\n"
                     "seed injected during the first SECONDS; then every trial must complete, no record be lost or\n"
                     "doubled, and the final weights are compared with a fault-free run's. Defaults: --seed 1\n"
                     "--duration 60 --trials 2 --groups 2 --ranks 2.\n";
        argv[out++] = argv[i];  // GoogleTest's help too
      } else {
        argv[out++] = argv[i];
      }
    } catch (const std::exception&) {
      std::cerr << "flap_chaos_soak: " << a << " '" << argv[i] << "' is not a number\n";
      return false;
    }
  }
  *argc = out;
  if (!(g_options.duration >= 0 && g_options.duration <= 600) || g_options.trials < 1 || g_options.trials > 64 ||
      g_options.groups < 1 || g_options.groups > 8 || g_options.ranks < 1 || g_options.ranks > 2) {
    std::cerr << "flap_chaos_soak: --duration must be in [0, 600], --trials in [1, 64], --groups in [1, 8], "
                 "--ranks 1 or 2\n";
    return false;
  }
  return true;
}

}  // namespace
}  // namespace flap::testing

int main(int argc, char** argv) {
  if (!flap::testing::ParseSoakOptions(&argc, argv)) return 2;
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
