// A real one-node Slurm cluster for tests: munged, slurmctld and slurmd started on loopback
// from a configuration generated in a private temporary folder, driven through the real
// client commands (srun, sbatch, squeue, scontrol, scancel), and torn down completely. With
// SlurmClusterOptions::nodes, a two-node cluster across the hosts of tests/two_nodes.h
// (slurmctld on node A, a slurmd on each node, munged's socket shared through the file system).
//
// What it needs (Debian 12): packages slurm-wlm (slurmctld, slurmd, slurm-client,
// slurm-wlm-basic-plugins: mpi/pmix is mpi_pmix_v4.so, which dlopens the unversioned
// libpmix.so, a link that only libpmix-dev installs next to libpmix2's libpmix.so.2) and munge;
// running as root (SlurmUser=root, munged -f); the machine's hostname resolving (it is the
// node's name, with NodeAddr=127.0.0.1). It works inside a container: no cgroup plugin is
// used (proctrack/linuxproc, task/none, jobacct_gather/none, no accounting database) and
// SlurmdParameters=config_overrides lets the node advertise `cpus` whatever the hardware
// (so 3 tasks fit on a 2-core machine). Ports for slurmctld and slurmd are picked free on
// 127.0.0.1; everything else (munge key and socket, state, spool, logs, pid files) lives in
// the cluster's folder, so several clusters can run side by side.
//
// Lifetime: Start() returns once the node is idle (or a Status with the daemons' logs after
// start_timeout_s). Stop() (also the destructor, so a failing test still cleans up) cancels
// every job, shuts the daemons down, kills whatever is left of them and of the jobs (every
// process whose environment carries this cluster's marker, slurmstepd and job steps
// included) and removes the folder. A test process killed outright leaves the daemons
// running; they hold only their own folder and two loopback ports.
//
// Not thread-safe: one test thread drives a cluster.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "tests/test_util.h"
#include "tests/two_nodes.h"

namespace flap::testing {

struct SlurmClusterOptions {
  int cpus = 4;                           // CPUs the node advertises
  int real_memory_mb = 4096;              // memory it advertises
  double start_timeout_s = 60.0;          // until the node is idle
  std::string partition = "debug";        // the one (default) partition
  int slurmd_timeout_s = 30;              // SlurmdTimeout: a node silent this long is set down
  int requeue_delay_s = 0;                // how long a requeued job waits before it may start
                                          // again (AuthInfo cred_expire); 0 = Slurm's 120 s
  std::vector<std::string> extra_config;  // lines appended to slurm.conf (preemption, requeue, ...)
  // Two nodes instead of one (tests/two_nodes.h): slurmctld and a slurmd on node A, a slurmd
  // on node B, each at its node's address; client commands run on node A. Not owned; must
  // outlive the cluster.
  const TwoNodes* nodes = nullptr;
};

class SlurmCluster {
 public:
  // Empty when every program the cluster needs is installed; else which are missing (for
  // a GTEST_SKIP that says why).
  static std::string MissingPrograms();

  static StatusOr<std::unique_ptr<SlurmCluster>> Start(const SlurmClusterOptions& options = {});
  ~SlurmCluster();
  SlurmCluster(const SlurmCluster&) = delete;
  SlurmCluster& operator=(const SlurmCluster&) = delete;

  // Idempotent; see the header comment.
  void Stop();

  const std::string& dir() const { return dir_; }
  const std::string& conf() const { return conf_; }  // slurm.conf path
  const std::string& node() const { return node_; }  // the (first) node's name: this hostname, or node-a
  // "env SLURM_CONF=... MARKER=... " to put before a client command line.
  std::string EnvPrefix() const;

  // Runs a client command line (e.g. "srun -n 2 hostname") against this cluster, killed
  // after timeout_s (exit code 124 then). Output is stdout and stderr together.
  RunResult Client(const std::string& command_line, double timeout_s = 120.0) const;
  // srun ARGS; when it fails, the output ends with Hint()'s explanation, if any.
  RunResult Srun(const std::string& args, double timeout_s = 300.0) const;
  RunResult Squeue(const std::string& args = "") const { return Client("squeue " + args, 30.0); }
  RunResult Scontrol(const std::string& args) const { return Client("scontrol " + args, 30.0); }
  // Submits a batch job; its id.
  StatusOr<std::string> Sbatch(const std::string& args) const;
  // One field of `scontrol show job` for a job (or an array task, "12_3"): e.g. "Restarts".
  StatusOr<std::string> JobField(const std::string& job_id, const std::string& field) const;
  // A job's state as scontrol reports it (PENDING, RUNNING, COMPLETED, CANCELLED, ...).
  StatusOr<std::string> JobState(const std::string& job_id) const { return JobField(job_id, "JobState"); }
  // Waits until the job's state is one of `states`; DeadlineExceeded naming the last state.
  Status WaitJobState(const std::string& job_id, const std::vector<std::string>& states, double timeout_s) const;

  // The records of `scontrol show job -o JOB`, each field -> value: one for a job, one per
  // array task of an array job (tasks that have not started yet may share one record, its
  // ArrayTaskId then a range). Empty when scontrol does not know the job.
  using JobRecord = std::map<std::string, std::string>;
  std::vector<JobRecord> ShowJobs(const std::string& job_id) const;
  // Whether a job in this state has ended in failure: FAILED, CANCELLED, TIMEOUT, NODE_FAIL,
  // OUT_OF_MEMORY, BOOT_FAIL, DEADLINE.
  static bool FailedState(const std::string& state);
  // The jobs among `job_ids` (an array job: each of its tasks) that have ended in failure,
  // each with its state, exit code and reason, then the last `log_lines` lines of its output
  // file (StdOut) and Hint()'s explanation of them; empty when none has.
  std::string FailedJobs(const std::vector<std::string>& job_ids, int log_lines = 60) const;
  // What the output of srun (or of a batch job) says is missing on this machine, as a line
  // naming the fix: e.g. the mpi/pmix plugin cannot load libpmix.so (apt-get install
  // libpmix-dev). Empty when it says nothing known.
  static std::string Hint(const std::string& output);

  // The last lines of the daemons' logs (for failure messages).
  std::string Logs() const;

  // A node's slurmd (`node` as in NodeName: node(), or the two-node fixture's host names)
  // killed with SIGKILL, as when its machine fails: slurmctld stops hearing from it and marks
  // the node down after SlurmdTimeout; the job steps on it (slurmstepd) are left running.
  // NotFound for a node this cluster does not have; Internal when it does not end.
  Status KillSlurmd(const std::string& node);
  // Starts a node's slurmd again (after KillSlurmd); with ReturnToService=2 the node returns to
  // service once it registers. FailedPrecondition while its slurmd still runs.
  Status RestartSlurmd(const std::string& node);
  // A node's state as sinfo reports it (idle, mixed, allocated, down*, ...); "" when unknown.
  std::string NodeState(const std::string& node) const;

 private:
  SlurmCluster() = default;
  Status Launch(const SlurmClusterOptions& options);

  // The slurmd of node i: its name, the slurm.conf it reads, the command that starts it.
  struct Slurmd {
    std::string node, command;
    size_t daemon = 0;  // its index in daemons_
  };
  Status LaunchDaemon(const std::string& command, const std::string& log);

  std::string dir_, conf_, node_, marker_;
  std::vector<pid_t> daemons_;  // munged, slurmctld, slurmd (one per node)
  std::vector<Slurmd> slurmds_;
  const TwoNodes* nodes_ = nullptr;
  bool stopped_ = false;
};

}  // namespace flap::testing
