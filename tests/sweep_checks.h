// What the end-to-end sweep tests share: the small trial config they run, a client of a
// running coordinator, waiting on a sweep, a `flapctl sweep run` folder (its run.json, its
// processes, its journal read back after the run), and the checks made on the coordinator's
// own records (every trial completed with its history intact, counted as lost and doubled
// records; records answered before a fault still there after it; an interrupted trial resumed
// from its checkpoint).
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/testing/testing.h"
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

// What the coordinator's records of a sweep lack or hold twice against what a complete,
// intact sweep of `trials` trials of `steps` steps holds: each trial completed at its last step
// with an evaluation there and one test record (the test split on validation's choice), and
// the training history of each (trial, step) recorded once, every 4th step there. `lost` and
// `doubled` count records; `problems` says each (and what else is wrong: a trial not completed,
// at another step, the sweep not finished), one line each; empty when all is well.
struct RecordAudit {
  int64_t lost = 0;
  int64_t doubled = 0;
  std::vector<std::string> problems;
};
inline RecordAudit AuditRecords(const coordinator::v1::SweepStatus& status,
                                const std::vector<coordinator::v1::MetricRecord>& records, size_t trials,
                                int64_t steps = kTinyTrialSteps) {
  RecordAudit a;
  if (static_cast<size_t>(status.trials_size()) != trials) {
    a.problems.push_back("the sweep has " + std::to_string(status.trials_size()) + " trials, not " +
                         std::to_string(trials));
  }
  if (status.state() != "finished") a.problems.push_back("the sweep is '" + status.state() + "', not finished");
  std::map<std::string, std::set<int64_t>> train_steps, eval_steps, test_steps;
  for (const auto& r : records) {
    auto& seen = r.kind() == "train"  ? train_steps[r.trial_id()]
                 : r.kind() == "test" ? test_steps[r.trial_id()]
                                      : eval_steps[r.trial_id()];
    if (!seen.insert(r.step()).second) {
      ++a.doubled;
      a.problems.push_back(r.trial_id() + " has two " + r.kind() + " records at step " + std::to_string(r.step()));
    }
  }
  for (const auto& t : status.trials()) {
    const std::string& id = t.trial_id();
    if (t.state() != "completed") a.problems.push_back(id + " is " + t.state() + ": " + t.last_error());
    if (t.step() != steps) a.problems.push_back(id + " is at step " + std::to_string(t.step()));
    if (!eval_steps[id].count(steps)) {
      ++a.lost;
      a.problems.push_back(id + " has no final evaluation");
    }
    if (!test_steps[id].count(steps)) {
      ++a.lost;
      a.problems.push_back(id + " has no test record at the end");
    }
    for (int64_t s : test_steps[id]) {
      if (s != steps) a.problems.push_back(id + " has a test record at step " + std::to_string(s));
    }
    for (int64_t s = 4; s <= steps; s += 4) {
      if (!train_steps[id].count(s)) {
        ++a.lost;
        a.problems.push_back(id + " lost its training record at step " + std::to_string(s));
      }
    }
  }
  return a;
}

// The sweep finished with every trial complete and intact (AuditRecords finds nothing).
inline void ExpectCompleteAndIntact(const coordinator::v1::SweepStatus& status,
                                    const std::vector<coordinator::v1::MetricRecord>& records, size_t trials,
                                    int64_t steps = kTinyTrialSteps) {
  for (const std::string& p : AuditRecords(status, records, trials, steps).problems) ADD_FAILURE() << p;
}

// A record's identity in the coordinator's history: (trial, kind, step).
using RecordKey = std::tuple<std::string, std::string, int64_t>;
inline RecordKey KeyOf(const coordinator::v1::MetricRecord& r) { return {r.trial_id(), r.kind(), r.step()}; }

// The records of `answered` (what the coordinator once answered with: acknowledged, so
// journaled) that `now` no longer holds.
inline std::vector<RecordKey> LostRecords(const std::set<RecordKey>& answered,
                                          const std::vector<coordinator::v1::MetricRecord>& now) {
  std::set<RecordKey> there;
  for (const auto& r : now) there.insert(KeyOf(r));
  std::vector<RecordKey> lost;
  for (const RecordKey& k : answered) {
    if (!there.count(k)) lost.push_back(k);
  }
  return lost;
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

// A `flapctl sweep run` folder (its --dir) seen from outside: what its run.json says, its
// coordinator's client, and its journal read back once the run has ended.
class SweepRunFolder {
 public:
  explicit SweepRunFolder(std::string dir) : dir_(std::move(dir)) {}
  const std::string& dir() const { return dir_; }

  // run.json; null while it is absent or half-written.
  nlohmann::json RunFile() const {
    try {
      return nlohmann::json::parse(ReadFile(dir_ + "/run.json"));
    } catch (const nlohmann::json::exception&) {
      return nullptr;
    }
  }
  // The coordinator's pid (-1 when run.json does not name one yet).
  pid_t CoordinatorPid() const {
    const nlohmann::json j = RunFile();
    return j.is_null() ? -1 : j["coordinator"]["pid"].get<pid_t>();
  }
  // Each group's ranks' pids, by group id ("local-0", ...).
  std::map<std::string, std::vector<pid_t>> GroupPids() const {
    std::map<std::string, std::vector<pid_t>> groups;
    const nlohmann::json j = RunFile();
    if (j.is_null()) return groups;
    for (const auto& g : j["groups"]) {
      auto& pids = groups[g["group"].get<std::string>()];
      for (const auto& p : g["pids"]) pids.push_back(p.get<pid_t>());
    }
    return groups;
  }
  // The coordinator's and every rank's pid.
  std::vector<pid_t> AllPids() const {
    std::vector<pid_t> pids;
    if (const pid_t c = CoordinatorPid(); c > 0) pids.push_back(c);
    for (const auto& [group, ranks] : GroupPids()) pids.insert(pids.end(), ranks.begin(), ranks.end());
    return pids;
  }

  // A client of the coordinator the run started (waits up to `timeout_s` for run.json and the
  // token); nullptr, a test failure, when none came up.
  std::unique_ptr<coordinator::CoordinatorClient> Client(double timeout_s = 60) const {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (std::chrono::steady_clock::now() < until) {
      const nlohmann::json j = RunFile();
      if (!j.is_null() && std::ifstream(dir_ + "/state/token").good()) {
        auto c = ConnectCoordinator(j["coordinator"]["address"].get<std::string>(), dir_ + "/state/token");
        if (c) return c;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << "no coordinator came up for " << dir_;
    return nullptr;
  }

  // The sweep's state and metric history from its journal: `coordinator_bin` started afresh
  // on the run's state folder after the run ended (its output to `log`), asked, and stopped.
  struct Final {
    coordinator::v1::SweepStatus status;
    std::vector<coordinator::v1::MetricRecord> records;
  };
  Final ReadBack(const std::string& coordinator_bin, const std::string& sweep, const std::string& log) const {
    Final f;
    const int port = FreePort();
    const pid_t pid = Spawn(coordinator_bin + " --state-dir " + dir_ + "/state --listen 127.0.0.1:" +
                                std::to_string(port),
                            {}, log);
    std::string error;
    auto c = ConnectCoordinator("127.0.0.1:" + std::to_string(port), dir_ + "/state/token", &error);
    EXPECT_TRUE(c) << error;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (c && std::chrono::steady_clock::now() < until) {
      auto st = c->GetSweep(sweep);
      if (st.ok()) {
        f.status = *st;
        auto m = c->GetMetrics(sweep);
        if (m.ok()) f.records = *m;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    kill(pid, SIGTERM);
    WaitExit(pid, 20);
    return f;
  }

 private:
  std::string dir_;
};

}  // namespace flap::testing
