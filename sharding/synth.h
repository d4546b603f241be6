// Synthetic audio-caption data: a deterministic generator of learnable clips for tests, demos
// and benchmarks. Not a model of real sounds: each clip is 1-3 simple sound events in sequence
// (tones at low / mid / high pitch, rising and falling chirps, white / pink / brown noise,
// click trains, tremolo tones, chords), each quiet or loud and sometimes repeated, over faint
// background noise, with small random jitter in pitch, timing and level. The events differ
// clearly in mel frequency and time, so a model that looks at 16x16 log-mel patches (16 mel
// bins x 160 ms) can learn them. Captions come from templates in several phrasings ("a low
// tone followed by white noise", "white noise comes after a low-pitched hum"); each clip gets
// 2-3 original captions, one richer LLM-style augmented caption naming events, order and
// loudness, and tags such as "tone_low".
//
// Everything is a pure function of (seed, split, index, clip length): the same options give the
// same bytes on disk.
//
// Thread-safety: free functions without shared state; safe from any thread. GenerateSynthetic
// uses worker threads internally; its output does not depend on how many.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "sharding/sample.h"

namespace flap::sharding {

struct SynthOptions {
  uint64_t seed = 1;
  int num_train = 2000;         // clips in split "train" (>= 1)
  int num_val = 200;            // clips in split "val" (>= 0)
  int num_test = 200;           // clips in split "test" (>= 0)
  double clip_seconds = 2.56;   // every clip's length, in [0.5, 60]
  int samples_per_shard = 250;  // clips per shard (the last shard of a split may hold fewer)
  int vocab_size = 256;         // tokenizer vocabulary (soft limit)
  std::string name = "synth";   // the manifest's dataset name
};

// A small dataset's options (tests, examples): `num_train` training clips and `num_held_out`
// clips in each of "val" and "test", of `clip_seconds`, `samples_per_shard` clips per shard, a
// `vocab_size`-token tokenizer; the rest as declared above.
SynthOptions SmallSynth(int num_train, int num_held_out, double clip_seconds, int samples_per_shard,
                        int vocab_size = 256);

// The kinds of sound event a clip is built from.
enum class SoundEvent {
  kToneLow,     // steady sine at ~200-300 Hz
  kToneMid,     // steady sine at ~700-1000 Hz
  kToneHigh,    // steady sine at ~2.5-4 kHz
  kChirpUp,     // exponential sweep ~300 Hz -> ~3 kHz
  kChirpDown,   // exponential sweep ~3 kHz -> ~300 Hz
  kNoiseWhite,  // flat spectrum
  kNoisePink,   // -3 dB per octave
  kNoiseBrown,  // -6 dB per octave (rumble)
  kClicks,      // broadband clicks at ~8-14 per second
  kTremolo,     // ~450-600 Hz sine, amplitude-modulated at ~5-8 Hz
  kChord,       // major triad with a root at ~300-420 Hz
};
inline constexpr int kNumSoundEvents = 11;

// The event's tag, as found in Sample::tags: "tone_low", "tone_mid", "tone_high", "chirp_up",
// "chirp_down", "noise_white", "noise_pink", "noise_brown", "clicks", "tremolo", "chord".
const char* SoundEventTag(SoundEvent event);

// Writes a synthetic dataset into `out_dir` (created if missing; files of the same names are
// replaced): shards "train-000000.tar", ..., "val-000000.tar", ... and "test-000000.tar", ...
// (FLAC members, keys "train-00000000", ...; a split with no clips has no shards), a tokenizer
// "tokenizer.model" trained on the training captions (original and augmented), and
// "manifest.json" (splits "train", "val", "test"; written last, so a folder with a manifest is
// complete). InvalidArgument for options out of range; IOError / Internal if writing or
// training fails.
Status GenerateSynthetic(const SynthOptions& options, const std::string& out_dir);

// Clip `index` of `split`: a pure function of its arguments. Its key is "<split>-<index as 8
// digits>", its audio holds round(clip_seconds * kSampleRate) samples in [-1, 1].
// clip_seconds is clamped to [0.5, 60].
Sample SynthesizeSample(uint64_t seed, const std::string& split, int64_t index, double clip_seconds);

// One event alone, loud, without background noise or other events, `seconds` long (at
// kSampleRate, with 10 ms fades): what SynthesizeSample mixes in. For tests and for listening.
std::vector<float> SynthesizeEvent(SoundEvent event, uint64_t seed, double seconds);

}  // namespace flap::sharding
