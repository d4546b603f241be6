// `flap-worker agent`: a worker group that runs the trials a coordinator assigns, one after
// another, until every sweep is done (the protocol: coordinator/service.h).
//
// Every rank of the group runs the agent; the ranks join one worker group at start (the
// launcher's variables, as for `flap-worker train`) and keep it for all their trials. Rank 0
// speaks for the group (worker/speaker.h): it registers (group id, a fresh incarnation, the
// ranks' metrics endpoints), heartbeats from its own thread, asks NextTrial, reports metrics,
// checkpoints, the end or the failure of each trial. It sends the other ranks what to do next
// over the group (BroadcastBytes of a coordinator::v1::GroupInstruction: the group's id once
// registered, then the coordinator's NextTrialResponse as it came, a wait, or an exit code).
// Every rank leases its own shards (worker/lease_source.h).
//
// A trial's config is the sweep's base config, then this agent's own `--KEY VALUE` overrides
// (site settings: data.path, ckpt.root, threads, metrics...), then the trial's overrides
// (factor values, train.seed, train.trial_id), which always win except on the keys local to
// the worker (config/trial_config.h, ConfigKey::local_only), which the trial cannot set; all
// applied in memory. train.output_dir, when set, gets the trial id appended. With ckpt.root set a trial resumes from
// its newest verified checkpoint, so a requeued trial continues where its last group stopped; ckpt.root must be shared
// by every group that may run the trial.
//
// What ends a trial and what the coordinator hears:
//   finished                      FinishTrial; next trial
//   ASHA stop, cancel, trial taken (ReportMetrics or Heartbeat says STOP / IDLE): nothing to
//                                 report; next trial
//   SIGTERM / SIGUSR1 / SIGUSR2 / SIGINT (preemption): last checkpoint, FailTrial(PREEMPTION),
//                                 exit kExitStopped (75) on every rank
//   an error of the group (a rank lost: DeadlineExceeded, IOError; the checkpoint storage
//                                 failing save after save: IsCheckpointStorageFault):
//                                 FailTrial(NODE_FAULT), exit 1 (the group is broken; its
//                                 launcher restarts it)
//   any other error (data, config, a diverged loss): FailTrial(TRIAL_ERROR); next trial
// The agent exits 0 when the coordinator says every sweep is done (a coordinator holding no
// sweep yet is waited on: groups may start before the first submission), 75 after a stop signal
// while idle, 1 when the coordinator stays unreachable past `rpc_retry_s`, 2 for bad options.
//
// Records (metrics, checkpoints, FinishTrial, FailTrial) go through an outbox (worker/outbox.h)
// in $TMPDIR/flap-outbox-<uid>/<coordinator id>-<group> (worker/speaker.h): a sender thread
// delivers them in order, retrying each through transient failures (coordinator::IsTransient)
// for as long as the coordinator is away, so none is
// lost to a restart of any length; training waits only on an evaluation's answer (an ASHA rung),
// for at most rpc_retry_s. Before asking for its next trial the group waits (telling its ranks
// to wait) until every record of the last one is acknowledged. At exit the agent waits up to
// rpc_retry_s for them, and leaves the rest in the folder for the group's next start (an empty
// folder is removed).
//
// Timeouts: every RPC has a deadline and transient failures (UNAVAILABLE, DEADLINE_EXCEEDED:
// a coordinator restarting) of the other calls are retried for rpc_retry_s; ranks waiting for
// rank 0's next instruction wait at most dist.timeout (rank 0 sends one at least every second).
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace flap::worker {

struct AgentOptions {
  std::string coordinator;             // host:port of flap-coordinator
  std::string coordinator_file;        // or a file holding host:port (waited for: a coordinator job
                                       // writes it when it starts)
  std::string token_file;              // "" = $FLAP_COORDINATOR_TOKEN / $FLAP_COORDINATOR_TOKEN_FILE
  std::string tls_ca;                  // PEM file of the CA to trust; "" = plaintext
  bool insecure = false;               // allow plaintext to a coordinator that is not on loopback
  std::string group_id;                // "" = $SLURM_ARRAY_JOB_ID_$SLURM_ARRAY_TASK_ID, $SLURM_JOB_ID,
                                       // or host-pid
  std::vector<std::string> overrides;  // --KEY VALUE pairs over the sweep's base config
  double rpc_retry_s = 120.0;          // retry transient RPC failures (and wait for the coordinator file) this long
  int max_trials = 0;                  // > 0: exit 0 after this many trials
};

// Runs the agent; returns the process exit code described above. Progress goes to `log`.
int RunAgent(const AgentOptions& options, std::ostream& log);

}  // namespace flap::worker
