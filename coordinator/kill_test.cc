// A coordinator killed with SIGKILL mid-sweep and restarted on the same RocksDB state: the
// sweep goes on with no trial lost, none run twice to completion, and its metric history
// intact. flap-coordinator runs as a real process; the worker groups are simulated
// (sim_group.h) and retry through the outage.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <set>
#include <thread>

#include "coordinator/client.h"
#include "coordinator/testing/service_test_util.h"
#include "coordinator/testing/sim_group.h"
#include "tests/test_util.h"

namespace flap::coordinator {
namespace {

// flap-coordinator as a child process.
class CoordinatorProcess {
 public:
  // Starts it and waits (up to 20 s) for its "listening on" line; returns the port, 0 on failure.
  int Start(const std::string& state_dir, const std::string& listen) {
    flap::testing::ChildProcess::Options o;
    o.pipe_stdout = true;
    o.log_path = state_dir + ".log";
    proc_ = flap::testing::ChildProcess::Exec(
        {FLAP_COORDINATOR_BIN, "--state-dir", state_dir, "--listen", listen, "--heartbeat-interval-ms", "100",
         "--heartbeat-timeout-ms", "5000", "--lease-ttl-ms", "5000"},
        o);
    return testing::ListeningPort(proc_);
  }
  void Kill9() { proc_.Kill(SIGKILL); }
  ~CoordinatorProcess() { proc_.Kill(SIGTERM); }

 private:
  flap::testing::ChildProcess proc_;
};

TEST(CoordinatorKill, SigkillMidSweepLosesNothingAndRunsNothingTwice) {
  flap::testing::TempDir dir("kill9");
  const std::string state = dir / "state";
  CoordinatorProcess proc;
  const int port = proc.Start(state, "127.0.0.1:0");
  ASSERT_GT(port, 0);
  const std::string target = "127.0.0.1:" + std::to_string(port);
  ClientOptions co;
  co.target = target;
  co.deadline_ms = 2000;
  auto token = ReadToken(state + "/token");
  ASSERT_OK(token);
  co.token = *token;
  auto user = CoordinatorClient::Connect(co);
  ASSERT_OK(user);
  const std::string sweep =
      "[sweep]\nname = kill\nseeds = 1, 2\n\n[factor.mask.ratio]\nvalues = 0.5, 0.75\n\n"
      "[factor.mask.strategy]\nvalues = 1d, 2d\n";
  auto sub = (*user)->SubmitSweep(sweep, "kill.ini", "");
  ASSERT_OK(sub);

  sim::SimOptions o;
  o.steps = 30;
  o.epochs = 3;
  o.shards = 3;
  o.step_sleep_ms = 10;
  o.retry_for_ms = 30000;
  std::vector<std::unique_ptr<sim::SimGroup>> groups;
  for (int g = 0; g < 3; ++g) {
    auto client = CoordinatorClient::Connect(co);
    ASSERT_OK(client);
    groups.push_back(std::make_unique<sim::SimGroup>(std::move(*client), "g" + std::to_string(g), o));
  }
  std::vector<Status> results(groups.size());
  std::vector<std::thread> threads;
  for (size_t g = 0; g < groups.size(); ++g) {
    threads.emplace_back([&, g] { results[g] = groups[g]->Run(); });
  }

  // Kill it twice, each time while trials are running, and restart it on the same state.
  int kills = 0;
  for (int target_done : {2, 5}) {
    bool mid_sweep = false;
    for (int i = 0; i < 600 && !mid_sweep; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      auto st = (*user)->GetSweep("kill");
      if (!st.ok()) continue;
      int done = 0, running = 0;
      for (const auto& t : st->trials()) {
        done += t.state() == "completed";
        running += t.state() == "running";
      }
      mid_sweep = done >= target_done && running > 0;
    }
    ASSERT_TRUE(mid_sweep) << "the sweep never reached " << target_done << " completed trials";
    proc.Kill9();
    ++kills;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    ASSERT_EQ(proc.Start(state, target), port) << "restart " << kills;
  }
  for (auto& t : threads) t.join();
  for (const auto& r : results) ASSERT_TRUE(r.ok()) << r.ToString();

  auto st = (*user)->GetSweep("kill");
  ASSERT_OK(st);
  EXPECT_EQ(st->state(), "finished");
  ASSERT_EQ(st->trials_size(), 8);
  // No trial lost: every one completed, at step 30.
  for (const auto& t : st->trials()) {
    EXPECT_EQ(t.state(), "completed") << t.trial_id();
    EXPECT_EQ(t.step(), 30) << t.trial_id();
  }
  // None run twice to completion: each trial's Finish succeeded for exactly one attempt.
  std::map<std::string, std::set<int>> finished;
  size_t acked = 0;
  for (const auto& g : groups) {
    for (const auto& [tid, attempt] : g->log().finished) finished[tid].insert(attempt);
    acked += g->log().acked.size();
  }
  EXPECT_EQ(finished.size(), 8u);
  for (const auto& [tid, attempts] : finished) EXPECT_EQ(attempts.size(), 1u) << tid;
  // Metric history intact: every acknowledged report is there with its values, and nothing else.
  auto history = (*user)->GetMetrics("kill");
  ASSERT_OK(history);
  EXPECT_EQ(history->size(), acked);
  // 30 train + 3 eval records per trial.
  EXPECT_EQ(history->size(), 8u * 33u);
  for (const auto& r : *history) {
    bool found = false;
    for (const auto& g : groups) {
      auto it = g->log().acked.find({r.trial_id(), r.kind(), r.step()});
      if (it == g->log().acked.end()) continue;
      found = true;
      for (const auto& [k, v] : it->second) EXPECT_DOUBLE_EQ(r.values().at(k), v);
    }
    EXPECT_TRUE(found) << r.trial_id() << " " << r.kind() << " " << r.step();
  }
  EXPECT_EQ(kills, 2);
}

}  // namespace
}  // namespace flap::coordinator
