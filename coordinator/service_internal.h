// Internals of CoordinatorService shared by its source files (service.cc: state, journal and
// the trial-scoped preamble; service_groups.cc, service_leases.cc, service_trials.cc,
// service_sweeps.cc: the RPC handlers by what they serve; service_observation.cc: metrics,
// discovery, the reaper and report threads). Request validation helpers and Handle, the one
// path every mutating RPC takes (the state's tables and keys are in coordinator/state_store.h).
// Not part of the API.
#pragma once

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "common/path_name.h"
#include "coordinator/grpc_status.h"
#include "coordinator/service.h"

// Returns the grpc::Status `expr` from the enclosing handler when it is not OK.
#define FLAP_RETURN_IF_GRPC_ERROR(expr)                    \
  do {                                                     \
    ::grpc::Status flap_grpc_status_ = (expr);             \
    if (!flap_grpc_status_.ok()) return flap_grpc_status_; \
  } while (0)

namespace flap::coordinator {
namespace service_internal {

constexpr size_t kMaxSweepText = 1 << 20;
constexpr int kMaxWorldSize = 65536;
constexpr int kMaxEpoch = 1000000;
constexpr int kMaxShards = 100000;
constexpr int kMaxSlot = 4095;
constexpr int64_t kMaxStep = 1000000000000LL;
constexpr size_t kMaxMetrics = 64;

inline grpc::Status Invalid(const std::string& field, const std::string& what) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, field + ": " + what);
}

// A status message's bytes at most, so that it fits gRPC's metadata limit (8 KiB by default on
// the client: a longer list reached a client as "received initial metadata size exceeds limit").
inline constexpr size_t kMaxErrorListBytes = 4096;

// ToGrpc(s) with its error list (a summary line, then one error per line) cut to the summary
// line, the first errors whole and a last line saying how many more there are, within
// `max_bytes`.
inline grpc::Status ToGrpcCapped(const Status& s, size_t max_bytes = kMaxErrorListBytes) {
  const std::string& m = s.message();
  if (m.size() <= max_bytes) return ToGrpc(s);
  std::vector<std::string> lines;
  for (size_t at = 0; at <= m.size();) {
    const size_t nl = std::min(m.find('\n', at), m.size());
    lines.push_back(m.substr(at, nl - at));
    at = nl + 1;
  }
  const std::string tail_room(64, ' ');  // room for the count line
  std::string out = lines[0].substr(0, max_bytes - tail_room.size());
  size_t kept = 1;
  while (kept < lines.size() && out.size() + 1 + lines[kept].size() + tail_room.size() <= max_bytes) {
    out += "\n" + lines[kept++];
  }
  const size_t more = lines.size() - kept;
  out += "\n  ... and " + std::to_string(more) + (more == 1 ? " more error" : " more errors") +
         " (flapctl sweep submit lists them all)";
  return grpc::Status(ToGrpcCode(s.code()), out);
}

inline std::string Quote(const std::string& s) {
  std::string shown = s.size() > 80 ? s.substr(0, 80) + "..." : s;
  return "'" + shown + "'";
}

// Ids become paths (reports, checkpoints): the shared path-name rule (common/path_name.h).
inline grpc::Status CheckId(const std::string& field, const std::string& value) {
  const std::string problem = PathNameProblem(value);
  if (problem.empty()) return grpc::Status::OK;
  return Invalid(field, value.empty() ? problem : Quote(value) + " " + problem);
}

inline grpc::Status CheckRef(const v1::TrialRef& ref) {
  grpc::Status s = CheckId("trial.sweep_id", ref.sweep_id());
  if (s.ok()) s = CheckId("trial.trial_id", ref.trial_id());
  if (s.ok() && ref.attempt() < 1) {
    s = Invalid("trial.attempt", "is " + std::to_string(ref.attempt()) + "; attempts count from 1");
  }
  return s;
}

// RegisterGroupRequest.metrics_endpoints: none, or one host:port (at most 256 bytes) per rank.
inline grpc::Status CheckEndpoints(const v1::RegisterGroupRequest& req) {
  const int n = req.metrics_endpoints_size();
  if (n != 0 && n != req.world_size()) {
    return Invalid("metrics_endpoints", "has " + std::to_string(n) + " entries; give none or one per rank (" +
                                            std::to_string(req.world_size()) + ")");
  }
  for (int i = 0; i < n; ++i) {
    const std::string field = "metrics_endpoints[" + std::to_string(i) + "]";
    const std::string& e = req.metrics_endpoints(i);
    if (e.size() > 256) return Invalid(field, "is longer than 256 bytes");
    StatusOr<metrics::HostPort> hp = metrics::ParseHostPort(e);
    if (!hp.ok()) return Invalid(field, hp.status().message());
    if (hp->host == "*" || hp->port == 0) {
      return Invalid(field, Quote(e) + " is not an address to scrape (a host name or address and a port > 0)");
    }
  }
  return grpc::Status::OK;
}

inline bool IsMetricName(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '@')) {
      return false;
    }
  }
  return true;
}

inline std::string RankId(const std::string& group, int rank) { return group + "/" + std::to_string(rank); }

// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
inline bool SameToken(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i % (b.empty() ? 1 : b.size())];
  return diff == 0 && !b.empty();
}

}  // namespace service_internal

// Runs `fn(batch)` under mu_, stages the batch and replies once it is durable.
template <typename Fn>
grpc::ServerUnaryReactor* CoordinatorService::Handle(grpc::CallbackServerContext* ctx, Fn&& fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  grpc::Status status = Authorize(ctx);
  if (!status.ok()) {
    reactor->Finish(status);
    return reactor;
  }
  if (!store_->healthy()) {
    reactor->Finish(
        grpc::Status(grpc::StatusCode::UNAVAILABLE, store_->status().message() + "; restart the coordinator"));
    return reactor;
  }
  uint64_t seq = 0;
  std::vector<std::string> reports;
  {
    MutexLock lock(&mu_);
    StateBatch batch;
    status = fn(&batch);
    seq = store_->Append(std::move(batch));
    reports.swap(reports_due_);
  }
  for (const auto& id : reports) WriteReportInBackground(id);
  ReplyWhenDurable(reactor, seq, status);
  return reactor;
}

template <typename Request, typename Fn>
grpc::ServerUnaryReactor* CoordinatorService::HandleTrial(grpc::CallbackServerContext* ctx, const Request& req,
                                                          Fn&& fn) {
  return Handle(ctx, [&](StateBatch* batch) REQUIRES(mu_) -> grpc::Status {
    TrialScope scope;
    FLAP_RETURN_IF_GRPC_ERROR(OpenTrial(req.group_id(), req.trial(), &scope));
    return fn(scope, batch);
  });
}

}  // namespace flap::coordinator
