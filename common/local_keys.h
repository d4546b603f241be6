// Trial config keys that belong to the machine a worker runs on: its folders (checkpoints,
// data, outputs, the feature cache), its metrics endpoint and service-discovery folder, and its
// device. A worker sets them in its own config or flags; a sweep may not vary them, or a
// submitted sweep could make every worker write where it says (or train on another device).
// The coordinator refuses them as factors (coordinator/sweep.h); the worker ignores them in a
// trial's overrides (worker/agent.cc) and marks them in `flap-worker train --help`.
// Header-only and free of LibTorch, so that the coordinator can include it.
//
// Thread-safety: pure functions; safe from any thread.
#pragma once

#include <array>
#include <string>

namespace flap {

// Exact keys; every key under a prefix of kLocalOnlyPrefixes is local too.
inline constexpr std::array<const char*, 5> kLocalOnlyKeys = {
    "ckpt.root", "data.path", "data.fbank_cache", "train.output_dir", "train.device"};
inline constexpr std::array<const char*, 1> kLocalOnlyPrefixes = {"metrics."};

inline bool IsLocalOnlyKey(const std::string& key) {
  for (const char* k : kLocalOnlyKeys) {
    if (key == k) return true;
  }
  for (const char* p : kLocalOnlyPrefixes) {
    if (key.rfind(p, 0) == 0) return true;
  }
  return false;
}

}  // namespace flap
