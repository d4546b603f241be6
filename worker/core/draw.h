// Deterministic draws (common/draw.h), named in flap::core for the worker's code: token masks,
// caption choice, crops and sample order are pure functions of (purpose, seed, key, epoch,
// view), the same in any process, on any thread, after any restart.
#pragma once

#include "common/draw.h"

namespace flap::core {

using ::flap::DrawPurpose;
using ::flap::DrawRng;
using ::flap::HashString;
using ::flap::Mix64;

}  // namespace flap::core
