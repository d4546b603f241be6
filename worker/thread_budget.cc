#include "worker/thread_budget.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <cstdlib>
#include <thread>

namespace flap::worker {

ThreadPlan PlanThreads(int cores, bool gpu, bool features_cached, int train_threads, int loader_threads) {
  cores = std::max(1, cores);
  ThreadPlan p;
  if (gpu) {
    p.compute = train_threads > 0 ? train_threads : 1;
    p.loader = loader_threads > 0 ? loader_threads : std::max(1, cores - p.compute);
    p.why = "GPU: compute " + std::string(train_threads > 0 ? "as set" : "needs one host thread") + ", loader " +
            (loader_threads > 0 ? "as set" : "takes the other cores");
    return p;
  }
  if (features_cached) {
    p.loader = loader_threads > 0 ? loader_threads : std::max(1, cores / 4);
    p.compute = train_threads > 0 ? train_threads : cores;
    p.why = "CPU, features cached: compute " + std::string(train_threads > 0 ? "as set" : "every core") + ", loader " +
            (loader_threads > 0 ? "as set" : "a quarter (it computes each shard once)");
    return p;
  }
  p.loader = loader_threads > 0 ? loader_threads : std::max(1, cores / 2);
  p.compute = train_threads > 0 ? train_threads : std::max(1, cores - p.loader);
  p.why =
      "CPU, no feature cache: " + std::string(loader_threads > 0 ? "loader as set" : "loader takes the smaller half") +
      ", compute " + (train_threads > 0 ? "as set" : "the rest");
  return p;
}

int CoresPerRank(int affinity_cores, int hardware_cores, const std::string& local_ranks_env) {
  hardware_cores = std::max(1, hardware_cores);
  if (affinity_cores > 0 && affinity_cores < hardware_cores) return affinity_cores;
  // SLURM_NTASKS_PER_NODE may read "4(x2)": the leading count is this node's.
  int local = 0;
  for (char c : local_ranks_env) {
    if (c < '0' || c > '9' || local > 100000) break;
    local = local * 10 + (c - '0');
  }
  return std::max(1, hardware_cores / std::max(1, local));
}

int UsableCores() {
  int affinity = 0;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) affinity = CPU_COUNT(&set);
  std::string local;
  for (const char* name : {"LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"}) {
    if (const char* v = std::getenv(name); v != nullptr && *v != '\0') {
      local = v;
      break;
    }
  }
  return CoresPerRank(affinity, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())), local);
}

std::vector<std::string> SetIdleThreadsSleepEnvironment() {
  std::vector<std::string> set;
  for (const auto& [name, value] : {std::pair<const char*, const char*>{"OMP_WAIT_POLICY", "PASSIVE"},
                                    std::pair<const char*, const char*>{"OPENBLAS_THREAD_TIMEOUT", "4"}}) {
    if (std::getenv(name) == nullptr && setenv(name, value, 0) == 0) set.emplace_back(name);
  }
  return set;
}

void IdleThreadsSleep(char** argv) {
  if (SetIdleThreadsSleepEnvironment().empty()) return;
  execv("/proc/self/exe", argv);
  std::cerr << "warning: cannot run " << argv[0] << " again with sleeping idle threads (" << std::strerror(errno)
            << "); set OMP_WAIT_POLICY=PASSIVE and OPENBLAS_THREAD_TIMEOUT=4 to avoid spinning" << std::endl;
}

}  // namespace flap::worker
