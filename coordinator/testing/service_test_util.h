// Test support (not part of the library): a coordinator served over gRPC on 127.0.0.1 with its
// state in a temporary folder, and clients for it.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "coordinator/client.h"
#include "coordinator/server.h"
#include "sharding/shard_order.h"
#include "tests/test_util.h"

namespace flap::coordinator::testing {

// Short timings so that losses and expiries happen within a test.
inline ServiceOptions FastServiceOptions() {
  ServiceOptions o;
  o.heartbeat_interval_ms = 100;
  o.heartbeat_timeout_ms = 400;
  o.lease_ttl_ms = 400;
  o.reap_interval_ms = 50;
  return o;
}

class TestCoordinator {
 public:
  // `metrics_listen`: serve /metrics there too ("" = not).
  explicit TestCoordinator(const std::string& name, ServiceOptions service = FastServiceOptions(),
                           const std::string& metrics_listen = "")
      : dir_(name) {
    options_.listen = "127.0.0.1:0";
    options_.metrics_listen = metrics_listen;
    options_.service = service;
    options_.service.state_dir = dir_ / "state";
    Start();
  }
  // With the server's options `server` (its listen address and state folder are the test's).
  TestCoordinator(const std::string& name, const ServerOptions& server) : dir_(name), options_(server) {
    options_.listen = "127.0.0.1:0";
    options_.service.state_dir = dir_ / "state";
    Start();
  }

  void Start() {
    auto s = CoordinatorServer::Start(options_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(*s);
  }
  // Stops the server (cleanly); Start() starts it again on the same state (on a new port).
  void Stop() { server_.reset(); }
  // Stops the server (cleanly) and starts it again on the same state.
  void Restart() {
    server_.reset();
    options_.listen = "127.0.0.1:" + std::to_string(port_or_zero());
    Start();
  }

  std::unique_ptr<CoordinatorClient> Client(const std::string& token_override = "", int64_t deadline_ms = 5000) const {
    ClientOptions o;
    o.target = server_->address();
    o.token = token_override.empty() ? server_->token() : token_override;
    o.deadline_ms = deadline_ms;
    auto c = CoordinatorClient::Connect(o);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return std::move(*c);
  }

  CoordinatorServer* server() { return server_.get(); }
  const flap::testing::TempDir& dir() const { return dir_; }
  ServerOptions& options() { return options_; }

 private:
  int port_or_zero() const { return server_ ? server_->port() : 0; }

  flap::testing::TempDir dir_;
  ServerOptions options_;
  std::unique_ptr<CoordinatorServer> server_;
};

// The port in flap-coordinator's "listening on HOST:PORT" line on its stdout (read for up to
// `timeout_s`); 0 when the line does not come.
inline int ListeningPort(flap::testing::ChildProcess& coordinator, double timeout_s = 20) {
  const std::string& out = coordinator.ReadStdoutUntil("\n", timeout_s);
  const size_t colon = out.rfind(':');
  if (out.find("listening on") == std::string::npos || colon == std::string::npos) return 0;
  return std::stoi(out.substr(colon + 1));
}

// `names` in the order the coordinator leases them in `epoch` of a trial of seed `seed`
// (sharding/shard_order.h).
inline std::vector<std::string> ShardsInLeaseOrder(uint64_t seed, int64_t epoch,
                                                   const std::vector<std::string>& names) {
  std::vector<std::string> out;
  for (size_t i : sharding::EpochShardOrder(seed, epoch, names)) out.push_back(names[i]);
  return out;
}

// A sweep file: mask.ratio x mask.strategy, `seeds` seeds.
inline std::string MaskSweep(const std::string& name, const std::string& seeds = "1, 2",
                             const std::string& extra = "") {
  return "[sweep]\nname = " + name + "\nsearch = grid\nseeds = " + seeds +
         "\n\n[factor.mask.ratio]\nvalues = 0.5, 0.75\n\n[factor.mask.strategy]\nvalues = 1d, 2d\n" + extra;
}

}  // namespace flap::coordinator::testing
