// Implementation of flapctl/cli.h.
#include "flapctl/cli.h"

#include <algorithm>
#include <iomanip>
#include <iostream>

namespace flap::flapctl {
namespace po = boost::program_options;
namespace {

bool IsHelp(const std::string& arg) { return arg == "--help" || arg == "-h" || arg == "help"; }

void PrintGroupHelp(const CommandGroup& group, std::ostream& out) {
  out << "Usage: flapctl " << group.name << " COMMAND [ARGS...]\n\n" << group.summary << "\n\nCommands:\n";
  for (const Command& c : group.commands) {
    out << "  " << std::left << std::setw(10) << c.name << c.summary << "\n";
  }
  out << "\nRun 'flapctl " << group.name << " COMMAND --help' for a command's options.\n";
}

void PrintTopHelp(const std::vector<CommandGroup>& groups, std::ostream& out) {
  out << "Usage: flapctl GROUP COMMAND [ARGS...]\n\n"
      << "The FLAP sweep orchestrator's command-line tool.\n\nCommands:\n";
  for (const CommandGroup& g : groups) {
    for (const Command& c : g.commands) {
      out << "  " << std::left << std::setw(16) << (g.name + " " + c.name) << c.summary << "\n";
    }
  }
  out << "\nRun 'flapctl GROUP --help' or 'flapctl GROUP COMMAND --help' for details.\n";
}

}  // namespace

bool ParseArgs(const std::string& command, const std::vector<std::string>& args, const po::options_description& visible,
               const po::options_description& hidden, const po::positional_options_description& positional,
               po::variables_map* vm) {
  po::options_description all;
  all.add(visible).add(hidden);
  try {
    po::store(po::command_line_parser(args).options(all).positional(positional).run(), *vm);
    if (vm->count("help") == 0) po::notify(*vm);
  } catch (const po::error& e) {
    std::cerr << "flapctl " << command << ": " << e.what() << "\n"
              << "Run 'flapctl " << command << " --help' for usage.\n";
    return false;
  }
  return true;
}

int RunCli(const std::vector<CommandGroup>& groups, int argc, const char* const* argv) {
  std::vector<std::string> args(argv + std::min(argc, 1), argv + argc);
  if (args.empty()) {
    PrintTopHelp(groups, std::cerr);
    return kExitUsage;
  }
  if (IsHelp(args[0])) {
    PrintTopHelp(groups, std::cout);
    return kExitOk;
  }
  auto group = std::find_if(groups.begin(), groups.end(), [&](const CommandGroup& g) { return g.name == args[0]; });
  if (group == groups.end()) {
    std::cerr << "flapctl: unknown command '" << args[0] << "'\n"
              << "Run 'flapctl --help' for the list of commands.\n";
    return kExitUsage;
  }
  if (args.size() < 2) {
    PrintGroupHelp(*group, std::cerr);
    return kExitUsage;
  }
  if (IsHelp(args[1])) {
    PrintGroupHelp(*group, std::cout);
    return kExitOk;
  }
  auto command =
      std::find_if(group->commands.begin(), group->commands.end(), [&](const Command& c) { return c.name == args[1]; });
  if (command == group->commands.end()) {
    std::cerr << "flapctl " << group->name << ": unknown command '" << args[1] << "'\n"
              << "Run 'flapctl " << group->name << " --help' for the list of commands.\n";
    return kExitUsage;
  }
  return command->run(std::vector<std::string>(args.begin() + 2, args.end()));
}

}  // namespace flap::flapctl
