// coordinator_rpc_bench: simulated worker groups against one flap-coordinator (the real server:
// gRPC over 127.0.0.1, every state change committed to RocksDB, with fsync unless said, before
// its reply). Each simulated group makes the calls the worker's agent makes, in its order
// (worker/agent.cc, worker/lease_source.cc):
//   - rank 0 heartbeats for the whole group (one Heartbeat naming every rank) every
//     --heartbeat-ms;
//   - every rank, at the start of each epoch, declares the epoch's shards (BeginEpoch: the same
//     list from every rank, which is idempotent) and waits for the answer; it then leases and
//     completes shards (LeaseShard then CompleteShard) up to its share of the epoch's undone
//     shards (ceil(undone / ranks)), and stops leasing early when an answer is WAIT or
//     EPOCH_DONE;
//   - the ranks of a group end an epoch together (their collectives are matched): a rank that
//     is done with an epoch waits for the others before beginning the next.
// A call that fails is counted as a failure, never as throughput, and ends its rank's run (the
// agent's run ends on such an error); the program exits 1 when any call failed.
//
// Prints calls per second and p50 / p99 / max latency per call, for
//   1. a paced load: each rank leases and completes a shard every --shard-ms (latencies counted
//      from the scheduled time, so queueing in the client shows too);
//   2. a saturating load: every rank issues its next shard call as soon as the last one returns
//      (heartbeats stay paced);
//   3. the same saturating load with fsync off, the baseline showing what durability costs;
//   4. the scale point (skipped with --no-scale): the flap-coordinator program in its own
//      process, a sweep of --scale-trials trials and --scale-ranks ranks under the paced load
//      of 1., against a baseline of a tenth of the trials and --ranks ranks measured the same
//      way: SubmitSweep time; GetSweep (status) and GetReport (report) p50 / p99, while the
//      ranks run and back-to-back after they stopped; the ranks' call latencies; the
//      coordinator's resident memory (VmRSS and VmHWM from /proc/PID/status).
// In 1. to 3. the coordinator and the clients share this machine's cores in one process
// (separate thread pools). Not a test: it prints figures.
//
//   build/bench/coordinator_rpc_bench [--help] [options]   (--help lists them)
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/client.h"
#include "coordinator/server.h"

extern char** environ;

namespace v1 = flap::coordinator::v1;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  int ranks = 1024;
  int group_size = 8;
  double seconds = 5;
  int heartbeat_ms = 1000;  // each group's rank 0 heartbeats this often
  int shard_ms = 5000;      // paced runs: each rank takes and completes a shard this often
  int shards = 256;         // shards per epoch
  int channels = 16;
  bool scale = true;
  int scale_ranks = 4096;
  int scale_trials = 10000;
  std::string coordinator;  // the flap-coordinator program (--scale)
};

const char kUsage[] =
    "usage: coordinator_rpc_bench [options]\n"
    "Simulated worker groups (each making the calls of flap-worker agent, in its order) against\n"
    "one flap-coordinator; prints calls/s and p50 / p99 / max latency per call for a paced load,\n"
    "a saturating load, and the saturating load with fsync off (the baseline), then the scale\n"
    "point (about 35 s in all on 2 cores). Exits 1 when any call failed, 2 on a bad option.\n"
    "\n"
    "options (defaults in brackets):\n"
    "  --ranks N          simulated ranks [1024]\n"
    "  --group-size N     ranks per worker group; divides --ranks [8]\n"
    "  --seconds S        length of each measured load [5]\n"
    "  --heartbeat-ms MS  each group heartbeats this often (rank 0, naming every rank) [1000]\n"
    "  --shard-ms MS      paced load: each rank leases and completes a shard this often [5000]\n"
    "  --shards N         shards per epoch of every trial [256]\n"
    "  --channels N       client connections the ranks share [16]\n"
    "  --no-scale         skip the scale point (4.): flap-coordinator in its own process, a sweep\n"
    "                     of --scale-trials trials and --scale-ranks ranks under the paced load,\n"
    "                     against a tenth of the trials and --ranks ranks (submit, status and\n"
    "                     report times, call latencies, the coordinator's RSS)\n"
    "  --scale-ranks N    ranks of the scale point; a multiple of --group-size [4096]\n"
    "  --scale-trials N   trials of the scale point's sweep; a multiple of 10, at most 10000 [10000]\n"
    "  --coordinator PATH the flap-coordinator program of the scale point\n"
    "                     [../coordinator/flap-coordinator next to this program]\n"
    "  --help             print this and exit\n";

// ---------------------------------------------------------------------------------------------
// What the calls did

enum Kind { kHeartbeat = 0, kBeginEpoch, kLease, kComplete, kNumKinds };
const char* kKindName[] = {"Heartbeat", "BeginEpoch", "LeaseShard", "CompleteShard"};

struct Tally {
  std::mutex mu;
  std::vector<double> ms[kNumKinds];  // GUARDED_BY(mu): latency of each successful call
  int64_t failed[kNumKinds] = {};     // GUARDED_BY(mu)
  std::string first_error[kNumKinds];
  int64_t granted = 0, not_granted = 0;  // LeaseShard answers: GRANTED; WAIT or EPOCH_DONE
  void Ok(Kind k, double v) {
    std::lock_guard<std::mutex> l(mu);
    ms[k].push_back(v);
  }
  void Failed(Kind k, const grpc::Status& s) {
    std::lock_guard<std::mutex> l(mu);
    if (failed[k]++ == 0) first_error[k] = s.error_message();
  }
  int64_t ok_calls() const {
    int64_t n = 0;
    for (const auto& v : ms) n += static_cast<int64_t>(v.size());
    return n;
  }
  int64_t failed_calls() const {
    int64_t n = 0;
    for (int64_t f : failed) n += f;
    return n;
  }
};

double Pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

double MsSince(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// The flap-coordinator child of the scale point while it runs (0: none); stopped at exit.
pid_t g_coordinator = 0;

void StopCoordinatorAtExit() {
  if (g_coordinator > 0) kill(g_coordinator, SIGKILL);
}

// ---------------------------------------------------------------------------------------------
// The simulated groups

struct SimGroup {
  std::string id;
  v1::TrialRef trial;
};

// The ranks of `groups` (group_size each) and their groups' heartbeats, driven over gRPC's
// callback API: at most one call in flight per rank and per group's heartbeat.
class Load {
 public:
  Load(const Args& a, bool paced, std::vector<SimGroup> groups, std::vector<v1::Coordinator::Stub*> stubs,
       std::string token, Tally* tally)
      : a_(a),
        paced_(paced),
        groups_(std::move(groups)),
        stubs_(std::move(stubs)),
        token_(std::move(token)),
        tally_(tally) {
    for (int s = 0; s < a.shards; ++s) {
      v1::Shard* sh = shards_.Add();
      sh->set_name("shard-" + std::to_string(s) + ".tar");
      sh->set_num_samples(1000);
    }
    for (size_t g = 0; g < groups_.size(); ++g) {
      for (int r = 0; r < a.group_size; ++r) {
        auto rank = std::make_unique<RankState>();
        rank->group = static_cast<int>(g);
        rank->rank = r;
        rank->stub = stubs_[ranks_.size() % stubs_.size()];
        ranks_.push_back(std::move(rank));
      }
    }
    arrived_.assign(groups_.size(), 0);
  }

  // Drives the load for `seconds`, then waits for the calls in flight.
  void Run(double seconds) {
    const auto start = Clock::now();
    const auto end = start + std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
    const int groups = static_cast<int>(groups_.size());
    const int ranks = static_cast<int>(ranks_.size());
    // Staggered starts: heartbeats over one heartbeat period; paced ranks over one shard period.
    for (int g = 0; g < groups; ++g) {
      Schedule(-1 - g, start + std::chrono::milliseconds(int64_t{a_.heartbeat_ms} * g / groups));
    }
    for (int r = 0; r < ranks; ++r) {
      ranks_[r]->due = paced_ ? start + std::chrono::milliseconds(int64_t{a_.shard_ms} * r / ranks) : start;
      Schedule(r, ranks_[r]->due);
    }
    while (Clock::now() < end) {
      std::vector<std::pair<Clock::time_point, int>> ready;
      {
        std::lock_guard<std::mutex> l(mu_);
        const auto now = Clock::now();
        while (!timers_.empty() && timers_.top().first <= now) {
          ready.push_back(timers_.top());
          timers_.pop();
        }
      }
      for (const auto& [due, id] : ready) {
        if (id < 0) {
          Heartbeat(-1 - id, due);
        } else {
          Cycle(id, due);
        }
      }
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    stop_ = true;
    std::unique_lock<std::mutex> l(mu_);
    if (!idle_cv_.wait_for(l, std::chrono::seconds(60), [&] { return in_flight_ == 0; })) {
      std::fprintf(stderr, "coordinator_rpc_bench: calls still in flight 60 s after the end\n");
      StopCoordinatorAtExit();
      std::_Exit(1);
    }
    seconds_ = std::chrono::duration<double>(Clock::now() - start).count();
  }
  double seconds() const { return seconds_; }
  int64_t epochs_ended() const { return epochs_ended_; }

 private:
  struct RankState {
    int group = 0, rank = 0;
    v1::Coordinator::Stub* stub = nullptr;
    int epoch = 0;
    bool begun = false;  // BeginEpoch answered for `epoch`
    int64_t share = 0, leased = 0;
    Clock::time_point due;  // paced: when its next shard is due
  };
  template <typename Req, typename Resp>
  struct Call {
    grpc::ClientContext ctx;
    Req req;
    Resp resp;
    Clock::time_point t0;  // latency counted from here
  };

  template <typename Req, typename Resp>
  std::shared_ptr<Call<Req, Resp>> NewCall(Clock::time_point t0) {
    auto c = std::make_shared<Call<Req, Resp>>();
    c->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    c->ctx.AddMetadata("x-flap-token", token_);
    c->t0 = t0;
    std::lock_guard<std::mutex> l(mu_);
    ++in_flight_;
    return c;
  }
  void CallEnded() {
    std::lock_guard<std::mutex> l(mu_);
    if (--in_flight_ == 0) idle_cv_.notify_all();
  }
  void Schedule(int id, Clock::time_point due) {
    std::lock_guard<std::mutex> l(mu_);
    timers_.push({due, id});
  }

  void Heartbeat(int g, Clock::time_point due) {
    auto c = NewCall<v1::HeartbeatRequest, v1::HeartbeatResponse>(due);
    c->req.set_group_id(groups_[g].id);
    for (int r = 0; r < a_.group_size; ++r) c->req.add_ranks(r);
    ranks_[g * a_.group_size]->stub->async()->Heartbeat(&c->ctx, &c->req, &c->resp, [this, c, g](grpc::Status s) {
      if (s.ok()) {
        tally_->Ok(kHeartbeat, MsSince(c->t0));
      } else {
        tally_->Failed(kHeartbeat, s);  // the agent logs it and heartbeats on
      }
      if (!stop_) Schedule(-1 - g, c->t0 + std::chrono::milliseconds(a_.heartbeat_ms));
      CallEnded();
    });
  }

  // A rank's next shard, due at `due`: BeginEpoch first when its epoch is not begun yet (the
  // first shard of each epoch), then LeaseShard.
  void Cycle(int r, Clock::time_point due) {
    if (stop_) return;
    if (ranks_[r]->begun) {
      Lease(r, due);
    } else {
      BeginEpoch(r, due);
    }
  }

  void BeginEpoch(int r, Clock::time_point t0) {
    RankState& rs = *ranks_[r];
    auto c = NewCall<v1::BeginEpochRequest, v1::BeginEpochResponse>(t0);
    c->req.set_group_id(groups_[rs.group].id);
    *c->req.mutable_trial() = groups_[rs.group].trial;
    c->req.set_epoch(rs.epoch);
    *c->req.mutable_shards() = shards_;
    rs.stub->async()->BeginEpoch(&c->ctx, &c->req, &c->resp, [this, c, r](grpc::Status s) {
      RankState& rs = *ranks_[r];
      if (!s.ok()) {
        tally_->Failed(kBeginEpoch, s);
      } else {
        tally_->Ok(kBeginEpoch, MsSince(c->t0));
        rs.begun = true;
        const int64_t undone = c->resp.num_shards() - c->resp.done_shards();
        rs.share = (undone + a_.group_size - 1) / a_.group_size;
        rs.leased = 0;
        if (rs.share == 0) {
          Arrive(r);
        } else if (!stop_) {
          Lease(r, Clock::now());
        }
      }
      CallEnded();
    });
  }

  void Lease(int r, Clock::time_point t0) {
    RankState& rs = *ranks_[r];
    auto c = NewCall<v1::LeaseShardRequest, v1::LeaseShardResponse>(t0);
    c->req.set_group_id(groups_[rs.group].id);
    *c->req.mutable_trial() = groups_[rs.group].trial;
    c->req.set_epoch(rs.epoch);
    c->req.set_rank(rs.rank);
    c->req.set_slot(static_cast<int>(rs.leased % 4096));  // the loader's index in the epoch
    rs.stub->async()->LeaseShard(&c->ctx, &c->req, &c->resp, [this, c, r](grpc::Status s) {
      if (!s.ok()) {
        tally_->Failed(kLease, s);
      } else {
        tally_->Ok(kLease, MsSince(c->t0));
        if (c->resp.kind() == v1::LeaseShardResponse::GRANTED) {
          {
            std::lock_guard<std::mutex> l(tally_->mu);
            ++tally_->granted;
          }
          Complete(r, c->resp.lease_id());  // even after the end: a granted lease is completed
        } else {
          {
            std::lock_guard<std::mutex> l(tally_->mu);
            ++tally_->not_granted;
          }
          Arrive(r);  // WAIT or EPOCH_DONE: nothing more for this rank in this epoch
        }
      }
      CallEnded();
    });
  }

  void Complete(int r, uint64_t lease_id) {
    RankState& rs = *ranks_[r];
    auto c = NewCall<v1::CompleteShardRequest, v1::CompleteShardResponse>(Clock::now());
    c->req.set_group_id(groups_[rs.group].id);
    *c->req.mutable_trial() = groups_[rs.group].trial;
    c->req.set_epoch(rs.epoch);
    c->req.set_lease_id(lease_id);
    rs.stub->async()->CompleteShard(&c->ctx, &c->req, &c->resp, [this, c, r](grpc::Status s) {
      RankState& rs = *ranks_[r];
      if (!s.ok()) {
        tally_->Failed(kComplete, s);
      } else {
        tally_->Ok(kComplete, MsSince(c->t0));
        if (++rs.leased < rs.share) {
          Next(r);
        } else {
          Arrive(r);
        }
      }
      CallEnded();
    });
  }

  // The rank's next shard: due shard_ms after the last one (paced) or now (saturating).
  void Next(int r) {
    if (stop_) return;
    RankState& rs = *ranks_[r];
    if (!paced_) {
      Cycle(r, Clock::now());
      return;
    }
    rs.due += std::chrono::milliseconds(a_.shard_ms);
    if (rs.due <= Clock::now()) {
      Cycle(r, rs.due);  // late: its latency counts from when it was due
    } else {
      Schedule(r, rs.due);
    }
  }

  // The rank is done with its epoch; the last rank of the group to be done starts the next
  // epoch for all of them. The last thing a call's callback does with the rank's state.
  void Arrive(int r) {
    const int g = ranks_[r]->group;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (++arrived_[g] < a_.group_size) return;
      arrived_[g] = 0;
      ++epochs_ended_;
    }
    for (int k = g * a_.group_size; k < (g + 1) * a_.group_size; ++k) {
      ranks_[k]->epoch += 1;
      ranks_[k]->begun = false;
      Next(k);
    }
  }

  const Args& a_;
  const bool paced_;
  std::vector<SimGroup> groups_;
  std::vector<v1::Coordinator::Stub*> stubs_;
  std::string token_;
  Tally* tally_;
  google::protobuf::RepeatedPtrField<v1::Shard> shards_;
  std::vector<std::unique_ptr<RankState>> ranks_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable idle_cv_;
  int64_t in_flight_ = 0;     // GUARDED_BY(mu_)
  std::vector<int> arrived_;  // GUARDED_BY(mu_): per group, ranks done with the epoch
  int64_t epochs_ended_ = 0;  // GUARDED_BY(mu_)
  // GUARDED_BY(mu_): (due, id): id >= 0 a rank's next shard, id < 0 group -1 - id's heartbeat.
  std::priority_queue<std::pair<Clock::time_point, int>, std::vector<std::pair<Clock::time_point, int>>, std::greater<>>
      timers_;
  double seconds_ = 0;
};

// A sweep of `trials` trials: loss.recon_weight's values x seeds (a factor lists at most 1,000).
std::string SweepText(int trials) {
  int values = std::min(trials, 1000);
  while (trials % values != 0) --values;
  std::string text = "[sweep]\nname = bench\nseeds = ";
  for (int s = 0; s < trials / values; ++s) text += (s ? ", " : "") + std::to_string(s + 1);
  text += "\n\n[factor.loss.recon_weight]\nvalues = ";
  for (int i = 0; i < values; ++i) text += (i ? ", " : "") + std::to_string(i);
  return text + "\n";
}

// Registers `n` groups of `group_size` ranks and gives each its trial, or exits.
std::vector<SimGroup> SetUpGroups(flap::coordinator::CoordinatorClient* admin, int n, int group_size) {
  std::vector<SimGroup> groups;
  for (int g = 0; g < n; ++g) {
    SimGroup sg;
    sg.id = "g" + std::to_string(g);
    auto reg = admin->Register(sg.id, sg.id, group_size);
    auto next = reg.ok() ? admin->NextTrial(sg.id) : flap::StatusOr<flap::coordinator::NextTrialResult>(reg.status());
    if (!next.ok() || !next->assigned) {
      std::fprintf(stderr, "coordinator_rpc_bench: setting up group %s: %s\n", sg.id.c_str(),
                   next.ok() ? "no trial assigned" : next.status().ToString().c_str());
      std::exit(1);
    }
    sg.trial = next->assignment.trial;
    groups.push_back(std::move(sg));
  }
  return groups;
}

struct Stubs {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<v1::Coordinator::Stub>> owned;
  std::vector<v1::Coordinator::Stub*> stubs;
  Stubs(const std::string& target, int n) {
    for (int c = 0; c < n; ++c) {
      grpc::ChannelArguments args;
      args.SetInt("grpc.channel_id", c);  // distinct connections
      channels.push_back(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
      owned.push_back(v1::Coordinator::NewStub(channels.back()));
      stubs.push_back(owned.back().get());
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Runs 1 to 3: the coordinator in this process

struct Run {
  double seconds = 0;
  int64_t epochs_ended = 0;
  Tally tally;
};

void RunInProcess(const Args& a, bool sync, bool paced, Run* run) {
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
    std::fprintf(stderr, "coordinator_rpc_bench: coordinator: %s\n", server.status().ToString().c_str());
    std::exit(1);
  }
  flap::coordinator::ClientOptions co;
  co.target = (*server)->address();
  co.token = (*server)->token();
  co.deadline_ms = 30000;
  auto admin = flap::coordinator::CoordinatorClient::Connect(co);
  const int groups = a.ranks / a.group_size;
  auto sub = (*admin)->SubmitSweep(SweepText(groups), "bench.ini", "");
  if (!sub.ok()) {
    std::fprintf(stderr, "coordinator_rpc_bench: submit: %s\n", sub.status().ToString().c_str());
    std::exit(1);
  }
  {
    Stubs stubs(co.target, a.channels);
    Load load(a, paced, SetUpGroups(admin->get(), groups, a.group_size), stubs.stubs, co.token, &run->tally);
    load.Run(a.seconds);
    run->seconds = load.seconds();
    run->epochs_ended = load.epochs_ended();
  }
  (*server)->Shutdown();
  server->reset();
  std::filesystem::remove_all(dir);
}

void Print(const std::string& title, Run& run) {
  Tally& t = run.tally;
  const auto shards = static_cast<double>(t.ms[kComplete].size());
  std::printf(
      "%s: %.0f calls/s over %.1f s (successful calls only), %lld failed; %.0f shards/s leased and "
      "completed, %lld group epochs ended\n",
      title.c_str(), t.ok_calls() / run.seconds, run.seconds, static_cast<long long>(t.failed_calls()),
      shards / run.seconds, static_cast<long long>(run.epochs_ended));
  std::printf("  %-14s %9s %9s %9s %9s %9s\n", "call", "ok/s", "failed", "p50 ms", "p99 ms", "max ms");
  for (int k = 0; k < kNumKinds; ++k) {
    auto& v = t.ms[k];
    std::printf("  %-14s %9.0f %9lld %9.2f %9.2f %9.2f", kKindName[k], v.size() / run.seconds,
                static_cast<long long>(t.failed[k]), Pct(v, 0.5), Pct(v, 0.99), Pct(v, 1.0));
    if (k == kLease) {
      std::printf("   (%lld granted, %lld WAIT / EPOCH_DONE)", static_cast<long long>(t.granted),
                  static_cast<long long>(t.not_granted));
    }
    std::printf("\n");
  }
  for (int k = 0; k < kNumKinds; ++k) {
    if (t.failed[k]) std::printf("  first failed %s: %s\n", kKindName[k], t.first_error[k].c_str());
  }
}

// ---------------------------------------------------------------------------------------------
// The scale point: flap-coordinator in its own process

struct Memory {
  double rss_mib = 0, hwm_mib = 0;
};

Memory ReadMemory(pid_t pid) {
  Memory m;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) m.rss_mib = std::atof(line.c_str() + 6) / 1024;
    if (line.rfind("VmHWM:", 0) == 0) m.hwm_mib = std::atof(line.c_str() + 6) / 1024;
  }
  return m;
}

struct ScalePoint {
  int ranks = 0, trials = 0;
  double submit_ms = 0;
  std::vector<double> status_ms, report_ms;
  Memory started, submitted, loaded, end;
  Run run;
  std::vector<double> idle_status_ms, idle_report_ms;  // after the load, back-to-back
  int64_t watch_failed = 0;                            // GetSweep / GetReport calls that failed
  std::string watch_error;
};

constexpr int kIdleStatus = 100, kIdleReports = 20;

// One status call (GetSweep) and, when `report`, one report call (GetReport) for the sweep;
// their times go to `status_ms` and `report_ms`, their failures to p->watch_failed.
void Watch(flap::coordinator::CoordinatorClient* client, const std::string& sweep_id, int trials, bool report,
           std::vector<double>* status_ms, std::vector<double>* report_ms, ScalePoint* p) {
  auto t = Clock::now();
  auto st = client->GetSweep(sweep_id);
  if (st.ok() && st->trials_size() == trials) {
    status_ms->push_back(MsSince(t));
  } else if (p->watch_failed++ == 0) {
    p->watch_error =
        st.ok() ? "GetSweep: " + std::to_string(st->trials_size()) + " trials" : "GetSweep: " + st.status().ToString();
  }
  if (!report) return;
  t = Clock::now();
  auto rep = client->GetReport(sweep_id);
  if (rep.ok() && !rep->empty()) {
    report_ms->push_back(MsSince(t));
  } else if (p->watch_failed++ == 0) {
    p->watch_error = rep.ok() ? "GetReport: no files" : "GetReport: " + rep.status().ToString();
  }
}

// Starts flap-coordinator on a fresh state folder, or exits.
pid_t StartCoordinator(const Args& a, const std::string& dir, std::string* target, std::string* token) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string address_file = dir + "/address";
  const std::string log = dir + "/coordinator.log";
  std::vector<std::string> argv_s = {a.coordinator,
                                     "--state-dir=" + dir + "/state",
                                     "--listen=127.0.0.1:0",
                                     "--address-file=" + address_file,
                                     "--heartbeat-timeout-ms=600000",
                                     "--lease-ttl-ms=600000",
                                     "--no-plots"};
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = 0;
  const int err = posix_spawn(&pid, a.coordinator.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (err != 0) {
    std::fprintf(stderr, "coordinator_rpc_bench: starting %s: %s\n", a.coordinator.c_str(), std::strerror(err));
    std::exit(1);
  }
  g_coordinator = pid;
  const auto until = Clock::now() + std::chrono::seconds(60);
  while (!std::filesystem::exists(address_file)) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid || Clock::now() > until) {
      std::fprintf(stderr, "coordinator_rpc_bench: %s did not start listening (its log: %s)\n", a.coordinator.c_str(),
                   log.c_str());
      std::exit(1);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::ifstream addr(address_file);
  std::getline(addr, *target);
  auto t = flap::coordinator::ReadTokenFile(dir + "/state/token");
  if (!t.ok()) {
    std::fprintf(stderr, "coordinator_rpc_bench: %s\n", t.status().ToString().c_str());
    std::exit(1);
  }
  *token = *t;
  return pid;
}

void RunScalePoint(const Args& base, int ranks, int trials, ScalePoint* p) {
  Args a = base;
  a.ranks = ranks;
  p->ranks = ranks;
  p->trials = trials;
  const std::string dir =
      std::filesystem::temp_directory_path() / ("flap_rpc_bench_" + std::to_string(::getpid()) + "_scale");
  std::string target, token;
  const pid_t pid = StartCoordinator(a, dir, &target, &token);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  p->started = ReadMemory(pid);
  flap::coordinator::ClientOptions co;
  co.target = target;
  co.token = token;
  co.deadline_ms = 600000;
  auto admin = flap::coordinator::CoordinatorClient::Connect(co);
  auto watcher = flap::coordinator::CoordinatorClient::Connect(co);  // flapctl's status and report calls
  if (!admin.ok() || !watcher.ok()) {
    std::fprintf(stderr, "coordinator_rpc_bench: connecting to %s failed\n", target.c_str());
    std::exit(1);
  }
  const std::string text = SweepText(trials);
  const auto t0 = Clock::now();
  auto sub = (*admin)->SubmitSweep(text, "bench.ini", "");
  p->submit_ms = MsSince(t0);
  if (!sub.ok()) {
    std::fprintf(stderr, "coordinator_rpc_bench: submit: %s\n", sub.status().ToString().c_str());
    std::exit(1);
  }
  p->submitted = ReadMemory(pid);
  const std::string sweep_id = sub->sweep_id();
  {
    Stubs stubs(target, a.channels);
    Load load(a, /*paced=*/true, SetUpGroups(admin->get(), ranks / a.group_size, a.group_size), stubs.stubs, token,
              &p->run.tally);
    // While the ranks run, a client watches the sweep: its status (GetSweep) every 250 ms and
    // its report (GetReport) every second.
    std::atomic<bool> done{false};
    std::thread watch([&] {
      auto due = Clock::now();
      for (int i = 0; !done; ++i) {
        Watch(watcher->get(), sweep_id, trials, /*report=*/i % 4 == 3, &p->status_ms, &p->report_ms, p);
        due += std::chrono::milliseconds(250);
        while (!done && Clock::now() < due) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
    load.Run(a.seconds);
    done = true;
    watch.join();
    p->run.seconds = load.seconds();
    p->run.epochs_ended = load.epochs_ended();
  }
  p->loaded = ReadMemory(pid);
  // The ranks stopped: status and report back-to-back on the coordinator holding the state.
  for (int i = 0; i < kIdleStatus; ++i) {
    Watch(admin->get(), sweep_id, trials, /*report=*/i < kIdleReports, &p->idle_status_ms, &p->idle_report_ms, p);
  }
  p->end = ReadMemory(pid);
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  g_coordinator = 0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "coordinator_rpc_bench: flap-coordinator ended with status %d (its log: %s/coordinator.log)\n",
                 status, dir.c_str());
    std::exit(1);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace

namespace {

// Parses the options into `a`; returns -1 to go on, else the exit status.
int ParseArgs(int argc, char** argv, Args* a) {
  auto number = [](const std::string& name, const std::string& text, double lo, double* out) {
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || !(v >= lo) || v > 1e9) {
      std::fprintf(stderr, "coordinator_rpc_bench: %s: '%s' is not a number >= %g\n", name.c_str(), text.c_str(), lo);
      return false;
    }
    *out = v;
    return true;
  };
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "--help" || k == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (k == "--no-scale") {
      a->scale = false;
      continue;
    }
    std::string value;
    bool has_value = false;
    if (const size_t eq = k.find('='); k.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = k.substr(eq + 1);
      k = k.substr(0, eq);
      has_value = true;
    }
    struct IntOption {
      const char* name;
      int* out;
      double min;
    };
    const IntOption ints[] = {{"--ranks", &a->ranks, 1},
                              {"--group-size", &a->group_size, 1},
                              {"--heartbeat-ms", &a->heartbeat_ms, 1},
                              {"--shard-ms", &a->shard_ms, 1},
                              {"--shards", &a->shards, 1},
                              {"--channels", &a->channels, 1},
                              {"--scale-ranks", &a->scale_ranks, 1},
                              {"--scale-trials", &a->scale_trials, 10}};
    const IntOption* io = nullptr;
    for (const auto& o : ints) {
      if (k == o.name) io = &o;
    }
    if (io == nullptr && k != "--seconds" && k != "--coordinator") {
      std::fprintf(stderr, "coordinator_rpc_bench: unknown option '%s' (--help lists the options)\n", argv[i]);
      return 2;
    }
    if (!has_value) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "coordinator_rpc_bench: %s needs a value (--help lists the options)\n", k.c_str());
        return 2;
      }
      value = argv[++i];
    }
    if (k == "--coordinator") {
      a->coordinator = value;
      continue;
    }
    double v = 0;
    if (!number(k, value, io ? io->min : 0.001, &v)) return 2;
    if (io) {
      if (v != static_cast<int>(v)) {
        std::fprintf(stderr, "coordinator_rpc_bench: %s: '%s' is not a whole number\n", k.c_str(), value.c_str());
        return 2;
      }
      *io->out = static_cast<int>(v);
    } else {
      a->seconds = v;
    }
  }
  if (a->ranks % a->group_size != 0 || (a->scale && a->scale_ranks % a->group_size != 0)) {
    std::fprintf(stderr, "coordinator_rpc_bench: --ranks and --scale-ranks must be multiples of --group-size\n");
    return 2;
  }
  if (a->ranks / a->group_size > 10000) {
    std::fprintf(stderr, "coordinator_rpc_bench: at most 10000 groups (a sweep's trials)\n");
    return 2;
  }
  if (a->scale &&
      (a->scale_trials % 10 != 0 || a->scale_trials > 10000 || a->scale_trials < a->scale_ranks / a->group_size ||
       a->scale_trials / 10 < a->ranks / a->group_size)) {
    std::fprintf(stderr,
                 "coordinator_rpc_bench: --scale-trials must be a multiple of 10, at most 10000, with a trial for "
                 "each group of --scale-ranks and a tenth of it for each group of --ranks\n");
    return 2;
  }
  if (a->scale && a->coordinator.empty()) {
    std::error_code ec;
    const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    a->coordinator = (self.parent_path().parent_path() / "coordinator" / "flap-coordinator").string();
  }
  if (a->scale && ::access(a->coordinator.c_str(), X_OK) != 0) {
    std::fprintf(stderr,
                 "coordinator_rpc_bench: the scale point runs flap-coordinator, and %s is not an executable "
                 "(build the flap-coordinator target, give its path with --coordinator, or pass --no-scale)\n",
                 a->coordinator.c_str());
    return 2;
  }
  return -1;
}

std::vector<double> AllCalls(const Tally& t) {
  std::vector<double> all;
  for (const auto& v : t.ms) all.insert(all.end(), v.begin(), v.end());
  return all;
}

void PrintScale(const Args& a, ScalePoint& b, ScalePoint& s) {
  std::printf(
      "\n4. scale point: the flap-coordinator program in its own process (fsync on). Each point: submit a sweep, "
      "give each group a trial, run the paced load of 1. for %.0f s while a client asks for the sweep's status "
      "(GetSweep) every 250 ms and its report (GetReport) every second, then, the ranks stopped, %d statuses and %d "
      "reports back-to-back\n",
      a.seconds, kIdleStatus, kIdleReports);
  std::printf("  %-48s %14s %14s %8s\n", "", "baseline", "scale point", "ratio");
  auto row = [](const std::string& name, double x, double y, const char* fmt) {
    std::printf("  %-48s ", name.c_str());
    std::printf(fmt, x);
    std::printf(" ");
    std::printf(fmt, y);
    std::printf(" %8.2f\n", x > 0 ? y / x : 0.0);
  };
  auto pcts = [&](const std::string& name, const std::vector<double>& x, const std::vector<double>& y) {
    row(name + " p50 ms (of " + std::to_string(x.size()) + " / " + std::to_string(y.size()) + ")", Pct(x, 0.5),
        Pct(y, 0.5), "%14.2f");
    row(name + " p99 ms", Pct(x, 0.99), Pct(y, 0.99), "%14.2f");
  };
  row("ranks", b.ranks, s.ranks, "%14.0f");
  row("trials in the sweep", b.trials, s.trials, "%14.0f");
  row("SubmitSweep ms", b.submit_ms, s.submit_ms, "%14.1f");
  row("ranks' calls/s (successful)", b.run.tally.ok_calls() / b.run.seconds, s.run.tally.ok_calls() / s.run.seconds,
      "%14.0f");
  pcts("ranks' calls", AllCalls(b.run.tally), AllCalls(s.run.tally));
  for (int k = 0; k < kNumKinds; ++k) {
    row(std::string("  ") + kKindName[k] + " p99 ms", Pct(b.run.tally.ms[k], 0.99), Pct(s.run.tally.ms[k], 0.99),
        "%14.2f");
  }
  pcts("GetSweep while ranks run,", b.status_ms, s.status_ms);
  pcts("GetReport while ranks run,", b.report_ms, s.report_ms);
  pcts("GetSweep back-to-back,", b.idle_status_ms, s.idle_status_ms);
  pcts("GetReport back-to-back,", b.idle_report_ms, s.idle_report_ms);
  row("coordinator RSS MiB, started", b.started.rss_mib, s.started.rss_mib, "%14.1f");
  row("  after SubmitSweep", b.submitted.rss_mib, s.submitted.rss_mib, "%14.1f");
  row("  after the load", b.loaded.rss_mib, s.loaded.rss_mib, "%14.1f");
  row("  at the end", b.end.rss_mib, s.end.rss_mib, "%14.1f");
  row("  peak (VmHWM)", b.end.hwm_mib, s.end.hwm_mib, "%14.1f");
  row("failed calls", b.run.tally.failed_calls() + b.watch_failed, s.run.tally.failed_calls() + s.watch_failed,
      "%14.0f");
  for (ScalePoint* p : {&b, &s}) {
    for (int k = 0; k < kNumKinds; ++k) {
      if (p->run.tally.failed[k]) {
        std::printf("  first failed %s (%d ranks): %s\n", kKindName[k], p->ranks, p->run.tally.first_error[k].c_str());
      }
    }
    if (p->watch_failed)
      std::printf("  first failed status or report (%d ranks): %s\n", p->ranks, p->watch_error.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (const int rc = ParseArgs(argc, argv, &a); rc >= 0) return rc;
  std::atexit(StopCoordinatorAtExit);
  std::printf(
      "coordinator_rpc_bench: %d ranks in %d groups of %d, %d shards per epoch, %d client connections, a group "
      "heartbeat every %d ms, %u hardware threads\n\n",
      a.ranks, a.ranks / a.group_size, a.group_size, a.shards, a.channels, a.heartbeat_ms,
      std::thread::hardware_concurrency());
  std::fflush(stdout);
  Run paced, saturated, unsynced;
  RunInProcess(a, /*sync=*/true, /*paced=*/true, &paced);
  Print("1. paced (each rank: a shard leased and completed every " + std::to_string(a.shard_ms) + " ms), fsync on",
        paced);
  std::fflush(stdout);
  RunInProcess(a, true, false, &saturated);
  Print("\n2. saturating (each rank: its next shard call as soon as the last returns), fsync on", saturated);
  std::fflush(stdout);
  RunInProcess(a, false, false, &unsynced);
  Print("\n3. saturating, fsync off (the baseline: what durability costs)", unsynced);
  auto rate = [](Run& r) { return r.tally.ok_calls() / r.seconds; };
  auto shard_rate = [](Run& r) { return r.tally.ms[kComplete].size() / r.seconds; };
  auto ratio = [](double x, double y) { return y > 0 ? x / y : 0.0; };
  std::printf("\nsaturating, fsync on / off: successful calls/s %.2f, shards/s %.2f\n",
              ratio(rate(saturated), rate(unsynced)), ratio(shard_rate(saturated), shard_rate(unsynced)));
  const std::vector<double> paced_all = AllCalls(paced.tally);
  std::printf("paced load, all calls: p50 %.2f ms, p99 %.2f ms (target p99 < 20 ms)\n", Pct(paced_all, 0.5),
              Pct(paced_all, 0.99));
  int64_t failed = paced.tally.failed_calls() + saturated.tally.failed_calls() + unsynced.tally.failed_calls();
  if (a.scale) {
    std::fflush(stdout);
    ScalePoint base, big;
    RunScalePoint(a, a.ranks, a.scale_trials / 10, &base);
    RunScalePoint(a, a.scale_ranks, a.scale_trials, &big);
    PrintScale(a, base, big);
    failed += base.run.tally.failed_calls() + base.watch_failed + big.run.tally.failed_calls() + big.watch_failed;
  }
  if (failed > 0) {
    std::fprintf(stderr, "coordinator_rpc_bench: %lld calls failed (first errors above)\n",
                 static_cast<long long>(failed));
    return 1;
  }
  return 0;
}
