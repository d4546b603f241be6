// Implementation of coordinator/server.h.
#include "coordinator/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <grpcpp/resource_quota.h>
#include <grpcpp/support/server_interceptor.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

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
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IOError("cannot read the " + what + " " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
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
    FLAP_ASSIGN_OR_RETURN(server->metrics_server_, metrics::MetricsServer::Start(options.metrics_listen));
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
  builder.AddListeningPort(options.listen, creds, &server->port_);
  builder.RegisterService(server->service_.get());
  // Every request is read whole before the token is checked, so the largest one a caller may
  // send and the memory all of them may hold are bounded (see server.h).
  builder.SetMaxReceiveMessageSize(kMaxRequestBytes);
  grpc::ResourceQuota quota("flap-coordinator");
  quota.Resize(kServerMemoryQuotaBytes);
  builder.SetResourceQuota(quota);
  server->server_ = builder.BuildAndStart();
  if (!server->server_ || server->port_ == 0) {
    return Status::IOError("cannot listen on " + options.listen + " (address in use, or not an address of this host?)");
  }
  return server;
}

std::string CoordinatorServer::address() const {
  const std::string& l = options_.listen;
  return l.substr(0, l.rfind(':')) + ":" + std::to_string(port_);
}

void CoordinatorServer::Shutdown(int64_t grace_ms) {
  if (shut_down_ || !server_) return;
  shut_down_ = true;
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
  metrics_.reset();
  service_.reset();
}

}  // namespace flap::coordinator
