// Internal to flapctl's "sweep" commands (sweep_commands.cc, sweep_best.cc, sweep_run.cc): the
// connection options every command takes, connecting, argument parsing, the formats they share,
// and validation's choice per cell (sweep best, and sweep run --export-best).
// flapctl/sweep_commands.h is the group's contract.
//
// Thread-safety: as the commands (calling thread, std::cout / std::cerr).
#pragma once

#include <boost/program_options.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/client.h"
#include "proto/coordinator.pb.h"

namespace flap::flapctl::sweep_internal {

// --coordinator, --token-file, --tls-ca, --insecure, --timeout-ms (sweep_commands.h).
struct Connection {
  std::string coordinator;
  std::string token_file;
  std::string tls_ca;
  bool insecure = false;
  int64_t timeout_ms = 10000;
};
// Adds the connection options to *d, their defaults from the environment.
void AddConnectionOptions(boost::program_options::options_description* d, Connection* c);
// A client for the coordinator `c` names (its token read, its CA file read).
StatusOr<std::unique_ptr<coordinator::CoordinatorClient>> Connect(const Connection& c);

// Prints "flapctl sweep COMMAND: <message>" to stderr; returns kExitFailure.
int Fail(const std::string& command, const Status& s);

// Parses `args` with the connection options, `extra` and an optional positional SWEEP; *vm
// (when given) gets what was parsed. Returns -1 after --help, else an exit code (kExitOk to go
// on).
int Parse(const std::string& command, const std::string& usage, const std::vector<std::string>& args,
          boost::program_options::options_description* extra, Connection* conn, std::string* positional_value,
          const char* positional_name, bool required, boost::program_options::variables_map* vm = nullptr);

// A metric of `m` for people: a retrieval fraction as a percentage with one decimal ("62.3%"),
// another with 4 significant digits; "-" when absent.
std::string Metric(const google::protobuf::Map<std::string, double>& m, const std::string& k);

// Validation's choice per cell of a sweep (sweep_commands.h, RunSweepBest), printed and, with
// export_dir, exported by `worker export`.
struct BestRequest {
  std::string command = "best";        // messages start "flapctl sweep <command>: "
  std::string sweep;
  std::string cell;                    // its number or label; "" for every cell
  std::string export_dir;              // "" to print only
  std::string worker;                  // flap-worker, for export_dir
  std::vector<std::string> forwarded;  // --KEY VALUE pairs for flap-worker export
};
// Asks `client` (GetBest), prints each cell's choice to stdout and exports them; the exit code
// (kExitFailure when no printed cell has a choice or an export fails, kExitUsage for an unknown
// cell), every failure said on stderr.
int ShowBest(coordinator::CoordinatorClient& client, const BestRequest& request);

}  // namespace flap::flapctl::sweep_internal
