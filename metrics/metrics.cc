#include "metrics/metrics.h"

#include <prometheus/exposer.h>
#include <prometheus/registry.h>
#include <unistd.h>

#include <exception>

#include <nlohmann/json.hpp>

#include "sharding/file_util.h"

namespace flap::metrics {

MetricsServer::~MetricsServer() = default;

StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == listen.size()) {
    return Status::InvalidArgument("metrics address '" + listen + "' is not host:port");
  }
  for (size_t i = colon + 1; i < listen.size(); ++i) {
    if (listen[i] < '0' || listen[i] > '9') return Status::InvalidArgument("metrics address '" + listen + "': bad port");
  }
  std::unique_ptr<MetricsServer> s(new MetricsServer());
  s->registry_ = std::make_shared<prometheus::Registry>();
  try {
    s->exposer_ = std::make_unique<prometheus::Exposer>(listen, /*num_threads=*/1);
  } catch (const std::exception& e) {
    return Status::IOError("cannot serve metrics on '" + listen + "': " + e.what());
  }
  s->exposer_->RegisterCollectable(s->registry_);
  const auto ports = s->exposer_->GetListeningPorts();
  if (ports.empty()) return Status::IOError("cannot serve metrics on '" + listen + "': no listening port");
  s->port_ = ports.front();
  std::string host = listen.substr(0, colon);
  if (host == "0.0.0.0" || host == "[::]" || host == "::") {
    char name[256] = {0};
    host = ::gethostname(name, sizeof(name) - 1) == 0 ? name : "localhost";
  }
  s->endpoint_ = host + ":" + std::to_string(s->port_);
  return s;
}

Status WriteFileSd(const std::string& path, const std::vector<ScrapeTarget>& targets) {
  nlohmann::json groups = nlohmann::json::array();
  for (const ScrapeTarget& t : targets) groups.push_back({{"targets", {t.endpoint}}, {"labels", t.labels}});
  return sharding::WriteFileAtomic(path, groups.dump(2) + "\n");
}

}  // namespace flap::metrics
