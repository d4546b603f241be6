// flapctl's command plumbing. Commands come in groups ("data", "ckpt"; later "sweep"); a
// group is a name, a one-line summary and its commands. RunCli dispatches
// `flapctl GROUP COMMAND ARGS...` and prints help for `flapctl --help` and
// `flapctl GROUP --help`. A command parses its own arguments (Boost.Program_options, through
// ParseArgs) and answers --help itself. Adding a group means writing its CommandGroup factory
// and listing it in main.cc.
//
// Exit codes: 0 success, 1 the command ran and failed (e.g. damaged shards), 2 usage error
// (unknown command or flag, bad value, missing argument).
//
// Thread-safety: commands run on the calling thread (some use worker threads inside); they
// write to std::cout / std::cerr.
#pragma once

#include <boost/program_options.hpp>
#include <functional>
#include <string>
#include <vector>

namespace flap::flapctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// One command: `run` gets the arguments after the command's name and returns an exit code.
struct Command {
  std::string name;
  std::string summary;
  std::function<int(const std::vector<std::string>& args)> run;
};

struct CommandGroup {
  std::string name;
  std::string summary;
  std::vector<Command> commands;
};

// Runs flapctl over argv with the given groups; returns the process exit code.
int RunCli(const std::vector<CommandGroup>& groups, int argc, const char* const* argv);

// Parses `args` against `visible` (plus `hidden` options fed by `positional`) into *vm;
// returns false after printing a usage error naming `command` (e.g. "data synth"). Boost's
// exceptions stop here, at the CLI edge. Required options are not enforced when --help was
// given.
bool ParseArgs(const std::string& command, const std::vector<std::string>& args,
               const boost::program_options::options_description& visible,
               const boost::program_options::options_description& hidden,
               const boost::program_options::positional_options_description& positional,
               boost::program_options::variables_map* vm);

}  // namespace flap::flapctl
