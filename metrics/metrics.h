// Prometheus plumbing shared by the coordinator and the workers (prometheus-cpp): a registry
// served on /metrics by an HTTP exposer, and Prometheus file-based service discovery files
// that list scrape targets, so that a cluster's changing nodes are scraped without editing
// Prometheus's config. The metric catalogue is docs/metrics.md.
//
// Thread-safety: MetricsServer's registry and the metrics registered in it are safe from any
// thread (prometheus-cpp's families and metrics are). WriteFileSd is a free function.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace prometheus {
class Exposer;
class Registry;
}  // namespace prometheus

namespace flap::metrics {

class MetricsServer {
 public:
  // Serves /metrics on `listen` ("host:port"; port 0 picks a free one). InvalidArgument for a
  // malformed address, IOError naming it when it cannot be bound.
  static StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen);
  ~MetricsServer();

  prometheus::Registry& registry() { return *registry_; }
  int port() const { return port_; }
  // "host:port" as a scraper reaches it (the listen host, or this machine's host name when
  // listening on every interface).
  std::string endpoint() const { return endpoint_; }

 private:
  MetricsServer() = default;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
  std::string endpoint_;
};

// One scrape target of a file_sd file: its "host:port" and its labels.
struct ScrapeTarget {
  std::string endpoint;
  std::map<std::string, std::string> labels;
};

// Writes `targets` as a Prometheus file_sd JSON file ([{"targets": [...], "labels": {...}}]),
// atomically (temporary file + rename), so Prometheus never reads half a file. IOError naming
// the path on failure.
Status WriteFileSd(const std::string& path, const std::vector<ScrapeTarget>& targets);

}  // namespace flap::metrics
