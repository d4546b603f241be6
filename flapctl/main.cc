// flapctl: the user's CLI (prepare data, checkpoints, sweeps). Never links LibTorch.
// Commands live in their groups (data_commands.h, ingest_commands.h, augment_commands.h,
// ckpt_commands.h, sweep_commands.h; the plumbing in cli.h); this file only lists the groups.
#include "flapctl/augment_commands.h"
#include "flapctl/ckpt_commands.h"
#include "flapctl/data_commands.h"
#include "flapctl/ingest_commands.h"
#include "flapctl/sweep_commands.h"

int main(int argc, char** argv) {
  flap::flapctl::CommandGroup data = flap::flapctl::DataCommandGroup();
  data.commands.push_back(flap::flapctl::DataIngestCommand());
  data.commands.push_back(flap::flapctl::DataAugmentCommand());
  const std::vector<flap::flapctl::CommandGroup> groups = {data, flap::flapctl::CkptCommandGroup(),
                                                           flap::flapctl::SweepCommandGroup()};
  return flap::flapctl::RunCli(groups, argc, argv);
}
