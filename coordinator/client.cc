// Implementation of coordinator/client.h.
#include "coordinator/client.h"

#include "common/file_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace flap::coordinator {
namespace {

std::string Trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

}  // namespace

Status CheckTokenLength(const std::string& token, const std::string& where) {
  if (token.size() >= kMinTokenChars) return Status::OK();
  return Status::InvalidArgument("the token in " + where + " has " + std::to_string(token.size()) +
                                 " characters: a token needs at least " + std::to_string(kMinTokenChars) +
                                 " (128 bits as hex digits; make one with `openssl rand -hex 32`)");
}

StatusOr<std::string> ReadTokenFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::NotFound("cannot read the token file " + path + ": " + std::strerror(errno));
  struct stat st = {};
  const bool stated = ::fstat(fd, &st) == 0;
  ::close(fd);
  if (!stated) return Status::IOError("cannot stat the token file " + path + ": " + std::strerror(errno));
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::FailedPrecondition("the token file " + path + " has mode " + mode +
                                      ": group or others may read it; run chmod 600 " + path);
  }
  StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return Status::NotFound("cannot read the token file " + path + ": " + text.status().message());
  std::string token = Trim(*text);
  if (token.empty()) return Status::InvalidArgument("the token file " + path + " is empty");
  FLAP_RETURN_IF_ERROR(CheckTokenLength(token, "the token file " + path));
  return token;
}

StatusOr<std::string> ReadToken(const std::string& path) {
  if (!path.empty()) return ReadTokenFile(path);
  if (const char* t = std::getenv("FLAP_COORDINATOR_TOKEN"); t && *t) {
    std::string token = Trim(t);
    FLAP_RETURN_IF_ERROR(CheckTokenLength(token, "$FLAP_COORDINATOR_TOKEN"));
    return token;
  }
  if (const char* f = std::getenv("FLAP_COORDINATOR_TOKEN_FILE"); f && *f) return ReadTokenFile(f);
  return Status::NotFound(
      "no coordinator token: give --token-file, or set $FLAP_COORDINATOR_TOKEN or "
      "$FLAP_COORDINATOR_TOKEN_FILE (the coordinator writes it to <state-dir>/token)");
}

bool IsLoopbackHost(const std::string& host_in) {
  std::string host = host_in;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty() || host == "*" || host == "0.0.0.0" || host == "::") return false;
  if (host == "localhost") return true;
  in_addr v4{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  // A name: loopback when every address it resolves to is.
  addrinfo hints{}, *found = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 || found == nullptr) return false;
  bool all = true;
  for (addrinfo* a = found; a != nullptr && all; a = a->ai_next) {
    if (a->ai_family == AF_INET) {
      all = (ntohl(reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr.s_addr) >> 24) == 127;
    } else if (a->ai_family == AF_INET6) {
      all = IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr);
    } else {
      all = false;
    }
  }
  ::freeaddrinfo(found);
  return all;
}

Status CheckTargetSecurity(const ClientOptions& options) {
  if (!options.tls_ca.empty() || options.insecure) return Status::OK();
  std::string target = options.target;
  if (target.rfind("unix:", 0) == 0) return Status::OK();
  for (const char* scheme : {"dns:///", "ipv4:", "ipv6:"}) {
    if (target.rfind(scheme, 0) == 0) target = target.substr(std::string(scheme).size());
  }
  // "host:port", "[v6]:port", or a host (a bare IPv6 address included) without a port.
  std::string host = target;
  if (!target.empty() && target.front() == '[') {
    host = target.substr(0, target.find(']') + 1);
  } else if (std::count(target.begin(), target.end(), ':') == 1) {
    host = target.substr(0, target.find(':'));
  }
  if (IsLoopbackHost(host)) return Status::OK();
  return Status::InvalidArgument("refusing to send the token in plaintext to " + options.target +
                                 ", which is not a loopback address: give the coordinator's CA (--tls-ca, or "
                                 "$FLAP_COORDINATOR_TLS_CA), or pass --insecure on a network you trust");
}

StatusOr<std::unique_ptr<CoordinatorClient>> CoordinatorClient::Connect(const ClientOptions& options) {
  if (options.token.empty()) return Status::InvalidArgument("coordinator client: empty token");
  if (options.target.empty()) return Status::InvalidArgument("coordinator client: empty target");
  FLAP_RETURN_IF_ERROR(CheckTargetSecurity(options));
  if (options.deadline_ms <= 0) return Status::InvalidArgument("coordinator client: deadline_ms <= 0");
  std::shared_ptr<grpc::ChannelCredentials> creds;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);  // GetSweep of a 10,000-trial sweep, reports
  if (options.tls_ca.empty()) {
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls_ca;
    creds = grpc::SslCredentials(ssl);
    if (!options.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name);
    }
  }
  auto channel = grpc::CreateCustomChannel(options.target, creds, args);
  return std::unique_ptr<CoordinatorClient>(new CoordinatorClient(options, std::move(channel)));
}

CoordinatorClient::CoordinatorClient(const ClientOptions& options, std::shared_ptr<grpc::Channel> channel)
    : options_(options), channel_(std::move(channel)), stub_(v1::Coordinator::NewStub(channel_)) {}

void CoordinatorClient::Prepare(grpc::ClientContext* ctx) const {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(options_.deadline_ms));
  ctx->AddMetadata("x-flap-token", options_.token);
}

#define FLAP_CALL(method, req, resp) \
  grpc::ClientContext ctx;           \
  Prepare(&ctx);                     \
  FLAP_RETURN_IF_ERROR(FromGrpc(stub_->method(&ctx, req, &resp)))

StatusOr<v1::RegisterGroupResponse> CoordinatorClient::Register(const std::string& group_id,
                                                                const std::string& incarnation, int world_size,
                                                                const std::string& host,
                                                                const std::vector<std::string>& metrics_endpoints) {
  v1::RegisterGroupRequest req;
  req.set_group_id(group_id);
  req.set_incarnation(incarnation);
  req.set_world_size(world_size);
  req.set_host(host);
  for (const std::string& e : metrics_endpoints) req.add_metrics_endpoints(e);
  v1::RegisterGroupResponse resp;
  FLAP_CALL(RegisterGroup, req, resp);
  return resp;
}

StatusOr<v1::HeartbeatResponse> CoordinatorClient::Heartbeat(const std::string& group_id,
                                                             const std::vector<int>& ranks) {
  v1::HeartbeatRequest req;
  req.set_group_id(group_id);
  for (int r : ranks) req.add_ranks(r);
  v1::HeartbeatResponse resp;
  FLAP_CALL(Heartbeat, req, resp);
  return resp;
}

NextTrialResult ReadNextTrial(const v1::NextTrialResponse& resp) {
  NextTrialResult r;
  r.assigned = resp.assigned();
  r.all_done = resp.all_done();
  r.retry_after_ms = resp.retry_after_ms();
  r.waiting = resp.waiting();
  if (r.assigned) {
    const auto& a = resp.assignment();
    r.assignment.trial = a.trial();
    r.assignment.base_config = a.base_config();
    r.assignment.overrides.insert(a.overrides().begin(), a.overrides().end());
    r.assignment.resume_checkpoint = a.resume_checkpoint();
    r.assignment.resume_step = a.resume_step();
    r.assignment.asha_metric = a.asha_metric();
    if (a.asha_rung_points_size() > 0) {
      r.assignment.asha_unit = a.asha_unit().empty() ? "steps" : a.asha_unit();
      r.assignment.asha_rungs.assign(a.asha_rung_points().begin(), a.asha_rung_points().end());
    } else {  // a coordinator that counts rungs in steps only
      r.assignment.asha_rungs.assign(a.asha_rungs().begin(), a.asha_rungs().end());
    }
  }
  r.message = resp;
  return r;
}

bool IsTransient(const Status& s) {
  return s.code() == Status::Code::kUnavailable || s.code() == Status::Code::kCancelled ||
         s.code() == Status::Code::kDeadlineExceeded;
}

StatusOr<NextTrialResult> CoordinatorClient::NextTrial(const std::string& group_id) {
  v1::NextTrialRequest req;
  req.set_group_id(group_id);
  v1::NextTrialResponse resp;
  FLAP_CALL(NextTrial, req, resp);
  return ReadNextTrial(resp);
}

StatusOr<v1::BeginEpochResponse> CoordinatorClient::BeginEpoch(
    const std::string& group_id, const v1::TrialRef& trial, int epoch,
    const std::vector<std::pair<std::string, int64_t>>& shards) {
  v1::BeginEpochRequest req;
  req.set_group_id(group_id);
  *req.mutable_trial() = trial;
  req.set_epoch(epoch);
  for (const auto& [name, n] : shards) {
    auto* s = req.add_shards();
    s->set_name(name);
    s->set_num_samples(n);
  }
  v1::BeginEpochResponse resp;
  FLAP_CALL(BeginEpoch, req, resp);
  return resp;
}

StatusOr<ShardLease> CoordinatorClient::LeaseShard(const std::string& group_id, const v1::TrialRef& trial, int epoch,
                                                   int rank, int slot) {
  v1::LeaseShardRequest req;
  req.set_group_id(group_id);
  *req.mutable_trial() = trial;
  req.set_epoch(epoch);
  req.set_rank(rank);
  req.set_slot(slot);
  return Lease(req);
}

StatusOr<ShardLease> CoordinatorClient::LeaseShardAt(const std::string& group_id, const v1::TrialRef& trial,
                                                     int epoch, int rank, int position) {
  v1::LeaseShardRequest req;
  req.set_group_id(group_id);
  *req.mutable_trial() = trial;
  req.set_epoch(epoch);
  req.set_rank(rank);
  req.set_position(position);
  return Lease(req);
}

StatusOr<ShardLease> CoordinatorClient::Lease(const v1::LeaseShardRequest& req) {
  v1::LeaseShardResponse resp;
  FLAP_CALL(LeaseShard, req, resp);
  ShardLease l;
  l.kind = resp.kind() == v1::LeaseShardResponse::GRANTED ? ShardLease::Kind::kGranted
           : resp.kind() == v1::LeaseShardResponse::WAIT  ? ShardLease::Kind::kWait
                                                          : ShardLease::Kind::kEpochDone;
  l.lease_id = resp.lease_id();
  l.shard_name = resp.shard_name();
  l.num_samples = resp.num_samples();
  l.deadline_unix_ms = resp.deadline_unix_ms();
  l.retry_after_ms = resp.retry_after_ms();
  return l;
}

StatusOr<v1::CompleteShardResponse> CoordinatorClient::CompleteShard(const std::string& group_id,
                                                                     const v1::TrialRef& trial, int epoch,
                                                                     uint64_t lease_id) {
  v1::CompleteShardRequest req;
  req.set_group_id(group_id);
  *req.mutable_trial() = trial;
  req.set_epoch(epoch);
  req.set_lease_id(lease_id);
  v1::CompleteShardResponse resp;
  FLAP_CALL(CompleteShard, req, resp);
  return resp;
}

StatusOr<v1::Action> CoordinatorClient::ReportMetrics(const std::string& group_id, const v1::TrialRef& trial,
                                                      MetricKind kind, int64_t step, int epoch,
                                                      const std::map<std::string, double>& values, int64_t total_steps,
                                                      std::string* reason) {
  v1::ReportMetricsRequest req;
  req.set_group_id(group_id);
  *req.mutable_trial() = trial;
  req.set_kind(kind == MetricKind::kEval   ? v1::ReportMetricsRequest::EVAL
               : kind == MetricKind::kTest ? v1::ReportMetricsRequest::TEST
                                           : v1::ReportMetricsRequest::TRAIN);
  req.set_step(step);
  req.set_epoch(epoch);
  req.set_total_steps(total_steps);
  for (const auto& [k, v] : values) (*req.mutable_values())[k] = v;
  v1::ReportMetricsResponse resp;
  FLAP_CALL(ReportMetrics, req, resp);
  if (reason) *reason = resp.reason();
  return resp.action();
}

Status CoordinatorClient::ReportCheckpoint(const std::string& group_id, const v1::TrialRef& trial,
                                           const std::string& ref, int64_t step) {
  v1::ReportCheckpointRequest req;
  req.set_group_id(group_id);
  *req.mutable_trial() = trial;
  req.set_ref(ref);
  req.set_step(step);
  v1::ReportCheckpointResponse resp;
  FLAP_CALL(ReportCheckpoint, req, resp);
  return Status::OK();
}

Status CoordinatorClient::Finish(const std::string& group_id, const v1::TrialRef& trial) {
  v1::FinishTrialRequest req;
  req.set_group_id(group_id);
  *req.mutable_trial() = trial;
  v1::FinishTrialResponse resp;
  FLAP_CALL(FinishTrial, req, resp);
  return Status::OK();
}

StatusOr<TrialState> CoordinatorClient::Fail(const std::string& group_id, const v1::TrialRef& trial, FailureCause cause,
                                             const std::string& error) {
  v1::FailTrialRequest req;
  req.set_group_id(group_id);
  *req.mutable_trial() = trial;
  switch (cause) {
    case FailureCause::kPreemption:
      req.set_cause(v1::FailTrialRequest::PREEMPTION);
      break;
    case FailureCause::kNodeFault:
      req.set_cause(v1::FailTrialRequest::NODE_FAULT);
      break;
    case FailureCause::kTrialError:
      req.set_cause(v1::FailTrialRequest::TRIAL_ERROR);
      break;
  }
  req.set_error(error);
  v1::FailTrialResponse resp;
  FLAP_CALL(FailTrial, req, resp);
  return ParseTrialState(resp.state());
}

StatusOr<v1::SubmitSweepResponse> CoordinatorClient::SubmitSweep(const std::string& sweep_text,
                                                                 const std::string& source,
                                                                 const std::string& base_config) {
  v1::SubmitSweepRequest req;
  req.set_sweep_text(sweep_text);
  req.set_source(source);
  req.set_base_config(base_config);
  v1::SubmitSweepResponse resp;
  FLAP_CALL(SubmitSweep, req, resp);
  return resp;
}

StatusOr<v1::SweepStatus> CoordinatorClient::GetSweep(const std::string& sweep_id) {
  v1::GetSweepRequest req;
  req.set_sweep_id(sweep_id);
  v1::SweepStatus resp;
  FLAP_CALL(GetSweep, req, resp);
  return resp;
}

StatusOr<v1::ListSweepsResponse> CoordinatorClient::ListSweeps() {
  v1::ListSweepsRequest req;
  v1::ListSweepsResponse resp;
  FLAP_CALL(ListSweeps, req, resp);
  return resp;
}

StatusOr<int> CoordinatorClient::CancelSweep(const std::string& sweep_id) {
  v1::CancelSweepRequest req;
  req.set_sweep_id(sweep_id);
  v1::CancelSweepResponse resp;
  FLAP_CALL(CancelSweep, req, resp);
  return resp.cancelled_trials();
}

StatusOr<std::vector<v1::MetricRecord>> CoordinatorClient::GetMetrics(const std::string& sweep_id,
                                                                      const std::string& trial_id) {
  v1::GetMetricsRequest req;
  req.set_sweep_id(sweep_id);
  req.set_trial_id(trial_id);
  v1::GetMetricsResponse resp;
  FLAP_CALL(GetMetrics, req, resp);
  return std::vector<v1::MetricRecord>(resp.records().begin(), resp.records().end());
}

StatusOr<std::vector<v1::ReportFile>> CoordinatorClient::GetReport(const std::string& sweep_id, double target) {
  v1::GetReportRequest req;
  req.set_sweep_id(sweep_id);
  req.set_target(target);
  v1::GetReportResponse resp;
  FLAP_CALL(GetReport, req, resp);
  return std::vector<v1::ReportFile>(resp.files().begin(), resp.files().end());
}

StatusOr<v1::GetBestResponse> CoordinatorClient::GetBest(const std::string& sweep_id) {
  v1::GetBestRequest req;
  req.set_sweep_id(sweep_id);
  v1::GetBestResponse resp;
  FLAP_CALL(GetBest, req, resp);
  return resp;
}

#undef FLAP_CALL

}  // namespace flap::coordinator
