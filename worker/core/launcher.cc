#include "worker/core/launcher.h"

#include <cstdlib>
#include <cstdint>

namespace flap::core {
namespace {

StatusOr<long long> ParseInt(const std::string& name, const std::string& text) {
  if (text.empty()) return Status::InvalidArgument(name + " is empty");
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (*end != '\0') return Status::InvalidArgument(name + ": expected an integer, got '" + text + "'");
  return v;
}

// The integer in variable `name`; `fallback` when unset and fallback is given.
StatusOr<long long> IntVar(const EnvLookup& env, const std::string& name,
                           std::optional<long long> fallback = std::nullopt) {
  std::optional<std::string> v = env(name);
  if (!v) {
    if (fallback) return *fallback;
    return Status::InvalidArgument(name + " is not set");
  }
  return ParseInt(name, *v);
}

// Port in 15000..44999 derived from a job id, so that jobs sharing a node pick different ones.
int DerivedPort(unsigned long long id) { return 15000 + static_cast<int>(id % 30000ULL); }

Status Check(const Rendezvous& r, const char* launcher) {
  const std::string where = std::string(" (") + launcher + " launcher)";
  if (r.world_size < 1) return Status::InvalidArgument("world size " + std::to_string(r.world_size) + " < 1" + where);
  if (r.rank < 0 || r.rank >= r.world_size) {
    return Status::InvalidArgument("rank " + std::to_string(r.rank) + " is outside [0, " +
                                   std::to_string(r.world_size) + ")" + where);
  }
  if (r.master_port < 1 || r.master_port > 65535) {
    return Status::InvalidArgument("rendezvous port " + std::to_string(r.master_port) + " is outside 1..65535" + where);
  }
  if (r.master_addr.empty()) return Status::InvalidArgument("empty rendezvous address" + where);
  return Status::OK();
}

// MASTER_ADDR / MASTER_PORT when set.
Status ApplyOverrides(const EnvLookup& env, Rendezvous* r) {
  if (auto addr = env("MASTER_ADDR")) r->master_addr = *addr;
  if (env("MASTER_PORT")) {
    FLAP_ASSIGN_OR_RETURN(long long port, IntVar(env, "MASTER_PORT"));
    r->master_port = static_cast<int>(port);
  }
  return Status::OK();
}

StatusOr<Rendezvous> FromTorchrun(const EnvLookup& env) {
  Rendezvous r;
  r.launcher = Launcher::kEnv;
  FLAP_ASSIGN_OR_RETURN(long long rank, IntVar(env, "RANK"));
  FLAP_ASSIGN_OR_RETURN(long long world, IntVar(env, "WORLD_SIZE"));
  FLAP_ASSIGN_OR_RETURN(long long local, IntVar(env, "LOCAL_RANK", 0));
  r.rank = static_cast<int>(rank);
  r.world_size = static_cast<int>(world);
  r.local_rank = static_cast<int>(local);
  if (r.world_size > 1 && !env("MASTER_ADDR")) return Status::InvalidArgument("MASTER_ADDR is not set (env launcher)");
  if (r.world_size > 1 && !env("MASTER_PORT")) return Status::InvalidArgument("MASTER_PORT is not set (env launcher)");
  FLAP_RETURN_IF_ERROR(ApplyOverrides(env, &r));
  FLAP_RETURN_IF_ERROR(Check(r, "env"));
  return r;
}

StatusOr<Rendezvous> FromMpi(const EnvLookup& env) {
  Rendezvous r;
  r.launcher = Launcher::kMpi;
  FLAP_ASSIGN_OR_RETURN(long long rank, IntVar(env, "OMPI_COMM_WORLD_RANK"));
  FLAP_ASSIGN_OR_RETURN(long long world, IntVar(env, "OMPI_COMM_WORLD_SIZE"));
  FLAP_ASSIGN_OR_RETURN(long long local, IntVar(env, "OMPI_COMM_WORLD_LOCAL_RANK", 0));
  FLAP_ASSIGN_OR_RETURN(long long local_size, IntVar(env, "OMPI_COMM_WORLD_LOCAL_SIZE", world));
  r.rank = static_cast<int>(rank);
  r.world_size = static_cast<int>(world);
  r.local_rank = static_cast<int>(local);
  if (!env("MASTER_ADDR")) {
    if (auto nodes = env("SLURM_JOB_NODELIST")) {
      FLAP_ASSIGN_OR_RETURN(r.master_addr, FirstSlurmHost(*nodes));
    } else if (local_size != world) {
      return Status::InvalidArgument(
          "mpirun spans several nodes: set MASTER_ADDR to rank 0's host (mpirun -x MASTER_ADDR=HOST)");
    }
  }
  // Open MPI 4 exports its job id to every rank; ranks of one mpirun share it.
  for (const char* name : {"OMPI_MCA_ess_base_jobid", "OMPI_MCA_orte_ess_jobid"}) {
    if (auto id = env(name)) {
      r.master_port = DerivedPort(std::strtoull(id->c_str(), nullptr, 10));
      break;
    }
  }
  FLAP_RETURN_IF_ERROR(ApplyOverrides(env, &r));
  FLAP_RETURN_IF_ERROR(Check(r, "mpi"));
  return r;
}

StatusOr<Rendezvous> FromSlurm(const EnvLookup& env) {
  Rendezvous r;
  r.launcher = Launcher::kSlurm;
  FLAP_ASSIGN_OR_RETURN(long long rank, IntVar(env, "SLURM_PROCID"));
  FLAP_ASSIGN_OR_RETURN(long long world, IntVar(env, "SLURM_NTASKS"));
  FLAP_ASSIGN_OR_RETURN(long long local, IntVar(env, "SLURM_LOCALID", 0));
  r.rank = static_cast<int>(rank);
  r.world_size = static_cast<int>(world);
  r.local_rank = static_cast<int>(local);
  std::optional<std::string> nodes = env("SLURM_JOB_NODELIST");
  if (!nodes) nodes = env("SLURM_NODELIST");
  if (!nodes && !env("MASTER_ADDR")) return Status::InvalidArgument("SLURM_JOB_NODELIST is not set (slurm launcher)");
  if (nodes) {
    FLAP_ASSIGN_OR_RETURN(r.master_addr, FirstSlurmHost(*nodes));
  }
  FLAP_ASSIGN_OR_RETURN(long long job, IntVar(env, "SLURM_JOB_ID", 0));
  long long step = 0;
  if (auto s = env("SLURM_STEP_ID")) {
    auto parsed = ParseInt("SLURM_STEP_ID", *s);
    if (parsed.ok()) step = *parsed;
  }
  r.master_port = DerivedPort(static_cast<unsigned long long>(job) * 16ULL + static_cast<unsigned long long>(step));
  FLAP_RETURN_IF_ERROR(ApplyOverrides(env, &r));
  FLAP_RETURN_IF_ERROR(Check(r, "slurm"));
  return r;
}

}  // namespace

EnvLookup FixedEnvironment(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

EnvLookup ProcessEnvironment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

StatusOr<Rendezvous> DetectRendezvous(const EnvLookup& env, Launcher launcher) {
  switch (launcher) {
    case Launcher::kNone:
      return Rendezvous{};
    case Launcher::kEnv:
      return FromTorchrun(env);
    case Launcher::kMpi:
      return FromMpi(env);
    case Launcher::kSlurm:
      return FromSlurm(env);
    case Launcher::kAuto:
      break;
  }
  if (env("RANK") || env("WORLD_SIZE")) return FromTorchrun(env);
  if (env("OMPI_COMM_WORLD_SIZE")) return FromMpi(env);
  if (env("SLURM_PROCID") && env("SLURM_STEP_ID")) return FromSlurm(env);
  return Rendezvous{};
}

StatusOr<std::string> FirstSlurmHost(const std::string& nodelist) {
  // The first entry ends at a comma outside brackets.
  size_t end = 0;
  int depth = 0;
  for (; end < nodelist.size(); ++end) {
    const char c = nodelist[end];
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (c == ',' && depth == 0) break;
  }
  const std::string first = nodelist.substr(0, end);
  if (first.empty()) return Status::InvalidArgument("empty Slurm node list '" + nodelist + "'");
  const size_t open = first.find('[');
  if (open == std::string::npos) return first;
  const size_t close = first.find(']', open);
  if (close == std::string::npos || open == 0) {
    return Status::InvalidArgument("malformed Slurm node list '" + nodelist + "'");
  }
  // Inside the brackets: "01-04,07"; the first range's start, as written (zero padding kept).
  const std::string inner = first.substr(open + 1, close - open - 1);
  size_t stop = inner.find_first_of(",-");
  const std::string lowest = inner.substr(0, stop);
  if (lowest.empty() || lowest.find_first_not_of("0123456789") != std::string::npos) {
    return Status::InvalidArgument("malformed Slurm node list '" + nodelist + "'");
  }
  return first.substr(0, open) + lowest + first.substr(close + 1);
}

}  // namespace flap::core
