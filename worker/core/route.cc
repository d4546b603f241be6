#include "worker/core/route.h"

#include <ifaddrs.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace flap::core {
namespace {

std::string Numeric(const sockaddr* a, socklen_t len) {
  char buf[NI_MAXHOST];
  if (getnameinfo(a, len, buf, sizeof buf, nullptr, 0, NI_NUMERICHOST) != 0) return "";
  return buf;
}

}  // namespace

std::string InterfaceHolding(const std::string& address) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return "";
  std::unique_ptr<ifaddrs, decltype(&freeifaddrs)> hold(list, freeifaddrs);
  for (const ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    const int family = i->ifa_addr->sa_family;
    if (family != AF_INET && family != AF_INET6) continue;
    const socklen_t len = family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    if (Numeric(i->ifa_addr, len) == address) return i->ifa_name;
  }
  return "";
}

bool IsLoopbackAddress(const std::string& address) { return address.rfind("127.", 0) == 0 || address == "::1"; }

StatusOr<Route> RouteToward(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(host.c_str(), "9", &hints, &found);
  if (rc != 0 || found == nullptr) {
    return Status::NotFound("cannot resolve " + host + ": " + gai_strerror(rc));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> hold(found, freeaddrinfo);
  std::string why = "no address";
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    sockaddr_storage local{};
    socklen_t len = sizeof local;
    const bool ok =
        connect(fd, a->ai_addr, a->ai_addrlen) == 0 && getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0;
    why = ok ? why : std::strerror(errno);
    close(fd);
    if (!ok) continue;
    Route route;
    route.address = Numeric(reinterpret_cast<const sockaddr*>(&local), len);
    if (route.address.empty()) continue;
    route.interface = InterfaceHolding(route.address);
    route.toward = Numeric(a->ai_addr, a->ai_addrlen);
    return route;
  }
  return Status::NotFound("no route toward " + host + ": " + why);
}

}  // namespace flap::core
