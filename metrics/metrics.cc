#include "metrics/metrics.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "sharding/file_util.h"

namespace flap::metrics {

MetricsServer::~MetricsServer() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) ::close(fd_);
}

StatusOr<HostPort> ParseHostPort(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size() || colon + 6 < address.size()) {
    return Status::InvalidArgument("address '" + address + "' is not host:port");
  }
  HostPort out;
  out.host = address.substr(0, colon);
  const bool bracketed = out.host.size() > 2 && out.host.front() == '[' && out.host.back() == ']';
  for (char c : bracketed ? out.host.substr(1, out.host.size() - 2) : out.host) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' ||
                    (c == '*' && out.host.size() == 1) || (bracketed && c == ':');
    if (!ok) return Status::InvalidArgument("address '" + address + "': bad host '" + out.host + "'");
  }
  for (size_t i = colon + 1; i < address.size(); ++i) {
    if (address[i] < '0' || address[i] > '9') return Status::InvalidArgument("address '" + address + "': bad port");
  }
  out.port = std::stoi(address.substr(colon + 1));
  if (out.port > 65535) return Status::InvalidArgument("address '" + address + "': port above 65535");
  return out;
}

StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen) {
  StatusOr<HostPort> parsed = ParseHostPort(listen);
  if (!parsed.ok()) return parsed.status().WithContext("metrics");
  std::string host = parsed->host;
  const int port = parsed->port;
  addrinfo hints{}, *found = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  const std::string bind_host = host == "*" ? "0.0.0.0" : host;
  if (::getaddrinfo(bind_host.c_str(), nullptr, &hints, &found) != 0 || found == nullptr) {
    return Status::InvalidArgument("metrics address '" + listen + "': unknown host '" + host + "'");
  }
  sockaddr_in addr = *reinterpret_cast<sockaddr_in*>(found->ai_addr);
  ::freeaddrinfo(found);
  addr.sin_port = htons(static_cast<uint16_t>(port));

  std::unique_ptr<MetricsServer> s(new MetricsServer());
  s->fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(s->fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (s->fd_ < 0 || ::bind(s->fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(s->fd_, 64) != 0) {
    return Status::IOError("cannot serve metrics on '" + listen + "': " + std::strerror(errno));
  }
  socklen_t len = sizeof(addr);
  ::getsockname(s->fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  s->port_ = ntohs(addr.sin_port);
  if (bind_host == "0.0.0.0") {
    char name[256] = {0};
    host = ::gethostname(name, sizeof(name) - 1) == 0 ? name : "localhost";
  }
  s->endpoint_ = host + ":" + std::to_string(s->port_);
  s->registry_ = std::make_shared<prometheus::Registry>();
  MetricsServer* raw = s.get();
  s->thread_ = std::thread([raw] { raw->Serve(); });
  return s;
}

void MetricsServer::AddCollectable(std::weak_ptr<prometheus::Collectable> collectable) {
  std::lock_guard<std::mutex> lock(mu_);
  collectables_.push_back(std::move(collectable));
}

std::vector<prometheus::MetricFamily> MetricsServer::Collect() {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  std::vector<std::shared_ptr<prometheus::Collectable>> live;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& weak : collectables_) {
      if (auto c = weak.lock()) live.push_back(std::move(c));
    }
  }
  for (const auto& c : live) {
    for (auto& f : c->Collect()) families.push_back(std::move(f));
  }
  return families;
}

void MetricsServer::Serve() {
  const prometheus::TextSerializer serializer;
  while (!stop_) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    // Read the request head (bounded in size and time); only its first line matters.
    std::string request;
    char buf[2048];
    while (request.find("\r\n\r\n") == std::string::npos && request.size() < 16384) {
      pollfd q{c, POLLIN, 0};
      if (::poll(&q, 1, 2000) <= 0) break;
      const ssize_t n = ::recv(c, buf, sizeof(buf), 0);
      if (n <= 0) break;
      request.append(buf, static_cast<size_t>(n));
    }
    std::string status = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8", body;
    if (request.rfind("GET /metrics", 0) == 0 && (request.size() == 12 || request[12] == ' ' || request[12] == '?')) {
      body = serializer.Serialize(Collect());
    } else if (request.rfind("GET ", 0) == 0) {
      status = "404 Not Found";
      body = "metrics are served on /metrics\n";
    } else {
      status = "405 Method Not Allowed";
      body = "GET /metrics only\n";
    }
    const std::string head = "HTTP/1.1 " + status + "\r\nContent-Type: " + type +
                             "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
    const std::string out = head + body;
    size_t sent = 0;
    while (sent < out.size()) {
      const ssize_t n = ::send(c, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    ::close(c);
  }
}

Status WriteFileSd(const std::string& path, const std::vector<ScrapeTarget>& targets) {
  nlohmann::json groups = nlohmann::json::array();
  for (const ScrapeTarget& t : targets) groups.push_back({{"targets", {t.endpoint}}, {"labels", t.labels}});
  return sharding::WriteFileAtomic(path, groups.dump(2) + "\n");
}

}  // namespace flap::metrics
