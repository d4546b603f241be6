// dist_nodes_bench: the training step of `tiny` on 2 ranks across two hosts, as the link between
// them gets slower, against 1 rank with the same global batch. The hosts are the network
// namespaces of tests/two_nodes.h (rank 0 on node-a, whose address is the rendezvous, rank 1 on
// node-b); the link is their veth pair, then the user-space relay of tests/link_relay.h adding
// 0, 5 and 50 ms each way (netem's delay, for a kernel without sch_netem). Each rank is
// dist_bench in its rank mode, so the step splits as there: compute, the embedding gather
// (all-gather forward, all-reduce backward) and the gradient all-reduce left after backward.
//
//   build/bench/dist_nodes_bench [--global-batch 32] [--steps 10] [--warmup 2] [--rounds 2]
//                                [--loss 0]
//
// Needs root (network namespaces, TUN devices). Each setup runs `rounds` times, the setups
// interleaved, and the round with the lowest mean step time is reported. The cores are split
// between the ranks as in dist_bench. This is not a test: it prints a table (docs/benchmarks.md).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "common/testing/testing.h"
#include "tests/two_nodes.h"

namespace {

using flap::testing::TwoNodes;
using flap::testing::TwoNodesOptions;

struct Args {
  int64_t global_batch = 32;
  int steps = 10;
  int warmup = 2;
  int rounds = 2;
  double loss = 0;  // packet loss on the relayed links
};

struct Setup {
  std::string name;
  int world = 2;
  bool relay = false;
  double delay_ms = 0;
};

// dist_bench in rank mode for `rank` of `world`, writing rank 0's means to `out`.
std::string RankCommand(const Args& a, const std::string& out) {
  return std::string(DIST_BENCH_BIN) + " --rank-mode 1 --global-batch " + std::to_string(a.global_batch) + " --steps " +
         std::to_string(a.steps) + " --warmup " + std::to_string(a.warmup) + " --out " + out;
}

// One run of a setup; rank 0's figures, empty when a rank failed (its log is printed).
std::map<std::string, double> RunSetup(const Args& a, const Setup& s, int cores) {
  static int run = 0;
  const std::string out = "/tmp/flap_dist_nodes_bench_" + std::to_string(getpid()) + "_" + std::to_string(run++);
  const std::string blas = "OPENBLAS_NUM_THREADS=" + std::to_string(std::max(1, cores / s.world));
  std::unique_ptr<TwoNodes> nodes;
  if (s.world == 2) {
    TwoNodesOptions o;
    o.relay = s.relay;
    o.delay_ms = s.delay_ms;
    o.loss = s.relay ? a.loss : 0;
    auto n = TwoNodes::Create(o);
    if (!n.ok()) {
      std::cerr << "dist_nodes_bench: " << n.status().ToString() << std::endl;
      std::exit(1);
    }
    nodes = std::move(*n);
  }
  const int port = flap::testing::FreePort();
  std::vector<pid_t> pids;
  for (int r = 0; r < s.world; ++r) {
    const std::vector<std::string> env = {"RANK=" + std::to_string(r),
                                          "WORLD_SIZE=" + std::to_string(s.world),
                                          "LOCAL_RANK=0",
                                          "MASTER_ADDR=" + std::string(nodes ? nodes->a().address : "127.0.0.1"),
                                          "MASTER_PORT=" + std::to_string(port),
                                          blas};
    const std::string command = RankCommand(a, out);
    pids.push_back(flap::testing::Spawn(nodes ? nodes->On(r == 0 ? nodes->a() : nodes->b(), command) : command, env,
                                        out + ".log" + std::to_string(r)));
  }
  bool ok = true;
  for (size_t r = 0; r < pids.size(); ++r) {
    if (flap::testing::WaitExit(pids[r], 600) != 0) {
      ok = false;
      std::cerr << "dist_nodes_bench: rank " << r << " of '" << s.name << "' failed:\n"
                << flap::testing::ReadFile(out + ".log" + std::to_string(r)) << std::endl;
    }
    std::remove((out + ".log" + std::to_string(r)).c_str());
  }
  std::map<std::string, double> m;
  if (ok) {
    std::ifstream in(out);
    std::string k;
    double v;
    while (in >> k >> v) m[k] = v;
  }
  std::remove(out.c_str());
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--global-batch")
      a.global_batch = std::atoll(v.c_str());
    else if (k == "--steps")
      a.steps = std::atoi(v.c_str());
    else if (k == "--warmup")
      a.warmup = std::atoi(v.c_str());
    else if (k == "--rounds")
      a.rounds = std::atoi(v.c_str());
    else if (k == "--loss")
      a.loss = std::atof(v.c_str());
    else {
      std::cerr << "usage: dist_nodes_bench [--global-batch N] [--steps N] [--warmup N] [--rounds N] [--loss P]\n";
      return 2;
    }
  }
  if ((argc - 1) % 2 != 0) {
    std::cerr << "dist_nodes_bench: every option takes a value\n";
    return 2;
  }
  if (geteuid() != 0) {
    std::cerr << "dist_nodes_bench: needs root (network namespaces, TUN devices)\n";
    return 1;
  }
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const std::vector<Setup> setups = {{"1 rank x B (one node)", 1, false, 0},
                                     {"2 nodes x B/2, veth", 2, false, 0},
                                     {"2 nodes x B/2, relay +0 ms", 2, true, 0},
                                     {"2 nodes x B/2, relay +5 ms", 2, true, 5},
                                     {"2 nodes x B/2, relay +50 ms", 2, true, 50}};
  std::printf(
      "tiny preset (dist_bench's step: mask 2d 0.75, recon 0.5), global batch %lld, %d timed steps after %d "
      "warm-up\n",
      static_cast<long long>(a.global_batch), a.steps, a.warmup);
  std::printf("%d cores: OpenBLAS threads %d for 1 rank, %d per rank for 2; relayed links lose %.1f%% of packets\n",
              cores, cores, std::max(1, cores / 2), a.loss * 100);
  std::printf("best of %d rounds per setup (setups interleaved)\n\n", a.rounds);
  std::vector<std::map<std::string, double>> best(setups.size());
  for (int round = 0; round < a.rounds; ++round) {
    for (size_t i = 0; i < setups.size(); ++i) {
      auto m = RunSetup(a, setups[i], cores);
      if (m.empty()) return 1;
      if (best[i].empty() || m["step"] < best[i]["step"]) best[i] = m;
    }
  }
  std::printf("%-30s %7s %8s %8s %9s %9s\n", "setup", "step_s", "compute", "gather", "allreduce", "vs 1 rank");
  const double base = best[0]["step"];
  for (size_t i = 0; i < setups.size(); ++i) {
    auto& m = best[i];
    const double step = m["step"];
    std::printf("%-30s %7.3f %8.3f %8.4f %9.4f %9.2f\n", setups[i].name.c_str(), step,
                step - m["gather"] - m["allreduce"], m["gather"], m["allreduce"], base / step);
  }
  std::printf(
      "\ncompute: step - gather - allreduce; gather: the embedding all-gather (forward) and its gradient all-reduce\n"
      "(backward); allreduce: the gradient all-reduce wait left after backward; vs 1 rank: 1-rank step / this step\n");
  return 0;
}
