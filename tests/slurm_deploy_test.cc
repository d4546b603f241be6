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
//
// SlurmDeployTwoNodes runs the same deployment on the two hosts of tests/two_nodes.h (label
// multinode): slurmctld, a slurmd and the coordinator job on node-a, a slurmd on node-b, each
// worker group one step of 2 ranks across both nodes (-N2 --ntasks-per-node=1: rank 0 on
// node-a, rank 1 on node-b). The coordinator serves TLS with a certificate for node-a's names and
// addresses; the ranks dial the published node-a:PORT (rank 1 across the link: every rank
// leases its own shards), and the test's client dials 192.0.2.1:PORT from node-a's network
// stack, checking the certificate against that address. Faults across the network:
//   - a partition: the link goes down while trials run with a checkpoint; each group's ranks
//     name each other and exit, rank 0 hands the trial back as a node fault, the step is started
//     again once the link is back, and each trial resumes from its checkpoint;
//   - node-b's slurmd killed: Slurm marks node-b down and requeues the worker jobs, which wait
//     (they need both nodes) until the slurmd is started again; the trials resume.
// Either way the sweep completes with every record once (tests/sweep_checks.h).
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
#include "tests/two_nodes.h"

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

  // Why this machine cannot run a Slurm cluster; empty when it can.
  static std::string WhyNoSlurm() {
    if (getuid() != 0) return "needs root: the Slurm cluster runs slurmctld, slurmd and munged as root";
    if (const std::string missing = SlurmCluster::MissingPrograms(); !missing.empty()) {
      return "Slurm not installed (missing " + missing + "; apt-get install slurm-wlm munge)";
    }
    return "";
  }

  double Elapsed() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(); }

  // The data, the 3-trial sweep and launch.sh with `env` (more VAR=value settings) on the
  // cluster started; sets coordinator_job_ and worker_job_ (fatal failures otherwise).
  void Launch(const std::string& env, int epochs = 2) {
    trial_steps_ = kTinyTrialSteps / 2 * epochs;
    const std::string data = dir_ / "data";
    RunResult r = RunCommand(std::string(FLAPCTL_BIN) + " data synth --out " + data +
                             " --train 128 --val 32 --shard-size 16 --seed 3");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    // 2 ranks of batch 4: the global batch of 8 that kTinyTrialConfig gives one rank, so a
    // trial of 2 epochs is kTinyTrialSteps steps.
    const std::string base = std::regex_replace(kTinyTrialConfig, std::regex("batch_size = 8\n"), "batch_size = 4\n");
    WriteFile(dir_ / "base.ini",
              std::regex_replace(base, std::regex("epochs = 2\n"), "epochs = " + std::to_string(epochs) + "\n"));
    const std::string sweep_file = dir_ / "sweep.ini";
    WriteFile(sweep_file,
              std::string("[sweep]\nname = ") + kSweep +
                  "\nsearch = grid\nseeds = 1\nbase_config = base.ini\n[factor.loss.recon_weight]\nvalues = 0, 0.5, 1\n");

    // Everything the scripts need comes through the environment, as on a real cluster.
    const std::string launch =
        std::string("env FLAP_RUN_DIR=") + RunDir() + " FLAP_DATA=" + data + " FLAP_GROUPS=2 FLAP_RANKS=2" +
        " FLAP_COORDINATOR_BIN=" + FLAP_COORDINATOR_BIN + " FLAPCTL_BIN=" + FLAPCTL_BIN +
        " FLAP_WORKER_BIN=" + FLAP_WORKER_BIN +
        " FLAP_COORDINATOR_ARGS='--heartbeat-interval-ms 1000 --heartbeat-timeout-ms 20000 --lease-ttl-ms 20000 "
        "--no-plots'" +
        " FLAP_POLL_S=1 FLAP_LINGER_S=20 FLAP_RPC_RETRY_S=120 FLAP_WORKER_ARGS='--dist.timeout 60'" +
        " OPENBLAS_NUM_THREADS=1 " + env + " bash " + FLAP_SOURCE_DIR + "/deploy/slurm/launch.sh " + sweep_file;
    r = cluster_->Client(launch, 60);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(r.output, m, std::regex("coordinator job: ([0-9]+)"))) << r.output;
    coordinator_job_ = m[1];
    ASSERT_TRUE(std::regex_search(r.output, m, std::regex("worker job: ([0-9]+)"))) << r.output;
    worker_job_ = m[1];
    std::cout << r.output;
  }

  int64_t trial_steps_ = kTinyTrialSteps;  // steps of each trial of the sweep launched

  // The coordinator's published address, once its job runs and the sweep is submitted; ""
  // (a fatal failure) after 180 s or when a job fails.
  std::string WaitForAddress() {
    const std::string address_file = RunDir() + "/coordinator.address";
    std::string address;
    for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(180);
         address.empty() && std::chrono::steady_clock::now() < until;) {
      std::istringstream(ReadFile(address_file)) >> address;
      if (address.empty()) {
        const std::string failure = FailureAfter(Elapsed());
        if (!failure.empty()) {
          ADD_FAILURE() << failure;
          return "";
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    }
    if (address.empty()) ADD_FAILURE() << "no " << address_file << " after 180 s";
    return address;
  }

  // Every worker array task and then the coordinator job ended COMPLETED, the run's end marker
  // written and its address removed.
  void ExpectJobsCompleted() {
    for (int task = 0; task < 2; ++task) {
      const std::string job = worker_job_ + "_" + std::to_string(task);
      EXPECT_EQ(WaitJobEnd(job, 300), "COMPLETED") << "worker job " << job;
    }
    EXPECT_EQ(WaitJobEnd(coordinator_job_, 120), "COMPLETED") << "coordinator job " << coordinator_job_;
    EXPECT_TRUE(fs::exists(RunDir() + "/sweeps.done"));
    EXPECT_FALSE(fs::exists(RunDir() + "/coordinator.address")) << "the coordinator job left its address behind";
  }

  // The running trials of slurm groups, each with the attempt and checkpoint it has now.
  static std::vector<Preemption> RunningTrials(const v1::SweepStatus& s) {
    std::vector<Preemption> running;
    for (const auto& t : s.trials()) {
      if (t.state() != "running" || t.group_id().rfind("slurm-", 0) != 0) continue;
      Preemption p;
      p.job = t.group_id().substr(6);
      p.trial = t.trial_id();
      p.attempt = t.attempt();
      p.checkpoint_step = t.checkpoint_step();
      running.push_back(p);
    }
    return running;
  }

  // Each of `hit` (trials running when a fault struck) ran again in a later attempt that
  // resumed past the checkpoint it had then.
  static void ExpectResumedPastCheckpoints(const v1::SweepStatus& final_status,
                                           const std::vector<v1::MetricRecord>& records,
                                           const std::vector<Preemption>& hit) {
    for (const auto& p : hit) {
      for (const auto& t : final_status.trials()) {
        if (t.trial_id() != p.trial) continue;
        EXPECT_GT(t.attempt(), p.attempt) << p.trial << " (" << p.how << ") was not run again";
        const int64_t first = FirstTrainStepFrom(records, p.trial, p.attempt + 1);
        EXPECT_GT(first, p.checkpoint_step) << p.trial << " (" << p.how << "): attempt " << p.attempt + 1
                                            << " started over instead of resuming past step " << p.checkpoint_step;
      }
    }
  }

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
    static const std::regex step_not_started("srun could not start the step");
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(RunDir() + "/logs", ec)) {
      if (e.path().filename().string().rfind("workers-", 0) != 0) continue;
      const std::string log = ReadFile(e.path().string());
      if (!std::regex_search(log, step_restarts_expected_ ? step_not_started : step_failed)) continue;
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
  std::unique_ptr<TwoNodes> nodes_;        // SlurmDeployTwoNodes's hosts; outlive the cluster
  std::unique_ptr<SlurmCluster> cluster_;  // stopped before dir_ goes
  std::string coordinator_job_, worker_job_;
  std::chrono::steady_clock::time_point next_job_check_{};
  // A step that exits with an error and is started again is part of the test (a partition),
  // not a reason to end it.
  bool step_restarts_expected_ = false;
  const std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
};

TEST_F(SlurmDeploy, SweepCompletesThroughPreemptionsAndRequeuesOfWorkerJobs) {
  if (const std::string why = WhyNoSlurm(); !why.empty()) GTEST_SKIP() << why;
  auto elapsed = [&] { return Elapsed(); };
  SlurmClusterOptions options;
  options.cpus = 8;             // coordinator job 2 + 2 groups x 2 ranks
  options.requeue_delay_s = 5;  // a requeued job may start again after 5 s, not 120
  auto cluster = SlurmCluster::Start(options);
  ASSERT_OK(cluster);
  cluster_ = std::move(*cluster);
  ASSERT_NO_FATAL_FAILURE(Launch(""));
  const std::string address = WaitForAddress();
  ASSERT_FALSE(address.empty());
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
    const RunResult r = cluster_->Client(how + " " + victim->job, 30);
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
  }
  ExpectResumedPastCheckpoints(final_status, *records, preempted);

  // Slurm's side: both preempted jobs came back and every job ended well.
  ExpectJobsCompleted();
  for (const auto& p : preempted) {
    EXPECT_GE(std::atoi(Field(p.job, "Restarts").c_str()), 1) << p.job << " was not requeued (" << p.how << ")";
  }
  const std::string signalled_log = ReadFile(RunDir() + "/logs/workers-" + preempted.back().job + ".out");
  EXPECT_NE(signalled_log.find("on a stop signal: requeueing job"), std::string::npos) << signalled_log;
  std::cout << "every job ended after " << elapsed() << " s" << std::endl;
}

// The deployment across the two hosts of tests/two_nodes.h (see the file's comment).
class SlurmDeployTwoNodes : public SlurmDeploy {
 protected:
  void SetUp() override {
    if (const std::string why = WhyNoSlurm(); !why.empty()) GTEST_SKIP() << why;
    auto nodes = TwoNodes::Create();
    if (!nodes.ok()) GTEST_SKIP() << "no two-node fixture here: " << nodes.status().ToString();
    nodes_ = std::move(*nodes);
  }

  // The cluster on both nodes (SlurmdTimeout `slurmd_timeout_s`), then launch.sh with the
  // coordinator on node-a and each group one rank per node (rank 0 on node-a), `env` added,
  // trials of `epochs` epochs; then the test's client, connected.
  void LaunchAcrossNodes(const std::string& env, int slurmd_timeout_s = 30, int epochs = 2) {
    SlurmClusterOptions options;
    options.nodes = nodes_.get();
    options.cpus = 4;             // node-a: the coordinator job's 2 + a rank of each group
    options.requeue_delay_s = 5;  // a requeued job may start again after 5 s, not 120
    options.slurmd_timeout_s = slurmd_timeout_s;
    auto cluster = SlurmCluster::Start(options);
    ASSERT_OK(cluster);
    cluster_ = std::move(*cluster);
    ASSERT_NO_FATAL_FAILURE(Launch("FLAP_COORDINATOR_SBATCH_ARGS='-w " + nodes_->a().host +
                                   "' FLAP_WORKERS_SBATCH_ARGS='-N2 --ntasks-per-node=1' " + env,
                                   epochs));
    address_ = WaitForAddress();
    ASSERT_FALSE(address_.empty());
    // Published under node-a's host name, which the ranks resolve (node-b: 192.0.2.1 over the
    // link; node-a: its own name's 127.0.1.1).
    ASSERT_EQ(address_.rfind(nodes_->a().host + ":", 0), 0u) << address_;
    const std::string port = address_.substr(address_.find(':') + 1);
    // The test's client on node-a's network stack, at node-a's address: the certificate must
    // name it.
    auto in_a = nodes_->Enter(nodes_->a());
    ASSERT_OK(in_a);
    in_a_ = std::move(*in_a);
    std::string error;
    client_ = ConnectCoordinator(nodes_->a().address + ":" + port, RunDir() + "/state/token", &error,
                                 RunDir() + "/coordinator-ca.pem");
    ASSERT_TRUE(client_) << error;
    auto sweeps = client_->GetSweep(kSweep);
    ASSERT_OK(sweeps.status());
    std::cout << "coordinator at " << address_ << ", reached at " << nodes_->a().address << ":" << port
              << " over TLS after " << Elapsed() << " s" << std::endl;
  }

  void TearDown() override {
    client_.reset();
    in_a_.reset();
    SlurmDeploy::TearDown();
  }

  // Waits until some trial runs with a checkpoint at step 4 or later and at least 8 steps to
  // go; the running trials then (empty after a failure).
  std::vector<Preemption> WaitForTrialsWithCheckpoints() {
    const v1::SweepStatus st = WaitForSweep(
        *client_, kSweep, 600,
        [&](const v1::SweepStatus& s) {
          for (const auto& p : RunningTrials(s)) {
            for (const auto& t : s.trials()) {
              if (t.trial_id() == p.trial && p.checkpoint_step >= 4 && t.step() <= trial_steps_ - 8) return true;
            }
          }
          return false;
        },
        [&] { return FailureAfter(Elapsed()); });
    if (HasFailure()) return {};
    return RunningTrials(st);
  }

  // The groups spanned both nodes: rank 1 of each joined on node-b. It leased its own shards
  // from the coordinator (worker/agent.h) across the link, so trials completed at the global
  // batch of 2 ranks show it reached node-a:PORT over TLS from node-b.
  void ExpectGroupsAcrossBothNodes() {
    const std::string logs = WorkerLogs();
    EXPECT_NE(logs.find("on node-a,node-b"), std::string::npos) << "no group across both nodes:\n" << logs;
    EXPECT_NE(logs.find("\n1: rank 1 of 2 joined"), std::string::npos) << "rank 1 never joined:\n" << logs;
  }

  // Every worker job's log, one after another.
  std::string WorkerLogs() const {
    std::error_code ec;
    std::string logs;
    for (const auto& e : fs::directory_iterator(RunDir() + "/logs", ec)) {
      if (e.path().filename().string().rfind("workers-", 0) == 0) logs += ReadFile(e.path().string());
    }
    return logs;
  }

  // The sweep's end: every trial completed with its records intact, and each of `hit` resumed
  // past the checkpoint it had when the fault struck (with `only_interrupted`, each of `hit`
  // that did not end in the attempt it was running then; at least one must not have). The
  // final status (trial counters).
  v1::SweepStatus ExpectSweepCompleted(std::vector<Preemption> hit, bool only_interrupted = false) {
    const v1::SweepStatus final_status = WaitForSweep(
        *client_, kSweep, 900, [](const v1::SweepStatus& s) { return s.state() != "running"; },
        [&] { return FailureAfter(Elapsed()); });
    if (HasFailure()) return final_status;
    auto records = client_->GetMetrics(kSweep);
    EXPECT_OK(records.status());
    if (!records.ok()) return final_status;
    std::cout << "sweep " << final_status.state() << " after " << Elapsed() << " s" << std::endl;
    ExpectCompleteAndIntact(final_status, *records, kTrials, trial_steps_);
    if (only_interrupted) {
      std::vector<Preemption> interrupted;
      for (const auto& p : hit) {
        for (const auto& t : final_status.trials()) {
          if (t.trial_id() == p.trial && t.attempt() > p.attempt) interrupted.push_back(p);
        }
      }
      EXPECT_FALSE(interrupted.empty()) << "every trial running when the fault struck ended in that attempt: "
                                           "nothing shows a resume";
      hit = interrupted;
      for (const auto& p : hit) {
        std::cout << p.trial << " (attempt " << p.attempt << ", checkpoint at step " << p.checkpoint_step
                  << ") was cut by the fault" << std::endl;
      }
    }
    ExpectResumedPastCheckpoints(final_status, *records, hit);
    for (const auto& t : final_status.trials()) {
      EXPECT_EQ(t.trial_errors(), 0) << t.trial_id() << ": " << t.last_error();
      std::cout << t.trial_id() << ": " << t.attempt() << " attempt(s), " << t.preemptions() << " preemption(s), "
                << t.node_faults() << " node fault(s)" << std::endl;
    }
    return final_status;
  }

  std::string address_;
  std::unique_ptr<TwoNodes::InNode> in_a_;  // the client's sockets on node-a's stack
  std::unique_ptr<coordinator::CoordinatorClient> client_;
};

// The link between the nodes goes down while trials run with a checkpoint, and comes back once
// a group's step has failed: the trials it cut are handed back as node faults and resume from
// their checkpoints.
TEST_F(SlurmDeployTwoNodes, PartitionMidEpochRequeuesTheTrialsWhichResumeFromTheirCheckpoints) {
  step_restarts_expected_ = true;
  // dist.timeout 10 s: the ranks name each other and the group exits well before Slurm would
  // find node-b unreachable (SlurmdTimeout, 30 s) and requeue the whole job; the batch script
  // starts the step again in the same allocation.
  ASSERT_NO_FATAL_FAILURE(LaunchAcrossNodes("FLAP_WORKER_ARGS='--dist.timeout 10'"));
  std::vector<Preemption> hit = WaitForTrialsWithCheckpoints();
  ASSERT_FALSE(hit.empty());
  for (auto& p : hit) p.how = "partition";
  ASSERT_OK(nodes_->SetLink(false));
  const double cut_at = Elapsed();
  for (const auto& p : hit) {
    std::cout << "link down at " << cut_at << " s: trial " << p.trial << " attempt " << p.attempt << " in job "
              << p.job << ", checkpoint at step " << p.checkpoint_step << std::endl;
  }
  // Rank 0 (node-a, beside the coordinator) names its lost peer within dist.timeout (60 s) and
  // the heartbeat diagnosis, and hands the trial back; then the link returns.
  const v1::SweepStatus handed_back = WaitForSweep(
      *client_, kSweep, 120,
      [&](const v1::SweepStatus& s) {
        for (const auto& p : hit) {
          for (const auto& t : s.trials()) {
            if (t.trial_id() == p.trial && t.attempt() == p.attempt && t.state() == "running") return false;
          }
        }
        return true;
      },
      [&] { return FailureAfter(Elapsed()); });
  const double back_at = Elapsed();
  ASSERT_OK(nodes_->SetLink(true));
  if (HasFailure()) return;
  std::cout << "every cut trial handed back " << back_at - cut_at << " s after the cut; link up again" << std::endl;

  const v1::SweepStatus final_status = ExpectSweepCompleted(hit);
  // Both ranks of a cut group named the other.
  const std::string logs = WorkerLogs();
  EXPECT_TRUE(std::regex_search(logs, std::regex("\\n0: .*rank 1 is not responding"))) << logs;
  EXPECT_TRUE(std::regex_search(logs, std::regex("\\n1: .*rank 0 is gone"))) << logs;
  for (const auto& p : hit) {
    for (const auto& t : final_status.trials()) {
      if (t.trial_id() == p.trial) {
        EXPECT_GE(t.node_faults(), 1) << t.trial_id() << ": the partition was not counted as a node fault";
      }
    }
  }
  ExpectGroupsAcrossBothNodes();
  ExpectJobsCompleted();
  std::cout << "every job ended after " << Elapsed() << " s" << std::endl;
}

// A worker job's allocation loses node-b while its trial runs with a checkpoint (`scontrol update
// JobId=.. NumNodes=1`: the same state Slurm leaves when a requeued job's step fails to launch on
// a node still cleaning up after a partition). The rank on node-b is killed, the step fails, and
// the batch script must not start a 2-rank step in a 1-node allocation (srun then waits for busy
// nodes for ever: "step creation still disabled, retrying (Requested nodes are busy)"): it
// requeues its job, which comes back on both nodes, and the trial resumes from its checkpoint.
TEST_F(SlurmDeployTwoNodes, AWorkerJobWhoseAllocationLosesANodeRequeuesItselfAndTheTrialResumes) {
  step_restarts_expected_ = true;
  ASSERT_NO_FATAL_FAILURE(LaunchAcrossNodes("FLAP_WORKER_ARGS='--dist.timeout 10'"));
  std::vector<Preemption> hit = WaitForTrialsWithCheckpoints();
  ASSERT_FALSE(hit.empty());
  hit.resize(1);
  Preemption& p = hit[0];
  p.how = "allocation shrunk";
  // As ARRAY_TASK (Slurm 22.05), else by the task's own job id or its node list: Slurm 24.11
  // refuses NumNodes for a running job ("Job is no longer pending execution") and resizes no job
  // array.
  const std::string raw = Field(p.job, "JobId");
  ASSERT_FALSE(raw.empty()) << p.job;
  std::string refused;
  bool shrunk = false;
  for (const std::string& update : {"JobId=" + p.job + " NumNodes=1", "JobId=" + raw + " NumNodes=1",
                                     "JobId=" + raw + " NodeList=" + nodes_->a().host}) {
    const RunResult r = cluster_->Scontrol("update " + update);
    shrunk = r.exit_code == 0;
    if (shrunk) break;
    refused += update + ": " + r.output;
  }
  if (!shrunk && (refused.find("not supported for job arrays") != std::string::npos ||
                  refused.find("no longer pending") != std::string::npos)) {
    GTEST_SKIP() << "this Slurm does not shrink a running task of a job array: " << refused;
  }
  ASSERT_TRUE(shrunk) << refused;
  std::cout << "job " << p.job << " shrunk to one node at " << Elapsed() << " s: trial " << p.trial << " attempt "
            << p.attempt << ", checkpoint at step " << p.checkpoint_step << std::endl;

  ExpectSweepCompleted(hit, /*only_interrupted=*/true);
  ExpectGroupsAcrossBothNodes();
  ExpectJobsCompleted();
  EXPECT_GE(std::atoi(Field(p.job, "Restarts").c_str()), 1) << p.job << " was not requeued";
  const std::string log = ReadFile(RunDir() + "/logs/workers-" + p.job + ".out");
  EXPECT_TRUE(std::regex_search(log, std::regex("the allocation has 1 node\\(s\\) of the 2 it started with.*: requeueing job " +
                                                p.job)))
      << log;
  EXPECT_NE(log.find("start #2"), std::string::npos) << p.job << " did not start again:\n" << log;
  std::cout << "every job ended after " << Elapsed() << " s" << std::endl;
}

// A worker job's restarted step cannot be created: another step of the job holds its CPU on
// node-a (a `sleep` step started with `srun --jobid`, waiting for the group's step to end), so
// srun waits on "Requested nodes are busy", as it did for a requeued job whose node-b was still
// cleaning up its previous run after a partition. The batch script stops srun after
// FLAP_STEP_START_S (20 s here) and requeues its job, which comes back and resumes the trial.
// The script before this check waited on that srun without end and the job never finished.
TEST_F(SlurmDeployTwoNodes, AWorkerJobWhoseStepSlurmDoesNotCreateRequeuesItselfAndTheTrialResumes) {
  step_restarts_expected_ = true;
  ASSERT_NO_FATAL_FAILURE(LaunchAcrossNodes("FLAP_WORKER_ARGS='--dist.timeout 10' FLAP_STEP_START_S=20"));
  std::vector<Preemption> hit = WaitForTrialsWithCheckpoints();
  ASSERT_FALSE(hit.empty());
  hit.resize(1);
  Preemption& p = hit[0];
  p.how = "step not created";
  const std::string raw = Field(p.job, "JobId");
  ASSERT_FALSE(raw.empty()) << p.job;
  const RunResult steps = cluster_->Squeue("-h -s -j " + raw + " -o %i");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(steps.output, m, std::regex("([0-9_]+\\.[0-9]+)"))) << steps.output;
  const std::string group_step = m[1];
  // The blocker waits for the group step's CPU on node-a; then the group step is killed.
  // (In a session of its own, out of reach of the timeout that Client wraps the shell in.)
  const RunResult blocker =
      cluster_->Client("sh -c 'setsid srun --jobid=" + raw + " -N1 -n1 -w " + nodes_->a().host +
                           " --mpi=none sleep 600 > " + RunDir() + "/logs/blocker.out 2>&1 < /dev/null &'",
                       30);
  ASSERT_EQ(blocker.exit_code, 0) << blocker.output;
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const RunResult killed = cluster_->Client("scancel --signal=KILL " + group_step, 30);
  ASSERT_EQ(killed.exit_code, 0) << killed.output;
  std::cout << "step " << group_step << " of job " << p.job << " killed at " << Elapsed() << " s with a step waiting for its CPU: trial "
            << p.trial << " attempt " << p.attempt << ", checkpoint at step " << p.checkpoint_step << std::endl;

  ExpectSweepCompleted(hit, /*only_interrupted=*/true);
  ExpectGroupsAcrossBothNodes();
  ExpectJobsCompleted();
  EXPECT_GE(std::atoi(Field(p.job, "Restarts").c_str()), 1) << p.job << " was not requeued";
  const std::string log = ReadFile(RunDir() + "/logs/workers-" + p.job + ".out");
  EXPECT_TRUE(std::regex_search(log, std::regex("Slurm did not create the step within 20 s.*: requeueing job " + p.job)))
      << log;
  std::cout << "every job ended after " << Elapsed() << " s" << std::endl;
}

// node-b's slurmd is killed while trials run with a checkpoint: Slurm marks node-b down and
// requeues the worker jobs, which need both nodes and wait until its slurmd is back; the sweep
// then completes, every cut trial resumed from its checkpoint.
TEST_F(SlurmDeployTwoNodes, SlurmdKilledOnANodeRequeuesTheJobsAndTheSweepCompletesWhenItReturns) {
  step_restarts_expected_ = true;
  // SlurmdTimeout 10 s and trials of 8 epochs (128 steps): Slurm finds node-b gone (about
  // 30 s after its slurmd) while trials still run: the ranks there train on without their slurmd
  // until then.
  ASSERT_NO_FATAL_FAILURE(LaunchAcrossNodes("", 10, 8));
  std::vector<Preemption> hit = WaitForTrialsWithCheckpoints();
  ASSERT_FALSE(hit.empty());
  for (auto& p : hit) p.how = "slurmd killed";
  const std::string node_b = nodes_->b().host;
  ASSERT_OK(cluster_->KillSlurmd(node_b));
  const double killed_at = Elapsed();
  std::cout << "slurmd of " << node_b << " killed at " << killed_at << " s" << std::endl;
  // Down after SlurmdTimeout (10 s) and a ping that finds it gone.
  std::string state;
  for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(120);
       state.rfind("down", 0) != 0 && std::chrono::steady_clock::now() < until;) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    state = cluster_->NodeState(node_b);
  }
  ASSERT_EQ(state.rfind("down", 0), 0u) << node_b << " is '" << state << "' 120 s after its slurmd was killed";
  std::cout << node_b << " " << state << " " << Elapsed() - killed_at << " s after" << std::endl;
  // And the trials running now, as Slurm requeues the jobs (one that started after the kill is
  // cut as well); a trial in both looks keeps the later checkpoint.
  if (auto now = client_->GetSweep(kSweep); now.ok()) {
    for (auto& p : RunningTrials(*now)) {
      p.how = "slurmd killed";
      bool seen = false;
      for (auto& q : hit) {
        if (q.trial != p.trial || q.attempt != p.attempt) continue;
        q.checkpoint_step = std::max(q.checkpoint_step, p.checkpoint_step);
        seen = true;
      }
      if (!seen) hit.push_back(p);
    }
  }
  // Each job that ran on it is requeued and waits for a second node.
  std::vector<std::string> requeued;
  for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
       requeued.size() < hit.size() && std::chrono::steady_clock::now() < until;) {
    requeued.clear();
    for (const auto& p : hit) {
      if (std::atoi(Field(p.job, "Restarts").c_str()) >= 1 && Field(p.job, "JobState") == "PENDING") {
        requeued.push_back(p.job);
      }
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  EXPECT_EQ(requeued.size(), hit.size()) << "not every job of a cut trial was requeued and pending:\n"
                                         << cluster_->Squeue("-a").output;
  ASSERT_OK(cluster_->RestartSlurmd(node_b));
  std::cout << "slurmd of " << node_b << " started again at " << Elapsed() << " s" << std::endl;

  // The trials running when the slurmd was killed or the node went down that were cut by the
  // requeue resumed.
  ExpectSweepCompleted(hit, /*only_interrupted=*/true);
  ExpectGroupsAcrossBothNodes();
  ExpectJobsCompleted();
  for (const auto& p : hit) {
    EXPECT_GE(std::atoi(Field(p.job, "Restarts").c_str()), 1) << p.job << " was not requeued";
  }
  std::cout << "every job ended after " << Elapsed() << " s" << std::endl;
}

}  // namespace
}  // namespace flap::testing
