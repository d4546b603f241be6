// Internal to flapctl's "sweep" commands (sweep_commands.cc, sweep_best.cc): the connection
// options every command takes, connecting, argument parsing and the formats they share.
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

// Parses `args` with the connection options, `extra` and an optional positional SWEEP.
// Returns -1 after --help, else an exit code (kExitOk to go on).
int Parse(const std::string& command, const std::string& usage, const std::vector<std::string>& args,
          boost::program_options::options_description* extra, Connection* conn, std::string* positional_value,
          const char* positional_name, bool required);

// A metric of `m` for people: a retrieval fraction as a percentage with one decimal ("62.3%"),
// another with 4 significant digits; "-" when absent.
std::string Metric(const google::protobuf::Map<std::string, double>& m, const std::string& k);

}  // namespace flap::flapctl::sweep_internal
