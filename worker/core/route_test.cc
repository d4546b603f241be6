// The route toward the rendezvous host (route.h), on this host's own addresses; the two-node
// tests (tests/two_nodes_test.cc) take it across a veth link between network namespaces.
#include "worker/core/route.h"

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace flap::core {
namespace {

TEST(RouteToward, LoopbackIsReachedFromLoopback) {
  ASSERT_OK_AND_ASSIGN(Route r, RouteToward("127.0.0.1"));
  EXPECT_EQ(r.address, "127.0.0.1");
  EXPECT_EQ(r.interface, "lo");
  ASSERT_OK_AND_ASSIGN(Route named, RouteToward("localhost"));
  EXPECT_TRUE(named.address == "127.0.0.1" || named.address == "::1") << named.address;
}

// Another loopback address: the route's source is that address itself, held by lo.
TEST(RouteToward, AnOwnAddressIsItsOwnSource) {
  ASSERT_OK_AND_ASSIGN(Route r, RouteToward("127.0.0.2"));
  EXPECT_EQ(r.address.rfind("127.", 0), 0u) << r.address;
  EXPECT_EQ(r.interface, "lo");
}

TEST(RouteToward, AnUnresolvableHostIsNamed) {
  auto r = RouteToward("no-such-host.invalid");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kNotFound);
  EXPECT_NE(r.status().message().find("no-such-host.invalid"), std::string::npos) << r.status().ToString();
}

}  // namespace
}  // namespace flap::core
