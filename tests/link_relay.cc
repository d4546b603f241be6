#include "tests/link_relay.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <random>
#include <vector>

namespace flap::testing {
namespace {

using Clock = std::chrono::steady_clock;

Status Unavailable(const std::string& what) {
  return Status::FromCode(Status::Code::kUnavailable, what + ": " + std::strerror(errno));
}

// A TUN device named `dev`, made in the network namespace /run/netns/`netns` (a TUN device
// belongs to the namespace of the thread that opens /dev/net/tun); its descriptor, non-blocking.
StatusOr<int> OpenTun(const std::string& netns, const std::string& dev) {
  if (dev.size() >= IFNAMSIZ) return Status::InvalidArgument("device name too long: " + dev);
  const int original = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (original < 0) return Unavailable("open /proc/thread-self/ns/net");
  const std::string path = "/run/netns/" + netns;
  const int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0 || setns(target, CLONE_NEWNET) != 0) {
    Status s = Unavailable((target < 0 ? "open " : "setns ") + path);
    if (target >= 0) close(target);
    close(original);
    return s;
  }
  close(target);
  Status s = Status::OK();
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    s = Unavailable("open /dev/net/tun");
  } else {
    ifreq ifr{};
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    std::strncpy(ifr.ifr_name, dev.c_str(), IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
      s = Unavailable("TUNSETIFF " + dev + " in " + netns);
      close(fd);
      fd = -1;
    }
  }
  // Back to this thread's own namespace, whatever happened.
  if (setns(original, CLONE_NEWNET) != 0 && s.ok()) s = Unavailable("setns back from " + netns);
  close(original);
  if (!s.ok()) {
    if (fd >= 0) close(fd);
    return s;
  }
  return fd;
}

struct Packet {
  Clock::time_point due;
  std::vector<char> bytes;
};

}  // namespace

StatusOr<std::unique_ptr<LinkRelay>> LinkRelay::Start(const std::string& netns_a, const std::string& dev_a,
                                                      const std::string& netns_b, const std::string& dev_b,
                                                      const LinkRelayOptions& options) {
  if (options.delay_ms < 0 || options.loss < 0 || options.loss > 1) {
    return Status::InvalidArgument("link relay: delay_ms must be >= 0 and loss in [0, 1]");
  }
  std::unique_ptr<LinkRelay> r(new LinkRelay());
  r->options_ = options;
  FLAP_ASSIGN_OR_RETURN(r->fd_[0], OpenTun(netns_a, dev_a));
  FLAP_ASSIGN_OR_RETURN(r->fd_[1], OpenTun(netns_b, dev_b));
  if (pipe2(r->stop_, O_CLOEXEC | O_NONBLOCK) != 0) return Unavailable("pipe");
  r->thread_ = std::thread([p = r.get()] { p->Run(); });
  return r;
}

LinkRelay::~LinkRelay() {
  if (thread_.joinable()) {
    const char c = 0;
    (void)!write(stop_[1], &c, 1);
    thread_.join();
  }
  for (int fd : {fd_[0], fd_[1], stop_[0], stop_[1]}) {
    if (fd >= 0) close(fd);
  }
}

LinkRelay::Stats LinkRelay::stats() const {
  Stats s;
  s.relayed = relayed_.load();
  s.lost = lost_.load();
  s.overflow = overflow_.load();
  s.failed = failed_.load();
  return s;
}

void LinkRelay::Run() {
  std::mt19937_64 rng(options_.seed);
  std::uniform_real_distribution<double> draw(0.0, 1.0);
  const auto delay =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(options_.delay_ms));
  std::deque<Packet> queue[2];  // queue[i]: read from side i, to be written to side 1 - i
  int64_t held[2] = {0, 0};
  std::vector<char> buffer(65536);
  for (;;) {
    // Write what is due, in order.
    const auto now = Clock::now();
    for (int i = 0; i < 2; ++i) {
      while (!queue[i].empty() && queue[i].front().due <= now) {
        Packet& p = queue[i].front();
        const ssize_t n = write(fd_[1 - i], p.bytes.data(), p.bytes.size());
        if (n < 0 && errno == EAGAIN) break;  // the other side's queue is full: try again soon
        (n == static_cast<ssize_t>(p.bytes.size()) ? relayed_ : failed_)++;
        held[i] -= static_cast<int64_t>(p.bytes.size());
        queue[i].pop_front();
      }
    }
    // Sleep until a device has a packet, the next one is due, or the destructor says stop.
    int timeout_ms = -1;
    for (int i = 0; i < 2; ++i) {
      if (queue[i].empty()) continue;
      const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(queue[i].front().due - Clock::now());
      const int ms = static_cast<int>(std::max<int64_t>(0, wait.count()));
      timeout_ms = timeout_ms < 0 ? ms : std::min(timeout_ms, ms);
    }
    pollfd fds[3] = {{fd_[0], POLLIN, 0}, {fd_[1], POLLIN, 0}, {stop_[0], POLLIN, 0}};
    if (poll(fds, 3, timeout_ms) < 0 && errno != EINTR) return;
    if (fds[2].revents) return;
    if (((fds[0].revents | fds[1].revents) & (POLLERR | POLLHUP)) && !((fds[0].revents | fds[1].revents) & POLLIN)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // a device in trouble: do not spin
    }
    for (int i = 0; i < 2; ++i) {
      if (!(fds[i].revents & POLLIN)) continue;
      // Everything waiting on this side (a bounded number of reads, so the other side and the
      // writes are not starved).
      for (int k = 0; k < 256; ++k) {
        const ssize_t n = read(fd_[i], buffer.data(), buffer.size());
        if (n <= 0) break;
        if (options_.loss > 0 && draw(rng) < options_.loss) {
          lost_++;
          continue;
        }
        if (held[i] + n > options_.queue_bytes) {
          overflow_++;
          continue;
        }
        held[i] += n;
        queue[i].push_back({Clock::now() + delay, std::vector<char>(buffer.begin(), buffer.begin() + n)});
      }
    }
  }
}

}  // namespace flap::testing
