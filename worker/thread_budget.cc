#include "worker/thread_budget.h"

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <thread>

namespace flap::worker {

ThreadPlan PlanThreads(int cores, bool gpu, int train_threads, int loader_threads) {
  cores = std::max(1, cores);
  ThreadPlan p;
  if (gpu) {
    p.compute = train_threads > 0 ? train_threads : 1;
    p.loader = loader_threads > 0 ? loader_threads : std::max(1, cores - p.compute);
    p.why = "GPU: compute " + std::string(train_threads > 0 ? "as set" : "needs one host thread") + ", loader " +
            (loader_threads > 0 ? "as set" : "takes the other cores");
    return p;
  }
  p.loader = loader_threads > 0 ? loader_threads : std::max(1, cores / 2);
  p.compute = train_threads > 0 ? train_threads : std::max(1, cores - p.loader);
  p.why = "CPU: " + std::string(loader_threads > 0 ? "loader as set" : "loader takes the smaller half") + ", compute " +
          (train_threads > 0 ? "as set" : "the rest, and the loader's idle cores once measured");
  return p;
}

int ReplanComputeThreads(const ThreadPlan& plan, int cores, bool gpu, int train_threads, double loader_busy_cores) {
  if (gpu || train_threads > 0) return plan.compute;
  cores = std::max(1, cores);
  // A loader busy for less than a tenth of a core leaves its cores to compute; otherwise it
  // keeps as many cores as it measurably uses (rounded up), at most its planned share.
  const double busy = std::max(0.0, loader_busy_cores);
  const int loader_cores = busy < 0.1 ? 0 : std::min(plan.loader, static_cast<int>(std::ceil(busy - 0.05)));
  return std::clamp(cores - loader_cores, 1, cores);
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

}  // namespace flap::worker
