// `flapctl data augment`: rewrites a dataset's captions with the sound events of each clip,
// offline from templates (the default) or through an OpenAI-compatible chat-completions
// endpoint (sharding/augment.h). Exit codes as cli.h: 0 done, 1 failed, 2 usage.
#pragma once

#include <string>
#include <vector>

#include "flapctl/cli.h"

namespace flap::flapctl {

// `flapctl data augment ARGS...` (args after "augment"); returns the exit code.
int RunDataAugment(const std::vector<std::string>& args);

// The command, for adding to the "data" group.
Command DataAugmentCommand();

}  // namespace flap::flapctl
