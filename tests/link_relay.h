// A slow link between two network namespaces, in user space: what `tc qdisc ... netem delay D
// loss P` does on a kernel that has sch_netem, for kernels without it (CONFIG_NET_SCH_NETEM
// unset and no modules to load, as on the machine of docs/benchmarks.md's figures: `tc` then
// answers "Specified qdisc kind is unknown"). Used by tests/two_nodes.h (TwoNodesOptions) for
// the slow-link tests and bench/dist_nodes_bench.
//
// How: one TUN device per namespace (IFF_TUN, no packet information: the device carries bare
// IP packets, so neither side needs ARP), each opened from inside its namespace; a thread reads
// every packet one side sends, drops it with probability `loss`, and writes it into the other
// side's device `delay_ms` after it was read, in the order read. A direction holding more than
// `queue_bytes` drops what arrives beyond (a full router queue). The devices exist while the
// relay does: they vanish when it closes them. Taking a device down (ip link set DEV down) cuts
// the link as on a veth pair: what the relay writes into it then is dropped.
//
// Thread-safety: Start and the destructor from one thread; stats() from any.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "common/status.h"

namespace flap::testing {

struct LinkRelayOptions {
  double delay_ms = 0;               // added one-way delay, each direction
  double loss = 0;                   // fraction of packets dropped, each direction, 0..1
  int64_t queue_bytes = 64LL << 20;  // most bytes held per direction; more are dropped
  uint64_t seed = 1;                 // of the draws that drop packets
};

class LinkRelay {
 public:
  struct Stats {
    int64_t relayed = 0;   // packets written to the other side
    int64_t lost = 0;      // dropped by the `loss` draw
    int64_t overflow = 0;  // dropped because a direction held queue_bytes already
    int64_t failed = 0;    // the write into the other side failed (device down)
  };

  // TUN devices `dev_a` in the network namespace /run/netns/`netns_a` and `dev_b` in
  // `netns_b` (down, without addresses: the caller configures them), relayed. Unavailable
  // naming the call that failed (no /dev/net/tun, not root, ...).
  static StatusOr<std::unique_ptr<LinkRelay>> Start(const std::string& netns_a, const std::string& dev_a,
                                                    const std::string& netns_b, const std::string& dev_b,
                                                    const LinkRelayOptions& options);
  ~LinkRelay();  // stops the thread, closes the devices
  LinkRelay(const LinkRelay&) = delete;
  LinkRelay& operator=(const LinkRelay&) = delete;

  Stats stats() const;

 private:
  LinkRelay() = default;
  void Run();

  LinkRelayOptions options_;
  int fd_[2] = {-1, -1};    // the devices: a, b
  int stop_[2] = {-1, -1};  // a pipe: the destructor writes to wake the thread
  std::thread thread_;
  std::atomic<int64_t> relayed_{0}, lost_{0}, overflow_{0}, failed_{0};
};

}  // namespace flap::testing
