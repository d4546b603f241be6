// Test and benchmark support (not part of the library): a simulated worker group that speaks
// the coordinator's protocol through CoordinatorClient exactly as a real group would (register,
// heartbeat, take a trial, begin epochs, lease and complete shards for each rank, report
// metrics, evaluations and checkpoints, finish), without training anything. Its metrics are a
// pure function of the trial's factors and step (SimMetric), so tests can check what the
// coordinator recorded and reported against what was sent.
//
// Calls that fail with UNAVAILABLE or DEADLINE_EXCEEDED (a coordinator being killed and
// restarted) are retried for up to SimOptions::retry_for_ms; a FAILED_PRECONDITION on a trial
// call (stale attempt, trial stopped or cancelled) makes the group drop the trial.
//
// Thread-safety: one SimGroup per thread; the log is read after Run() returns.
#pragma once

#include <unistd.h>

#include <atomic>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "coordinator/client.h"

namespace flap::coordinator::sim {

struct SimOptions {
  int world_size = 2;
  int steps = 20;            // steps per trial
  int epochs = 2;            // steps are split evenly over epochs
  int shards = 4;            // shards per epoch
  int ckpt_every = 5;        // report a checkpoint every this many steps
  int eval_every = 10;       // report an evaluation every this many steps (and at the end)
  int step_sleep_ms = 0;     // simulated work per step
  int64_t retry_for_ms = 0;  // retry UNAVAILABLE / DEADLINE_EXCEEDED this long (0: never)
  int heartbeat_every_steps = 1;
  // Stop heartbeating and abandon the trial after this many steps of the first trial (-1:
  // never): a group that dies.
  int die_after_steps = -1;
};

// The value the simulated trial reports for `metric` at `step` of `total`.
inline double SimMetric(const std::map<std::string, std::string>& overrides, const std::string& metric, int64_t step,
                        int64_t total) {
  auto get = [&](const std::string& k, const std::string& d) {
    auto it = overrides.find(k);
    return it == overrides.end() ? d : it->second;
  };
  const double ratio = std::stod(get("mask.ratio", "0"));
  const double strategy = get("mask.strategy", "2d") == "1d" ? 0.02 : 0.0;
  const double seed = std::stod(get("train.seed", "1"));
  const double progress = total > 0 ? double(step) / total : 1.0;
  if (metric == "samples_per_second") return 100.0 / (1.0 - ratio) + seed;
  if (metric == "loss") return 5.0 - 3.0 * progress;
  const double base = 0.2 + 0.3 * ratio + strategy + 0.001 * seed;
  if (metric == "map10") return base * progress;
  if (metric.rfind("t2a_", 0) == 0) return (base + 0.01 * metric.size()) * progress;
  if (metric.rfind("a2t_", 0) == 0) return (base + 0.02 * metric.size()) * progress;
  return progress;
}

inline const std::vector<std::string>& SimEvalMetrics() {
  static const std::vector<std::string> k = {"t2a_r1", "t2a_r5", "t2a_r10", "a2t_r1", "a2t_r5", "a2t_r10", "map10"};
  return k;
}

// What the group saw, for the tests' checks.
struct SimLog {
  // Acknowledged metric reports: (trial, kind, step) -> values.
  std::map<std::tuple<std::string, std::string, int64_t>, std::map<std::string, double>> acked;
  std::vector<std::pair<std::string, int>> finished;  // (trial, attempt) whose Finish was OK
  std::vector<std::pair<std::string, int>> started;   // (trial, attempt) assignments taken
  std::vector<std::string> stopped;                   // trials told to STOP (ASHA / cancel)
  std::vector<std::string> dropped;                   // trials dropped on a refused call
  std::map<std::string, std::string> resumed_from;    // trial -> checkpoint of an attempt > 1
  int64_t shards_completed = 0;
};

class SimGroup {
 public:
  SimGroup(std::unique_ptr<CoordinatorClient> client, std::string group_id, SimOptions options)
      : client_(std::move(client)), id_(std::move(group_id)), o_(options) {}

  // Runs trials until no sweep has work left (or `stop`); returns the first unexpected error.
  Status Run(const std::atomic<bool>* stop = nullptr) {
    const std::string incarnation = id_ + "-" + std::to_string(::getpid());
    auto reg = Retry([&] { return client_->Register(id_, incarnation, o_.world_size, "sim"); });
    if (!reg.ok()) return reg.status();
    while (!(stop && stop->load())) {
      auto next = Retry([&] { return client_->NextTrial(id_); });
      if (!next.ok()) return next.status();
      if (!next->assigned) {
        if (next->all_done) return Status::OK();
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        continue;
      }
      Status s = RunTrial(next->assignment, stop);
      if (!s.ok()) return s;
      if (dead_) return Status::OK();
    }
    return Status::OK();
  }

  const SimLog& log() const { return log_; }

 private:
  template <typename Fn>
  auto Retry(Fn&& fn) -> decltype(fn()) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(o_.retry_for_ms);
    while (true) {
      auto r = fn();
      const Status::Code c = GetStatus(r).code();
      if (r.ok() || (c != Status::Code::kUnavailable && c != Status::Code::kDeadlineExceeded) ||
          std::chrono::steady_clock::now() > until) {
        return r;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  // A refused trial call: the trial is no longer ours.
  static bool Refused(const Status& s) { return s.code() == Status::Code::kFailedPrecondition; }

  Status RunTrial(const TrialAssignment& a, const std::atomic<bool>* stop) {
    const v1::TrialRef& ref = a.trial;
    const std::string tid = ref.trial_id();
    log_.started.push_back({tid, ref.attempt()});
    if (ref.attempt() > 1) log_.resumed_from[tid] = a.resume_checkpoint;
    const int64_t total = o_.steps;
    const int steps_per_epoch = std::max(1, o_.steps / std::max(1, o_.epochs));
    int64_t step = a.resume_step;
    std::vector<std::pair<std::string, int64_t>> shards;
    for (int i = 0; i < o_.shards; ++i) shards.push_back({"shard-" + std::to_string(i) + ".tar", 100});
    std::vector<int> ranks;
    for (int r = 0; r < o_.world_size; ++r) ranks.push_back(r);
    int begun_epoch = -1;
    while (step < total) {
      if (stop && stop->load()) return Status::OK();
      if (o_.die_after_steps >= 0 && step - a.resume_step >= o_.die_after_steps) {
        dead_ = true;  // the group dies: no more calls at all
        return Status::OK();
      }
      const int epoch = static_cast<int>(step / steps_per_epoch);
      if (epoch != begun_epoch) {
        auto b = Retry([&] { return client_->BeginEpoch(id_, ref, epoch, shards); });
        if (Refused(b.status())) return Drop(tid);
        if (!b.ok()) return b.status();
        begun_epoch = epoch;
        // Each rank consumes shards until the epoch is done.
        bool done = false;
        while (!done) {
          for (int r : ranks) {
            auto l = Retry([&] { return client_->LeaseShard(id_, ref, epoch, r); });
            if (Refused(l.status())) return Drop(tid);
            if (!l.ok()) return l.status();
            if (l->kind == ShardLease::Kind::kEpochDone) {
              done = true;
              break;
            }
            if (l->kind == ShardLease::Kind::kWait) continue;
            auto c = Retry([&] { return client_->CompleteShard(id_, ref, epoch, l->lease_id); });
            if (Refused(c.status())) return Drop(tid);
            if (!c.ok()) return c.status();
            ++log_.shards_completed;
          }
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(o_.step_sleep_ms));
      ++step;
      if (step % o_.heartbeat_every_steps == 0) {
        auto hb = Retry([&] { return client_->Heartbeat(id_, ranks); });
        if (!hb.ok()) return hb.status();
        if (hb->action() != v1::CONTINUE) {
          log_.stopped.push_back(tid);
          return Status::OK();
        }
      }
      std::map<std::string, double> train = {
          {"loss", SimMetric(a.overrides, "loss", step, total)},
          {"samples_per_second", SimMetric(a.overrides, "samples_per_second", step, total)}};
      bool stopped = false;
      FLAP_RETURN_IF_ERROR(Report(a, MetricKind::kTrain, step, epoch, train, &stopped));
      if (stopped) return Status::OK();
      if (step % o_.eval_every == 0 || step == total) {
        std::map<std::string, double> eval;
        for (const auto& m : SimEvalMetrics()) eval[m] = SimMetric(a.overrides, m, step, total);
        FLAP_RETURN_IF_ERROR(Report(a, MetricKind::kEval, step, epoch, eval, &stopped));
        if (stopped) return Status::OK();
      }
      if (step % o_.ckpt_every == 0) {
        Status c = Retry([&] {
                     Status s = client_->ReportCheckpoint(id_, ref, "ckpt/" + tid + "/" + std::to_string(step), step);
                     return s.ok() ? StatusOr<int>(0) : StatusOr<int>(s);
                   }).status();
        if (Refused(c)) return Drop(tid);
        if (!c.ok()) return c;
      }
    }
    Status f = Retry([&] {
                 Status s = client_->Finish(id_, ref);
                 return s.ok() ? StatusOr<int>(0) : StatusOr<int>(s);
               }).status();
    if (Refused(f)) return Drop(tid);
    if (!f.ok()) return f;
    log_.finished.push_back({tid, ref.attempt()});
    return Status::OK();
  }

  Status Report(const TrialAssignment& a, MetricKind kind, int64_t step, int epoch,
                const std::map<std::string, double>& values, bool* stopped) {
    std::string reason;
    auto r = Retry([&] { return client_->ReportMetrics(id_, a.trial, kind, step, epoch, values, o_.steps, &reason); });
    if (Refused(r.status())) {
      log_.dropped.push_back(a.trial.trial_id());
      *stopped = true;
      return Status::OK();
    }
    if (!r.ok()) return r.status();
    log_.acked[{a.trial.trial_id(), MetricKindName(kind), step}] = values;
    if (*r == v1::STOP) {
      log_.stopped.push_back(a.trial.trial_id());
      *stopped = true;
    }
    return Status::OK();
  }

  Status Drop(const std::string& tid) {
    log_.dropped.push_back(tid);
    return Status::OK();
  }

  std::unique_ptr<CoordinatorClient> client_;
  std::string id_;
  SimOptions o_;
  SimLog log_;
  bool dead_ = false;
};

}  // namespace flap::coordinator::sim
