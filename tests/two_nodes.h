// Two hosts on one machine, for the multi-node tests: two Linux network namespaces joined by a
// veth pair, each with its own address (192.0.2.1 and 192.0.2.2, TEST-NET-1, only inside the
// namespaces made here), its own host name and its own /etc/hosts as Debian writes one: its own
// name on 127.0.1.1, the other node's name on that node's address. A command
// run on a node sees only that node's network stack: its loopback is its own, and the other
// node is reached over the veth link alone, which the test can take down and bring back.
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

namespace flap::testing {

class TwoNodes {
 public:
  struct Node {
    std::string host;     // host name: "node-a", "node-b"
    std::string address;  // "192.0.2.1", "192.0.2.2"
    std::string netns;    // the namespace's name
    std::string link;     // its end of the veth pair
  };

  // Unavailable with the reason when namespaces cannot be made here.
  static StatusOr<std::unique_ptr<TwoNodes>> Create();
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

 private:
  TwoNodes() = default;
  Node a_, b_;
  bool made_ = false;
};

// `text` quoted for /bin/sh as one word.
std::string ShellQuote(const std::string& text);

}  // namespace flap::testing
