#include "metrics/metrics.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

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

StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == listen.size() || colon + 6 < listen.size()) {
    return Status::InvalidArgument("metrics address '" + listen + "' is not host:port");
  }
  for (size_t i = colon + 1; i < listen.size(); ++i) {
    if (listen[i] < '0' || listen[i] > '9') return Status::InvalidArgument("metrics address '" + listen + "': bad port");
  }
  std::string host = listen.substr(0, colon);
  const int port = std::stoi(listen.substr(colon + 1));
  if (port > 65535) return Status::InvalidArgument("metrics address '" + listen + "': bad port");
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
      body = serializer.Serialize(registry_->Collect());
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
