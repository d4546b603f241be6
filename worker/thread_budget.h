// How a worker divides the machine's cores between its data loader and its compute threads
// (LibTorch intra-op and BLAS threads, core::SetComputeThreads).
//
// At start (PlanThreads): counts the user set are kept; otherwise on a GPU the compute side
// needs one thread (the GPU does the maths) and the loader takes every other core, while on a
// CPU the cores are split in two, the loader taking the smaller half (at least one thread).
// During training (ReplanComputeThreads): with train.threads automatic, the compute side takes
// back the cores the loader measurably leaves idle (its feature threads' busy time over the
// last window, in cores), and gives them up again when the loader needs them (features not yet
// cached). Loader threads that have nothing to do sleep, so the loader count never changes.
//
// Pure arithmetic: no threads are touched here.
#pragma once

#include <string>

namespace flap::worker {

struct ThreadPlan {
  int compute = 1;  // LibTorch intra-op + BLAS threads
  int loader = 1;   // loader feature threads
  std::string why;  // one line for the start-up log
};

// `cores`: usable cores (>= 1). `train_threads` / `loader_threads`: the config's counts, 0 =
// automatic.
ThreadPlan PlanThreads(int cores, bool gpu, int train_threads, int loader_threads);

// The compute thread count for the next window, given the loader's measured busy time in
// cores over the last one. Returns `plan.compute` unchanged when train.threads was set or the
// worker runs on a GPU.
int ReplanComputeThreads(const ThreadPlan& plan, int cores, bool gpu, int train_threads, double loader_busy_cores);

// The cores one rank may use: its CPU affinity mask when the launcher bound it to fewer than
// the machine's cores; otherwise the machine's cores divided among the ranks on this host
// (LOCAL_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_SIZE or SLURM_NTASKS_PER_NODE; 1 when none is set).
int CoresPerRank(int affinity_cores, int hardware_cores, const std::string& local_ranks_env);
// CoresPerRank for this process.
int UsableCores();

}  // namespace flap::worker
