// What the end-to-end sweep tests share: the small trial config they run, a client of a
// running coordinator, waiting on a sweep, and the checks made on the coordinator's own
// records (every trial completed with its history intact; an interrupted trial resumed from
// its checkpoint).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/client.h"

namespace flap::testing {

// 128 training clips in 8 shards (`flapctl data synth --train 128 --val 32 --shard-size 16`):
// 16 steps per epoch at batch 8, 32 steps per trial, a checkpoint every 4 steps.
inline constexpr const char* kTinyTrialConfig = R"([model]
preset = tiny
[mask]
ratio = 0.75
strategy = 2d
[train]
batch_size = 8
epochs = 2
log_every = 4
eval_every = 8
eval_batch_size = 32
[ckpt]
every = 4
[data]
loader_threads = 1
)";
inline constexpr int kTinyTrialSteps = 32;

// A client (calls of 5 s at most) of the coordinator at `address` with the token in
// `token_file`, over TLS trusting the CA in `tls_ca_file` when given; nullptr, and the reason
// in *error, when the token (or the CA) cannot be read.
inline std::unique_ptr<coordinator::CoordinatorClient> ConnectCoordinator(const std::string& address,
                                                                          const std::string& token_file,
                                                                          std::string* error = nullptr,
                                                                          const std::string& tls_ca_file = "") {
  coordinator::ClientOptions o;
  o.target = address;
  o.deadline_ms = 5000;
  if (!tls_ca_file.empty()) {
    std::ifstream in(tls_ca_file);
    std::stringstream pem;
    pem << in.rdbuf();
    o.tls_ca = pem.str();
    if (!in || o.tls_ca.empty()) {
      if (error) *error = "cannot read the CA " + tls_ca_file;
      return nullptr;
    }
  }
  auto token = coordinator::ReadToken(token_file);
  if (!token.ok()) {
    if (error) *error = token.status().ToString();
    return nullptr;
  }
  o.token = *token;
  auto c = coordinator::CoordinatorClient::Connect(o);
  if (!c.ok()) {
    if (error) *error = c.status().ToString();
    return nullptr;
  }
  return std::move(*c);
}

// Polls the sweep every 200 ms until `pred` holds or `timeout_s` passes (a test failure);
// the last status seen. Each poll also calls `abort` (e.g. whether a job that runs the
// sweep's workers has failed): a non-empty answer ends the wait at once as a test failure
// with that text, instead of waiting out the timeout.
template <typename Pred, typename Abort>
coordinator::v1::SweepStatus WaitForSweep(coordinator::CoordinatorClient& c, const std::string& sweep, double timeout_s,
                                          Pred pred, Abort abort) {
  coordinator::v1::SweepStatus last;
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < until) {
    auto st = c.GetSweep(sweep);
    if (st.ok()) {
      last = *st;
      if (pred(last)) return last;
    }
    if (const std::string why = abort(); !why.empty()) {
      ADD_FAILURE() << "stopped waiting on sweep " << sweep << " (last state '" << last.state() << "'): " << why;
      return last;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ADD_FAILURE() << "timed out after " << timeout_s << " s waiting on sweep " << sweep << " (last state '"
                << last.state() << "')";
  return last;
}

template <typename Pred>
coordinator::v1::SweepStatus WaitForSweep(coordinator::CoordinatorClient& c, const std::string& sweep, double timeout_s,
                                          Pred pred) {
  return WaitForSweep(c, sweep, timeout_s, pred, [] { return std::string(); });
}

// The sweep finished with `trials` trials, each completed at its last step with an evaluation
// there and one test record (the test split on validation's choice), and the training history
// of each (trial, step) recorded once, every 4th step there.
inline void ExpectCompleteAndIntact(const coordinator::v1::SweepStatus& status,
                                    const std::vector<coordinator::v1::MetricRecord>& records, size_t trials,
                                    int64_t steps = kTinyTrialSteps) {
  ASSERT_EQ(static_cast<size_t>(status.trials_size()), trials);
  EXPECT_EQ(status.state(), "finished");
  std::map<std::string, std::set<int64_t>> train_steps, eval_steps, test_steps;
  for (const auto& r : records) {
    auto& seen = r.kind() == "train"  ? train_steps[r.trial_id()]
                 : r.kind() == "test" ? test_steps[r.trial_id()]
                                      : eval_steps[r.trial_id()];
    EXPECT_TRUE(seen.insert(r.step()).second)
        << r.trial_id() << " has two " << r.kind() << " records at step " << r.step();
  }
  for (const auto& t : status.trials()) {
    EXPECT_EQ(t.state(), "completed") << t.trial_id() << ": " << t.last_error();
    EXPECT_EQ(t.step(), steps) << t.trial_id();
    EXPECT_TRUE(eval_steps[t.trial_id()].count(steps)) << t.trial_id() << " has no final evaluation";
    EXPECT_EQ(test_steps[t.trial_id()], (std::set<int64_t>{steps})) << t.trial_id() << ": one test record at the end";
    for (int64_t s = 4; s <= steps; s += 4) {
      EXPECT_TRUE(train_steps[t.trial_id()].count(s)) << t.trial_id() << " lost its training record at step " << s;
    }
  }
}

// The first training step recorded for `trial` by an attempt numbered `min_attempt` or later;
// -1 when there is none. A trial that resumed from a checkpoint at step c after attempt
// min_attempt - 1 ended has this past c (a record of a step seen again is overwritten by the
// later attempt, so only steps after the resume point can carry the later attempts).
inline int64_t FirstTrainStepFrom(const std::vector<coordinator::v1::MetricRecord>& records, const std::string& trial,
                                  int64_t min_attempt) {
  int64_t first = -1;
  for (const auto& r : records) {
    if (r.trial_id() == trial && r.kind() == "train" && r.attempt() >= min_attempt) {
      first = first < 0 ? r.step() : std::min(first, r.step());
    }
  }
  return first;
}

}  // namespace flap::testing
