// Regression tests of the /metrics responder's hardening: a client that sends its request a
// byte at a time, and one that never reads its response, hold only their own connections, for a
// bounded time: other scrapes complete meanwhile, and the server shuts down promptly.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <thread>

#include "metrics/metrics.h"
#include "tests/http_client.h"

namespace flap::metrics {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// A TCP connection to 127.0.0.1:port; `rcvbuf` > 0 shrinks its receive buffer first.
int Connect(int port, int rcvbuf = 0) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (rcvbuf > 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

TEST(HardeningMetricsServer, SlowAndNonReadingClientsDoNotStallScrapesOrShutdown) {
  auto started = MetricsServer::Start("127.0.0.1:0");
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  std::unique_ptr<MetricsServer> server = std::move(*started);
  // A response of several MiB: more than the socket buffers of both ends hold, so a client that
  // never reads leaves the server with unsent bytes.
  auto& family = prometheus::BuildGauge().Name("flap_test_padding").Help("padding").Register(server->registry());
  const std::string pad(40, 'x');
  for (int i = 0; i < 80000; ++i) family.Add({{"series", std::to_string(i)}, {"pad", pad}}).Set(i);

  // 1. A client that asks for /metrics and never reads.
  const int stalled = Connect(server->port(), 4096);
  ASSERT_GE(stalled, 0);
  const std::string get = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(stalled, get.data(), get.size(), MSG_NOSIGNAL), static_cast<ssize_t>(get.size()));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the server is writing to it
  // 2. A client that sends its request a byte every 1.5 s.
  const int slow = Connect(server->port());
  ASSERT_GE(slow, 0);
  std::atomic<bool> stop_trickle{false};
  std::thread trickle([&] {
    for (size_t i = 0; i < get.size() && !stop_trickle; ++i) {
      if (::send(slow, get.data() + i, 1, MSG_NOSIGNAL) != 1) return;
      for (int k = 0; k < 15 && !stop_trickle; ++k) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  // 3. Another scrape completes while both hang.
  const auto t0 = Clock::now();
  const flap::testing::HttpResponse r = flap::testing::HttpGet("http://" + server->endpoint() + "/metrics", 5.0);
  const double took = SecondsSince(t0);
  EXPECT_EQ(r.status, 200) << "the scrape got no response within 5 s while two clients hang";
  EXPECT_NE(r.body.find("flap_test_padding{"), std::string::npos);
  EXPECT_LT(took, 4.0);

  // 4. Shutdown completes promptly although both clients still hold their connections.
  const auto t1 = Clock::now();
  std::future<void> shutdown = std::async(std::launch::async, [&] { server.reset(); });
  const bool prompt = shutdown.wait_for(std::chrono::seconds(3)) == std::future_status::ready;
  EXPECT_TRUE(prompt) << "the server did not stop within 3 s while clients hang";
  // (Before giving up, let the clients go, so that a server stuck on them can finish.)
  stop_trickle = true;
  ::close(stalled);
  ::close(slow);
  trickle.join();
  shutdown.get();
  if (prompt) {
    EXPECT_LT(SecondsSince(t1), 3.0);
  }
}

// Stalled connections are dropped at their deadlines, freeing their slots; beyond the
// connection cap a client is told 503 at once instead of waiting.
TEST(HardeningMetricsServer, StalledConnectionsAreDroppedAndExcessIsRefused) {
  MetricsServer::Limits limits;
  limits.max_connections = 2;
  limits.request_timeout_ms = 1000;
  auto started = MetricsServer::Start("127.0.0.1:0", limits);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  std::unique_ptr<MetricsServer> server = std::move(*started);
  const int a = Connect(server->port()), b = Connect(server->port());
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  ::send(a, "G", 1, MSG_NOSIGNAL);
  ::send(b, "G", 1, MSG_NOSIGNAL);
  const auto until = Clock::now() + std::chrono::seconds(2);
  while (server->active_connections() < 2 && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(server->active_connections(), 2);
  // Both slots are taken: a third scrape is refused at once.
  const auto t0 = Clock::now();
  EXPECT_EQ(flap::testing::HttpGet("http://" + server->endpoint() + "/metrics", 5.0).status, 503);
  EXPECT_LT(SecondsSince(t0), 1.0);
  // After the request deadline both are dropped (the server closes: a read sees the end).
  char c;
  EXPECT_EQ(::recv(a, &c, 1, 0), 0);
  EXPECT_EQ(::recv(b, &c, 1, 0), 0);
  EXPECT_LT(SecondsSince(t0), 3.0);
  EXPECT_EQ(flap::testing::HttpGet("http://" + server->endpoint() + "/metrics", 5.0).status, 200);
  ::close(a);
  ::close(b);
}

}  // namespace
}  // namespace flap::metrics
