// CoordinatorServer: flap-coordinator's gRPC server around CoordinatorService: the listening
// port, optional TLS, the shared token (read from its file, or generated and stored with
// mode 0600 when the file does not exist), and optionally the Prometheus /metrics endpoint
// (metrics/coordinator_metrics.h; every RPC is counted and timed by a server interceptor).
// main() of flap-coordinator, the tests and the benchmark all start the coordinator through
// it, so they run the same server.
//
// Thread-safety: Start, port() and token() from any thread; Shutdown once.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "coordinator/client.h"
#include "coordinator/service.h"
#include "metrics/coordinator_metrics.h"
#include "metrics/metrics.h"

namespace flap::coordinator {

// The largest request the server reads (RESOURCE_EXHAUSTED beyond): SubmitSweep's texts are
// at most 1 MiB each, a BeginEpoch of 100,000 shards with names of ~50 bytes is about 6 MiB.
inline constexpr int kMaxRequestBytes = 8 << 20;
// The memory gRPC may use for every connection and call together (grpc::ResourceQuota).
inline constexpr size_t kServerMemoryQuotaBytes = size_t{512} << 20;

// How long a gRPC connection may stay without doing anything useful, so that callers who
// connect and say nothing, or go idle, give their descriptors back (gRPC channel arguments).
// A client's channel reconnects by itself on its next call.
struct ConnectionLimits {
  // TLS and the HTTP/2 setup (the client's preface and SETTINGS) must be done within this, or
  // the connection is closed (GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS; gRPC's default is 120 s).
  int64_t handshake_timeout_ms = 10000;
  // A connection without a call for this long is sent GOAWAY and closed
  // (GRPC_ARG_MAX_CONNECTION_IDLE_MS; gRPC's default: never).
  int64_t max_idle_ms = 60000;
  // Any connection is sent GOAWAY at this age, and closed max_age_grace_ms later, its calls
  // ended (GRPC_ARG_MAX_CONNECTION_AGE_MS, _GRACE_MS; gRPC's default: never).
  int64_t max_age_ms = 30 * 60 * 1000;
  int64_t max_age_grace_ms = 60000;
  // While calls are open, the server pings the client every keepalive_time_ms and closes the
  // connection when no answer comes within keepalive_timeout_ms (a peer gone without a FIN).
  int64_t keepalive_time_ms = 60000;
  int64_t keepalive_timeout_ms = 20000;
};

struct ServerOptions {
  std::string listen = "127.0.0.1:7070";  // host:port; port 0 picks a free one
  std::string token_file;                 // "" = <state_dir>/token
  std::string tls_cert;                   // PEM certificate chain file; "" = plaintext
  std::string tls_key;                    // PEM private key file (with tls_cert)
  std::string metrics_listen;             // host:port of /metrics (port 0: any free); "" = none
  bool insecure = false;                  // allow plaintext on an address that is not loopback
  ConnectionLimits connections;           // gRPC connections' time bounds
  metrics::MetricsServer::Limits metrics_limits;  // the /metrics responder's bounds
  ServiceOptions service;                 // service.token is filled from the token file
};

// Reads the token from `path`; when the file does not exist, generates 32 random bytes (hex)
// and writes them with mode 0600 (created exclusively, so two coordinators cannot race).
// An existing file is read with the clients' checks (ReadTokenFile, coordinator/client.h):
// FailedPrecondition when group or others may read it (the message says to chmod 600);
// InvalidArgument when it is empty or its token shorter than kMinTokenChars; IOError on a read
// or write failure.
StatusOr<std::string> LoadOrCreateToken(const std::string& path);

// Makes the folder `dir` (`what` names it in messages; its missing parents get the usual mode)
// private to this user: created with mode 0700, or tightened to 0700 when it exists wider (a
// state folder made 0755 or 0777 before). FailedPrecondition when it is not a folder or belongs
// to another user; IOError when it cannot be created or tightened.
Status MakePrivateDir(const std::string& dir, const std::string& what);

// Plaintext on a non-loopback address puts the token and every reply on the network in the
// clear: InvalidArgument saying to give --tls-cert / --tls-key or --insecure, unless TLS is set
// or options.insecure is. OK otherwise.
Status CheckListenSecurity(const ServerOptions& options);

// Raises this process's soft limit of open files (RLIMIT_NOFILE) to its hard limit; a line
// for the log saying what it is now ("open files: N (...)").
std::string RaiseOpenFileLimit();

class GrpcListener;  // server.cc: accepts the gRPC connections and hands them to gRPC

class CoordinatorServer {
 public:
  // Opens the state (CoordinatorService::Create), loads the token and starts serving (and
  // serving /metrics when options.metrics_listen is set; its endpoint then goes into the
  // service's sd_file too). InvalidArgument for a cert without a key (or the reverse) or a
  // malformed metrics address; IOError naming the file for an unreadable cert or key, and
  // naming the address when it cannot be bound; CheckListenSecurity's InvalidArgument for
  // plaintext on a non-loopback address without options.insecure.
  static StatusOr<std::unique_ptr<CoordinatorServer>> Start(const ServerOptions& options);
  // Shuts down (if not yet) and releases the state.
  ~CoordinatorServer();

  int port() const { return port_; }
  std::string address() const;  // "host:port" with the chosen port
  // "host:port" of /metrics with the chosen port; "" when not serving metrics.
  std::string metrics_endpoint() const { return metrics_server_ ? metrics_server_->endpoint() : ""; }
  const std::string& token() const { return token_; }
  CoordinatorService* service() { return service_.get(); }

  // Stops accepting calls, finishes those in flight (up to `grace_ms`), then returns.
  void Shutdown(int64_t grace_ms = 2000);
  // Blocks until Shutdown() has run.
  void Wait();

 private:
  CoordinatorServer() = default;

  ServerOptions options_;
  std::string token_;
  int port_ = 0;
  std::unique_ptr<CoordinatorService> service_;
  std::shared_ptr<metrics::CoordinatorMetrics> metrics_;  // counted by the interceptor
  std::unique_ptr<GrpcListener> listener_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<metrics::MetricsServer> metrics_server_;  // collects metrics_, which reads service_
  bool shut_down_ = false;
};

}  // namespace flap::coordinator
