// How a worker divides the machine's cores between its data loader and its compute threads
// (LibTorch intra-op and BLAS threads, core::SetComputeThreads).
//
// Counts the user set are kept. Otherwise, on a GPU the compute side needs one thread (the GPU
// does the maths) and the loader takes every other core. On a CPU it depends on what the loader
// has to do, which the feature cache decides: with the cache on (the default) the loader
// computes each shard once and then only assembles batches (measured on the synthetic set:
// 0.07 of a core in the first pass, summary.json data.loader_busy_seconds), so compute takes
// every core and the loader a quarter of them (at least one thread, sleeping when idle); with
// the cache off it recomputes features every epoch and the cores are split in two, the loader
// taking the smaller half.
//
// The plan is fixed for the run: the compute thread count changes the order of floating-point
// sums (LibTorch's parallel reductions, BLAS blocking), so a count re-planned from timings would
// make a resumed run differ from an uninterrupted one.
//
// Idle threads. libgomp (LibTorch's intra-op pool) and OpenBLAS's pthreads pool spin when they
// run out of work (libgomp for up to GOMP_SPINCOUNT iterations, OpenBLAS for 2^28 cycles), so
// between parallel regions the idle threads of one pool hold the cores the other pool and the
// loader need. On a small node that spinning took most of the step (docs/benchmarks.md,
// "Training loop"). Both read how to wait when they load, so the process sets it and runs
// itself again: IdleThreadsSleep.
//
// The plan itself is pure arithmetic: no threads are touched by PlanThreads.
#pragma once

#include <string>
#include <vector>

namespace flap::worker {

struct ThreadPlan {
  int compute = 1;  // LibTorch intra-op + BLAS threads
  int loader = 1;   // loader feature threads
  std::string why;  // one line for the start-up log
};

// `cores`: usable cores (>= 1). `train_threads` / `loader_threads`: the config's counts, 0 =
// automatic. `features_cached`: the feature cache is on.
ThreadPlan PlanThreads(int cores, bool gpu, bool features_cached, int train_threads, int loader_threads);

// The cores one rank may use: its CPU affinity mask when the launcher bound it to fewer than
// the machine's cores; otherwise the machine's cores divided among the ranks on this host
// (LOCAL_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_SIZE or SLURM_NTASKS_PER_NODE; 1 when none is set).
int CoresPerRank(int affinity_cores, int hardware_cores, const std::string& local_ranks_env);
// CoresPerRank for this process.
int UsableCores();

// The environment for pools whose idle threads sleep at once: OMP_WAIT_POLICY=PASSIVE and
// OPENBLAS_THREAD_TIMEOUT=4 (2^4 cycles), each where the environment does not set it already;
// the names set, or empty when both are set.
std::vector<std::string> SetIdleThreadsSleepEnvironment();
// Called first thing in main(): when SetIdleThreadsSleepEnvironment changed the environment,
// runs this program again with the same arguments (execv of /proc/self/exe; the same process,
// so launchers and signals see no difference). Returns only when nothing had to change or the
// exec failed (then the pools keep spinning; a line on stderr says so).
void IdleThreadsSleep(char** argv);

}  // namespace flap::worker
