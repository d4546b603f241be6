// Audio codecs for the shard format: decode any libsndfile-readable bytes (WAV, FLAC,
// OGG/Vorbis, Opus, MP3 where libsndfile has it) to mono float at a target rate, encode mono
// float to 16-bit PCM WAV or FLAC, and resample with libsoxr. Not a feature extractor: log-mel
// features live on the worker's side (worker/fbank.h).
//
// Thread-safety: free functions without shared state; safe to call from many threads at once.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "common/status.h"
#include "sharding/sample.h"

namespace flap::sharding {

enum class AudioFormat { kFlac, kWav };

// File extension of `format` without the dot: "flac" or "wav".
const char* AudioFormatExtension(AudioFormat format);

// Sample rates a source may have: outside them the header is damaged or hostile (resampling
// 1 Hz to 16 kHz would allocate 16,000 times the clip).
inline constexpr int kMinSampleRate = 1000;
inline constexpr int kMaxSampleRate = 384000;
// The longest source DecodeAudio decodes (1 hour; clips last seconds): what it allocates stays
// bounded whatever the header or a highly compressed stream says.
inline constexpr double kMaxDecodeSeconds = 3600.0;

// Decodes the `size` bytes at `data` (read, not kept), downmixes to mono (mean of channels)
// and resamples to `target_rate` with libsoxr (HQ). `what` names the source in messages
// (e.g. "shard.tar: 00001.flac"). Success: the samples, roughly in [-1, 1], at least one.
// Corruption if libsndfile cannot decode the bytes or they hold no frames, if the sample rate
// is outside [kMinSampleRate, kMaxSampleRate], if a WAV is truncated (its data chunk declares
// more bytes than the file holds: "audio decoding failed: truncated WAV ...", as a truncated
// FLAC fails), or if it lasts more than kMaxDecodeSeconds; InvalidArgument if
// target_rate <= 0.
StatusOr<std::vector<float>> DecodeAudio(const void* data, size_t size, const std::string& what,
                                         int target_rate = kSampleRate);

// Reads `path` and decodes it as DecodeAudio does. NotFound / IOError if the file cannot be
// read; Corruption naming the path if it cannot be decoded.
StatusOr<std::vector<float>> DecodeAudioFile(const std::string& path, int target_rate = kSampleRate);

// Encodes `mono` (clamped to [-1, 1], NaN as 0) as 16-bit PCM in a WAV or FLAC container at
// `sample_rate`. The bytes are a pure function of the arguments (for a given libsndfile /
// libFLAC). InvalidArgument for an empty signal or sample_rate <= 0; Internal if libsndfile
// refuses.
StatusOr<std::string> EncodeAudio(const std::vector<float>& mono, int sample_rate, AudioFormat format);

// Resamples `in` from `from_rate` to `to_rate` with libsoxr (HQ, single thread, deterministic).
// The result has round(in.size() * to_rate / from_rate) samples. Returns `in` unchanged when the
// rates are equal, and an empty vector if either rate is not positive (or libsoxr fails).
std::vector<float> Resample(const std::vector<float>& in, int from_rate, int to_rate);

}  // namespace flap::sharding
