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

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <deque>

#include <nlohmann/json.hpp>

#include "common/file_util.h"

namespace flap::metrics {

MetricsServer::~MetricsServer() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  JoinFinished(/*all=*/true);
  if (fd_ >= 0) ::close(fd_);
}

namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Waits for `events` on `fd` until `deadline_ms` (steady clock), in slices of at most 100 ms
// that give up once *stop is set. True when the socket is ready.
bool WaitReady(int fd, short events, int64_t deadline_ms, const std::atomic<bool>& stop) {
  while (!stop) {
    const int64_t left = deadline_ms - NowMs();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 100)));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
  return false;
}

// Sends all of `out` on the non-blocking `fd` by `deadline_ms`; false when it could not.
bool SendAll(int fd, const std::string& out, int64_t deadline_ms, const std::atomic<bool>& stop) {
  size_t sent = 0;
  while (sent < out.size()) {
    const ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      if (!WaitReady(fd, POLLOUT, deadline_ms, stop)) return false;
    } else {
      return false;
    }
  }
  return true;
}

std::string HttpResponse(const std::string& status, const std::string& type, const std::string& body) {
  return "HTTP/1.1 " + status + "\r\nContent-Type: " + type + "\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n\r\n" + body;
}

}  // namespace

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
  return Start(listen, Limits());
}

StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen, const Limits& limits) {
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
  s->limits_ = limits;
  s->limits_.max_connections = std::max(1, limits.max_connections);
  s->limits_.max_pending = std::max(1, limits.max_pending);
  s->fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);  // accepts until EAGAIN
  int one = 1;
  ::setsockopt(s->fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (s->fd_ < 0 || ::bind(s->fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(s->fd_, 64) != 0) {
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
  MutexLock lock(&mu_);
  collectables_.push_back(std::move(collectable));
}

std::vector<prometheus::MetricFamily> MetricsServer::Collect() {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  std::vector<std::shared_ptr<prometheus::Collectable>> live;
  {
    MutexLock lock(&mu_);
    for (const auto& weak : collectables_) {
      if (auto c = weak.lock()) live.push_back(std::move(c));
    }
  }
  for (const auto& c : live) {
    for (auto& f : c->Collect()) families.push_back(std::move(f));
  }
  return families;
}

int MetricsServer::active_connections() const {
  MutexLock lock(&conn_mu_);
  return active_;
}

void MetricsServer::JoinFinished(bool all) {
  std::vector<std::thread> finished;
  {
    MutexLock lock(&conn_mu_);
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (all || *it->done) {
        finished.push_back(std::move(it->thread));
        it = connections_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (std::thread& t : finished) t.join();
}

namespace {

// A connection whose request head is being read by the accepting thread.
struct PendingRequest {
  int fd = -1;
  int64_t deadline_ms = 0;
  std::string request;
};

constexpr size_t kMaxRequestHead = 16384;

// Reads what has arrived on `p`'s non-blocking socket. kMore: wait for more; kComplete: the
// head is whole (or as large as it may be, or the peer closed after sending some); kDrop:
// nothing usable (closed empty, or an error).
enum class ReadOutcome { kMore, kComplete, kDrop };
ReadOutcome ReadSome(PendingRequest& p) {
  char buf[2048];
  for (;;) {
    if (p.request.find("\r\n\r\n") != std::string::npos || p.request.size() >= kMaxRequestHead) {
      return ReadOutcome::kComplete;
    }
    const ssize_t n = ::recv(p.fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      p.request.append(buf, static_cast<size_t>(n));
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return ReadOutcome::kMore;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return p.request.empty() || n < 0 ? ReadOutcome::kDrop : ReadOutcome::kComplete;
    }
  }
}

}  // namespace

void MetricsServer::Serve() {
  std::deque<PendingRequest> pending;  // oldest first
  int64_t accept_paused_until = 0;     // after running out of descriptors
  std::vector<pollfd> polls;
  while (!stop_) {
    JoinFinished(/*all=*/false);
    int64_t now = NowMs();
    polls.clear();
    const bool accepting = now >= accept_paused_until;
    polls.push_back({accepting ? fd_ : -1, POLLIN, 0});
    int64_t wait_ms = 100;
    for (const PendingRequest& p : pending) {
      polls.push_back({p.fd, POLLIN, 0});
      wait_ms = std::min(wait_ms, std::max<int64_t>(0, p.deadline_ms - now));
    }
    if (::poll(polls.data(), polls.size(), static_cast<int>(wait_ms)) < 0 && errno != EINTR) continue;
    now = NowMs();
    std::deque<PendingRequest> waiting;
    for (size_t i = 0; i < pending.size(); ++i) {
      PendingRequest& p = pending[i];
      ReadOutcome outcome = ReadOutcome::kMore;
      if (polls[i + 1].revents != 0) outcome = ReadSome(p);
      if (outcome == ReadOutcome::kMore && now >= p.deadline_ms) {
        // Too slow: answered if at least its first line came, else closed.
        outcome = p.request.find("\r\n") != std::string::npos ? ReadOutcome::kComplete : ReadOutcome::kDrop;
      }
      if (outcome == ReadOutcome::kComplete) {
        Dispatch(p.fd, p.request);
      } else if (outcome == ReadOutcome::kDrop) {
        ::close(p.fd);
      } else {
        waiting.push_back(std::move(p));
      }
    }
    pending = std::move(waiting);
    if (accepting && (polls[0].revents & POLLIN) != 0) {
      for (int n = 0; n < 64; ++n) {
        const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (c < 0) {
          if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            accept_paused_until = NowMs() + 100;  // the listener stays readable: do not spin
          }
          break;
        }
        if (static_cast<int>(pending.size()) >= limits_.max_pending) {
          ::close(pending.front().fd);  // the one that has waited longest without a request
          pending.pop_front();
        }
        pending.push_back({c, NowMs() + limits_.request_timeout_ms, std::string()});
      }
    }
    pending_count_ = static_cast<int>(pending.size());
  }
  for (const PendingRequest& p : pending) ::close(p.fd);
  pending_count_ = 0;
}

void MetricsServer::Dispatch(int c, const std::string& request) {
  MutexLock lock(&conn_mu_);
  if (active_ >= limits_.max_connections) {
    // Busy: a short answer if the socket takes it at once, never a wait.
    const std::string busy = HttpResponse("503 Service Unavailable", "text/plain", "too many scrapes at once\n");
    [[maybe_unused]] const ssize_t n = ::send(c, busy.data(), busy.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    ::close(c);
    return;
  }
  ++active_;
  auto done = std::make_shared<std::atomic<bool>>(false);
  connections_.push_back({std::thread([this, c, request, done] {
                            Respond(c, request);
                            {
                              MutexLock l(&conn_mu_);
                              --active_;
                            }
                            *done = true;
                          }),
                          done});
}

void MetricsServer::Respond(int c, const std::string& request) {
  if (stop_) {
    ::close(c);
    return;
  }
  std::string status = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8", body;
  if (request.rfind("GET /metrics", 0) == 0 && (request.size() == 12 || request[12] == ' ' || request[12] == '?')) {
    std::vector<prometheus::MetricFamily> families;
    {
      MutexLock lock(&collect_mu_);
      families = Collect();
    }
    body = prometheus::TextSerializer().Serialize(families);
  } else if (request.rfind("GET ", 0) == 0) {
    status = "404 Not Found";
    body = "metrics are served on /metrics\n";
  } else {
    status = "405 Method Not Allowed";
    body = "GET /metrics only\n";
  }
  SendAll(c, HttpResponse(status, type, body), NowMs() + limits_.response_timeout_ms, stop_);
  ::close(c);
}

Status WriteFileSd(const std::string& path, const std::vector<ScrapeTarget>& targets) {
  nlohmann::json groups = nlohmann::json::array();
  for (const ScrapeTarget& t : targets) groups.push_back({{"targets", {t.endpoint}}, {"labels", t.labels}});
  return WriteFileAtomic(path, groups.dump(2) + "\n");
}

}  // namespace flap::metrics
