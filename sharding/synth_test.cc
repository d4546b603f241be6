// Tests for sharding/synth.h: purity and determinism, sample shape, and that the event types
// really differ where a log-mel model would look (frequency band, time course).
#include "sharding/synth.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "sharding/manifest.h"
#include "sharding/shard_reader.h"
#include "sharding/testing/test_util.h"
#include "sharding/tokenizer.h"
#include "common/testing/testing.h"

namespace flap::sharding {
namespace {

using testing::ScratchDir;

constexpr double kPi = 3.14159265358979323846;

// Power spectrum of x averaged over Hann-windowed frames of 2048 samples (bin = 7.8125 Hz).
std::vector<double> PowerSpectrum(const std::vector<float>& x, size_t begin, size_t end) {
  constexpr size_t kN = 2048;
  std::vector<double> power(kN / 2 + 1, 0.0);
  for (size_t start = begin; start + kN <= end; start += kN / 2) {
    std::vector<std::complex<double>> a(kN);
    for (size_t i = 0; i < kN; ++i) {
      a[i] = x[start + i] * (0.5 - 0.5 * std::cos(2 * kPi * i / (kN - 1)));
    }
    for (size_t i = 1, j = 0; i < kN; ++i) {  // iterative radix-2 FFT
      size_t bit = kN >> 1;
      for (; j & bit; bit >>= 1) j ^= bit;
      j ^= bit;
      if (i < j) std::swap(a[i], a[j]);
    }
    for (size_t len = 2; len <= kN; len <<= 1) {
      std::complex<double> w_len = std::polar(1.0, -2 * kPi / static_cast<double>(len));
      for (size_t i = 0; i < kN; i += len) {
        std::complex<double> w = 1.0;
        for (size_t k = 0; k < len / 2; ++k) {
          std::complex<double> u = a[i + k], v = a[i + k + len / 2] * w;
          a[i + k] = u + v;
          a[i + k + len / 2] = u - v;
          w *= w_len;
        }
      }
    }
    for (size_t k = 0; k < power.size(); ++k) power[k] += std::norm(a[k]);
  }
  return power;
}

double BinHz() { return static_cast<double>(kSampleRate) / 2048.0; }

// Fraction of the power between lo and hi Hz.
double BandFraction(const std::vector<double>& power, double lo, double hi) {
  double in = 0, total = 0;
  for (size_t k = 0; k < power.size(); ++k) {
    double f = k * BinHz();
    total += power[k];
    if (f >= lo && f < hi) in += power[k];
  }
  return total > 0 ? in / total : 0.0;
}

double Centroid(const std::vector<double>& power) {
  double num = 0, den = 0;
  for (size_t k = 0; k < power.size(); ++k) {
    num += k * BinHz() * power[k];
    den += power[k];
  }
  return den > 0 ? num / den : 0.0;
}

// RMS of consecutive 10 ms frames.
std::vector<double> FrameRms(const std::vector<float>& x) {
  std::vector<double> rms;
  for (size_t s = 0; s + 160 <= x.size(); s += 160) {
    double e = 0;
    for (size_t i = s; i < s + 160; ++i) e += x[i] * x[i];
    rms.push_back(std::sqrt(e / 160));
  }
  return rms;
}

std::vector<double> Spectrum(SoundEvent e) {
  std::vector<float> x = SynthesizeEvent(e, 3, 1.0);
  return PowerSpectrum(x, 0, x.size());
}

TEST(Synth, SampleIsAPureFunctionOfItsArguments) {
  Sample a = SynthesizeSample(1, "train", 5, 2.56);
  Sample b = SynthesizeSample(1, "train", 5, 2.56);
  EXPECT_EQ(a.key, "train-00000005");
  EXPECT_EQ(a.key, b.key);
  EXPECT_EQ(a.audio, b.audio);
  EXPECT_EQ(a.captions, b.captions);
  EXPECT_EQ(a.captions_augment, b.captions_augment);
  EXPECT_EQ(a.tags, b.tags);
}

TEST(Synth, SamplesDifferAcrossIndicesSplitsAndSeeds) {
  const Sample base = SynthesizeSample(1, "train", 5, 2.56);
  EXPECT_NE(SynthesizeSample(1, "train", 6, 2.56).audio, base.audio);
  EXPECT_NE(SynthesizeSample(1, "eval", 5, 2.56).audio, base.audio);
  EXPECT_NE(SynthesizeSample(2, "train", 5, 2.56).audio, base.audio);
  std::set<std::string> captions;
  for (int i = 0; i < 50; ++i) captions.insert(SynthesizeSample(1, "train", i, 1.0).captions[0]);
  EXPECT_GT(captions.size(), 40u);
}

TEST(Synth, SamplesHaveTheDocumentedShape) {
  std::set<std::string> known;
  for (int e = 0; e < kNumSoundEvents; ++e) known.insert(SoundEventTag(static_cast<SoundEvent>(e)));
  EXPECT_EQ(known.size(), static_cast<size_t>(kNumSoundEvents));
  std::set<size_t> event_counts;
  for (int i = 0; i < 60; ++i) {
    Sample s = SynthesizeSample(9, "eval", i, 2.56);
    SCOPED_TRACE(s.key);
    ASSERT_EQ(s.audio.size(), 40960u);
    for (float v : s.audio) ASSERT_LE(std::fabs(v), 1.0f);
    ASSERT_GE(s.captions.size(), 2u);
    ASSERT_LE(s.captions.size(), 3u);
    EXPECT_EQ(std::set<std::string>(s.captions.begin(), s.captions.end()).size(), s.captions.size());
    for (const std::string& c : s.captions) EXPECT_FALSE(c.empty());
    ASSERT_EQ(s.captions_augment.size(), 1u);
    EXPECT_GT(s.captions_augment[0].size(), s.captions[0].size() / 2);
    EXPECT_TRUE(std::isupper(static_cast<unsigned char>(s.captions_augment[0][0])));
    EXPECT_EQ(s.captions_augment[0].back(), '.');
    ASSERT_FALSE(s.tags.empty());
    for (const std::string& t : s.tags) EXPECT_TRUE(known.count(t)) << t;
    event_counts.insert(s.tags.size());
  }
  EXPECT_EQ(event_counts.size(), 3u);  // clips with 1, 2 and 3 distinct events occur
  EXPECT_EQ(SynthesizeSample(1, "train", 0, 1.0).audio.size(), 16000u);
}

TEST(Synth, TonesSitInTheirBands) {
  EXPECT_GT(BandFraction(Spectrum(SoundEvent::kToneLow), 180, 320), 0.95);
  EXPECT_GT(BandFraction(Spectrum(SoundEvent::kToneMid), 680, 1020), 0.95);
  EXPECT_GT(BandFraction(Spectrum(SoundEvent::kToneHigh), 2450, 4050), 0.95);
  EXPECT_GT(BandFraction(Spectrum(SoundEvent::kTremolo), 420, 630), 0.95);
  EXPECT_GT(BandFraction(Spectrum(SoundEvent::kChord), 280, 650), 0.95);
}

TEST(Synth, NoiseColoursDifferInSpectralTilt) {
  const double white = BandFraction(Spectrum(SoundEvent::kNoiseWhite), 0, 1000);
  const double pink = BandFraction(Spectrum(SoundEvent::kNoisePink), 0, 1000);
  const double brown = BandFraction(Spectrum(SoundEvent::kNoiseBrown), 0, 1000);
  EXPECT_LT(white, 0.2);  // flat: ~1/8 of the power lies below 1 kHz
  EXPECT_GT(pink, white + 0.3);
  EXPECT_GT(brown, 0.95);
  EXPECT_GT(BandFraction(Spectrum(SoundEvent::kNoiseWhite), 2000, 8000), 0.6);
}

TEST(Synth, ChirpsMoveInTheirDirection) {
  std::vector<float> up = SynthesizeEvent(SoundEvent::kChirpUp, 3, 1.0);
  std::vector<float> down = SynthesizeEvent(SoundEvent::kChirpDown, 3, 1.0);
  const size_t half = up.size() / 2;
  EXPECT_LT(Centroid(PowerSpectrum(up, 0, half)) * 2, Centroid(PowerSpectrum(up, half, up.size())));
  EXPECT_GT(Centroid(PowerSpectrum(down, 0, half)), Centroid(PowerSpectrum(down, half, down.size())) * 2);
}

TEST(Synth, ClicksAreBroadbandAndSparseInTime) {
  std::vector<float> clicks = SynthesizeEvent(SoundEvent::kClicks, 3, 1.0);
  EXPECT_GT(BandFraction(PowerSpectrum(clicks, 0, clicks.size()), 2000, 8000), 0.3);
  std::vector<double> rms = FrameRms(clicks);
  const double peak = *std::max_element(rms.begin(), rms.end());
  size_t loud_frames = std::count_if(rms.begin(), rms.end(), [&](double r) { return r > 0.2 * peak; });
  EXPECT_LT(loud_frames, rms.size() / 3);  // ~8-14 clicks of 4 ms in 100 frames
  EXPECT_GT(loud_frames, 5u);
}

TEST(Synth, TremoloPulsesAndTonesStaySteady) {
  std::vector<double> tremolo = FrameRms(SynthesizeEvent(SoundEvent::kTremolo, 3, 1.0));
  std::vector<double> tone = FrameRms(SynthesizeEvent(SoundEvent::kToneMid, 3, 1.0));
  auto spread = [](const std::vector<double>& r) {  // min/max over the middle, away from fades
    auto [lo, hi] = std::minmax_element(r.begin() + 5, r.end() - 5);
    return *lo / *hi;
  };
  EXPECT_LT(spread(tremolo), 0.3);
  EXPECT_GT(spread(tone), 0.9);
}

TEST(Synth, ClipsContainTheEventsTheirTagsName) {
  // Single-event clips: the tag's band holds most of the power of the clip.
  int checked = 0;
  for (int i = 0; i < 600 && checked < 2; ++i) {
    Sample s = SynthesizeSample(1, "train", i, 2.56);
    if (s.tags.size() != 1 || (s.tags[0] != "tone_high" && s.tags[0] != "tone_low")) continue;
    const bool high = s.tags[0] == "tone_high";
    auto power = PowerSpectrum(s.audio, 0, s.audio.size());
    EXPECT_GT(BandFraction(power, high ? 2450 : 180, high ? 4050 : 320), 0.8) << s.key;
    for (const std::string& c : s.captions) {  // and every caption says so
      const bool says = high ? (c.find("high") != std::string::npos || c.find("shrill") != std::string::npos)
                             : (c.find("low") != std::string::npos || c.find("deep") != std::string::npos);
      EXPECT_TRUE(says) << s.key << ": " << c;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 2);
}

TEST(Synth, AugmentedCaptionNamesLoudness) {
  for (int i = 0; i < 20; ++i) {
    const std::string aug = SynthesizeSample(4, "train", i, 2.56).captions_augment[0];
    const bool names_loudness = aug.find("loud") != std::string::npos || aug.find("quiet") != std::string::npos ||
                                aug.find("soft") != std::string::npos || aug.find("faint") != std::string::npos;
    EXPECT_TRUE(names_loudness) << aug;
  }
}

SynthOptions SmallOptions() {
  SynthOptions o;
  o.num_train = 24;
  o.num_val = 8;
  o.num_test = 12;
  o.clip_seconds = 1.0;
  o.samples_per_shard = 10;
  o.vocab_size = 64;
  o.name = "tiny";
  return o;
}

std::vector<std::pair<std::string, std::string>> Checksums(const std::string& dir) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    out.emplace_back(entry.path().filename().string(), FileXxh64(entry.path().string()).value());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(Synth, GenerationIsDeterministicToTheByte) {
  ScratchDir a, b, c;
  ASSERT_OK(GenerateSynthetic(SmallOptions(), a.path()));
  ASSERT_OK(GenerateSynthetic(SmallOptions(), b.path()));
  auto sums = Checksums(a.path());
  EXPECT_EQ(sums.size(), 8u);  // 3 train shards, 1 val shard, 2 test shards, tokenizer, manifest
  EXPECT_EQ(sums, Checksums(b.path()));
  SynthOptions other = SmallOptions();
  other.seed = 2;
  ASSERT_OK(GenerateSynthetic(other, c.path()));
  EXPECT_NE(sums, Checksums(c.path()));
}

TEST(Synth, GeneratedDatasetMatchesItsManifest) {
  ScratchDir dir;
  const SynthOptions options = SmallOptions();
  ASSERT_OK(GenerateSynthetic(options, dir.path()));
  auto m = ReadManifest(dir.path());
  ASSERT_OK(m);
  EXPECT_EQ(m->name, "tiny");
  EXPECT_EQ(m->Splits(), (std::vector<std::string>{"train", "val", "test"}));
  ASSERT_EQ(m->ShardsOf("train").size(), 3u);
  EXPECT_EQ(m->ShardsOf("train")[2].name, "train-000002.tar");
  EXPECT_EQ(m->ShardsOf("train")[2].num_samples, 4);
  EXPECT_EQ(m->NumSamples("train"), 24);
  EXPECT_EQ(m->NumSamples("val"), 8);
  ASSERT_EQ(m->ShardsOf("test").size(), 2u);
  EXPECT_EQ(m->ShardsOf("test")[1].name, "test-000001.tar");
  EXPECT_EQ(m->NumSamples("test"), 12);
  EXPECT_EQ(m->ShardsOf("eval").size(), 0u);
  EXPECT_EQ(m->provenance.value("num_val", 0), 8);
  EXPECT_EQ(m->provenance.value("num_test", 0), 12);
  EXPECT_EQ(m->provenance.value("seed", 0), 1);
  for (const ShardInfo& info : m->shards) EXPECT_OK(VerifyShard(dir.path(), info));

  auto samples = ReadShard(dir.File("train-000001.tar"));
  ASSERT_OK(samples);
  ASSERT_EQ(samples->size(), 10u);
  const Sample expected = SynthesizeSample(options.seed, "train", 13, options.clip_seconds);
  const Sample& got = (*samples)[3];
  EXPECT_EQ(got.key, expected.key);
  EXPECT_EQ(got.captions, expected.captions);
  EXPECT_EQ(got.captions_augment, expected.captions_augment);
  EXPECT_EQ(got.tags, expected.tags);
  ASSERT_EQ(got.audio.size(), expected.audio.size());
  for (size_t i = 0; i < got.audio.size(); ++i) ASSERT_NEAR(got.audio[i], expected.audio[i], 1e-4);

  // The three splits hold different clips (keys and audio).
  auto val = ReadShard(dir.File("val-000000.tar"));
  auto test = ReadShard(dir.File("test-000000.tar"));
  ASSERT_OK(val);
  ASSERT_OK(test);
  EXPECT_EQ((*val)[0].key, "val-00000000");
  EXPECT_EQ((*test)[0].key, "test-00000000");
  EXPECT_NE((*val)[0].audio, (*test)[0].audio);
  EXPECT_EQ((*test)[0].captions, SynthesizeSample(options.seed, "test", 0, options.clip_seconds).captions);

  auto tok = Tokenizer::Load(dir.File(m->tokenizer));
  ASSERT_OK(tok);
  for (int id : tok->Encode(expected.captions[0])) EXPECT_NE(id, Tokenizer::kUnkId);
}

TEST(Synth, AnEmptyHeldOutSplitHasNoShards) {
  ScratchDir dir;
  SynthOptions o = SmallOptions();
  o.num_test = 0;
  ASSERT_OK(GenerateSynthetic(o, dir.path()));
  auto m = ReadManifest(dir.path());
  ASSERT_OK(m);
  EXPECT_EQ(m->Splits(), (std::vector<std::string>{"train", "val"}));
  EXPECT_FALSE(std::filesystem::exists(dir.File("test-000000.tar")));
}

TEST(Synth, RejectsBadOptions) {
  ScratchDir dir;
  auto code = [&](SynthOptions o) { return GenerateSynthetic(o, dir.path()).code(); };
  SynthOptions o = SmallOptions();
  o.num_train = 0;
  EXPECT_EQ(code(o), Status::Code::kInvalidArgument);
  o = SmallOptions();
  o.num_val = -1;
  EXPECT_EQ(code(o), Status::Code::kInvalidArgument);
  o = SmallOptions();
  o.num_test = -1;
  EXPECT_EQ(code(o), Status::Code::kInvalidArgument);
  o = SmallOptions();
  o.clip_seconds = 0.1;
  EXPECT_EQ(code(o), Status::Code::kInvalidArgument);
  o = SmallOptions();
  o.samples_per_shard = 0;
  EXPECT_EQ(code(o), Status::Code::kInvalidArgument);
  o = SmallOptions();
  o.vocab_size = 2;
  EXPECT_EQ(code(o), Status::Code::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(dir.File("manifest.json")));
}

}  // namespace
}  // namespace flap::sharding
