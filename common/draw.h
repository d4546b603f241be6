// Deterministic draws: every random choice that must repeat on resume (token masks, caption
// choice, sample and shard order) is a pure function of a few integers and a key, computed
// with SplitMix64. No global state, no LibTorch generator, so the same (seed, key, epoch, view)
// gives the same draw in any process, on any thread, after any restart, in the worker and in
// the coordinator alike (header-only; worker/core/draw.h names these in flap::core).
//
// Thread-safety: DrawRng is a value; each user owns its own.
#pragma once

#include <cstdint>
#include <string_view>

namespace flap {

// 64-bit FNV-1a of the bytes of `s`.
inline uint64_t HashString(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

// The SplitMix64 finaliser: a bijective 64-bit mix.
inline uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Purposes keep draws for different uses independent even with equal inputs.
enum class DrawPurpose : uint64_t {
  kMask = 0x6d61736b,        // token dropping
  kCaption = 0x63617074,     // caption / augmentation choice
  kOrder = 0x6f726472,       // sample order within a block of shards
  kCrop = 0x63726f70,        // training window within a clip
  kShardOrder = 0x73686f72,  // shard order of an epoch (sharding/shard_order.h)
};

// A SplitMix64 stream seeded from (purpose, seed, key, epoch, view).
class DrawRng {
 public:
  DrawRng(DrawPurpose purpose, uint64_t seed, std::string_view key, int64_t epoch, int64_t view = 0) {
    uint64_t s = Mix64(static_cast<uint64_t>(purpose));
    s = Mix64(s ^ seed);
    s = Mix64(s ^ HashString(key));
    s = Mix64(s ^ static_cast<uint64_t>(epoch));
    state_ = Mix64(s ^ static_cast<uint64_t>(view));
  }
  uint64_t Next() {
    state_ += 0x9e3779b97f4a7c15ULL;
    return Mix64(state_);
  }
  // Uniform in [0, n) (n > 0), by rejection so there is no modulo bias.
  uint64_t Below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = Next();
    while (x >= limit);
    return x % n;
  }
  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

}  // namespace flap
