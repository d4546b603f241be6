// Prometheus plumbing shared by the coordinator and the workers (prometheus-cpp): a registry
// served on /metrics over HTTP, and Prometheus file-based service discovery files
// that list scrape targets, so that a cluster's changing nodes are scraped without editing
// Prometheus's config. The metric catalogue is docs/metrics.md.
//
// Thread-safety: MetricsServer's registry and the metrics registered in it are safe from any
// thread (prometheus-cpp's families and metrics are), and so is AddCollectable. The rest are
// free functions.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"

namespace prometheus {
class Collectable;
struct MetricFamily;
class Registry;
}  // namespace prometheus

namespace flap::metrics {

// A "host:port" address, split.
struct HostPort {
  std::string host;
  int port = 0;
};

// Splits "host:port": a host of [A-Za-z0-9._-] (or "*", or a bracketed IPv6 address) and a
// port of 0 to 65535. InvalidArgument quoting the address and saying what is wrong.
StatusOr<HostPort> ParseHostPort(const std::string& address);

// The HTTP side is a small GET-only responder (each scrape: the registry collected and written
// in the text format, then the connection closed). One thread accepts and reads the request
// heads of every connection together (non-blocking, at most Limits::max_pending at once: a new
// one beyond closes the one waiting longest); a connection whose request has not come within
// request_timeout_ms is closed. So sockets that connect and say nothing take no answering slot
// and hold up no scrape. A complete request is answered on a thread of its own, at most
// Limits::max_connections at once (more are answered 503 and closed), and the response must be
// taken within response_timeout_ms, else the connection is dropped. So a slow or stalled client
// (a byte every few seconds, or one that never reads) holds only its own connection, for a
// bounded time, and never delays other scrapes or shutdown (every wait is cut into 100 ms
// slices that look at the stop flag). prometheus-cpp's own exposer
// (CivetWeb) cannot start in a process that has loaded LibTorch 1.13: its server context
// fails after a successful bind, so the workers could not use it.
class MetricsServer {
 public:
  struct Limits {
    int max_connections = 16;             // answered at once; more are refused with 503
    int max_pending = 256;                // waiting for their request; beyond, the oldest is closed
    int64_t request_timeout_ms = 5000;    // the whole request head must arrive within this
    int64_t response_timeout_ms = 15000;  // the whole response must be taken within this
  };

  // Serves /metrics on `listen` ("host:port"; port 0 picks a free one). InvalidArgument for a
  // malformed address, IOError naming it when it cannot be bound.
  static StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen);
  static StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen, const Limits& limits);
  ~MetricsServer();  // stops serving and joins the threads (within about 100 ms)

  prometheus::Registry& registry() { return *registry_; }
  // Adds a source of metric families collected at each scrape after the registry's (for
  // values read from elsewhere when scraped); it is skipped once it has expired.
  void AddCollectable(std::weak_ptr<prometheus::Collectable> collectable);
  int port() const { return port_; }
  // "host:port" as a scraper reaches it (the listen host, or this machine's host name when
  // listening on every interface).
  std::string endpoint() const { return endpoint_; }
  // Connections being answered now (tests).
  int active_connections() const;
  // Connections whose request has not arrived yet (tests).
  int pending_connections() const { return pending_count_; }

 private:
  struct Connection {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };

  MetricsServer() = default;
  void Serve();  // the accepting thread, which reads requests
  // Answers on a thread of its own, or 503.
  void Dispatch(int fd, const std::string& request) EXCLUDES(conn_mu_);
  void Respond(int fd, const std::string& request);  // one connection, on its own thread; closes fd
  // Joins finished connection threads (all: every one).
  void JoinFinished(bool all) EXCLUDES(conn_mu_);
  // The registry's families, then the collectables'.
  std::vector<prometheus::MetricFamily> Collect() REQUIRES(collect_mu_) EXCLUDES(mu_);
  std::shared_ptr<prometheus::Registry> registry_;
  Limits limits_;
  Mutex collect_mu_;  // one collection at a time (collectables need not be reentrant)
  Mutex mu_;          // taken inside collect_mu_, never around it
  std::vector<std::weak_ptr<prometheus::Collectable>> collectables_ GUARDED_BY(mu_);
  mutable Mutex conn_mu_;
  std::vector<Connection> connections_ GUARDED_BY(conn_mu_);
  int active_ GUARDED_BY(conn_mu_) = 0;
  int fd_ = -1;
  int port_ = 0;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::atomic<int> pending_count_{0};
  std::thread thread_;
};

// One scrape target of a file_sd file: its "host:port" and its labels.
struct ScrapeTarget {
  std::string endpoint;
  std::map<std::string, std::string> labels;

  bool operator==(const ScrapeTarget& o) const { return endpoint == o.endpoint && labels == o.labels; }
};

// Writes `targets` as a Prometheus file_sd JSON file ([{"targets": [...], "labels": {...}}]),
// atomically (temporary file + rename), so Prometheus never reads half a file. IOError naming
// the path on failure.
Status WriteFileSd(const std::string& path, const std::vector<ScrapeTarget>& targets);

}  // namespace flap::metrics
