// Where the checkpoint store puts a checkpoint: ROOT/<trial_id>/<step>, the step as 12 digits
// ("000000000200"; Store::CheckpointDir). Header-only, so that the parts that know checkpoints
// only by the references workers report (the coordinator) name a step's folder as the store does.
//
// Thread-safety: pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace flap::checkpoint {

// The folder name of the checkpoint at `step` (>= 0): "%012lld".
inline std::string StepDirName(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%012lld", static_cast<long long>(step));
  return buf;
}

// The step a folder name holds; false unless `name` is 12 decimal digits.
inline bool ParseStepDirName(const std::string& name, int64_t* step) {
  if (name.size() != 12) return false;
  int64_t v = 0;
  for (char c : name) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *step = v;
  return true;
}

}  // namespace flap::checkpoint
