#include "tests/two_nodes.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include "common/testing/testing.h"

namespace flap::testing {
namespace {

constexpr char kPrefix[] = "flapn";  // namespaces: flapn-<pid>-a, flapn-<pid>-b

Status Unavailable(std::string why) { return Status::FromCode(Status::Code::kUnavailable, std::move(why)); }

Status Run(const std::string& command) {
  const RunResult r = RunCommand(command + " 2>&1");
  if (r.exit_code != 0) return Unavailable("'" + command + "' exited " + std::to_string(r.exit_code) + ": " + r.output);
  return Status::OK();
}

std::string HostsFile(const std::string& netns) { return "/etc/netns/" + netns + "/hosts"; }

// `command` in the network namespace alone (nsenter: `ip -n` and `ip netns exec` also remount
// /sys, which fails inside a chroot such as scripts/trixie_check.sh's).
std::string InNetns(const std::string& netns, const std::string& command) {
  return "nsenter --net=/run/netns/" + netns + " " + command;
}

void Remove(const std::string& netns) {
  RunCommand("ip netns del " + netns + " 2>/dev/null");
  std::error_code ec;
  std::filesystem::remove_all("/etc/netns/" + netns, ec);
}

// Namespaces of test processes that no longer run (killed before their destructor ran).
void RemoveStale() {
  const RunResult r = RunCommand("ip netns list 2>/dev/null");
  size_t at = 0;
  while (at < r.output.size()) {
    size_t end = r.output.find('\n', at);
    if (end == std::string::npos) end = r.output.size();
    const std::string line = r.output.substr(at, end - at);
    at = end + 1;
    const std::string name = line.substr(0, line.find(' '));
    if (name.rfind(std::string(kPrefix) + "-", 0) != 0) continue;
    const std::string rest = name.substr(sizeof(kPrefix));
    const pid_t pid = static_cast<pid_t>(std::atol(rest.c_str()));
    if (pid > 0 && kill(pid, 0) != 0 && errno == ESRCH) Remove(name);
  }
}

}  // namespace

std::string ShellQuote(const std::string& text) {
  std::string q = "'";
  for (char c : text) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

StatusOr<std::unique_ptr<TwoNodes>> TwoNodes::Create(const TwoNodesOptions& options) {
  if (geteuid() != 0) return Unavailable("network namespaces need root");
  if (RunCommand("command -v ip && command -v unshare && command -v nsenter").exit_code != 0) {
    return Unavailable("ip (iproute2), unshare or nsenter (util-linux) is missing");
  }
  RemoveStale();
  std::unique_ptr<TwoNodes> n(new TwoNodes());
  const std::string base = std::string(kPrefix) + "-" + std::to_string(getpid());
  const bool relay = options.relay || options.delay_ms > 0 || options.loss > 0;
  const std::string link = (relay ? "ft" : "fv") + std::to_string(getpid());
  n->a_ = {"node-a", "192.0.2.1", base + "-a", link + "a"};
  n->b_ = {"node-b", "192.0.2.2", base + "-b", link + "b"};
  n->made_ = true;  // from here on the destructor removes whatever exists
  for (const Node* node : {&n->a_, &n->b_}) {
    FLAP_RETURN_IF_ERROR(Run("ip netns add " + node->netns));
    // As Debian writes it: the node's own name on 127.0.1.1, so that software which binds to
    // the address of its host name listens where no other node can reach it.
    const Node& other = node == &n->a_ ? n->b_ : n->a_;
    const std::string hosts =
        "127.0.0.1 localhost\n127.0.1.1 " + node->host + "\n" + other.address + " " + other.host + "\n";
    std::error_code ec;
    std::filesystem::create_directories("/etc/netns/" + node->netns, ec);
    if (ec || !WriteFile(HostsFile(node->netns), hosts)) {
      return Unavailable("cannot write " + HostsFile(node->netns));
    }
  }
  if (relay) {
    LinkRelayOptions ro;
    ro.delay_ms = options.delay_ms;
    ro.loss = options.loss;
    FLAP_ASSIGN_OR_RETURN(n->relay_, LinkRelay::Start(n->a_.netns, n->a_.link, n->b_.netns, n->b_.link, ro));
  } else {
    FLAP_RETURN_IF_ERROR(Run("ip link add " + n->a_.link + " type veth peer name " + n->b_.link));
  }
  for (const Node* node : {&n->a_, &n->b_}) {
    if (!relay) FLAP_RETURN_IF_ERROR(Run("ip link set " + node->link + " netns " + node->netns));
    FLAP_RETURN_IF_ERROR(Run(InNetns(node->netns, "ip addr add " + node->address + "/24 dev " + node->link)));
    FLAP_RETURN_IF_ERROR(Run(InNetns(node->netns, "ip link set lo up")));
    FLAP_RETURN_IF_ERROR(Run(InNetns(node->netns, "ip link set " + node->link + " up")));
  }
  return n;
}

TwoNodes::~TwoNodes() {
  if (!made_) return;
  relay_.reset();  // its devices go with it
  Remove(a_.netns);  // removing a namespace removes its end of the veth pair, and so the pair
  Remove(b_.netns);
}

std::string TwoNodes::On(const Node& node, const std::string& command) const {
  // Only the network namespace is the node's (nsenter); /sys and its cgroup mounts stay the
  // host's, which slurmd needs (ip netns exec would mount a fresh sysfs without them).
  return "nsenter --net=/run/netns/" + node.netns + " unshare --mount --uts -- /bin/sh -c " +
         ShellQuote("mount --bind " + HostsFile(node.netns) + " /etc/hosts && hostname " + node.host +
                    " && exec /bin/sh -c " + ShellQuote(command));
}

Status TwoNodes::SetLink(bool up) const {
  for (const Node* node : {&a_, &b_}) {
    FLAP_RETURN_IF_ERROR(Run(InNetns(node->netns, "ip link set " + node->link + (up ? " up" : " down"))));
  }
  return Status::OK();
}


StatusOr<std::unique_ptr<TwoNodes::InNode>> TwoNodes::Enter(const Node& node) const {
  const int original = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (original < 0) return Unavailable(std::string("open /proc/thread-self/ns/net: ") + std::strerror(errno));
  const std::string path = "/run/netns/" + node.netns;
  const int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0 || setns(target, CLONE_NEWNET) != 0) {
    const std::string why = (target < 0 ? "open " : "setns ") + path + ": " + std::strerror(errno);
    if (target >= 0) close(target);
    close(original);
    return Unavailable(why);
  }
  close(target);
  return std::unique_ptr<InNode>(new InNode(original));
}

TwoNodes::InNode::~InNode() {
  setns(original_, CLONE_NEWNET);
  close(original_);
}

}  // namespace flap::testing
