// The Slurm deployment (deploy/slurm/) end to end on a real one-node Slurm cluster
// (tests/slurm_cluster.h): launch.sh submits coordinator.sbatch (flap-coordinator, which
// submits a 3-trial tiny sweep on synthetic data) and workers.sbatch as an array of 2 worker
// groups, each one `srun --mpi=pmix` step of 2 ranks. Two worker jobs are preempted while
// they run a trial that has a checkpoint:
//   - `scontrol requeue JOB`: Slurm sends SIGTERM to the ranks and the batch script, SIGKILL
//     KillWait seconds later, and requeues the job itself;
//   - `scancel --signal=USR1 JOB`: the signal sbatch --signal sends ahead of the time limit,
//     to the ranks only; the script sees the step exit 75 and requeues its own job.
// Checked through the coordinator's records (a client on the published address and token):
// the sweep finishes with every trial completed and its history intact, each preempted
// trial's later attempts resumed past the checkpoint it had, and the preemptions are counted
// as such, not as node faults or trial errors. On Slurm's side both preempted jobs ran again
// (Restarts) and every job ended COMPLETED: the worker groups once every sweep was done, the
// coordinator job after it.
//
// A job that fails on the way (a worker job whose `srun` step cannot start, e.g. the mpi/pmix
// plugin without libpmix.so, or whose step exits with an error and is restarted; the
// coordinator job ending FAILED) ends the test at once with that job's log, instead of a
// wait for a sweep that cannot progress.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/client.h"
#include "tests/slurm_cluster.h"
#include "tests/sweep_checks.h"
#include "tests/test_util.h"

namespace flap::testing {
namespace {

namespace v1 = coordinator::v1;
namespace fs = std::filesystem;

constexpr const char* kSweep = "slurm-preempt";
constexpr int kTrials = 3;

// A worker job that was preempted, and what its trial had then.
struct Preemption {
  std::string how;  // the command
  std::string job;  // "<array job>_<task>"
  std::string trial;
  int64_t attempt = 0;  // the attempt that was running
  int64_t checkpoint_step = 0;
};

class SlurmDeploy : public ::testing::Test {
 protected:
  void TearDown() override {
    if (HasFailure()) std::cout << Diagnostics() << std::endl;
  }

  std::string RunDir() const { return dir_ / "run"; }

  // The jobs, the run's logs and the daemons' logs.
  std::string Diagnostics() const {
    if (!cluster_) return "(no cluster)";
    std::string out = "--- squeue\n" + cluster_->Squeue("-a").output;
    for (const std::string& job : {coordinator_job_, worker_job_}) {
      if (!job.empty()) out += "--- scontrol show job " + job + "\n" + cluster_->Scontrol("show job " + job).output;
    }
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(RunDir() + "/logs", ec)) {
      out += "--- " + e.path().string() + " (last 80 lines)\n" + RunCommand("tail -n 80 " + e.path().string()).output;
    }
    return out + cluster_->Logs();
  }

  // Why the deployment cannot go on: a job that ended in failure, or a worker step that
  // could not start or failed (workers.sbatch's log says so), with the job's log; empty while
  // all is well. Looks at most every 2 s (each call runs scontrol).
  std::string JobFailure() {
    const auto now = std::chrono::steady_clock::now();
    if (now < next_job_check_) return "";
    next_job_check_ = now + std::chrono::seconds(2);
    if (std::string failed = cluster_->FailedJobs({coordinator_job_, worker_job_}); !failed.empty()) {
      return "a job of the deployment ended in failure:\n" + failed;
    }
    static const std::regex step_failed("srun could not start the step|the step exited with [0-9]+: restart");
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(RunDir() + "/logs", ec)) {
      if (e.path().filename().string().rfind("workers-", 0) != 0) continue;
      const std::string log = ReadFile(e.path().string());
      if (!std::regex_search(log, step_failed)) continue;
      const std::string tail = RunCommand("tail -n 60 " + e.path().string()).output;
      const std::string hint = SlurmCluster::Hint(tail);
      return "a worker step failed; " + e.path().string() + " (last 60 lines):\n" + tail +
             (hint.empty() ? "" : hint + "\n");
    }
    return "";
  }

  // JobFailure(), prefixed with the test's elapsed time when there is one.
  std::string FailureAfter(double elapsed_s) {
    const std::string failure = JobFailure();
    return failure.empty() ? failure : "after " + std::to_string(static_cast<int>(elapsed_s)) + " s: " + failure;
  }

  // A field of `scontrol show job` ("" when scontrol does not know the job).
  std::string Field(const std::string& job, const std::string& field) const {
    auto v = cluster_->JobField(job, field);
    return v.ok() ? *v : "";
  }

  // Waits until the job has ended; its final state ("" after the timeout, a test failure).
  std::string WaitJobEnd(const std::string& job, double timeout_s) const {
    Status s = cluster_->WaitJobState(job,
                                      {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                                       "PREEMPTED", "BOOT_FAIL", "DEADLINE"},
                                      timeout_s);
    if (!s.ok()) {
      ADD_FAILURE() << s.ToString();
      return "";
    }
    return Field(job, "JobState");
  }

  // A running trial with a checkpoint at `min_checkpoint` or later and at least 4 steps to
  // go, held by a running worker job, and not preempted before in that attempt.
  std::optional<Preemption> Victim(const v1::SweepStatus& s, int64_t min_checkpoint,
                                   const std::vector<Preemption>& done) const {
    for (const auto& t : s.trials()) {
      if (t.state() != "running" || t.checkpoint_step() < min_checkpoint || t.step() > kTinyTrialSteps - 4) continue;
      if (t.group_id().rfind("slurm-", 0) != 0) continue;
      bool again = false;
      for (const auto& p : done) again = again || (p.trial == t.trial_id() && p.attempt == t.attempt());
      if (again) continue;
      Preemption p;
      p.job = t.group_id().substr(6);
      if (Field(p.job, "JobState") != "RUNNING") continue;
      p.trial = t.trial_id();
      p.attempt = t.attempt();
      p.checkpoint_step = t.checkpoint_step();
      return p;
    }
    return std::nullopt;
  }

  TempDir dir_{"slurm-deploy"};
  std::unique_ptr<SlurmCluster> cluster_;  // stopped before dir_ goes
  std::string coordinator_job_, worker_job_;
  std::chrono::steady_clock::time_point next_job_check_{};
};

TEST_F(SlurmDeploy, SweepCompletesThroughPreemptionsAndRequeuesOfWorkerJobs) {
  if (getuid() != 0) {
    GTEST_SKIP() << "needs root: the one-node Slurm cluster runs slurmctld, slurmd and munged as root";
  }
  if (const std::string missing = SlurmCluster::MissingPrograms(); !missing.empty()) {
    GTEST_SKIP() << "Slurm not installed (missing " << missing << "; apt-get install slurm-wlm munge)";
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  SlurmClusterOptions options;
  options.cpus = 8;             // coordinator job 2 + 2 groups x 2 ranks
  options.requeue_delay_s = 5;  // a requeued job may start again after 5 s, not 120
  auto cluster = SlurmCluster::Start(options);
  ASSERT_OK(cluster);
  cluster_ = std::move(*cluster);

  const std::string data = dir_ / "data";
  RunResult r = RunCommand(std::string(FLAPCTL_BIN) + " data synth --out " + data +
                           " --train 128 --val 32 --shard-size 16 --seed 3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // 2 ranks of batch 4: the global batch of 8 that kTinyTrialConfig gives one rank, so a
  // trial is kTinyTrialSteps steps.
  WriteFile(dir_ / "base.ini",
            std::regex_replace(kTinyTrialConfig, std::regex("batch_size = 8\n"), "batch_size = 4\n"));
  const std::string sweep_file = dir_ / "sweep.ini";
  WriteFile(sweep_file,
            std::string("[sweep]\nname = ") + kSweep +
                "\nsearch = grid\nseeds = 1\nbase_config = base.ini\n[factor.recon.weight]\nvalues = 0, 0.5, 1\n");

  // Everything the scripts need comes through the environment, as on a real cluster.
  const std::string launch =
      std::string("env FLAP_RUN_DIR=") + RunDir() + " FLAP_DATA=" + data + " FLAP_GROUPS=2 FLAP_RANKS=2" +
      " FLAP_COORDINATOR_BIN=" + FLAP_COORDINATOR_BIN + " FLAPCTL_BIN=" + FLAPCTL_BIN +
      " FLAP_WORKER_BIN=" + FLAP_WORKER_BIN +
      " FLAP_COORDINATOR_ARGS='--heartbeat-interval-ms 1000 --heartbeat-timeout-ms 20000 --lease-ttl-ms 20000 "
      "--no-plots'" +
      " FLAP_POLL_S=1 FLAP_LINGER_S=20 FLAP_RPC_RETRY_S=120 FLAP_WORKER_ARGS='--dist.timeout 60'" +
      " OPENBLAS_NUM_THREADS=1 bash " + FLAP_SOURCE_DIR + "/deploy/slurm/launch.sh " + sweep_file;
  r = cluster_->Client(launch, 60);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.output, m, std::regex("coordinator job: ([0-9]+)"))) << r.output;
  coordinator_job_ = m[1];
  ASSERT_TRUE(std::regex_search(r.output, m, std::regex("worker job: ([0-9]+)"))) << r.output;
  worker_job_ = m[1];
  std::cout << r.output;

  // The coordinator's address appears once its job runs and the sweep is submitted.
  const std::string address_file = RunDir() + "/coordinator.address";
  std::string address;
  for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(180);
       address.empty() && std::chrono::steady_clock::now() < until;) {
    std::istringstream(ReadFile(address_file)) >> address;
    if (address.empty()) {
      const std::string failure = FailureAfter(elapsed());
      ASSERT_TRUE(failure.empty()) << failure;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  ASSERT_FALSE(address.empty()) << "no " << address_file << " after 180 s";
  std::string error;
  // coordinator.sbatch serves TLS (its default) with the run's CA, published beside the address.
  auto client = ConnectCoordinator(address, RunDir() + "/state/token", &error, RunDir() + "/coordinator-ca.pem");
  ASSERT_TRUE(client) << error;
  std::cout << "coordinator at " << address << " after " << elapsed() << " s" << std::endl;

  // Two preemptions of running worker jobs, each once its trial has a checkpoint.
  std::vector<Preemption> preempted;
  for (const auto& [how, min_checkpoint] :
       std::vector<std::pair<std::string, int64_t>>{{"scontrol requeue", 8}, {"scancel --signal=USR1", 4}}) {
    const v1::SweepStatus st = WaitForSweep(
        *client, kSweep, 600,
        [&](const v1::SweepStatus& s) { return Victim(s, min_checkpoint, preempted).has_value(); },
        [&] { return FailureAfter(elapsed()); });
    if (HasFailure()) return;  // a job failed (reported with its log)
    std::optional<Preemption> victim = Victim(st, min_checkpoint, preempted);
    ASSERT_TRUE(victim) << "no running trial with a checkpoint to preempt (" << how << ")";
    victim->how = how;
    r = cluster_->Client(how + " " + victim->job, 30);
    ASSERT_EQ(r.exit_code, 0) << how << " " << victim->job << ": " << r.output;
    std::cout << how << " " << victim->job << " at " << elapsed() << " s: trial " << victim->trial << " attempt "
              << victim->attempt << ", checkpoint at step " << victim->checkpoint_step << std::endl;
    preempted.push_back(*victim);
  }

  // The sweep ends; the coordinator still serves for FLAP_LINGER_S.
  const v1::SweepStatus final_status = WaitForSweep(
      *client, kSweep, 900, [](const v1::SweepStatus& s) { return s.state() != "running"; },
      [&] { return FailureAfter(elapsed()); });
  if (HasFailure()) return;  // a job failed (reported with its log)
  auto records = client->GetMetrics(kSweep);
  ASSERT_OK(records);
  std::cout << "sweep " << final_status.state() << " after " << elapsed() << " s" << std::endl;
  ExpectCompleteAndIntact(final_status, *records, kTrials);

  std::map<std::string, int> preemptions_of;
  for (const auto& p : preempted) preemptions_of[p.trial]++;
  for (const auto& t : final_status.trials()) {
    EXPECT_EQ(t.node_faults(), 0) << t.trial_id() << ": a preemption was counted as a node fault";
    EXPECT_EQ(t.trial_errors(), 0) << t.trial_id() << ": " << t.last_error();
    EXPECT_GE(t.preemptions(), preemptions_of[t.trial_id()]) << t.trial_id();
    for (const auto& p : preempted) {
      if (p.trial != t.trial_id()) continue;
      EXPECT_GT(t.attempt(), p.attempt) << t.trial_id() << " (" << p.how << ")";
      // Every later attempt resumed past the checkpoint the trial had when it was preempted.
      const int64_t first = FirstTrainStepFrom(*records, p.trial, p.attempt + 1);
      EXPECT_GT(first, p.checkpoint_step) << p.trial << " (" << p.how << "): attempt " << p.attempt + 1
                                          << " started over instead of resuming past step " << p.checkpoint_step;
    }
  }

  // Slurm's side: both preempted jobs came back and every job ended well.
  for (int task = 0; task < 2; ++task) {
    const std::string job = worker_job_ + "_" + std::to_string(task);
    EXPECT_EQ(WaitJobEnd(job, 300), "COMPLETED") << "worker job " << job;
  }
  EXPECT_EQ(WaitJobEnd(coordinator_job_, 120), "COMPLETED") << "coordinator job " << coordinator_job_;
  for (const auto& p : preempted) {
    EXPECT_GE(std::atoi(Field(p.job, "Restarts").c_str()), 1) << p.job << " was not requeued (" << p.how << ")";
  }
  const std::string signalled_log = ReadFile(RunDir() + "/logs/workers-" + preempted.back().job + ".out");
  EXPECT_NE(signalled_log.find("on a stop signal: requeueing job"), std::string::npos) << signalled_log;
  EXPECT_TRUE(fs::exists(RunDir() + "/sweeps.done"));
  EXPECT_FALSE(fs::exists(address_file)) << "the coordinator job left its address behind";
  std::cout << "every job ended after " << elapsed() << " s" << std::endl;
}

}  // namespace
}  // namespace flap::testing
