// CoordinatorService: the gRPC service of flap-coordinator (proto/coordinator.proto), written
// with gRPC's callback API. It owns every sweep's state: it expands sweeps into trials, hands
// trials to worker groups and shards to their ranks, records metrics and checkpoints, runs
// ASHA, and journals every change in RocksDB before the reply that reveals it.
//
// ---------------------------------------------------------------------------------------------
// The protocol
//
// Users submit sweeps (SubmitSweep: the sweep file's text, coordinator/sweep.h, and the base
// config's text). An invalid sweep is refused whole (INVALID_ARGUMENT listing every error)
// before anything is stored. A valid one is expanded into trials, all journaled as pending in
// one batch. The sweep id is its name; submitting the same text again is a no-op, a different
// sweep under a taken name is refused (ALREADY_EXISTS).
//
// A worker group (the ranks of one trial) talks to the coordinator through one agent, usually
// its rank 0, except for the shard calls, which every rank makes for itself:
//
//   1. RegisterGroup(group_id, incarnation, world_size, metrics_endpoints). The group chooses
//      its id (or lets the coordinator name it) and a fresh random incarnation per process
//      start; metrics_endpoints are its ranks' Prometheus endpoints (see Observability). Registering
//      again with the same incarnation is a retry and changes nothing; with a new incarnation
//      the group has restarted, so the trial it held is lost: it is requeued (node_fault) and
//      resumes from its latest checkpoint. The reply gives the heartbeat interval, the
//      heartbeat timeout and the lease ttl.
//   2. Heartbeat(group_id, ranks) every heartbeat interval. It keeps the group alive and renews
//      the shard leases of the listed ranks. It answers CONTINUE (the trial goes on), STOP
//      (early-stopped by ASHA, cancelled, or taken from the group: stop at once; the reason
//      says which) or IDLE (the group holds no trial; a group that believes it runs one
//      stops it too: the reason of a STOP is kept in memory only, so after a coordinator
//      restart a group whose trial was taken hears IDLE). A group whose last heartbeat is older
//      than the heartbeat timeout is lost: its trial is requeued as a node fault, its leases
//      are revoked (their shards return to the pool), and every later call it makes for that
//      attempt is refused as stale (FAILED_PRECONDITION).
//   3. NextTrial(group_id). A group holds at most one trial. If it holds one, the same
//      assignment comes back (a retry); otherwise the coordinator assigns the first pending
//      trial in queue order: sweeps by priority (higher first), then by submission, trials by
//      number. The assignment carries the trial's attempt number, the base config, the
//      overrides (factor values, train.seed, and train.trial_id = "<sweep>-<trial>" naming its
//      checkpoints) and the checkpoint to resume from (the latest
//      one the trial reported; "" = from scratch). With nothing to assign it says when to ask
//      again, and whether every sweep is done.
//   4. BeginEpoch(trial, epoch, shards): rank 0 declares the shards of an epoch (names and
//      sample counts, from its data plan). Idempotent; the same epoch with a different list is
//      refused. The shard table belongs to the trial, not to the attempt: after a requeue the
//      next attempt continues the same table, so each shard is done once per epoch.
//   5. LeaseShard(trial, epoch, rank) by each rank for its next shard: GRANTED with a lease
//      and its deadline, WAIT (every undone shard is leased; retry after the given delay) or
//      EPOCH_DONE. A rank reads ahead through numbered slots (LeaseShard's slot, 0..4095) and
//      holds at most one lease per slot and epoch: asking again for a slot that holds one
//      returns that lease, renewed (so a retried call does not strand a shard). Expired
//      leases are reaped before each grant and on a timer; their shards go back to the pool,
//      lowest index first. Or by position (LeaseShard's position): rank r of W leases
//      positions r, r + W, ... of the epoch's order, so who reads what is a pure function of
//      the seed, the epoch, the shards and W; another holder's lease on the position (a lost
//      attempt's) expires, and a completion by an earlier attempt is rescinded, since the
//      resumed attempt replays the epoch from its checkpoint (lease.h, AcquireAt). The worker
//      leases by position, and by slot for the rest of an epoch it cannot replay (a trial
//      resumed on a group of another size). CompleteShard(lease) when the shard is consumed:
//      idempotent (a retry counts nothing), refused when the lease expired (the shard counts
//      under its next lease), so each sample is counted once per epoch whatever fails.
//   6. ReportMetrics(trial, kind, step, values): TRAIN records (loss, contrastive, recon,
//      logit_scale, samples_per_second, ...) and EVAL records (t2a_r1/r5/r10, a2t_r1/r5/r10,
//      map10, ...: evaluations on the validation split, which decide) and, once at the end of a
//      trial, a TEST record (the test split's metrics for the checkpoint validation selected,
//      with selected_step; step is the trial's last step). A TEST record is stored for the
//      report only: it moves no progress, status, ETA or Prometheus figure and never reaches
//      ASHA. The history is kept per (trial, kind, step): a retry or a resumed attempt
//      reporting a step again overwrites that step (a record re-sent because its reply was
//      lost is stored once). A record of an attempt that ended by requeue or failure is refused
//      as stale but kept as history where its (kind, step) has no record yet: a group that lost
//      its trial while the coordinator was away still delivers what it trained before the
//      resumed attempt's checkpoint. When the sweep has ASHA and an EVAL record
//      carries its metric at or past a rung the trial has no decision for, ASHA decides; STOP
//      in the reply means the trial was stopped (state stopped; its checkpoints and results
//      stay) and the group is free for its next trial.
//   7. ReportCheckpoint(trial, ref, step) after a checkpoint is durable and verified on the
//      worker's side; the newest report is where a requeued trial resumes.
//   8. FinishTrial(trial) when training and the final evaluation are done (idempotent for the
//      same attempt), or FailTrial(trial, cause, error) with cause PREEMPTION, NODE_FAULT or
//      TRIAL_ERROR: the trial is requeued while that cause's budget lasts, else marked failed
//      with the error; the sweep goes on either way. Both free the group. A FailTrial whose
//      reply was lost is refused as stale when retried: the attempt has already ended.
//
// A call for a trial carries (sweep_id, trial_id, attempt) and the group id; it is refused
// with FAILED_PRECONDITION unless that attempt is the trial's current one and the group holds
// it. The first trial-scoped call of an attempt moves it from assigned to running.
//
// When every trial of a sweep is terminal the sweep is finished and, if a report folder is
// configured, its ablation report (coordinator/report.h) is written there in the background.
// GetReport returns that report at any time; GetBest, validation's choice in each cell (the
// trial, the step validation selected within it, its checkpoint's reference and its figures:
// SelectBest in coordinator/report.h) with the sweep's base config; both from committed state.
// CancelSweep cancels every trial not yet terminal; groups running them get STOP.
//
// ---------------------------------------------------------------------------------------------
// Observability
//
// MetricsSnapshot() copies, under the lock, what the coordinator's Prometheus metrics show
// (metrics/coordinator_metrics.h): the sweeps still running and the `metrics_ended_sweeps`
// most recently submitted ended ones, with every trial's state, progress, latest TRAIN and
// EVAL records and ETA; groups live; leases active and expired. It is taken at each scrape,
// so handlers update nothing for it. It reads memory without waiting for the journal, so a
// scrape may show a change a moment before it is committed (observability, not a reply).
//
// With `sd_file` set, the coordinator keeps a Prometheus file_sd file there (replaced
// atomically) listing the metrics endpoint of every rank of every live group (last heartbeat
// within the heartbeat timeout), labelled group, rank, and sweep and trial while the group
// holds one, plus its own endpoint (`sd_self_endpoint`) labelled job="flap-coordinator". The
// file is rewritten by the reaper when that list changes (so within reap_interval_ms of a
// registration, an assignment or a loss); a group that re-registers replaces its endpoints,
// and a lost group's disappear. The endpoints are journaled with the group, so a restarted
// coordinator lists them again for the grace period.
//
// ---------------------------------------------------------------------------------------------
// Invariants
//   - Durability: every change is staged, as typed records of the state store
//     (coordinator/state_store.h: its tables, keys and record formats, over the Journal), under
//     the service's lock and the reply is sent only after it is committed (synced); a reply
//     that only reads waits for whatever was staged before it, so no reply reveals state that
//     a crash could lose.
//   - A trial runs on at most one group, and only its current attempt may move it
//     (coordinator/trial_state.h), so a lost group that comes back cannot finish it twice.
//   - Lease deadlines: a grace period, not durable deadlines. Lease grants and completions are
//     journaled, but renewals by heartbeat are not (they would cost an fsync per heartbeat).
//     When the coordinator restarts, every active lease gets a full ttl and every group
//     holding a trial a full heartbeat timeout, counted from the restart. A deadline told to a
//     worker is thus never shortened by a restart; a group that died while the coordinator was
//     down is detected one timeout after the restart.
//   - Times (lease deadlines, metric times) are wall-clock milliseconds since the epoch.
//
// Errors: INVALID_ARGUMENT names the request field and what is wrong; NOT_FOUND names the id;
// FAILED_PRECONDITION says which state forbids the call; UNAUTHENTICATED says the token is
// missing or wrong; UNAVAILABLE when the journal failed (restart the coordinator).
//
// Thread-safety: one mutex (mu_) guards all state (GUARDED_BY, checked by Clang:
// scripts/check_thread_safety.sh); handlers run on gRPC's threads and never wait on disk under
// the lock (replies are finished from the journal's callback). The report threads are a
// ReportRunner's and the file_sd file an SdFileWriter's, each with a lock of its own.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "coordinator/asha.h"
#include "coordinator/lease.h"
#include "coordinator/report.h"
#include "coordinator/report_runner.h"
#include "coordinator/sd_file_writer.h"
#include "coordinator/state_store.h"
#include "coordinator/sweep.h"
#include "coordinator/trial_state.h"
#include "metrics/coordinator_metrics.h"
#include "metrics/metrics.h"
#include "proto/coordinator.grpc.pb.h"

namespace flap::coordinator {

struct ServiceOptions {
  std::string state_dir;                 // RocksDB folder (required)
  std::string token;                     // the shared token every call must carry (required)
  int64_t heartbeat_interval_ms = 5000;  // told to groups
  int64_t heartbeat_timeout_ms = 30000;  // a group silent this long is lost
  int64_t lease_ttl_ms = 60000;          // a shard lease lives this long after grant or renewal
  int64_t reap_interval_ms = 250;        // how often lost groups and expired leases are reaped
  RetryBudgets budgets;                  // per trial, for each cause
  std::string report_dir;                // "" = no automatic report when a sweep finishes
  bool report_plots = true;              // run gnuplot for the automatic report
  bool sync = true;                      // fsync each commit (false: benchmarks only)
  std::function<int64_t()> now_ms;       // wall clock in ms; default: system_clock
  int metrics_ended_sweeps = 10;         // ended sweeps whose series stay in MetricsSnapshot
  std::string sd_file;                   // "" = no file_sd file (see Observability)
  std::string sd_self_endpoint;          // the coordinator's own metrics host:port for sd_file; "" = none
  // Called once when a journal write fails (JournalOptions::on_failure): the service then only
  // answers UNAVAILABLE, so flap-coordinator exits and is restarted from the journal.
  std::function<void(const Status&)> on_journal_failure;
};

// The metadata key carrying the token.
inline constexpr char kTokenMetadataKey[] = "x-flap-token";

class CoordinatorService final : public flap::coordinator::v1::Coordinator::CallbackService {
 public:
  // Opens the journal in options.state_dir and restores every sweep, trial, group, lease
  // table and ASHA state from it (see "Lease deadlines" for the grace period). IOError when
  // the folder cannot be opened (e.g. held by another coordinator); Corruption naming the key
  // when a stored value is damaged; InvalidArgument for bad options.
  static StatusOr<std::unique_ptr<CoordinatorService>> Create(const ServiceOptions& options);
  // Stops the reaper and report threads and commits what is staged.
  ~CoordinatorService() override;

  // The RPCs (see the protocol above). Each checks the token first.
  grpc::ServerUnaryReactor* RegisterGroup(grpc::CallbackServerContext* ctx, const v1::RegisterGroupRequest* req,
                                          v1::RegisterGroupResponse* resp) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx, const v1::HeartbeatRequest* req,
                                      v1::HeartbeatResponse* resp) override;
  grpc::ServerUnaryReactor* NextTrial(grpc::CallbackServerContext* ctx, const v1::NextTrialRequest* req,
                                      v1::NextTrialResponse* resp) override;
  grpc::ServerUnaryReactor* BeginEpoch(grpc::CallbackServerContext* ctx, const v1::BeginEpochRequest* req,
                                       v1::BeginEpochResponse* resp) override;
  grpc::ServerUnaryReactor* LeaseShard(grpc::CallbackServerContext* ctx, const v1::LeaseShardRequest* req,
                                       v1::LeaseShardResponse* resp) override;
  grpc::ServerUnaryReactor* CompleteShard(grpc::CallbackServerContext* ctx, const v1::CompleteShardRequest* req,
                                          v1::CompleteShardResponse* resp) override;
  grpc::ServerUnaryReactor* ReportMetrics(grpc::CallbackServerContext* ctx, const v1::ReportMetricsRequest* req,
                                          v1::ReportMetricsResponse* resp) override;
  grpc::ServerUnaryReactor* ReportCheckpoint(grpc::CallbackServerContext* ctx, const v1::ReportCheckpointRequest* req,
                                             v1::ReportCheckpointResponse* resp) override;
  grpc::ServerUnaryReactor* FinishTrial(grpc::CallbackServerContext* ctx, const v1::FinishTrialRequest* req,
                                        v1::FinishTrialResponse* resp) override;
  grpc::ServerUnaryReactor* FailTrial(grpc::CallbackServerContext* ctx, const v1::FailTrialRequest* req,
                                      v1::FailTrialResponse* resp) override;
  grpc::ServerUnaryReactor* SubmitSweep(grpc::CallbackServerContext* ctx, const v1::SubmitSweepRequest* req,
                                        v1::SubmitSweepResponse* resp) override;
  grpc::ServerUnaryReactor* GetSweep(grpc::CallbackServerContext* ctx, const v1::GetSweepRequest* req,
                                     v1::SweepStatus* resp) override;
  grpc::ServerUnaryReactor* ListSweeps(grpc::CallbackServerContext* ctx, const v1::ListSweepsRequest* req,
                                       v1::ListSweepsResponse* resp) override;
  grpc::ServerUnaryReactor* CancelSweep(grpc::CallbackServerContext* ctx, const v1::CancelSweepRequest* req,
                                        v1::CancelSweepResponse* resp) override;
  grpc::ServerUnaryReactor* GetMetrics(grpc::CallbackServerContext* ctx, const v1::GetMetricsRequest* req,
                                       v1::GetMetricsResponse* resp) override;
  grpc::ServerUnaryReactor* GetReport(grpc::CallbackServerContext* ctx, const v1::GetReportRequest* req,
                                      v1::GetReportResponse* resp) override;
  grpc::ServerUnaryReactor* GetBest(grpc::CallbackServerContext* ctx, const v1::GetBestRequest* req,
                                    v1::GetBestResponse* resp) override;

  // Blocks until every report started so far has been written (tests, shutdown).
  void WaitForReports();

  // What the coordinator's metrics show now (see Observability). Takes mu_.
  metrics::CoordinatorSnapshot MetricsSnapshot() const EXCLUDES(mu_);

  // Sizes of the in-memory state (tests: what stays bounded as sweeps come and go). Takes mu_.
  struct MemoryStats {
    size_t sweeps = 0, trials = 0, groups = 0;
    size_t lease_tables = 0;    // leases_: one per begun epoch of a trial not yet ended
    size_t epoch_trials = 0;    // epochs_: trials with a lease table
    size_t report_threads = 0;  // report threads not yet joined
  };
  MemoryStats memory_stats() const EXCLUDES(mu_);

 private:
  // The stored records (coordinator/state_store.h) and what the service keeps in memory only.
  struct SweepEntry : SweepRecord {
    std::optional<Asha> asha;                        // journaled in its own table
    std::map<std::string, std::string> base_values;  // ConfigValues(base_config), not journaled
  };
  struct TrialEntry {
    TrialEntry(std::string sweep_id, TrialSpec trial_spec, Trial state)
        : sweep(std::move(sweep_id)), spec(std::move(trial_spec)), trial(std::move(state)) {}
    std::string sweep;
    TrialSpec spec;
    Trial trial;
    int64_t total_steps = 0;
    TrialRow row() const { return {spec, trial.record(), total_steps}; }
    std::map<std::string, double> latest_train;
    std::map<std::string, double> latest_eval;
    int64_t latest_eval_step = -1;  // the step of latest_eval
    int64_t latest_train_step = -1;
    // For the ETA, in memory only: when and at which step the current attempt was first seen.
    int64_t rate_t0_ms = 0;
    int64_t rate_step0 = -1;
    int64_t rate_t1_ms = 0;
    int64_t rate_step1 = -1;
  };
  struct GroupEntry : GroupRecord {
    std::string trial_key;  // "sweep/trial" it holds, "" = none
    int attempt = 0;
    int64_t last_heartbeat_ms = 0;  // in memory only (grace period on restart)
    v1::TrialRef revoked;           // the trial taken from it, told by Heartbeat as STOP
    std::string revoked_reason;
  };

  explicit CoordinatorService(const ServiceOptions& options);
  Status Load() EXCLUDES(mu_);
  int64_t Now() const;

  // Finishes `reactor` once the journal has committed sequence `seq`.
  void ReplyWhenDurable(grpc::ServerUnaryReactor* reactor, uint64_t seq, grpc::Status status);
  grpc::Status Authorize(grpc::CallbackServerContext* ctx) const;

  // Helpers below run under mu_ and stage their changes into *batch.

  // The registered group a request names (`group_id` checked as a request field); NOT_FOUND
  // otherwise.
  grpc::Status FindGroup(const std::string& group_id, GroupEntry** out) REQUIRES(mu_);
  // A trial-scoped request, checked by OpenTrial.
  struct TrialScope {
    std::string key;  // the trial key, "sweep/trial"
    int attempt = 0;  // the request's attempt: the trial's current one
    TrialEntry* trial = nullptr;
    GroupEntry* group = nullptr;  // the group that sends the request and holds the attempt
  };
  // The preamble of every trial-scoped handler, called once: the request's group id and trial
  // reference are well-formed, the group is registered, the trial exists and is not terminal,
  // and the attempt is the trial's current one, held by this group (FAILED_PRECONDITION
  // otherwise: a stale attempt). The call counts as a sign of life of the group.
  grpc::Status OpenTrial(const std::string& group_id, const v1::TrialRef& ref, TrialScope* out) REQUIRES(mu_);
  // The lease table of an epoch BeginEpoch declared for the scope's trial, as the key of
  // leases_ and the table; NOT_FOUND naming the epoch and the trial otherwise.
  grpc::Status BegunEpoch(const TrialScope& scope, int epoch, std::map<std::string, LeaseTable>::iterator* out)
      REQUIRES(mu_);
  // A metric record of an attempt that ended by requeue or failure (ReportMetrics refused it as
  // stale): staged as history when its (trial, kind, step) has no committed record, so a record
  // its group could not deliver before the attempt ended is not lost and never replaces one.
  void KeepLateMetric(const v1::TrialRef& ref, MetricPoint point, StateBatch* batch) REQUIRES(mu_);
  // Moves the scope's assigned attempt to running (its first report).
  void EnsureRunning(const TrialScope& scope, StateBatch* batch) REQUIRES(mu_);
  // Takes the trial from its group; `reason` non-empty: Heartbeat tells the group STOP.
  void ReleaseGroup(const std::string& group_id, const std::string& reason, StateBatch* batch) REQUIRES(mu_);
  // Requeues (or fails) a trial whose attempt ended, revoking its leases.
  void EndAttempt(const std::string& key, TrialEntry* t, FailureCause cause, const std::string& error,
                  StateBatch* batch) REQUIRES(mu_);
  void RevokeLeases(const std::string& key, StateBatch* batch) REQUIRES(mu_);
  // Drops the lease tables of an ended sweep's trials from memory (the journal keeps them; a
  // restart does not load the tables of ended trials): nothing leases shards of an ended trial.
  void PruneEndedSweep(const std::string& sweep_id) REQUIRES(mu_);
  // Expires the leases of `table` (epoch `ekey`) past their deadline, journals and counts them.
  void ExpireLeases(const std::string& ekey, LeaseTable* table, int64_t now, StateBatch* batch) REQUIRES(mu_);
  // Whether the group heartbeated within the heartbeat timeout.
  bool GroupLive(const GroupEntry& g, int64_t now) const;
  // The trial's step rate (steps per ms) over its current attempt; 0 when not known yet.
  static double StepRate(const TrialEntry& t);
  // Seconds until the trial's last step; 0 once terminal, -1 when not known.
  static double TrialEta(const TrialEntry& t);
  // The file_sd targets (see Observability); runs under mu_.
  std::vector<metrics::ScrapeTarget> SdTargets(int64_t now) const REQUIRES(mu_);
  // Marks the sweep finished when all its trials are terminal; queues its report.
  void MaybeFinishSweep(const std::string& sweep_id, StateBatch* batch) REQUIRES(mu_);
  void FillAssignment(const std::string& key, const TrialEntry& t, v1::Assignment* a) const REQUIRES(mu_);
  void FillTrialStatus(const TrialEntry& t, v1::TrialStatus* out) const REQUIRES(mu_);
  void Reap() EXCLUDES(mu_);
  void ReapLoop() EXCLUDES(mu_);
  // Runs `fn(batch)` under mu_, stages the batch and replies once it is committed.
  template <typename Fn>
  grpc::ServerUnaryReactor* Handle(grpc::CallbackServerContext* ctx, Fn&& fn) EXCLUDES(mu_);
  // Handle for a trial-scoped request (one with group_id() and trial()): OpenTrial first, its
  // refusal the reply, then `fn(scope, batch)`.
  template <typename Request, typename Fn>
  grpc::ServerUnaryReactor* HandleTrial(grpc::CallbackServerContext* ctx, const Request& req, Fn&& fn);
  // Replies `status` at once (after the token check): for requests refused before any state
  // is read.
  grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* ctx, grpc::Status status);
  // The committed metric history of a sweep (or one trial), in key order. Locks nothing.
  StatusOr<std::vector<MetricPoint>> History(const std::string& sweep_id, const std::string& trial_id) const;
  // What the report of a sweep needs; takes mu_.
  StatusOr<ReportInput> ReportInputFor(const std::string& sweep_id) const EXCLUDES(mu_);
  // Answers a read of a sweep's report input (GetReport, GetBest): the token, sweep_id and
  // `checked` (the request's other checks) first; then, once everything staged before is
  // committed, answer(ReportInputFor(sweep_id)) fills the reply (NOT_FOUND for an unknown sweep).
  grpc::ServerUnaryReactor* FromReportInput(grpc::CallbackServerContext* ctx, const std::string& sweep_id,
                                            grpc::Status checked, std::function<void(const ReportInput&)> answer);
  // Starts writing the sweep's report into options_.report_dir on reports_ (if one is set).
  void WriteReportInBackground(const std::string& sweep_id);

  const ServiceOptions options_;
  std::unique_ptr<StateStore> store_;

  mutable Mutex mu_;
  std::map<std::string, SweepEntry> sweeps_ GUARDED_BY(mu_);
  std::map<std::string, TrialEntry> trials_ GUARDED_BY(mu_);  // by "sweep/trial"
  std::map<std::string, GroupEntry> groups_ GUARDED_BY(mu_);
  std::map<std::string, LeaseTable> leases_ GUARDED_BY(mu_);     // by "sweep/trial/epoch"
  std::map<std::string, std::set<int>> epochs_ GUARDED_BY(mu_);  // trial key -> its epochs
  Counters counters_ GUARDED_BY(mu_);
  std::vector<std::string> reports_due_ GUARDED_BY(mu_);  // sweeps just ended
  int64_t leases_expired_ GUARDED_BY(mu_) = 0;            // since start
  std::unique_ptr<SdFileWriter> sd_file_;                 // null without options_.sd_file
  bool stop_ GUARDED_BY(mu_) = false;
  CondVar stop_cv_;

  ReportRunner reports_;  // the automatic reports of ended sweeps

  std::thread reaper_;
};

}  // namespace flap::coordinator
