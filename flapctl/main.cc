// flapctl: the user's CLI (prepare data; later sweeps and checkpoints). Never links LibTorch.
// Commands live in their groups (data_commands.h); this file only lists the groups.
#include "flapctl/data_commands.h"

int main(int argc, char** argv) {
  const std::vector<flap::flapctl::CommandGroup> groups = {flap::flapctl::DataCommandGroup()};
  return flap::flapctl::RunCli(groups, argc, argv);
}
