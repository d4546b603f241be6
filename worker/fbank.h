// Kaldi-compatible log-mel filter bank: the audio front end of the FLAP model (see
// DESIGN.md, "The model"). Plain C++ (no LibTorch), so loader threads can compute features
// without touching LibTorch's thread pools.
//
// With default options, Fbank::Compute matches
//   torchaudio.compliance.kaldi.fbank(wave, htk_compat=True, sample_frequency=16000,
//       use_energy=False, window_type='hanning', num_mel_bins=128, dither=0.0,
//       frame_shift=10, frame_length=25)
// i.e. Kaldi's other defaults: per-frame DC removal, preemphasis 0.97 (first sample of a frame
// uses itself as its predecessor), Hann window (symmetric, torch.hann_window(periodic=False)),
// zero padding to the next power of two (400 -> 512-point FFT), snip_edges=True, power
// spectrum, triangular filters on Kaldi's mel scale 1127 ln(1 + f / 700) from low_freq to
// high_freq, natural log floored at FLT_EPSILON. Everything runs in float32 like torchaudio,
// and the mel filters and the window are built with torchaudio's float32 arithmetic, so the
// values agree to float rounding: against tests/fixtures/fbank_*.bin, max abs difference in
// the log domain < 5e-4 for bins within 60 dB of their frame's loudest bin (observed 1.2e-4)
// and < 1e-2 for all bins (observed 3.8e-3, in bins ~100 dB down where float32 FFT rounding
// dominates both implementations). Cost: about 1.5 us per frame on one core (-O3), i.e.
// ~2500 clips/s for 2.56 s clips.
//
// The waveform is used as given: AudioMAE subtracts the clip's mean first; that is the
// caller's choice, not done here. ComputeNormalized applies the fixed AudioSet statistics
// (x - kFbankMean) / (2 * kFbankStd) after padding/cropping.
//
// Thread-safety: an Fbank is immutable after construction; Compute and ComputeNormalized are
// const, keep their scratch space local to the call, and may run concurrently on one object.
#pragma once

#include <cstddef>
#include <vector>

#include "common/status.h"

namespace flap::worker {

struct FbankOptions {
  int sample_rate = 16000;        // Hz
  double frame_length_ms = 25.0;  // window length; samples = int(sample_rate * ms / 1000)
  double frame_shift_ms = 10.0;   // hop; samples = int(sample_rate * ms / 1000)
  int num_mel_bins = 128;         // > 3
  double low_freq = 20.0;         // Hz, lower edge of the first filter
  double high_freq = 0.0;         // Hz, upper edge of the last filter; <= 0: offset from Nyquist
  double preemphasis = 0.97;      // in [0, 1]; 0 turns it off
  bool remove_dc_offset = true;   // subtract each frame's mean before preemphasis
};

// Normalisation statistics of the AudioMAE / FLAP front end (AudioSet).
inline constexpr float kFbankMean = -4.2677f;
inline constexpr float kFbankStd = 4.5690f;

class Fbank {  // immutable after construction; Compute is thread-safe
 public:
  // Checks what the constructor requires: window of >= 5 samples, positive shift and sample
  // rate, num_mel_bins > 3, 0 <= low_freq < high_freq <= Nyquist (after resolving
  // high_freq <= 0), preemphasis in [0, 1].
  static Status Validate(const FbankOptions& options);

  // Throws std::invalid_argument (with Validate's message) if the options are invalid.
  explicit Fbank(const FbankOptions& options = {});

  // Frames produced for num_samples samples (snip_edges): 1 + (n - window) / shift, or 0 if
  // n < window.
  int NumFrames(size_t num_samples) const;

  // Writes NumFrames(n) x num_mel_bins() log-mel values, row-major (frame-major), into *out
  // (resized; no reallocation if its capacity suffices). n < window gives an empty *out.
  void Compute(const float* wave, size_t n, std::vector<float>* out) const;

  // Compute, then pad with zero rows / crop to target_frames (>= 0), then normalise every
  // value (padding included) as (x - kFbankMean) / (2 * kFbankStd).
  // Output: target_frames x num_mel_bins(), row-major.
  void ComputeNormalized(const float* wave, size_t n, int target_frames, std::vector<float>* out) const;

  int num_mel_bins() const { return num_mel_bins_; }
  int window_size() const { return window_size_; }    // samples per frame (400 by default)
  int window_shift() const { return window_shift_; }  // samples between frames (160)
  int fft_size() const { return fft_size_; }          // padded window (512)

 private:
  // Computes min(NumFrames(n), max_frames) frames into out (row-major); returns that count.
  int ComputeFrames(const float* wave, size_t n, int max_frames, float* out) const;
  // Z = M-point complex FFT (M = fft_size_ / 2) of z[j] = x[2j] + i x[2j+1], where x holds
  // fft_size_ real samples; writes Z in natural order to re[0, M) and im[0, M).
  void RealFft(const float* x, float* re, float* im) const;

  FbankOptions options_;
  int num_mel_bins_ = 0;
  int window_size_ = 0;
  int window_shift_ = 0;
  int fft_size_ = 0;  // N: power of two >= window_size_ (>= 8)
  int half_ = 0;      // M = N / 2: size of the complex FFT

  std::vector<float> window_;       // window_size_
  std::vector<int> bitrev_;         // M: bit reversal of log2(M) bits
  std::vector<float> stage_tw_re_;  // twiddles of all stages, stage of length L at L/2-1
  std::vector<float> stage_tw_im_;
  std::vector<float> post_tw_re_;  // e^{-2 pi i k / N}, k < M: real-FFT untangling
  std::vector<float> post_tw_im_;
  // Mel filters in groups of kMelGroup consecutive filters, each group over the union of its
  // filters' nonzero FFT-bin ranges, bin-major (see the constructor).
  static constexpr int kMelGroup = 4;  // = lanes of Float4 in fbank.cc
  std::vector<int> mel_group_first_;
  std::vector<int> mel_group_len_;
  std::vector<int> mel_group_offset_;
  std::vector<float> mel_weights_;
};

}  // namespace flap::worker
