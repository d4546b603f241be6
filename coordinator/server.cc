// Implementation of coordinator/server.h.
#include "coordinator/server.h"

#include "common/file_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <grpc/grpc.h>

#include <grpcpp/resource_quota.h>
#include <grpcpp/support/server_interceptor.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <thread>

#include "coordinator/client.h"

namespace flap::coordinator {
namespace {

// Counts and times every RPC: from the call's arrival (the interceptor is made then) to the
// moment its status is sent, so a reply that waits for the journal's commit counts that wait.
class RpcMetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(grpc::experimental::ServerRpcInfo* info, metrics::CoordinatorMetrics* m)
      : method_(MethodName(info->method())), metrics_(m), start_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start_;
      metrics_->ObserveRpc(method_, GrpcCodeName(methods->GetSendStatus().error_code()), took.count());
    }
    methods->Proceed();
  }

 private:
  // "/flap.coordinator.v1.Coordinator/RegisterGroup" -> "RegisterGroup"; any other service's
  // method is "other", so the label's values stay the service's methods.
  static std::string MethodName(const char* full) {
    static const std::string kPrefix = std::string("/") + v1::Coordinator::service_full_name() + "/";
    const std::string name = full ? full : "";
    return name.rfind(kPrefix, 0) == 0 ? name.substr(kPrefix.size()) : "other";
  }

  const std::string method_;
  metrics::CoordinatorMetrics* metrics_;
  const std::chrono::steady_clock::time_point start_;
};

class RpcMetricsFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcMetricsFactory(metrics::CoordinatorMetrics* m) : metrics_(m) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    return new RpcMetricsInterceptor(info, metrics_);
  }

 private:
  metrics::CoordinatorMetrics* metrics_;
};

StatusOr<std::string> ReadAll(const std::string& path, const std::string& what) {
  StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return Status::IOError("cannot read the " + what + " " + path + ": " + text.status().message());
  return text;
}

std::string RandomHex(size_t bytes) {
  std::string out;
  unsigned char buf[64];
  FILE* f = std::fopen("/dev/urandom", "rb");
  size_t got = f ? std::fread(buf, 1, bytes, f) : 0;
  if (f) std::fclose(f);
  if (got != bytes) {  // /dev/urandom unreadable: fall back to the OS's random_device
    std::random_device rd;
    for (size_t i = 0; i < bytes; ++i) buf[i] = static_cast<unsigned char>(rd());
  }
  static const char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < bytes; ++i) {
    out += kHex[buf[i] >> 4];
    out += kHex[buf[i] & 15];
  }
  return out;
}


}  // namespace

// Accepts the gRPC connections itself and hands them to gRPC (an external connection
// acceptor), so that gRPC's own accept never meets the descriptor limit: gRPC 1.51 stops
// listening for good after one failed accept4 ("Too many open files"). Before each accept the
// lowest free descriptor is looked at; while it is at or above the ceiling (the soft limit less
// a reserve for the journal and the rest of the process), connections wait in the backlog until
// gRPC closes others (silent ones after the handshake bound).
class GrpcListener {
 public:
  ~GrpcListener() { Stop(); }

  // Binds every address of `listen` ("host:port", port 0: a free one, the same for all).
  static StatusOr<std::unique_ptr<GrpcListener>> Bind(const std::string& listen) {
    const size_t colon = listen.rfind(':');
    if (colon == std::string::npos) return Status::InvalidArgument("--listen '" + listen + "' is not host:port");
    std::string host = listen.substr(0, colon);
    const std::string port = listen.substr(colon + 1);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    addrinfo hints{}, *found = nullptr;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    const int gai = ::getaddrinfo(host.empty() || host == "*" ? nullptr : host.c_str(), port.c_str(), &hints, &found);
    if (gai != 0) return Status::IOError("cannot listen on " + listen + ": " + ::gai_strerror(gai));
    std::unique_ptr<GrpcListener> l(new GrpcListener());
    int chosen = 0;
    std::string error = "no address";
    for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
      sockaddr_storage addr{};
      std::memcpy(&addr, a->ai_addr, a->ai_addrlen);
      if (chosen != 0) {  // the port the first address got
        if (addr.ss_family == AF_INET) reinterpret_cast<sockaddr_in*>(&addr)->sin_port = htons(chosen);
        if (addr.ss_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port = htons(chosen);
      }
      const int fd = ::socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      int one = 1;
      if (fd >= 0) ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), a->ai_addrlen) != 0 || ::listen(fd, 4096) != 0) {
        error = std::strerror(errno);
        if (fd >= 0) ::close(fd);
        continue;
      }
      sockaddr_storage bound{};
      socklen_t len = sizeof(bound);
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
      chosen = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                                 : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
      l->fds_.push_back(fd);
    }
    ::freeaddrinfo(found);
    if (l->fds_.empty()) {
      return Status::IOError("cannot listen on " + listen + ": " + error +
                             " (address in use, or not an address of this host?)");
    }
    l->port_ = chosen;
    return l;
  }

  int port() const { return port_; }

  // Starts accepting into `acceptor` (of a started server).
  void Start(std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor> acceptor) {
    acceptor_ = std::move(acceptor);
    rlimit limit{};
    const rlim_t soft = ::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY
                            ? limit.rlim_cur
                            : rlim_t{1} << 20;
    ceiling_ = static_cast<int>(soft - std::max<rlim_t>(kMinReserveFds, soft / 4));
    thread_ = std::thread([this] { Run(); });
  }

  // Stops accepting and closes the listening sockets (connections already handed over stay).
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    for (int fd : fds_) ::close(fd);
    fds_.clear();
  }

 private:
  static constexpr rlim_t kMinReserveFds = 32;

  GrpcListener() = default;

  // The lowest free descriptor (-1 when there is none), found by duplicating `fd`.
  static int LowestFreeFd(int fd) {
    const int probe = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (probe >= 0) ::close(probe);
    return probe;
  }

  void Run() {
    std::vector<pollfd> polls;
    for (int fd : fds_) polls.push_back({fd, POLLIN, 0});
    bool full_logged = false;
    while (!stop_) {
      for (pollfd& p : polls) p.revents = 0;
      if (::poll(polls.data(), polls.size(), 100) <= 0) continue;
      for (const pollfd& p : polls) {
        if ((p.revents & POLLIN) == 0) continue;
        for (int n = 0; n < 64 && !stop_; ++n) {
          const int lowest = LowestFreeFd(p.fd);
          if (lowest < 0 || lowest >= ceiling_) {
            if (!full_logged) {
              std::cerr << "flap-coordinator: " << ceiling_
                        << " descriptors in use (the soft limit less a reserve): new connections wait until "
                           "others close"
                        << std::endl;
              full_logged = true;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            break;
          }
          full_logged = false;
          const int c = ::accept4(p.fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
          if (c < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
              std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
            break;  // EAGAIN (nothing left), or a connection that went away meanwhile
          }
          int one = 1;
          ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          grpc::experimental::ExternalConnectionAcceptor::NewConnectionParameters params;
          params.listener_fd = p.fd;
          params.fd = c;  // gRPC owns it from here
          acceptor_->HandleNewConnection(&params);
        }
      }
    }
  }

  std::vector<int> fds_;
  int port_ = 0;
  int ceiling_ = 0;
  std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor> acceptor_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

std::string RaiseOpenFileLimit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return std::string("cannot read the limit: ") + std::strerror(errno);
  const rlim_t before = limit.rlim_cur;
  if (before == limit.rlim_max) return "open files: " + std::to_string(before) + " (the hard limit)";
  limit.rlim_cur = limit.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    // An unlimited hard limit: as high as the kernel allows (fs.nr_open, usually 1048576).
    limit.rlim_cur = rlim_t{1} << 20;
    if (limit.rlim_max != RLIM_INFINITY || ::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
      return "open files: " + std::to_string(before) + " (cannot raise the soft limit to the hard limit " +
             std::to_string(limit.rlim_max) + ": " + std::strerror(errno) + ")";
    }
  }
  return "open files: " + std::to_string(limit.rlim_cur) + " (soft limit raised from " + std::to_string(before) +
         " to the hard limit)";
}

namespace {
}  // namespace

Status MakePrivateDir(const std::string& dir_in, const std::string& what) {
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(dir).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::IOError("cannot create the " + what + " " + dir + ": " + std::strerror(errno));
  }
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return Status::FailedPrecondition("the " + what + " " + dir + " is not a folder: " + std::strerror(errno));
  struct stat st = {};
  Status s;
  if (::fstat(fd, &st) != 0) {
    s = Status::IOError("cannot stat the " + what + " " + dir + ": " + std::strerror(errno));
  } else if (st.st_uid != ::geteuid()) {
    s = Status::FailedPrecondition("the " + what + " " + dir + " belongs to uid " + std::to_string(st.st_uid) +
                                   ", not to this user (uid " + std::to_string(::geteuid()) +
                                   "): refusing to keep the token and the journal there; give a folder of your own");
  } else if ((st.st_mode & 077) != 0 && ::fchmod(fd, 0700) != 0) {
    s = Status::IOError("cannot make the " + what + " " + dir + " private (chmod 700): " + std::strerror(errno));
  }
  ::close(fd);
  return s;
}

StatusOr<std::string> LoadOrCreateToken(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const std::filesystem::path parent = std::filesystem::path(path).parent_path();
    std::error_code ec;
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    const std::string token = RandomHex(32);
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
      if (errno == EEXIST) return LoadOrCreateToken(path);  // created meanwhile: read it
      return Status::IOError("cannot create the token file " + path + ": " + std::strerror(errno));
    }
    const std::string line = token + "\n";
    const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok) return Status::IOError("cannot write the token file " + path);
    return token;
  }
  return ReadTokenFile(path);  // the same checks as the clients': private, 128 bits at least
}

Status CheckListenSecurity(const ServerOptions& options) {
  if (!options.tls_cert.empty() || options.insecure) return Status::OK();
  const size_t colon = options.listen.rfind(':');
  const std::string host = colon == std::string::npos ? options.listen : options.listen.substr(0, colon);
  if (IsLoopbackHost(host)) return Status::OK();
  return Status::InvalidArgument(
      "refusing to serve plaintext gRPC on " + options.listen +
      ", which is not a loopback address: the token and every sweep would cross the network in the "
      "clear. Give --tls-cert and --tls-key (clients: --tls-ca), listen on 127.0.0.1, or pass "
      "--insecure on a network you trust");
}

StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(const ServerOptions& options) {
  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer());
  server->options_ = options;
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return Status::InvalidArgument("TLS needs both a certificate (--tls-cert) and a key (--tls-key)");
  }
  FLAP_RETURN_IF_ERROR(CheckListenSecurity(options));
  if (options.service.state_dir.empty()) return Status::InvalidArgument("state_dir: not set");
  const std::string token_file = options.token_file.empty() ? options.service.state_dir + "/token" : options.token_file;
  // The state folder holds the token and the journal (its db folder): both private to their
  // owner.
  FLAP_RETURN_IF_ERROR(MakePrivateDir(options.service.state_dir, "state folder"));
  FLAP_RETURN_IF_ERROR(MakePrivateDir(options.service.state_dir + "/db", "journal folder"));
  FLAP_ASSIGN_OR_RETURN(server->token_, LoadOrCreateToken(token_file));
  std::shared_ptr<grpc::ServerCredentials> creds;
  if (options.tls_cert.empty()) {
    creds = grpc::InsecureServerCredentials();
  } else {
    FLAP_ASSIGN_OR_RETURN(std::string cert, ReadAll(options.tls_cert, "TLS certificate"));
    FLAP_ASSIGN_OR_RETURN(std::string key, ReadAll(options.tls_key, "TLS key"));
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({key, cert});
    creds = grpc::SslServerCredentials(ssl);
  }
  ServiceOptions so = options.service;
  so.token = server->token_;
  // RocksDB lives under state_dir/db, next to the token.
  so.state_dir = options.service.state_dir + "/db";
  if (!options.metrics_listen.empty()) {
    FLAP_ASSIGN_OR_RETURN(server->metrics_server_, metrics::MetricsServer::Start(options.metrics_listen, options.metrics_limits));
    so.sd_self_endpoint = server->metrics_server_->endpoint();
  }
  FLAP_ASSIGN_OR_RETURN(server->service_, CoordinatorService::Create(so));
  grpc::ServerBuilder builder;
  if (server->metrics_server_) {
    CoordinatorService* service = server->service_.get();
    server->metrics_ = std::make_shared<metrics::CoordinatorMetrics>(server->metrics_server_->registry(),
                                                                     [service] { return service->MetricsSnapshot(); });
    server->metrics_server_->AddCollectable(server->metrics_);
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
    interceptors.push_back(std::make_unique<RpcMetricsFactory>(server->metrics_.get()));
    builder.experimental().SetInterceptorCreators(std::move(interceptors));
  }
  FLAP_ASSIGN_OR_RETURN(server->listener_, GrpcListener::Bind(options.listen));
  server->port_ = server->listener_->port();
  auto acceptor = builder.experimental().AddExternalConnectionAcceptor(
      grpc::ServerBuilder::experimental_type::ExternalConnectionType::FROM_FD, creds);
  builder.RegisterService(server->service_.get());
  // Connections that say nothing, go idle or live long are closed (see ConnectionLimits).
  const ConnectionLimits& limits = options.connections;
  const auto ms = [](int64_t v) { return static_cast<int>(std::clamp<int64_t>(v, 1, INT32_MAX)); };
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, ms(limits.handshake_timeout_ms));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, ms(limits.max_idle_ms));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, ms(limits.max_age_ms));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, ms(limits.max_age_grace_ms));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, ms(limits.keepalive_time_ms));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms(limits.keepalive_timeout_ms));
  // A client's pings without calls: at most one per 5 minutes, the connection closed after 2
  // more (gRPC's defaults, stated).
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5 * 60 * 1000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  // Every request is read whole before the token is checked, so the largest one a caller may
  // send and the memory all of them may hold are bounded (see server.h).
  builder.SetMaxReceiveMessageSize(kMaxRequestBytes);
  grpc::ResourceQuota quota("flap-coordinator");
  quota.Resize(kServerMemoryQuotaBytes);
  builder.SetResourceQuota(quota);
  server->server_ = builder.BuildAndStart();
  if (!server->server_) return Status::IOError("cannot start the gRPC server on " + options.listen);
  server->listener_->Start(std::move(acceptor));
  return server;
}

std::string CoordinatorServer::address() const {
  const std::string& l = options_.listen;
  return l.substr(0, l.rfind(':')) + ":" + std::to_string(port_);
}

void CoordinatorServer::Shutdown(int64_t grace_ms) {
  if (shut_down_ || !server_) return;
  shut_down_ = true;
  if (listener_) listener_->Stop();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(grace_ms));
}

void CoordinatorServer::Wait() {
  if (server_) server_->Wait();
}

CoordinatorServer::~CoordinatorServer() {
  Shutdown();
  Wait();
  metrics_server_.reset();  // no scrape reads the service after this
  server_.reset();
  listener_.reset();
  metrics_.reset();
  service_.reset();
}

}  // namespace flap::coordinator
