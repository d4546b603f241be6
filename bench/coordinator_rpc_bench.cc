// coordinator_rpc_bench: 1024 simulated ranks heartbeating and leasing shards against one
// flap-coordinator (the real server: gRPC over 127.0.0.1, every lease and completion committed
// to RocksDB with fsync before its reply). Prints throughput and p50 / p99 / max latency per
// call, for
//   1. a paced load: each rank heartbeats every --heartbeat-ms and takes and completes a shard
//      every --shard-ms (a heartbeat's latency is counted from its scheduled time, so
//      queueing in the client shows too);
//   2. a saturating load: every rank issues its next call as soon as the last one returns;
//   3. the same saturating load with fsync off, the baseline showing what durability costs.
// The coordinator and the clients share this machine's cores (in one process, separate
// thread pools). Not a test: it asserts nothing and prints figures.
//
//   build/bench/coordinator_rpc_bench [--ranks 1024] [--group-size 8] [--seconds 5]
//       [--heartbeat-ms 1000] [--shard-ms 5000] [--shards 256] [--channels 16]
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/client.h"
#include "coordinator/server.h"

namespace v1 = flap::coordinator::v1;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  int ranks = 1024;
  int group_size = 8;
  double seconds = 5;
  int heartbeat_ms = 1000;  // paced run: each rank heartbeats this often
  int shard_ms = 5000;      // paced run: each rank takes and completes a shard this often
  int shards = 256;
  int channels = 16;
};

enum CallKind { kHeartbeat = 0, kLease = 1, kComplete = 2, kNumKinds = 3 };
const char* kKindName[] = {"Heartbeat", "LeaseShard", "CompleteShard"};

struct Stats {
  std::mutex mu;
  std::vector<double> ms[kNumKinds];
  int64_t errors = 0;
  std::string first_error;
  void Add(CallKind k, double v) {
    std::lock_guard<std::mutex> l(mu);
    ms[k].push_back(v);
  }
  void Error(const grpc::Status& s) {
    std::lock_guard<std::mutex> l(mu);
    if (errors++ == 0) first_error = s.error_message();
  }
};

double Pct(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

// One rank: a loop of Heartbeat -> LeaseShard -> CompleteShard over the callback API, one call
// in flight at a time.
class Rank {
 public:
  // Every `shard_every`-th heartbeat is followed by a LeaseShard and a CompleteShard.
  Rank(v1::Coordinator::Stub* stub, std::string token, std::string group, v1::TrialRef trial, int rank, int shard_every,
       Stats* stats)
      : stub_(stub),
        token_(std::move(token)),
        group_(std::move(group)),
        trial_(std::move(trial)),
        rank_(rank),
        shard_every_(shard_every),
        cycle_(rank),
        stats_(stats) {}
  // Whether the next call is a heartbeat (paced on the clock; the others follow at once).
  bool next_is_heartbeat() const { return phase_ == kHeartbeat; }

  // Starts the next call of the cycle; `scheduled` is when it was due (for the latency).
  void Next(Clock::time_point scheduled, std::function<void()> done) {
    done_ = std::move(done);
    scheduled_ = scheduled;
    ctx_ = std::make_unique<grpc::ClientContext>();
    ctx_->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ctx_->AddMetadata("x-flap-token", token_);
    switch (phase_) {
      case kHeartbeat:
        hb_req_.set_group_id(group_);
        hb_req_.clear_ranks();
        hb_req_.add_ranks(rank_);
        stub_->async()->Heartbeat(ctx_.get(), &hb_req_, &hb_resp_, [this](grpc::Status s) { Done(kHeartbeat, s); });
        break;
      case kLease:
        lease_req_.set_group_id(group_);
        *lease_req_.mutable_trial() = trial_;
        lease_req_.set_epoch(epoch_);
        lease_req_.set_rank(rank_);
        stub_->async()->LeaseShard(ctx_.get(), &lease_req_, &lease_resp_, [this](grpc::Status s) { Done(kLease, s); });
        break;
      default:
        done_req_.set_group_id(group_);
        *done_req_.mutable_trial() = trial_;
        done_req_.set_epoch(epoch_);
        done_req_.set_lease_id(lease_resp_.lease_id());
        stub_->async()->CompleteShard(ctx_.get(), &done_req_, &done_resp_,
                                      [this](grpc::Status s) { Done(kComplete, s); });
        break;
    }
  }
  int epoch() const { return epoch_; }
  bool wants_epoch() const { return want_epoch_; }
  void EpochBegun() { want_epoch_ = false; }

 private:
  void Done(CallKind kind, const grpc::Status& s) {
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - scheduled_).count();
    if (!s.ok()) {
      stats_->Error(s);
      phase_ = kHeartbeat;
    } else {
      stats_->Add(kind, ms);
      if (kind == kHeartbeat) {
        phase_ = ++cycle_ % shard_every_ == 0 ? kLease : kHeartbeat;
      } else if (kind == kLease) {
        if (lease_resp_.kind() == v1::LeaseShardResponse::GRANTED) {
          phase_ = kComplete;
        } else if (lease_resp_.kind() == v1::LeaseShardResponse::EPOCH_DONE) {
          ++epoch_;  // the driver begins the next epoch for the group
          want_epoch_ = true;
          phase_ = kHeartbeat;
        } else {
          phase_ = kHeartbeat;
        }
      } else {
        phase_ = kHeartbeat;
      }
    }
    auto done = std::move(done_);
    done();
  }

  v1::Coordinator::Stub* stub_;
  std::string token_, group_;
  v1::TrialRef trial_;
  int rank_;
  int shard_every_;
  int cycle_;
  Stats* stats_;
  int phase_ = kHeartbeat;
  int epoch_ = 0;
  bool want_epoch_ = false;
  Clock::time_point scheduled_;
  std::function<void()> done_;
  std::unique_ptr<grpc::ClientContext> ctx_;
  v1::HeartbeatRequest hb_req_;
  v1::HeartbeatResponse hb_resp_;
  v1::LeaseShardRequest lease_req_;
  v1::LeaseShardResponse lease_resp_;
  v1::CompleteShardRequest done_req_;
  v1::CompleteShardResponse done_resp_;
};

struct Run {
  double seconds = 0;
  Stats stats;
};

// Sets up a coordinator, its groups and trials, then drives the ranks. paced: each rank's
// heartbeats are due every heartbeat_ms, with a LeaseShard and a CompleteShard right after
// every shard_ms / heartbeat_ms-th one; saturating: every call right after the last.
void RunOnce(const Args& a, bool sync, bool paced, Run* run) {
  const std::string dir = std::filesystem::temp_directory_path() /
                          ("flap_rpc_bench_" + std::to_string(::getpid()) + (sync ? "_s" : "_n") + (paced ? "p" : "c"));
  std::filesystem::remove_all(dir);
  flap::coordinator::ServerOptions so;
  so.listen = "127.0.0.1:0";
  so.service.state_dir = dir;
  so.service.sync = sync;
  so.service.heartbeat_timeout_ms = 600000;
  so.service.lease_ttl_ms = 600000;
  auto server = flap::coordinator::CoordinatorServer::Start(so);
  if (!server.ok()) {
    std::fprintf(stderr, "coordinator: %s\n", server.status().ToString().c_str());
    std::exit(1);
  }
  const int groups = a.ranks / a.group_size;
  flap::coordinator::ClientOptions co;
  co.target = (*server)->address();
  co.token = (*server)->token();
  co.deadline_ms = 30000;
  auto admin = flap::coordinator::CoordinatorClient::Connect(co);
  std::string values;
  for (int i = 0; i < groups; ++i) values += (i ? ", " : "") + std::to_string(i);
  auto sub = (*admin)->SubmitSweep("[sweep]\nname = bench\n\n[factor.recon.weight]\nvalues = " + values + "\n",
                                   "bench.ini", "");
  if (!sub.ok()) {
    std::fprintf(stderr, "submit: %s\n", sub.status().ToString().c_str());
    std::exit(1);
  }
  std::vector<std::pair<std::string, int64_t>> shards;
  for (int s = 0; s < a.shards; ++s) shards.push_back({"shard-" + std::to_string(s) + ".tar", 1000});
  std::vector<v1::TrialRef> trials;
  for (int g = 0; g < groups; ++g) {
    const std::string gid = "g" + std::to_string(g);
    auto reg = (*admin)->Register(gid, gid, a.group_size);
    auto next = (*admin)->NextTrial(gid);
    if (!reg.ok() || !next.ok() || !next->assigned) {
      std::fprintf(stderr, "group setup failed\n");
      std::exit(1);
    }
    trials.push_back(next->assignment.trial);
    auto begun = (*admin)->BeginEpoch(gid, trials.back(), 0, shards);
    if (!begun.ok()) std::exit(1);
  }
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<v1::Coordinator::Stub>> stubs;
  for (int c = 0; c < a.channels; ++c) {
    grpc::ChannelArguments args;
    args.SetInt("grpc.channel_id", c);  // distinct connections
    channels.push_back(grpc::CreateCustomChannel(co.target, grpc::InsecureChannelCredentials(), args));
    stubs.push_back(v1::Coordinator::NewStub(channels.back()));
  }
  std::vector<std::unique_ptr<Rank>> ranks;
  for (int r = 0; r < a.ranks; ++r) {
    ranks.push_back(std::make_unique<Rank>(
        stubs[r % a.channels].get(), co.token, "g" + std::to_string(r / a.group_size), trials[r / a.group_size],
        r % a.group_size, paced ? std::max(1, a.shard_ms / a.heartbeat_ms) : 1, &run->stats));
  }

  std::atomic<bool> stop{false};
  std::atomic<int> in_flight{0};
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<int, Clock::time_point>> pending_;  // GUARDED_BY(mu): paced ranks waiting
  const auto start = Clock::now();
  const auto end = start + std::chrono::milliseconds(static_cast<int64_t>(a.seconds * 1000));
  const auto step = std::chrono::milliseconds(a.heartbeat_ms);
  // Epochs run out in the saturating runs: a helper begins the next one for the group.
  std::thread epochs([&] {
    while (!stop) {
      for (int g = 0; g < groups; ++g) {
        int want = -1;
        for (int k = 0; k < a.group_size; ++k) {
          if (ranks[g * a.group_size + k]->wants_epoch()) want = ranks[g * a.group_size + k]->epoch();
        }
        if (want >= 0) {
          auto b = (*admin)->BeginEpoch("g" + std::to_string(g), trials[g], want, shards);
          if (b.ok()) {
            for (int k = 0; k < a.group_size; ++k) ranks[g * a.group_size + k]->EpochBegun();
          }
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  std::function<void(int, Clock::time_point)> launch = [&](int r, Clock::time_point due) {
    ++in_flight;
    ranks[r]->Next(due, [&, r, due] {
      if (!stop && Clock::now() < end) {
        if (paced && !ranks[r]->next_is_heartbeat()) {
          launch(r, Clock::now());  // the lease and completion follow at once
        } else if (paced) {
          Clock::time_point next = due + step;
          const auto now = Clock::now();
          if (next > now) {
            // Wait on a timer thread: hand back to the pacer.
            std::lock_guard<std::mutex> l(mu);
            pending_.push_back({r, next});
          } else {
            launch(r, next);
          }
        } else {
          launch(r, Clock::now());
        }
      }
      if (--in_flight == 0) cv.notify_all();
    });
  };
  // Staggered start, so a paced load is spread over the period.
  for (int r = 0; r < a.ranks; ++r) {
    const auto due = paced ? start + (step * r) / a.ranks : start;
    if (paced) {
      std::lock_guard<std::mutex> l(mu);
      pending_.push_back({r, due});
    } else {
      launch(r, due);
    }
  }
  if (paced) {
    while (Clock::now() < end) {
      std::vector<std::pair<int, Clock::time_point>> ready;
      {
        std::lock_guard<std::mutex> l(mu);
        const auto now = Clock::now();
        auto it = std::partition(pending_.begin(), pending_.end(), [&](const auto& p) { return p.second > now; });
        ready.assign(it, pending_.end());
        pending_.erase(it, pending_.end());
      }
      for (const auto& [r, due] : ready) launch(r, due);
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  } else {
    std::this_thread::sleep_until(end);
  }
  stop = true;
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait_for(l, std::chrono::seconds(30), [&] { return in_flight.load() == 0; });
  }
  run->seconds = std::chrono::duration<double>(Clock::now() - start).count();
  epochs.join();
  ranks.clear();
  (*server)->Shutdown();
  server->reset();
  std::filesystem::remove_all(dir);
}

void Print(const char* title, Run& run) {
  size_t total = 0;
  for (auto& v : run.stats.ms) total += v.size();
  std::printf("%s: %.0f calls/s over %.1f s, %lld errors%s%s\n", title, total / run.seconds, run.seconds,
              static_cast<long long>(run.stats.errors), run.stats.errors ? " (first: " : "",
              run.stats.errors ? (run.stats.first_error + ")").c_str() : "");
  std::printf("  %-14s %9s %9s %9s %9s %9s\n", "call", "calls/s", "p50 ms", "p99 ms", "max ms", "");
  for (int k = 0; k < kNumKinds; ++k) {
    auto& v = run.stats.ms[k];
    const double n = v.size();
    std::printf("  %-14s %9.0f %9.2f %9.2f %9.2f\n", kKindName[k], n / run.seconds, Pct(v, 0.5), Pct(v, 0.99),
                Pct(v, 1.0));
  }
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const double v = std::atof(argv[i + 1]);
    if (k == "--ranks")
      a.ranks = static_cast<int>(v);
    else if (k == "--heartbeat-ms")
      a.heartbeat_ms = static_cast<int>(v);
    else if (k == "--shard-ms")
      a.shard_ms = static_cast<int>(v);
    else if (k == "--group-size")
      a.group_size = static_cast<int>(v);
    else if (k == "--seconds")
      a.seconds = v;
    else if (k == "--shards")
      a.shards = static_cast<int>(v);
    else if (k == "--channels")
      a.channels = static_cast<int>(v);
    else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  if (a.ranks % a.group_size != 0 || a.channels < 1 || a.heartbeat_ms < 1 || a.shard_ms < 1) {
    std::fprintf(stderr, "--ranks must be a multiple of --group-size\n");
    return 2;
  }
  std::printf(
      "coordinator_rpc_bench: %d ranks in %d groups of %d, %d shards per epoch, %d client "
      "connections, %u hardware threads\n\n",
      a.ranks, a.ranks / a.group_size, a.group_size, a.shards, a.channels, std::thread::hardware_concurrency());
  Run paced, saturated, unsynced;
  RunOnce(a, /*sync=*/true, /*paced=*/true, &paced);
  char title[128];
  std::snprintf(title, sizeof(title),
                "1. paced (each rank: a heartbeat every %d ms, a lease + completion every %d ms), fsync on",
                a.heartbeat_ms, std::max(1, a.shard_ms / a.heartbeat_ms) * a.heartbeat_ms);
  Print(title, paced);
  RunOnce(a, true, false, &saturated);
  Print("\n2. saturating (every rank back-to-back), fsync on", saturated);
  RunOnce(a, false, false, &unsynced);
  Print("\n3. saturating, fsync off (baseline: what durability costs)", unsynced);
  auto rate = [](Run& r) {
    size_t n = 0;
    for (auto& v : r.stats.ms) n += v.size();
    return n / r.seconds;
  };
  std::printf("\nthroughput with fsync / without: %.2f\n", rate(saturated) / rate(unsynced));
  std::vector<double> paced_all;
  for (auto& v : paced.stats.ms) paced_all.insert(paced_all.end(), v.begin(), v.end());
  std::printf("paced load, all calls: p50 %.2f ms, p99 %.2f ms (target p99 < 20 ms)\n", Pct(paced_all, 0.5),
              Pct(paced_all, 0.99));
  return 0;
}
