// Kaldi-compatible log-mel fbank; see fbank.h. Mirrors torchaudio.compliance.kaldi.fbank step
// by step (0.13, /usr/lib/python3/dist-packages/torchaudio/compliance/kaldi.py).
//
// Per frame: DC removal -> preemphasis -> window -> zero pad to N -> real FFT -> |X|^2 ->
// mel filters (nonzero ranges only) -> log(max(., FLT_EPSILON)). The real N-point FFT is an
// N/2-point complex FFT of z[j] = x[2j] + i x[2j+1] (iterative radix-2 with the first two
// stages fused into a radix-4 pass, split re/im arrays, per-stage contiguous twiddles)
// followed by the usual untangling step. Everything runs in float32, as torchaudio does.
#include "worker/fbank.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace flap::worker {
namespace {

constexpr double kPi = 3.14159265358979323846;

// Four float lanes (GCC/Clang vector extension: SIMD where the target has it, scalar code
// otherwise). The mel product uses it explicitly; left to itself the auto-vectoriser picks
// the wrong loop (it vectorises over FFT bins and transposes).
using Float4 = float __attribute__((vector_size(16)));

// Rounds a double to float: the building blocks below use it to reproduce torch's float32
// arithmetic (each op done exactly or nearly so in double, then rounded once).
inline float F(double x) { return static_cast<float>(x); }

int WindowSamples(int sample_rate, double ms) {
  // Same expression as torchaudio: int(sample_frequency * ms * 0.001).
  return static_cast<int>(static_cast<double>(sample_rate) * ms * 0.001);
}

int NextPowerOfTwo(int x) {
  int p = 1;
  while (p < x) p *= 2;
  return p;
}

double MelScale(double hz) { return 1127.0 * std::log(1.0 + hz / 700.0); }

// Natural log of positive normal floats (callers clamp at FLT_EPSILON), as a loop the
// compiler vectorises (glibc's logf is a call per value, ~1/3 of the frame's time otherwise).
// Cephes' logf: x = 2^e m, m in [sqrt(1/2), sqrt(2)), log(1 + f) by a degree-9 polynomial,
// e ln 2 added in two parts. Checked offline against the double log over every 7th float in
// [2^-23, FLT_MAX]: max error 0.83 ulp (3.8e-6 absolute); log(FLT_EPSILON) and log(1) are
// exact. NaN and +inf pass through.
inline void LogInPlace(float* __restrict v, int n) {
  for (int i = 0; i < n; ++i) {
    const float x = v[i];
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    // Integer arithmetic for the selects, so that the loop vectorises.
    const uint32_t mant = bits & 0x007fffffu;
    const int32_t big = mant > 0x003504f3u ? 1 : 0;  // mantissa of sqrt(2)
    const int32_t e = static_cast<int32_t>((bits >> 23) & 0xffu) - 127 + big;
    const uint32_t mbits = mant | (0x3f800000u - (static_cast<uint32_t>(big) << 23));
    float m;  // x / 2^e, in [sqrt(1/2), sqrt(2))
    std::memcpy(&m, &mbits, sizeof m);
    const float f = m - 1.0f;
    const float z = f * f;
    float y = 7.0376836292e-2f;
    y = y * f - 1.1514610310e-1f;
    y = y * f + 1.1676998740e-1f;
    y = y * f - 1.2420140846e-1f;
    y = y * f + 1.4249322787e-1f;
    y = y * f - 1.6668057665e-1f;
    y = y * f + 2.0000714765e-1f;
    y = y * f - 2.4999993993e-1f;
    y = y * f + 3.3333331174e-1f;
    y = y * f * z;
    const float fe = static_cast<float>(e);
    y += fe * -2.12194440e-4f;
    y += -0.5f * z;
    float r = f + y;
    r += fe * 0.693359375f;
    uint32_t rbits;
    std::memcpy(&rbits, &r, sizeof rbits);
    // NaN and +inf unchanged: all-ones mask when the exponent field is all ones.
    const uint32_t special = 0u - (((bits & 0x7f800000u) + 0x00800000u) >> 31);
    rbits = (bits & special) | (rbits & ~special);
    std::memcpy(&v[i], &rbits, sizeof rbits);
  }
}

// h radix-2 DIT butterflies: (x, y) <- (x + w y, x - w y), split re/im arrays. The restrict
// parameters let the compiler vectorise the loop without alias checks.
inline void Butterflies(int h, const float* __restrict wr, const float* __restrict wi, float* __restrict xr,
                        float* __restrict xi, float* __restrict yr, float* __restrict yi) {
  for (int j = 0; j < h; ++j) {
    const float tr = wr[j] * yr[j] - wi[j] * yi[j];
    const float ti = wr[j] * yi[j] + wi[j] * yr[j];
    const float ar = xr[j], ai = xi[j];
    xr[j] = ar + tr;
    xi[j] = ai + ti;
    yr[j] = ar - tr;
    yi[j] = ai - ti;
  }
}

}  // namespace

Status Fbank::Validate(const FbankOptions& o) {
  if (o.sample_rate <= 0) return Status::InvalidArgument("fbank: sample_rate must be > 0");
  const int window = WindowSamples(o.sample_rate, o.frame_length_ms);
  const int shift = WindowSamples(o.sample_rate, o.frame_shift_ms);
  if (window < 5) {  // the FFT needs >= 8 points (torchaudio allows 2, nobody uses < 5)
    return Status::InvalidArgument("fbank: frame_length_ms gives a window of " + std::to_string(window) +
                                   " samples (need >= 5)");
  }
  if (shift <= 0) {
    return Status::InvalidArgument("fbank: frame_shift_ms gives a shift of " + std::to_string(shift) +
                                   " samples (need >= 1)");
  }
  if (o.num_mel_bins <= 3) return Status::InvalidArgument("fbank: num_mel_bins must be > 3");
  const double nyquist = 0.5 * o.sample_rate;
  const double high = o.high_freq <= 0.0 ? o.high_freq + nyquist : o.high_freq;
  if (!(o.low_freq >= 0.0 && o.low_freq < nyquist && high > 0.0 && high <= nyquist && o.low_freq < high)) {
    return Status::InvalidArgument("fbank: bad low_freq " + std::to_string(o.low_freq) + " / high_freq " +
                                   std::to_string(o.high_freq) + " for Nyquist " + std::to_string(nyquist));
  }
  if (!(o.preemphasis >= 0.0 && o.preemphasis <= 1.0)) {
    return Status::InvalidArgument("fbank: preemphasis must be in [0, 1]");
  }
  return Status::OK();
}

Fbank::Fbank(const FbankOptions& options) : options_(options) {
  if (Status s = Validate(options); !s.ok()) throw std::invalid_argument(s.ToString());
  num_mel_bins_ = options.num_mel_bins;
  window_size_ = WindowSamples(options.sample_rate, options.frame_length_ms);
  window_shift_ = WindowSamples(options.sample_rate, options.frame_shift_ms);
  fft_size_ = NextPowerOfTwo(window_size_);  // >= 8: Validate wants a window of >= 5
  half_ = fft_size_ / 2;
  const int n = fft_size_;
  const int m = half_;

  // Window: torch.hann_window(L, periodic=False) in float32:
  // 0.5 - 0.5 * cos(float(j) * float(2 pi / (L - 1))).
  window_.resize(window_size_);
  const float step = F(2.0 * kPi / static_cast<double>(window_size_ - 1));
  for (int j = 0; j < window_size_; ++j) {
    const float angle = F(static_cast<double>(j) * step);
    const float c = F(std::cos(static_cast<double>(angle)));
    window_[j] = F(0.5 + (-0.5 * static_cast<double>(c)));
  }

  // Bit reversal for the M-point complex FFT.
  int bits = 0;
  while ((1 << bits) < m) ++bits;
  bitrev_.resize(m);
  for (int i = 0; i < m; ++i) {
    int r = 0;
    for (int b = 0; b < bits; ++b) r |= ((i >> b) & 1) << (bits - 1 - b);
    bitrev_[i] = r;
  }

  // Stage twiddles e^{-2 pi i j / L}, j < L/2, for L = 2, 4, ..., M; stage L at offset L/2-1.
  stage_tw_re_.assign(std::max(1, m - 1), 0.0f);
  stage_tw_im_.assign(std::max(1, m - 1), 0.0f);
  for (int len = 2; len <= m; len *= 2) {
    const int h = len / 2;
    for (int j = 0; j < h; ++j) {
      const double a = -2.0 * kPi * j / len;
      stage_tw_re_[h - 1 + j] = F(std::cos(a));
      stage_tw_im_[h - 1 + j] = F(std::sin(a));
    }
  }
  post_tw_re_.resize(m);
  post_tw_im_.resize(m);
  for (int k = 0; k < m; ++k) {
    const double a = -2.0 * kPi * k / n;
    post_tw_re_[k] = F(std::cos(a));
    post_tw_im_[k] = F(std::sin(a));
  }

  // Mel filters exactly as torchaudio's get_mel_banks (float32 tensors; the python scalars
  // mel_low_freq and mel_freq_delta are doubles rounded to float when they meet a tensor).
  // Only FFT bins k < N/2 are covered: the Nyquist bin has weight 0.
  const double nyquist = 0.5 * options.sample_rate;
  const double high_freq = options.high_freq <= 0.0 ? options.high_freq + nyquist : options.high_freq;
  const double mel_low = MelScale(options.low_freq);
  const double mel_high = MelScale(high_freq);
  const double mel_delta = (mel_high - mel_low) / (num_mel_bins_ + 1);
  const float mel_low_f = F(mel_low);
  const float mel_delta_f = F(mel_delta);
  const float bin_width_f = F(static_cast<double>(options.sample_rate) / n);
  std::vector<float> fft_mel(m);
  for (int k = 0; k < m; ++k) {
    const float hz = F(static_cast<double>(bin_width_f) * k);
    const float ratio = F(static_cast<double>(hz) / 700.0);  // 700.0 is exact in float
    const float arg = F(1.0 + static_cast<double>(ratio));
    const float ln = F(std::log(static_cast<double>(arg)));
    fft_mel[k] = F(1127.0 * static_cast<double>(ln));
  }
  // Dense weights first (filters x m), then packed per group of kMelGroup filters.
  const int groups = (num_mel_bins_ + kMelGroup - 1) / kMelGroup;
  std::vector<float> dense(static_cast<size_t>(groups) * kMelGroup * m, 0.0f);
  for (int b = 0; b < num_mel_bins_; ++b) {
    auto edge = [&](int i) { return F(static_cast<double>(F(static_cast<double>(i) * mel_delta_f)) + mel_low_f); };
    const float left = edge(b), center = edge(b + 1), right = edge(b + 2);
    const float up_den = F(static_cast<double>(center) - left);
    const float down_den = F(static_cast<double>(right) - center);
    for (int k = 0; k < m; ++k) {
      const float up = F(static_cast<double>(F(static_cast<double>(fft_mel[k]) - left)) / up_den);
      const float down = F(static_cast<double>(F(static_cast<double>(right) - fft_mel[k])) / down_den);
      dense[static_cast<size_t>(b) * m + k] = std::max(0.0f, std::min(up, down));
    }
  }
  // Group g covers filters [g * kMelGroup, (g + 1) * kMelGroup) (the last one padded with
  // all-zero filters) over the union of their nonzero FFT-bin ranges, stored bin-major:
  // mel_weights_[mel_group_offset_[g] + j * kMelGroup + u] is filter g * kMelGroup + u's
  // weight for FFT bin mel_group_first_[g] + j, j < mel_group_len_[g].
  mel_group_first_.assign(groups, 0);
  mel_group_len_.assign(groups, 0);
  mel_group_offset_.assign(groups, 0);
  mel_weights_.clear();
  for (int g = 0; g < groups; ++g) {
    int first = m, last = -1;
    for (int u = 0; u < kMelGroup; ++u) {
      const float* row = dense.data() + static_cast<size_t>(g * kMelGroup + u) * m;
      for (int k = 0; k < m; ++k) {
        if (row[k] > 0.0f) {
          first = std::min(first, k);
          last = std::max(last, k);
        }
      }
    }
    mel_group_offset_[g] = static_cast<int>(mel_weights_.size());
    if (last < 0) continue;  // no FFT bin in any filter (narrow low filters can miss them all)
    mel_group_first_[g] = first;
    mel_group_len_[g] = last - first + 1;
    for (int k = first; k <= last; ++k) {
      for (int u = 0; u < kMelGroup; ++u) {
        mel_weights_.push_back(dense[static_cast<size_t>(g * kMelGroup + u) * m + k]);
      }
    }
  }
}

int Fbank::NumFrames(size_t num_samples) const {
  const size_t window = static_cast<size_t>(window_size_);
  if (num_samples < window) return 0;
  return static_cast<int>(1 + (num_samples - window) / static_cast<size_t>(window_shift_));
}

void Fbank::RealFft(const float* x, float* re, float* im) const {
  const int m = half_;
  const int* __restrict rev = bitrev_.data();
  // Stages L = 2 and L = 4 fused with the bit-reversal gather of z[j] = x[2j] + i x[2j+1]:
  // one radix-4 butterfly (twiddles 1 and -i) per group of 4 outputs.
  for (int q = 0; q < m; q += 4) {
    const int j0 = 2 * rev[q], j1 = 2 * rev[q + 1], j2 = 2 * rev[q + 2], j3 = 2 * rev[q + 3];
    const float b0r = x[j0] + x[j1], b0i = x[j0 + 1] + x[j1 + 1];
    const float b1r = x[j0] - x[j1], b1i = x[j0 + 1] - x[j1 + 1];
    const float b2r = x[j2] + x[j3], b2i = x[j2 + 1] + x[j3 + 1];
    const float b3r = x[j2] - x[j3], b3i = x[j2 + 1] - x[j3 + 1];
    re[q] = b0r + b2r;
    im[q] = b0i + b2i;
    re[q + 2] = b0r - b2r;
    im[q + 2] = b0i - b2i;
    re[q + 1] = b1r + b3i;  // b1 + (-i) b3
    im[q + 1] = b1i - b3r;
    re[q + 3] = b1r - b3i;
    im[q + 3] = b1i + b3r;
  }
  // Remaining radix-2 stages L = 8 .. M; inner loops of >= 4 butterflies vectorise.
  for (int len = 8; len <= m; len *= 2) {
    const int h = len / 2;
    const float* wr = stage_tw_re_.data() + (h - 1);
    const float* wi = stage_tw_im_.data() + (h - 1);
    for (int s = 0; s < m; s += len) {
      Butterflies(h, wr, wi, re + s, im + s, re + s + h, im + s + h);
    }
  }
}

int Fbank::ComputeFrames(const float* wave, size_t n, int max_frames, float* out) const {
  const int frames = std::min(NumFrames(n), std::max(0, max_frames));
  if (frames == 0) return 0;
  const int len = window_size_;
  const int m = half_;
  const int bins = num_mel_bins_;
  const float pre = static_cast<float>(options_.preemphasis);
  const bool preemph = options_.preemphasis != 0.0;

  // Scratch for the whole call (one allocation, none per frame).
  const int padded_bins = static_cast<int>(mel_group_len_.size()) * kMelGroup;
  std::vector<float> scratch(static_cast<size_t>(fft_size_) + 3 * static_cast<size_t>(m) + padded_bins, 0.0f);
  float* __restrict x = scratch.data();  // fft_size_: the windowed, zero-padded frame
  float* __restrict re = x + fft_size_;  // m
  float* __restrict im = re + m;         // m
  float* __restrict power = im + m;      // m
  float* __restrict energy = power + m;  // padded_bins
  const float* __restrict win = window_.data();
  const float* __restrict twr = post_tw_re_.data();
  const float* __restrict twi = post_tw_im_.data();

  for (int f = 0; f < frames; ++f) {
    const float* __restrict p = wave + static_cast<size_t>(f) * window_shift_;
    float mean = 0.0f;
    if (options_.remove_dc_offset) {
      double acc[4] = {0.0, 0.0, 0.0, 0.0};  // independent chains: no serial add latency
      int j = 0;
      for (; j + 4 <= len; j += 4) {
        for (int u = 0; u < 4; ++u) acc[u] += p[j + u];
      }
      for (; j < len; ++j) acc[0] += p[j];
      mean = static_cast<float>(((acc[0] + acc[1]) + (acc[2] + acc[3])) / len);
    }
    // x[j] = d[j] - pre * d[j-1] with d = p - mean and d[-1] := d[0] (torch's replicate pad).
    if (preemph) {
      const float d0 = p[0] - mean;
      x[0] = (d0 - pre * d0) * win[0];
      for (int j = 1; j < len; ++j) {
        x[j] = ((p[j] - mean) - pre * (p[j - 1] - mean)) * win[j];
      }
    } else {
      for (int j = 0; j < len; ++j) x[j] = (p[j] - mean) * win[j];
    }
    // x[len..fft_size_) stays zero.

    RealFft(x, re, im);

    // Untangle Z = FFT_M(x[2j] + i x[2j+1]) into X = FFT_N(x):
    // X[k] = Ze[k] + W^k Zo[k], Ze = (Z[k] + conj Z[M-k]) / 2, Zo = -i (Z[k] - conj Z[M-k]) / 2.
    // Power |X[k]|^2 for k < M (the Nyquist bin has no filter weight).
    power[0] = (re[0] + im[0]) * (re[0] + im[0]);
    for (int k = 1; k < m; ++k) {
      const float a = re[k], b = im[k], cr = re[m - k], ci = im[m - k];
      const float er = 0.5f * (a + cr), ei = 0.5f * (b - ci);
      const float orr = 0.5f * (b + ci), oi = 0.5f * (cr - a);
      const float xr = er + twr[k] * orr - twi[k] * oi;
      const float xi = ei + twr[k] * oi + twi[k] * orr;
      power[k] = xr * xr + xi * xi;
    }

    // Mel energies, kMelGroup filters at a time: one multiply-add of kMelGroup lanes per FFT bin.
    for (int g = 0, groups = static_cast<int>(mel_group_len_.size()); g < groups; ++g) {
      const float* __restrict w = mel_weights_.data() + mel_group_offset_[g];
      const float* __restrict pk = power + mel_group_first_[g];
      Float4 acc = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int j = 0, e = mel_group_len_[g]; j < e; ++j) {
        Float4 wj;
        std::memcpy(&wj, w + j * kMelGroup, sizeof wj);
        acc += wj * pk[j];
      }
      std::memcpy(energy + g * kMelGroup, &acc, sizeof acc);
    }
    float* __restrict row = out + static_cast<size_t>(f) * bins;
    for (int b = 0; b < bins; ++b) row[b] = std::max(energy[b], FLT_EPSILON);
    LogInPlace(row, bins);
  }
  return frames;
}

void Fbank::Compute(const float* wave, size_t n, std::vector<float>* out) const {
  const int frames = NumFrames(n);
  out->resize(static_cast<size_t>(frames) * num_mel_bins_);
  ComputeFrames(wave, n, frames, out->data());
}

void Fbank::ComputeNormalized(const float* wave, size_t n, int target_frames, std::vector<float>* out) const {
  target_frames = std::max(0, target_frames);
  const size_t total = static_cast<size_t>(target_frames) * num_mel_bins_;
  out->resize(total);
  const int frames = ComputeFrames(wave, n, target_frames, out->data());
  std::fill(out->begin() + static_cast<size_t>(frames) * num_mel_bins_, out->end(), 0.0f);
  const float denom = 2.0f * kFbankStd;
  for (float& v : *out) v = (v - kFbankMean) / denom;
}

}  // namespace flap::worker
