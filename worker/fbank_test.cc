// Tests of the Kaldi-compatible fbank against torchaudio reference output
// (tests/fixtures/fbank_*.bin, written by tests/fixtures/make_fbank_fixture.py) and of its
// contract (frame counts, padding/cropping, normalisation, floors, thread-safety).
#include "worker/fbank.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace flap::worker {
namespace {

#ifndef FLAP_FIXTURE_DIR
#error "FLAP_FIXTURE_DIR must name tests/fixtures"
#endif

constexpr double kPi = 3.14159265358979323846;

// Allowed max abs difference to torchaudio in the log domain (natural log of mel energy).
// Both sides run in float32, so a bin's error grows as it sits further below the frame's
// loudest bin (FFT rounding is relative to the frame's peak; torchaudio's per-frame mean is
// summed in float32). Hence two tiers:
//  - bins within 60 dB of their frame's peak mel bin: 5e-4 (observed <= 1.2e-4);
//  - every bin, including those ~100 dB down in rounding noise: 1e-2 (observed <= 3.8e-3;
//    there torchaudio's float32 output is itself 3.3e-3 away from its float64 output).
constexpr float kTorchToleranceLoud = 5e-4f;
constexpr float kTorchToleranceAll = 1e-2f;
constexpr float kLoudRangeLog = 6.0f * 2.302585093f;  // 60 dB in natural-log power

struct Fixture {
  std::vector<float> wave;
  int frames = 0;
  int bins = 0;
  std::vector<float> fbank;  // frames x bins
};

uint32_t ReadU32(const unsigned char* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

std::vector<float> ReadFloats(const unsigned char* p, size_t count) {
  std::vector<float> v(count);
  for (size_t i = 0; i < count; ++i) {
    const uint32_t bits = ReadU32(p + 4 * i);
    std::memcpy(&v[i], &bits, sizeof(float));
  }
  return v;
}

// Reads the format documented in make_fbank_fixture.py.
Fixture LoadFixture(const std::string& name) {
  const std::string path = std::string(FLAP_FIXTURE_DIR) + "/fbank_" + name + ".bin";
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < 16 || std::memcmp(bytes.data(), "FBK1", 4) != 0) {
    throw std::runtime_error(path + ": bad header");
  }
  const size_t samples = ReadU32(&bytes[4]);
  Fixture f;
  f.frames = static_cast<int>(ReadU32(&bytes[8]));
  f.bins = static_cast<int>(ReadU32(&bytes[12]));
  const size_t values = static_cast<size_t>(f.frames) * f.bins;
  if (bytes.size() != 16 + 4 * (samples + values)) {
    throw std::runtime_error(path + ": size does not match header");
  }
  f.wave = ReadFloats(&bytes[16], samples);
  f.fbank = ReadFloats(&bytes[16 + 4 * samples], values);
  return f;
}

struct Diff {
  float loud = 0.0f;  // max abs diff over bins within 60 dB of their frame's peak
  float all = 0.0f;   // max abs diff over all bins
};

// Computes the fixture's fbank and returns its max abs differences to torchaudio's.
Diff DiffAgainstTorchaudio(const std::string& name) {
  const Fixture fx = LoadFixture(name);
  Fbank fbank;
  EXPECT_EQ(fx.bins, fbank.num_mel_bins());
  EXPECT_EQ(fx.frames, fbank.NumFrames(fx.wave.size()));
  std::vector<float> out;
  fbank.Compute(fx.wave.data(), fx.wave.size(), &out);
  EXPECT_EQ(out.size(), fx.fbank.size());
  Diff diff;
  if (out.size() != fx.fbank.size()) return {INFINITY, INFINITY};
  for (int f = 0; f < fx.frames; ++f) {
    const float* ref = fx.fbank.data() + static_cast<size_t>(f) * fx.bins;
    const float* got = out.data() + static_cast<size_t>(f) * fx.bins;
    const float peak = *std::max_element(ref, ref + fx.bins);
    for (int b = 0; b < fx.bins; ++b) {
      EXPECT_TRUE(std::isfinite(got[b])) << "frame " << f << " bin " << b;
      const float d = std::abs(got[b] - ref[b]);
      diff.all = std::max(diff.all, d);
      if (ref[b] >= peak - kLoudRangeLog) diff.loud = std::max(diff.loud, d);
    }
  }
  std::printf(
      "fbank_%s: %d x %d, max abs diff vs torchaudio: %.3g within 60 dB of the frame "
      "peak, %.3g over all bins\n",
      name.c_str(), fx.frames, fx.bins, diff.loud, diff.all);
  return diff;
}

std::vector<float> Tone(double hz, double seconds, double amplitude, int sample_rate = 16000) {
  std::vector<float> w(static_cast<size_t>(seconds * sample_rate));
  for (size_t i = 0; i < w.size(); ++i) {
    w[i] = static_cast<float>(amplitude * std::sin(2.0 * kPi * hz * i / sample_rate));
  }
  return w;
}

double Mel(double hz) { return 1127.0 * std::log(1.0 + hz / 700.0); }

// Straightforward double-precision fbank (direct DFT, per-filter loops), written from the
// formulas of torchaudio.compliance.kaldi.fbank, for option sets without a torchaudio fixture.
std::vector<double> ReferenceFbank(const FbankOptions& o, const std::vector<float>& wave) {
  const int len = static_cast<int>(o.sample_rate * o.frame_length_ms * 0.001);
  const int shift = static_cast<int>(o.sample_rate * o.frame_shift_ms * 0.001);
  int n_fft = 1;
  while (n_fft < len) n_fft *= 2;
  const int frames = wave.size() < static_cast<size_t>(len) ? 0 : 1 + static_cast<int>((wave.size() - len) / shift);
  const double nyquist = 0.5 * o.sample_rate;
  const double high = o.high_freq <= 0.0 ? o.high_freq + nyquist : o.high_freq;
  const double mel_low = Mel(o.low_freq), mel_high = Mel(high);
  const double delta = (mel_high - mel_low) / (o.num_mel_bins + 1);
  std::vector<double> out;
  std::vector<double> x(n_fft), power(n_fft / 2);
  for (int f = 0; f < frames; ++f) {
    const float* p = wave.data() + static_cast<size_t>(f) * shift;
    double mean = 0.0;
    if (o.remove_dc_offset) {
      for (int j = 0; j < len; ++j) mean += p[j];
      mean /= len;
    }
    std::fill(x.begin(), x.end(), 0.0);
    for (int j = 0; j < len; ++j) {
      const double d = p[j] - mean, prev = (j == 0 ? p[0] : p[j - 1]) - mean;
      const double hann = 0.5 - 0.5 * std::cos(2.0 * kPi * j / (len - 1));
      x[j] = (d - o.preemphasis * prev) * hann;
    }
    for (int k = 0; k < n_fft / 2; ++k) {
      double re = 0.0, im = 0.0;
      for (int j = 0; j < len; ++j) {
        const double a = -2.0 * kPi * static_cast<double>(j) * k / n_fft;
        re += x[j] * std::cos(a);
        im += x[j] * std::sin(a);
      }
      power[k] = re * re + im * im;
    }
    for (int b = 0; b < o.num_mel_bins; ++b) {
      const double left = mel_low + b * delta, center = left + delta, right = center + delta;
      double e = 0.0;
      for (int k = 0; k < n_fft / 2; ++k) {
        const double mel = Mel(static_cast<double>(o.sample_rate) / n_fft * k);
        const double w = std::max(0.0, std::min((mel - left) / (center - left), (right - mel) / (right - center)));
        e += w * power[k];
      }
      out.push_back(std::log(std::max(e, static_cast<double>(FLT_EPSILON))));
    }
  }
  return out;
}

// A broadband test signal: two tones, a chirp and hash noise, with a DC offset.
std::vector<float> MixedSignal(int sample_rate, double seconds) {
  std::vector<float> w(static_cast<size_t>(seconds * sample_rate));
  uint32_t h = 12345;
  for (size_t i = 0; i < w.size(); ++i) {
    const double t = static_cast<double>(i) / sample_rate;
    h = h * 1664525u + 1013904223u;
    const double noise = (h >> 8) / 8388608.0 - 1.0;
    w[i] = static_cast<float>(0.05 + 0.3 * std::sin(2 * kPi * 440.0 * t) +
                              0.1 * std::sin(2 * kPi * (200.0 * t + 1500.0 * t * t)) + 0.01 * noise);
  }
  return w;
}

TEST(FbankTorchaudio, MatchesTonesAndChirp) {
  const Diff diff = DiffAgainstTorchaudio("tones_chirp");
  EXPECT_LT(diff.loud, kTorchToleranceLoud);
  EXPECT_LT(diff.all, kTorchToleranceAll);
}

TEST(FbankTorchaudio, MatchesLowAmplitudeNoise) {
  const Diff diff = DiffAgainstTorchaudio("low_noise");
  EXPECT_LT(diff.loud, kTorchToleranceLoud);
  EXPECT_LT(diff.all, kTorchToleranceAll);
}

TEST(FbankTorchaudio, MatchesSignalWithDcOffset) {
  const Diff diff = DiffAgainstTorchaudio("dc_offset");
  EXPECT_LT(diff.loud, kTorchToleranceLoud);
  EXPECT_LT(diff.all, kTorchToleranceAll);
}

TEST(FbankReference, MatchesDirectDftForSeveralOptionSets) {
  std::vector<FbankOptions> sets(5);
  // [0]: defaults. [1]: no preemphasis, no DC removal, 23 bins (a partial filter group).
  sets[1].preemphasis = 0.0;
  sets[1].remove_dc_offset = false;
  sets[1].num_mel_bins = 23;
  sets[1].low_freq = 64.0;
  sets[1].high_freq = -400.0;
  // [2]: 8 kHz, 32 ms = 256 samples (no zero padding), 40 bins.
  sets[2].sample_rate = 8000;
  sets[2].frame_length_ms = 32.0;
  sets[2].frame_shift_ms = 16.0;
  sets[2].num_mel_bins = 40;
  // [3]: 22.05 kHz, 25 ms = 551 samples -> 1024-point FFT, 80 bins up to 8 kHz, preemph 1.
  sets[3].sample_rate = 22050;
  sets[3].num_mel_bins = 80;
  sets[3].high_freq = 8000.0;
  sets[3].preemphasis = 1.0;
  // [4]: the smallest FFT: 8-sample window (8 points), 4 bins.
  sets[4].frame_length_ms = 0.5;
  sets[4].frame_shift_ms = 0.25;
  sets[4].num_mel_bins = 4;
  for (size_t s = 0; s < sets.size(); ++s) {
    const FbankOptions& o = sets[s];
    const std::vector<float> wave = MixedSignal(o.sample_rate, 0.2);
    const Fbank fbank(o);
    std::vector<float> got;
    fbank.Compute(wave.data(), wave.size(), &got);
    const std::vector<double> want = ReferenceFbank(o, wave);
    ASSERT_EQ(got.size(), want.size()) << "option set " << s;
    ASSERT_GT(got.size(), 0u);
    const int bins = o.num_mel_bins;
    double max_diff = 0.0;
    for (size_t f = 0; f < want.size() / bins; ++f) {
      const double peak = *std::max_element(want.begin() + f * bins, want.begin() + (f + 1) * bins);
      for (int b = 0; b < bins; ++b) {
        const double w = want[f * bins + b];
        const double d = std::abs(got[f * bins + b] - w);
        // The mel filters follow torchaudio's float32 arithmetic, not this double reference:
        // weights differ by up to ~1e-5, so allow 5e-4 within 60 dB of the frame's peak.
        if (w >= peak - kLoudRangeLog) {
          EXPECT_LT(d, 5e-4) << "option set " << s << " frame " << f << " bin " << b;
          max_diff = std::max(max_diff, d);
        }
      }
    }
    std::printf("option set %zu: max abs diff vs double reference %.3g\n", s, max_diff);
  }
}

TEST(FbankGeometry, DefaultWindowShiftAndFftSize) {
  Fbank fbank;
  EXPECT_EQ(fbank.window_size(), 400);
  EXPECT_EQ(fbank.window_shift(), 160);
  EXPECT_EQ(fbank.fft_size(), 512);
  EXPECT_EQ(fbank.num_mel_bins(), 128);
}

TEST(FbankGeometry, NumFramesEdgeCases) {
  Fbank fbank;
  EXPECT_EQ(fbank.NumFrames(0), 0);
  EXPECT_EQ(fbank.NumFrames(399), 0);
  EXPECT_EQ(fbank.NumFrames(400), 1);
  EXPECT_EQ(fbank.NumFrames(559), 1);
  EXPECT_EQ(fbank.NumFrames(560), 2);
  EXPECT_EQ(fbank.NumFrames(16000), 98);
  EXPECT_EQ(fbank.NumFrames(40960), 254);    // 2.56 s
  EXPECT_EQ(fbank.NumFrames(163840), 1022);  // 10.24 s
}

TEST(FbankGeometry, ShortInputGivesNoFrames) {
  Fbank fbank;
  std::vector<float> wave(399, 0.1f);
  std::vector<float> out(7, 1.0f);
  fbank.Compute(wave.data(), wave.size(), &out);
  EXPECT_TRUE(out.empty());
  fbank.Compute(nullptr, 0, &out);
  EXPECT_TRUE(out.empty());
}

TEST(FbankNormalized, PadsWithNormalisedZeros) {
  const Fixture fx = LoadFixture("low_noise");  // 35 frames
  Fbank fbank;
  std::vector<float> raw, norm;
  fbank.Compute(fx.wave.data(), fx.wave.size(), &raw);
  const int frames = fbank.NumFrames(fx.wave.size());
  ASSERT_EQ(frames, 35);
  const int target = 64;
  fbank.ComputeNormalized(fx.wave.data(), fx.wave.size(), target, &norm);
  ASSERT_EQ(norm.size(), static_cast<size_t>(target) * 128);
  const float pad = (0.0f + 4.2677f) / (2.0f * 4.5690f);
  for (size_t i = 0; i < norm.size(); ++i) {
    if (i < raw.size()) {
      ASSERT_FLOAT_EQ(norm[i], (raw[i] + 4.2677f) / (2.0f * 4.5690f)) << "index " << i;
    } else {
      ASSERT_FLOAT_EQ(norm[i], pad) << "index " << i;
    }
  }
}

TEST(FbankNormalized, CropsToTargetFrames) {
  const Fixture fx = LoadFixture("tones_chirp");  // 98 frames
  Fbank fbank;
  std::vector<float> raw, norm;
  fbank.Compute(fx.wave.data(), fx.wave.size(), &raw);
  fbank.ComputeNormalized(fx.wave.data(), fx.wave.size(), 10, &norm);
  ASSERT_EQ(norm.size(), 10u * 128);
  for (size_t i = 0; i < norm.size(); ++i) {
    ASSERT_FLOAT_EQ(norm[i], (raw[i] - kFbankMean) / (2.0f * kFbankStd)) << "index " << i;
  }
  fbank.ComputeNormalized(fx.wave.data(), fx.wave.size(), 0, &norm);
  EXPECT_TRUE(norm.empty());
}

TEST(FbankNormalized, ShortInputIsAllPadding) {
  Fbank fbank;
  std::vector<float> wave(100, 0.5f), norm;
  fbank.ComputeNormalized(wave.data(), wave.size(), 16, &norm);
  ASSERT_EQ(norm.size(), 16u * 128);
  for (float v : norm) ASSERT_FLOAT_EQ(v, 4.2677f / 9.138f);
}

TEST(FbankSpectrum, PureToneEnergyPeaksInItsMelBin) {
  Fbank fbank;
  const double mel_low = Mel(20.0), mel_high = Mel(8000.0);
  const double delta = (mel_high - mel_low) / 129.0;
  for (double hz : {250.0, 1000.0, 2500.0, 5000.0, 7000.0}) {
    // The filter whose triangle weighs the tone's frequency most: centre mel closest to it.
    const int expected = static_cast<int>(std::lround((Mel(hz) - mel_low) / delta - 1.0));
    const std::vector<float> wave = Tone(hz, 0.5, 0.5);
    std::vector<float> out;
    fbank.Compute(wave.data(), wave.size(), &out);
    const int frames = fbank.NumFrames(wave.size());
    for (int f = 0; f < frames; ++f) {
      const float* row = out.data() + static_cast<size_t>(f) * 128;
      const int peak = static_cast<int>(std::max_element(row, row + 128) - row);
      EXPECT_LE(std::abs(peak - expected), 1) << hz << " Hz, frame " << f;
      // Far from the tone the energy is orders of magnitude lower (Hann side lobes).
      for (int b = 0; b < 128; ++b) {
        if (std::abs(b - expected) > 12) {
          EXPECT_LT(row[b], row[peak] - 5.0f) << hz << " Hz, frame " << f << ", bin " << b;
        }
      }
    }
  }
}

TEST(FbankSpectrum, LouderToneRaisesLogEnergyBy2LnGain) {
  Fbank fbank;
  const std::vector<float> quiet = Tone(1000.0, 0.1, 0.01), loud = Tone(1000.0, 0.1, 0.1);
  std::vector<float> a, b;
  fbank.Compute(quiet.data(), quiet.size(), &a);
  fbank.Compute(loud.data(), loud.size(), &b);
  ASSERT_EQ(a.size(), b.size());
  const int expected =
      static_cast<int>(std::lround((Mel(1000.0) - Mel(20.0)) / ((Mel(8000.0) - Mel(20.0)) / 129.0) - 1.0));
  // Power scales with the gain squared: +2 ln(10) in every bin well above the floor.
  EXPECT_NEAR(b[expected] - a[expected], 2.0 * std::log(10.0), 1e-3);
}

TEST(FbankSpectrum, SilenceGivesTheLogFloor) {
  Fbank fbank;
  const float floor = std::log(FLT_EPSILON);
  std::vector<float> zeros(16000, 0.0f), out;
  fbank.Compute(zeros.data(), zeros.size(), &out);
  ASSERT_EQ(out.size(), 98u * 128);
  for (float v : out) {
    ASSERT_TRUE(std::isfinite(v));
    ASSERT_EQ(v, floor);
  }
  // A constant signal is silence once each frame's DC offset is removed.
  std::vector<float> dc(16000, 0.25f);
  fbank.Compute(dc.data(), dc.size(), &out);
  for (float v : out) ASSERT_EQ(v, floor);
}

TEST(FbankSpectrum, EmptyLowFilterSitsAtTheFloor) {
  // With a 512-point FFT at 16 kHz, filter 3 (about 63-94 Hz) contains no FFT bin centre,
  // exactly as in torchaudio: it is always log(FLT_EPSILON).
  const Fixture fx = LoadFixture("tones_chirp");
  Fbank fbank;
  std::vector<float> out;
  fbank.Compute(fx.wave.data(), fx.wave.size(), &out);
  for (int f = 0; f < fx.frames; ++f) {
    EXPECT_EQ(out[static_cast<size_t>(f) * 128 + 3], std::log(FLT_EPSILON));
    EXPECT_EQ(fx.fbank[static_cast<size_t>(f) * 128 + 3], std::log(FLT_EPSILON));
  }
}

TEST(FbankOptions, ValidateRejectsBadOptions) {
  EXPECT_TRUE(Fbank::Validate(FbankOptions{}).ok());
  auto bad = [](auto mutate) {
    FbankOptions o;
    mutate(o);
    return Fbank::Validate(o);
  };
  EXPECT_FALSE(bad([](FbankOptions& o) { o.sample_rate = 0; }).ok());
  EXPECT_FALSE(bad([](FbankOptions& o) { o.frame_length_ms = 0.05; }).ok());
  EXPECT_FALSE(bad([](FbankOptions& o) { o.frame_length_ms = 0.25; }).ok());  // 4 samples
  EXPECT_TRUE(bad([](FbankOptions& o) { o.frame_length_ms = 0.375; }).ok());  // 6 samples
  EXPECT_FALSE(bad([](FbankOptions& o) { o.frame_shift_ms = 0.0; }).ok());
  EXPECT_FALSE(bad([](FbankOptions& o) { o.num_mel_bins = 3; }).ok());
  EXPECT_FALSE(bad([](FbankOptions& o) { o.low_freq = 8000.0; }).ok());
  EXPECT_FALSE(bad([](FbankOptions& o) { o.high_freq = 9000.0; }).ok());
  EXPECT_FALSE(bad([](FbankOptions& o) { o.high_freq = -8000.0; }).ok());
  EXPECT_FALSE(bad([](FbankOptions& o) { o.preemphasis = 1.5; }).ok());
  EXPECT_EQ(bad([](FbankOptions& o) { o.num_mel_bins = 2; }).code(), Status::Code::kInvalidArgument);
  FbankOptions o;
  o.num_mel_bins = 2;
  EXPECT_THROW(Fbank{o}, std::invalid_argument);
}

TEST(FbankOptions, OtherGeometriesWork) {
  // 8 kHz, 32 ms window (256 samples, already a power of two), 64 bins, 100-3800 Hz.
  FbankOptions o;
  o.sample_rate = 8000;
  o.frame_length_ms = 32.0;
  o.frame_shift_ms = 16.0;
  o.num_mel_bins = 64;
  o.low_freq = 100.0;
  o.high_freq = -200.0;
  Fbank fbank(o);
  EXPECT_EQ(fbank.window_size(), 256);
  EXPECT_EQ(fbank.window_shift(), 128);
  EXPECT_EQ(fbank.fft_size(), 256);
  const std::vector<float> wave = Tone(1000.0, 0.5, 0.5, 8000);
  std::vector<float> out;
  fbank.Compute(wave.data(), wave.size(), &out);
  ASSERT_EQ(out.size(), static_cast<size_t>(fbank.NumFrames(wave.size())) * 64);
  const double delta = (Mel(3800.0) - Mel(100.0)) / 65.0;
  const int expected = static_cast<int>(std::lround((Mel(1000.0) - Mel(100.0)) / delta - 1.0));
  const int peak = static_cast<int>(std::max_element(out.begin(), out.begin() + 64) - out.begin());
  EXPECT_LE(std::abs(peak - expected), 1);
}

TEST(FbankThreads, ConcurrentComputeMatchesSerial) {
  const Fixture fx = LoadFixture("tones_chirp");
  const Fbank fbank;
  std::vector<float> serial;
  fbank.Compute(fx.wave.data(), fx.wave.size(), &serial);
  std::vector<std::vector<float>> results(4);
  std::vector<std::thread> threads;
  for (auto& r : results) {
    threads.emplace_back([&fbank, &fx, &r] {
      for (int i = 0; i < 20; ++i) fbank.Compute(fx.wave.data(), fx.wave.size(), &r);
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& r : results) EXPECT_EQ(r, serial);
}

}  // namespace
}  // namespace flap::worker
