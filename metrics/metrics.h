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
#include <mutex>
#include <string>
#include <thread>
#include <vector>

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

// The HTTP side is a small GET-only responder on one thread (each scrape: the registry
// collected and written in the text format, then the connection closed). prometheus-cpp's own
// exposer (CivetWeb) cannot start in a process that has loaded LibTorch 1.13: its server
// context fails after a successful bind, so the workers could not use it.
class MetricsServer {
 public:
  // Serves /metrics on `listen` ("host:port"; port 0 picks a free one). InvalidArgument for a
  // malformed address, IOError naming it when it cannot be bound.
  static StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen);
  ~MetricsServer();  // stops serving and joins the thread

  prometheus::Registry& registry() { return *registry_; }
  // Adds a source of metric families collected at each scrape after the registry's (for
  // values read from elsewhere when scraped); it is skipped once it has expired.
  void AddCollectable(std::weak_ptr<prometheus::Collectable> collectable);
  int port() const { return port_; }
  // "host:port" as a scraper reaches it (the listen host, or this machine's host name when
  // listening on every interface).
  std::string endpoint() const { return endpoint_; }

 private:
  MetricsServer() = default;
  void Serve();
  std::vector<prometheus::MetricFamily> Collect();  // the registry's families, then the collectables'
  std::shared_ptr<prometheus::Registry> registry_;
  std::mutex mu_;
  std::vector<std::weak_ptr<prometheus::Collectable>> collectables_;  // GUARDED_BY(mu_)
  int fd_ = -1;
  int port_ = 0;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
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
