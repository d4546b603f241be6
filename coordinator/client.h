// CoordinatorClient: the small client library for flap-coordinator's RPCs, used by worker
// groups (the worker's agent and its coordinator-backed shard source), by flapctl and by the
// tests. It links gRPC and the generated protocol only, never LibTorch. The protocol and the
// meaning of each call are in coordinator/service.h.
//
// Every call has a deadline (ClientOptions::deadline_ms) and carries the shared token. Calls
// are not retried here: a caller that retries (after UNAVAILABLE, say) may, because every call
// of the protocol is idempotent for the same arguments (see service.h). Errors come back as
// Status values with the gRPC code (coordinator/grpc_status.h: one to one) and a message that
// starts with the code's name, e.g. "[UNAUTHENTICATED] wrong token ...". The codes a caller
// acts on:
//   kInvalidArgument     the request is wrong (the message names the field)
//   kNotFound            an unknown sweep, trial or lease (the message names the id)
//   kAlreadyExists       a sweep of that name with other contents exists
//   kFailedPrecondition  the trial is no longer the caller's (a stale attempt: stop it)
//   kAborted             the shard lease expired before its completion arrived
//   kUnauthenticated     no or wrong token
//   kUnavailable         the coordinator is down or restarting: retry later
//   kCancelled           the coordinator ended the call unanswered (it was shutting down:
//                        the client never cancels its own calls): retry later
//   kDeadlineExceeded    no answer within deadline_ms
// IsTransient says which of them mean "retry later".
//
// Thread-safety: thread-safe; one client may be shared by every rank of a process.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/grpc_status.h"
#include "coordinator/trial_state.h"
#include "proto/coordinator.grpc.pb.h"

namespace flap::coordinator {

struct ClientOptions {
  std::string target = "127.0.0.1:7070";  // host:port of flap-coordinator
  std::string token;                      // the shared token (required)
  std::string tls_ca;                     // PEM of the CA to trust; "" = plaintext
  std::string tls_server_name;            // override of the name checked in the cert; "" = host
  bool insecure = false;                  // allow plaintext to a target that is not loopback
  int64_t deadline_ms = 10000;            // per call
};

// A token has at least this many characters: 128 bits when they are hex digits (`openssl rand
// -hex 16`; the coordinator makes 64, from 32 random bytes).
inline constexpr size_t kMinTokenChars = 32;

// InvalidArgument naming `where` the token came from unless it has kMinTokenChars characters
// or more.
Status CheckTokenLength(const std::string& token, const std::string& where);

// Reads a token file, surrounding whitespace dropped. FailedPrecondition naming the file, its
// mode and the chmod that fixes it when group or others may read it; NotFound when it cannot
// be read; InvalidArgument when it is empty or the token too short (CheckTokenLength).
StatusOr<std::string> ReadTokenFile(const std::string& path);

// Reads the token: from `path` if non-empty (ReadTokenFile), else from $FLAP_COORDINATOR_TOKEN,
// else from the file $FLAP_COORDINATOR_TOKEN_FILE. Surrounding whitespace is dropped. NotFound /
// InvalidArgument saying where it looked; a token file or a token refused as ReadTokenFile.
StatusOr<std::string> ReadToken(const std::string& path);

// Whether `host` (an address or a name, IPv6 in brackets or not) is a loopback address:
// 127.0.0.0/8, ::1, or a name that resolves to loopback addresses only. "", "*", "0.0.0.0" and
// "[::]" (every interface) are not loopback.
bool IsLoopbackHost(const std::string& host);

// Plaintext to a target that is not loopback would put the token on the network in the clear:
// InvalidArgument saying to give a CA (--tls-ca) or --insecure, unless the options have a CA
// or `insecure` set. A "unix:" target is local. OK otherwise. (The server's side:
// CheckListenSecurity.)
Status CheckTargetSecurity(const ClientOptions& options);

// What a group needs to know after NextTrial.
struct TrialAssignment {
  v1::TrialRef trial;
  std::string base_config;
  std::map<std::string, std::string> overrides;
  std::string resume_checkpoint;  // "" = from scratch
  int64_t resume_step = 0;
  std::string asha_metric;
  std::string asha_unit = "steps";  // what asha_rungs count: steps | samples | flops | seconds
  std::vector<double> asha_rungs;
};

struct NextTrialResult {
  bool assigned = false;
  TrialAssignment assignment;
  bool all_done = false;
  int64_t retry_after_ms = 0;
  std::string waiting;  // not assigned: a pending trial this group's size cannot take, and why
  v1::NextTrialResponse message;  // the answer as received (a worker group passes it to its ranks)
};

// The fields of a NextTrial answer (what CoordinatorClient::NextTrial returns for it).
NextTrialResult ReadNextTrial(const v1::NextTrialResponse& resp);

// Whether a call's failure means "the coordinator is away for now: retry later" rather than an
// answer: kUnavailable (down, restarting, its journal failed), kCancelled (it shut down with the
// call in flight) and kDeadlineExceeded (no answer in time). Every other code is the
// coordinator's answer to the call.
bool IsTransient(const Status& s);

struct ShardLease {
  enum class Kind { kGranted, kWait, kEpochDone };
  Kind kind = Kind::kGranted;
  uint64_t lease_id = 0;
  std::string shard_name;
  int64_t num_samples = 0;
  int64_t deadline_unix_ms = 0;
  int64_t retry_after_ms = 0;
};

class CoordinatorClient {
 public:
  // Creates a channel to options.target (nothing is sent yet). InvalidArgument for an empty
  // token or target.
  static StatusOr<std::unique_ptr<CoordinatorClient>> Connect(const ClientOptions& options);

  // ---- Worker group calls ----
  StatusOr<v1::RegisterGroupResponse> Register(const std::string& group_id, const std::string& incarnation,
                                               int world_size, const std::string& host = "",
                                               const std::vector<std::string>& metrics_endpoints = {});
  StatusOr<v1::HeartbeatResponse> Heartbeat(const std::string& group_id, const std::vector<int>& ranks = {});
  StatusOr<NextTrialResult> NextTrial(const std::string& group_id);
  // Shards as (name, samples).
  StatusOr<v1::BeginEpochResponse> BeginEpoch(const std::string& group_id, const v1::TrialRef& trial, int epoch,
                                              const std::vector<std::pair<std::string, int64_t>>& shards);
  // slot: which of the rank's read-ahead slots asks (service.h).
  StatusOr<ShardLease> LeaseShard(const std::string& group_id, const v1::TrialRef& trial, int epoch, int rank,
                                  int slot = 0);
  // The shard at `position` of the epoch's order (rank r of W reads positions r, r + W, ...:
  // service.h, step 5).
  StatusOr<ShardLease> LeaseShardAt(const std::string& group_id, const v1::TrialRef& trial, int epoch, int rank,
                                    int position);
  StatusOr<v1::CompleteShardResponse> CompleteShard(const std::string& group_id, const v1::TrialRef& trial, int epoch,
                                                    uint64_t lease_id);
  // Returns the action: CONTINUE, or STOP (with reason in *reason).
  StatusOr<v1::Action> ReportMetrics(const std::string& group_id, const v1::TrialRef& trial, MetricKind kind,
                                     int64_t step, int epoch, const std::map<std::string, double>& values,
                                     int64_t total_steps = 0, std::string* reason = nullptr);
  Status ReportCheckpoint(const std::string& group_id, const v1::TrialRef& trial, const std::string& ref, int64_t step);
  Status Finish(const std::string& group_id, const v1::TrialRef& trial);
  // Gives the trial back; `cause` (trial_state.h) picks the retry budget it counts against.
  // Returns the trial's new state: kPending (requeued) or kFailed (the budget ran out).
  StatusOr<TrialState> Fail(const std::string& group_id, const v1::TrialRef& trial, FailureCause cause,
                            const std::string& error);

  // ---- User calls ----
  StatusOr<v1::SubmitSweepResponse> SubmitSweep(const std::string& sweep_text, const std::string& source,
                                                const std::string& base_config);
  StatusOr<v1::SweepStatus> GetSweep(const std::string& sweep_id);
  StatusOr<v1::ListSweepsResponse> ListSweeps();
  StatusOr<int> CancelSweep(const std::string& sweep_id);
  StatusOr<std::vector<v1::MetricRecord>> GetMetrics(const std::string& sweep_id, const std::string& trial_id = "");
  StatusOr<std::vector<v1::ReportFile>> GetReport(const std::string& sweep_id, double target = 0);
  // Validation's choice in each cell of the sweep (coordinator/report.h SelectBest).
  StatusOr<v1::GetBestResponse> GetBest(const std::string& sweep_id);

  v1::Coordinator::Stub* stub() { return stub_.get(); }
  const ClientOptions& options() const { return options_; }

 private:
  CoordinatorClient(const ClientOptions& options, std::shared_ptr<grpc::Channel> channel);
  // A context with the deadline and the token.
  void Prepare(grpc::ClientContext* ctx) const;
  // LeaseShard's call and reply, for both ways of asking.
  StatusOr<ShardLease> Lease(const v1::LeaseShardRequest& req);

  const ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

}  // namespace flap::coordinator
