// Two hosts on one machine, for the multi-node tests: two Linux network namespaces joined by a
// veth pair, each with its own address (192.0.2.1 and 192.0.2.2, TEST-NET-1, only inside the
// namespaces made here), its own host name and its own /etc/hosts as Debian writes one: its own
// name on 127.0.1.1, the other node's name on that node's address. A command
// run on a node sees only that node's network stack: its loopback is its own, and the other
// node is reached over the veth link alone, which the test can take down and bring back.
//
// With TwoNodesOptions::delay_ms or loss (or relay) the nodes are joined instead by a slow link
// (tests/link_relay.h: TUN devices relayed in user space with that delay and loss, what netem
// would do; the kernel here has no sch_netem), on the same addresses and names.
//
// How: `ip netns add`, `ip link add ... type veth`; a command enters the node's network
// namespace (`nsenter --net`) and private mount and UTS namespaces (`unshare --mount --uts`) in
// which the node's hosts file is bind-mounted over /etc/hosts and the host name set. Needs root and
// a kernel with network namespaces; Create says why not otherwise, and the tests skip saying
// so. Everything made here is removed by the destructor, also when a test fails; namespaces
// left by a killed test process (named after its pid) are removed by the next Create.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "tests/link_relay.h"

namespace flap::testing {

struct TwoNodesOptions {
  double delay_ms = 0;  // added one-way delay on the link; > 0: joined by a LinkRelay
  double loss = 0;      // fraction of packets lost each way; > 0: joined by a LinkRelay
  bool relay = false;   // a LinkRelay even without delay or loss (to measure the relay itself)
};

class TwoNodes {
 public:
  struct Node {
    std::string host;     // host name: "node-a", "node-b"
    std::string address;  // "192.0.2.1", "192.0.2.2"
    std::string netns;    // the namespace's name
    std::string link;     // its end of the link (veth pair, or TUN device of the relay)
  };

  // Unavailable with the reason when namespaces (or the relay's TUN devices) cannot be made here.
  static StatusOr<std::unique_ptr<TwoNodes>> Create(const TwoNodesOptions& options = {});
  ~TwoNodes();
  TwoNodes(const TwoNodes&) = delete;
  TwoNodes& operator=(const TwoNodes&) = delete;

  const Node& a() const { return a_; }
  const Node& b() const { return b_; }

  // A shell command line that runs `command` (a shell command line) on `node`: in its network
  // namespace, under its host name, with its /etc/hosts.
  std::string On(const Node& node, const std::string& command) const;

  // Takes the link between the nodes down (both ends) or brings it back up.
  Status SetLink(bool up) const;

  // What the relay did so far (all zero without one).
  LinkRelay::Stats relay_stats() const { return relay_ ? relay_->stats() : LinkRelay::Stats{}; }

  // While it lives, the calling thread's network namespace is `node`'s (setns): sockets it
  // opens, the threads it starts (and theirs) and the programs it runs are on that node's
  // network stack; its file system, /etc/hosts included, stays this machine's. For a test
  // process that must reach the nodes' addresses itself, e.g. a coordinator client. The
  // destructor returns the thread to the namespace it was in; threads started meanwhile stay.
  // Not to be moved between threads.
  class InNode {
   public:
    ~InNode();
    InNode(const InNode&) = delete;
    InNode& operator=(const InNode&) = delete;

   private:
    friend class TwoNodes;
    explicit InNode(int original) : original_(original) {}
    int original_;  // descriptor of the namespace to return to
  };
  // Unavailable naming the call that failed.
  StatusOr<std::unique_ptr<InNode>> Enter(const Node& node) const;

 private:
  TwoNodes() = default;
  Node a_, b_;
  bool made_ = false;
  std::unique_ptr<LinkRelay> relay_;
};

// `text` quoted for /bin/sh as one word.
std::string ShellQuote(const std::string& text);

}  // namespace flap::testing
