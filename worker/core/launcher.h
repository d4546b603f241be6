// Where a rank learns who it is: rank, world size, local rank and the rendezvous address
// (the c10d TCPStore that rank 0 hosts), from the variables its launcher sets. The same
// binary runs under every launcher users have:
//
//   env    torchrun-style: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT.
//   mpi    Open MPI's mpirun: OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE. The
//          address is MASTER_ADDR when set (mpirun -x MASTER_ADDR=host), else the first host
//          of a surrounding Slurm allocation, else 127.0.0.1 when every rank is on this node
//          (LOCAL_SIZE == SIZE); several nodes without either is refused. The port is
//          MASTER_PORT, else derived from Open MPI's job id.
//   slurm  srun: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; the address is the first host of
//          SLURM_JOB_NODELIST (compressed form "node[01-04,07],gpu3" is expanded), the port
//          MASTER_PORT, else derived from SLURM_JOB_ID and SLURM_STEP_ID so that concurrent
//          jobs on a node do not collide. Only inside an srun step (SLURM_STEP_ID set): a
//          batch script's own shell is one process, not a rank.
//
// `auto` tries them in that order (torchrun variables win over mpirun's, mpirun's over
// Slurm's, so `mpirun` inside an allocation is read as mpirun) and falls back to a single
// process (rank 0 of 1) when none is present. MASTER_ADDR / MASTER_PORT override the derived
// address under every launcher.
//
// Pure functions of the environment they are given; thread-safe. Nothing here touches the
// network: worker_group.h does the rendezvous.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>

#include "common/status.h"
#include "config/device_spec.h"

namespace flap::core {

// Launcher, ParseLauncher and LauncherName: config/device_spec.h.

struct Rendezvous {
  Launcher launcher = Launcher::kNone;  // which launcher the values came from
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;                     // rank among the ranks of this node (device index)
  std::string master_addr = "127.0.0.1";  // host of rank 0's TCPStore
  int master_port = 29500;
};

// Reads one environment variable; nullopt when unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
// The process environment (getenv).
EnvLookup ProcessEnvironment();
// A fixed environment of the given variables (tests, and callers that build one).
EnvLookup FixedEnvironment(std::map<std::string, std::string> vars);

// The rendezvous of this process under `launcher` (kAuto: detect). InvalidArgument naming the
// variable when one is missing or malformed (rank outside [0, world), port outside 1..65535).
StatusOr<Rendezvous> DetectRendezvous(const EnvLookup& env, Launcher launcher = Launcher::kAuto);

// The first host of a Slurm node list ("n[3-5,9],m1" -> "n3", zero padding kept).
StatusOr<std::string> FirstSlurmHost(const std::string& nodelist);

}  // namespace flap::core
