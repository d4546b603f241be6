// flapctl's "data" commands (preparing and checking datasets).
//
//   flapctl data synth --out DIR [--seed N --train N --val N --test N --clip-seconds S
//                                 --shard-size N --vocab-size N --name NAME]
//     (--eval N: the old name of --val; --test defaults to --val's count)
//   flapctl data verify DIR
//
// Thread-safety: see flapctl/cli.h.
#pragma once

#include <string>
#include <vector>

#include "flapctl/cli.h"

namespace flap::flapctl {

// The "data" group.
CommandGroup DataCommandGroup();

// The data commands themselves (args after the command name), for tests and other front ends.
int RunDataSynth(const std::vector<std::string>& args);
int RunDataVerify(const std::vector<std::string>& args);

}  // namespace flap::flapctl
