// Regression tests of the /metrics responder's hardening: a client that sends its request a
// byte at a time, one that never reads its response, and sockets that say nothing hold only
// their own connections, for a bounded time: other scrapes complete meanwhile, and the server
// shuts down promptly.
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
#include <vector>

#include "metrics/metrics.h"
#include "tests/http_client.h"
#include "tests/raw_socket.h"

namespace flap::metrics {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

int Connect(int port, int rcvbuf = 0) { return flap::testing::ConnectLoopback(port, rcvbuf); }

// A registry whose text is several MiB: more than the socket buffers of both ends hold, so a
// client that never reads leaves the server with unsent bytes.
void AddPadding(MetricsServer& server) {
  auto& family = prometheus::BuildGauge().Name("flap_test_padding").Help("padding").Register(server.registry());
  const std::string pad(40, 'x');
  for (int i = 0; i < 80000; ++i) family.Add({{"series", std::to_string(i)}, {"pad", pad}}).Set(i);
}

// Waits up to 2 s for `done`.
template <typename F>
bool Eventually(F done) {
  const auto until = Clock::now() + std::chrono::seconds(2);
  while (!done() && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return done();
}

TEST(HardeningMetricsServer, SlowAndNonReadingClientsDoNotStallScrapesOrShutdown) {
  auto started = MetricsServer::Start("127.0.0.1:0");
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  std::unique_ptr<MetricsServer> server = std::move(*started);
  AddPadding(*server);

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

// Connections being answered that stall are dropped at their deadline, freeing their slots;
// beyond the cap a scrape is told 503 at once instead of waiting.
TEST(HardeningMetricsServer, StalledConnectionsAreDroppedAndExcessIsRefused) {
  MetricsServer::Limits limits;
  limits.max_connections = 2;
  limits.response_timeout_ms = 1000;
  auto started = MetricsServer::Start("127.0.0.1:0", limits);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  std::unique_ptr<MetricsServer> server = std::move(*started);
  AddPadding(*server);
  const std::string get = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
  const int a = Connect(server->port(), 4096), b = Connect(server->port(), 4096);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  ASSERT_EQ(::send(a, get.data(), get.size(), MSG_NOSIGNAL), static_cast<ssize_t>(get.size()));
  ASSERT_EQ(::send(b, get.data(), get.size(), MSG_NOSIGNAL), static_cast<ssize_t>(get.size()));
  ASSERT_TRUE(Eventually([&] { return server->active_connections() == 2; })) << server->active_connections();
  // Both slots are taken by clients that do not read: a third scrape is refused at once.
  const auto t0 = Clock::now();
  EXPECT_EQ(flap::testing::HttpGet("http://" + server->endpoint() + "/metrics", 5.0).status, 503);
  EXPECT_LT(SecondsSince(t0), 1.0);
  // After the response deadline both are dropped and scrapes are answered again.
  EXPECT_TRUE(Eventually([&] { return server->active_connections() == 0; })) << server->active_connections();
  EXPECT_LT(SecondsSince(t0), 3.0);
  EXPECT_EQ(flap::testing::HttpGet("http://" + server->endpoint() + "/metrics", 5.0).status, 200);
  ::close(a);
  ::close(b);
}

// Sockets that connect and say nothing take no answering slot: with three times the slots held
// by them, a scrape is answered at once; they are closed at the request deadline, and beyond
// max_pending the one waiting longest is closed for a new one. Against the responder before
// requests were read on the accepting thread, the scrape got 503 (each silent socket held a
// slot for its 5 s request deadline).
TEST(HardeningMetricsServer, SilentConnectionsTakeNoSlotAndAreClosedInTime) {
  MetricsServer::Limits limits;
  limits.request_timeout_ms = 1000;
  limits.max_pending = 40;
  auto started = MetricsServer::Start("127.0.0.1:0", limits);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  std::unique_ptr<MetricsServer> server = std::move(*started);
  constexpr int kSilent = 48;  // 3 x max_connections, 8 more than max_pending
  std::vector<int> silent;
  for (int i = 0; i < kSilent; ++i) {
    silent.push_back(Connect(server->port()));
    ASSERT_GE(silent.back(), 0);
  }
  const auto t0 = Clock::now();
  ASSERT_TRUE(Eventually([&] { return server->pending_connections() == limits.max_pending; }))
      << server->pending_connections() << " connections wait for their request";
  // The 8 that waited longest were closed for the newer ones.
  for (int i = 0; i < kSilent - limits.max_pending; ++i) {
    EXPECT_TRUE(flap::testing::WaitClosedByPeer(silent[i], 0.5)) << "silent connection " << i;
  }
  const flap::testing::HttpResponse r = flap::testing::HttpGet("http://" + server->endpoint() + "/metrics", 3.0);
  EXPECT_EQ(r.status, 200) << "a scrape while " << kSilent << " silent sockets are open";
  EXPECT_LT(SecondsSince(t0), 2.0);
  int closed = 0;
  for (int i = kSilent - limits.max_pending; i < kSilent; ++i) {
    if (flap::testing::WaitClosedByPeer(silent[i], std::max(0.001, 3.0 - SecondsSince(t0)))) ++closed;
  }
  EXPECT_EQ(closed, limits.max_pending) << "silent connections still open 3 s later (request deadline 1 s)";
  EXPECT_EQ(server->pending_connections(), 0);
  for (int fd : silent) ::close(fd);
}

}  // namespace
}  // namespace flap::metrics
