// Sample: one audio clip with its captions, the unit that shards store and the worker trains on.
// A plain value type (no I/O, no dependencies beyond the standard library).
//
// Thread-safety: a value; distinct instances may be used from different threads freely.
#pragma once

#include <string>
#include <vector>

namespace flap::sharding {

// Every sample handed out by this part is mono audio at this rate (Hz).
inline constexpr int kSampleRate = 16000;

struct Sample {
  // Unique within its dataset; the worker derives its per-sample randomness (masks, caption
  // choice) from it. Keys written by ShardWriter contain no '.', '/' or '\\'.
  std::string key;
  std::vector<float> audio;                   // mono, kSampleRate, roughly in [-1, 1]
  std::vector<std::string> captions;          // original captions, >= 1, each non-empty
  std::vector<std::string> captions_augment;  // LLM-style augmented captions; may be empty
  std::vector<std::string> tags;              // sound-event tags; may be empty
};

}  // namespace flap::sharding
