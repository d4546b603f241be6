// The two-node fixture itself (tests/two_nodes.h): each node has its own host name, address and
// /etc/hosts, and reaches the other over the link, and not while the link is down.
#include "tests/two_nodes.h"

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace flap {
namespace {

using testing::RunCommand;
using testing::TwoNodes;

class TwoNodesFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    auto n = TwoNodes::Create();
    if (!n.ok()) GTEST_SKIP() << "no two-node fixture here: " << n.status().ToString();
    nodes_ = std::move(*n);
  }
  std::unique_ptr<TwoNodes> nodes_;
};

TEST_F(TwoNodesFixture, EachNodeHasItsOwnNameAddressAndHosts) {
  for (const TwoNodes::Node* node : {&nodes_->a(), &nodes_->b()}) {
    auto r = RunCommand(nodes_->On(*node, "hostname; getent hosts node-a node-b; ip -o -4 addr show"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(r.output.substr(0, r.output.find('\n')), node->host) << r.output;
    const TwoNodes::Node& other = node == &nodes_->a() ? nodes_->b() : nodes_->a();
    EXPECT_NE(r.output.find("127.0.1.1       " + node->host), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(other.address + "       " + other.host), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("inet " + node->address + "/24"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("inet " + other.address), std::string::npos) << "a node holds the other's address:\n"
                                                                         << r.output;
  }
  // The host's own name is not the nodes'.
  EXPECT_NE(RunCommand("hostname").output.substr(0, 6), "node-a");
}

// A TCP connection from A to a listener on B over the link (bash's /dev/tcp), refused by the
// network once the link is down, and back when it returns.
TEST_F(TwoNodesFixture, TheLinkCarriesTrafficAndCanBeCut) {
  const int port = testing::FreePort();
  const std::string listen = nodes_->On(
      nodes_->b(),
      "timeout 20 python3 -c " +
          testing::ShellQuote("import socket\n"
                              "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                              "s.bind(('192.0.2.2', " +
                              std::to_string(port) +
                              ")); s.listen()\n"
                              "for _ in range(2):\n"
                              "    c, a = s.accept(); print('from', a[0], flush=True); c.close()\n"));
  testing::ChildProcess server = testing::ChildProcess::Shell(listen);
  const std::string connect =
      nodes_->On(nodes_->a(), "bash -c " + testing::ShellQuote("for i in $(seq 50); do (exec 3<>/dev/tcp/node-b/" +
                                                               std::to_string(port) +
                                                               ") 2>/dev/null && exit 0; sleep 0.1; done; exit 1"));
  auto r = RunCommand(connect);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  ASSERT_OK(nodes_->SetLink(false));
  r = RunCommand(nodes_->On(nodes_->a(), "timeout 5 bash -c 'exec 3<>/dev/tcp/node-b/" + std::to_string(port) + "'"));
  EXPECT_NE(r.exit_code, 0) << "connected across a link that is down: " << r.output;
  ASSERT_OK(nodes_->SetLink(true));
  r = RunCommand(connect);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(server.Wait(20), 0);
}

// The slow link (TwoNodesOptions::delay_ms: tests/link_relay.h) delays each way: a TCP
// connection from A to B (SYN there, SYN-ACK back) takes at least twice the delay; down, it
// carries nothing.
TEST(TwoNodesSlowLink, DelaysEachWayAndCanBeCut) {
  testing::TwoNodesOptions o;
  o.delay_ms = 50;
  auto n = TwoNodes::Create(o);
  if (!n.ok()) GTEST_SKIP() << "no two-node fixture with a slow link here: " << n.status().ToString();
  const TwoNodes& nodes = **n;
  const int port = testing::FreePort();
  testing::ChildProcess server = testing::ChildProcess::Shell(nodes.On(
      nodes.b(), "timeout 30 python3 -c " +
                     testing::ShellQuote("import socket\n"
                                         "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                                         "s.bind(('192.0.2.2', " +
                                         std::to_string(port) +
                                         ")); s.listen()\n"
                                         "while True:\n"
                                         "    c, a = s.accept(); c.close()\n")));
  // The time of the first connection that succeeds (the listener may take a moment to start).
  const std::string connect = nodes.On(
      nodes.a(), "timeout 20 python3 -c " +
                     testing::ShellQuote("import socket, time\n"
                                         "for _ in range(100):\n"
                                         "    t = time.monotonic()\n"
                                         "    try:\n"
                                         "        socket.create_connection(('192.0.2.2', " +
                                         std::to_string(port) +
                                         "), timeout=5).close()\n"
                                         "        print(round((time.monotonic() - t) * 1000)); break\n"
                                         "    except OSError:\n"
                                         "        time.sleep(0.1)\n"
                                         "else:\n"
                                         "    raise SystemExit('no connection')\n"));
  auto r = RunCommand(connect);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const int ms = std::atoi(r.output.c_str());
  std::cout << "connect across a 50 ms link: " << ms << " ms" << std::endl;
  EXPECT_GE(ms, 100) << "a connection across the link took less than two delays";
  EXPECT_GT(nodes.relay_stats().relayed, 0);
  ASSERT_OK(nodes.SetLink(false));
  r = RunCommand(nodes.On(nodes.a(), "timeout 5 bash -c 'exec 3<>/dev/tcp/192.0.2.2/" + std::to_string(port) + "'"));
  EXPECT_NE(r.exit_code, 0) << "connected across a link that is down: " << r.output;
  ASSERT_OK(nodes.SetLink(true));
  EXPECT_EQ(RunCommand(connect).exit_code, 0);
  server.Kill();
}

}  // namespace
}  // namespace flap
