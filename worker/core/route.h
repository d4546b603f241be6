// Which of this host's addresses and interfaces a rank talks to its peers on: the source
// address of the route toward the rendezvous host (rank 0's), as the kernel picks it for a
// connection there, and the interface holding that address. A multi-node group binds Gloo to
// that address and points NCCL at that interface, so neither follows the host name, which
// often resolves to 127.0.1.1 (Debian's /etc/hosts) and would have a node listen where no
// other node can reach it.
//
// LibTorch-free; no packet is sent (a datagram socket's connect only looks up the route).
#pragma once

#include <string>

#include "common/status.h"

namespace flap::core {

struct Route {
  std::string address;    // the source: numeric, e.g. "192.0.2.1" or "::1"
  std::string interface;  // e.g. "eth0", "lo"; empty when no interface holds the address
  std::string toward;     // the destination, numeric: what `host` resolved to
};

// The route toward `host` (a name or a numeric address). NotFound naming the host when it does
// not resolve or no route leads there.
StatusOr<Route> RouteToward(const std::string& host);

// The interface of this host that holds `address` (numeric), "" when none does.
std::string InterfaceHolding(const std::string& address);

// Whether `address` (numeric) is a loopback address (127.0.0.0/8, ::1).
bool IsLoopbackAddress(const std::string& address);

}  // namespace flap::core
