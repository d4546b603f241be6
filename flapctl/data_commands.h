// flapctl's command plumbing and its "data" commands (preparing and checking datasets).
//
//   flapctl data synth --out DIR [--seed N --train N --eval N --clip-seconds S --shard-size N
//                                 --vocab-size N --name NAME]
//   flapctl data verify DIR
//
// The plumbing: flapctl's commands come in groups ("data"; later "sweep", "ckpt"). A group is a
// name, a one-line summary and its commands; RunCli dispatches `flapctl GROUP COMMAND ARGS...`
// and prints help for `flapctl --help` and `flapctl GROUP --help`. A command parses its own
// arguments (Boost.Program_options) and answers --help itself. Adding a group means writing
// its CommandGroup factory and listing it in main.cc.
//
// Exit codes: 0 success, 1 the command ran and failed (e.g. damaged shards), 2 usage error
// (unknown command or flag, bad value, missing argument).
//
// Thread-safety: commands run on the calling thread (some use worker threads inside); they
// write to std::cout / std::cerr.
#pragma once

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

// The "data" group.
CommandGroup DataCommandGroup();

// The data commands themselves (args after the command name), for tests and other front ends.
int RunDataSynth(const std::vector<std::string>& args);
int RunDataVerify(const std::vector<std::string>& args);

}  // namespace flap::flapctl
