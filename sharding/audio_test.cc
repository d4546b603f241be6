// Tests for sharding/audio.h: codec round trips, downmixing, resampling, bad input.
#include "sharding/audio.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "sharding/testing/test_util.h"
#include "common/testing/testing.h"

namespace flap::sharding {
namespace {

constexpr double kPi = 3.14159265358979323846;

std::vector<float> Sine(double freq, int rate, double seconds, double amp) {
  std::vector<float> x(static_cast<size_t>(std::lround(seconds * rate)));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(amp * std::sin(2 * kPi * freq * i / rate));
  return x;
}

// A 16-bit PCM WAV built by hand, so tests can make files the encoder never writes (stereo,
// other rates).
std::string MakeWav(int channels, int rate, const std::vector<int16_t>& interleaved) {
  auto u32 = [](uint32_t v) { return std::string{char(v), char(v >> 8), char(v >> 16), char(v >> 24)}; };
  auto u16 = [](uint16_t v) { return std::string{char(v), char(v >> 8)}; };
  const uint32_t data_bytes = static_cast<uint32_t>(interleaved.size() * 2);
  std::string wav = "RIFF" + u32(36 + data_bytes) + "WAVE" + "fmt " + u32(16) + u16(1) +
                    u16(static_cast<uint16_t>(channels)) + u32(static_cast<uint32_t>(rate)) +
                    u32(static_cast<uint32_t>(rate * channels * 2)) + u16(static_cast<uint16_t>(channels * 2)) +
                    u16(16) + "data" + u32(data_bytes);
  for (int16_t s : interleaved) wav += u16(static_cast<uint16_t>(s));
  return wav;
}

int ZeroCrossings(const std::vector<float>& x) {
  int n = 0;
  for (size_t i = 1; i < x.size(); ++i) n += (x[i - 1] < 0) != (x[i] < 0);
  return n;
}

void ExpectRoundTrip(AudioFormat format) {
  std::vector<float> in = Sine(440.0, kSampleRate, 1.0, 0.5);
  in[100] = 1.0f;  // the extremes survive (clamped to 16 bits)
  in[101] = -1.0f;
  StatusOr<std::string> bytes = EncodeAudio(in, kSampleRate, format);
  ASSERT_OK(bytes);
  StatusOr<std::vector<float>> out = DecodeAudio(bytes->data(), bytes->size(), "round trip");
  ASSERT_OK(out);
  ASSERT_EQ(out->size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    ASSERT_NEAR((*out)[i], in[i], 1.5 / 32768.0) << "sample " << i;
  }
}

TEST(Audio, WavRoundTripWithin16BitPrecision) { ExpectRoundTrip(AudioFormat::kWav); }

TEST(Audio, FlacRoundTripWithin16BitPrecision) { ExpectRoundTrip(AudioFormat::kFlac); }

TEST(Audio, FlacIsSmallerThanWavAndStartsWithMagic) {
  std::vector<float> in = Sine(300.0, kSampleRate, 1.0, 0.3);
  auto flac = EncodeAudio(in, kSampleRate, AudioFormat::kFlac);
  auto wav = EncodeAudio(in, kSampleRate, AudioFormat::kWav);
  ASSERT_TRUE(flac.ok() && wav.ok());
  EXPECT_EQ(flac->substr(0, 4), "fLaC");
  EXPECT_EQ(wav->substr(0, 4), "RIFF");
  EXPECT_LT(flac->size(), wav->size());
}

TEST(Audio, EncodingIsDeterministic) {
  std::vector<float> in = Sine(1000.0, kSampleRate, 0.5, 0.4);
  for (AudioFormat format : {AudioFormat::kFlac, AudioFormat::kWav}) {
    auto a = EncodeAudio(in, kSampleRate, format);
    auto b = EncodeAudio(in, kSampleRate, format);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a.value(), b.value());
  }
}

TEST(Audio, EncodingClampsOutOfRangeAndNaN) {
  std::vector<float> in = {2.0f, -3.0f, std::nanf(""), 0.25f};
  auto bytes = EncodeAudio(in, kSampleRate, AudioFormat::kWav);
  ASSERT_OK(bytes);
  auto out = DecodeAudio(bytes->data(), bytes->size(), "clamp");
  ASSERT_OK(out);
  ASSERT_EQ(out->size(), 4u);
  EXPECT_NEAR((*out)[0], 1.0f, 1e-4);
  EXPECT_FLOAT_EQ((*out)[1], -1.0f);
  EXPECT_FLOAT_EQ((*out)[2], 0.0f);
  EXPECT_NEAR((*out)[3], 0.25f, 1e-4);
}

TEST(Audio, StereoIsDownmixedToTheMeanOfChannels) {
  std::vector<int16_t> interleaved;
  for (int i = 0; i < 1000; ++i) {
    interleaved.push_back(16384);  // left  +0.5
    interleaved.push_back(-3277);  // right -0.1
  }
  std::string wav = MakeWav(2, kSampleRate, interleaved);
  auto out = DecodeAudio(wav.data(), wav.size(), "stereo.wav");
  ASSERT_OK(out);
  ASSERT_EQ(out->size(), 1000u);
  for (float v : *out) ASSERT_NEAR(v, 0.2f, 1e-3);
}

TEST(Audio, DecodingResamples44kTo16kKeepingPitch) {
  const int rate = 44100;
  std::vector<float> tone = Sine(1000.0, rate, 1.0, 0.5);
  std::vector<int16_t> pcm;
  for (float v : tone) pcm.push_back(static_cast<int16_t>(std::lround(v * 32767)));
  std::string wav = MakeWav(1, rate, pcm);
  auto out = DecodeAudio(wav.data(), wav.size(), "44k.wav");
  ASSERT_OK(out);
  EXPECT_NEAR(static_cast<double>(out->size()), 16000.0, 1.0);
  // A 1 kHz tone crosses zero 2000 times a second.
  EXPECT_NEAR(ZeroCrossings(*out), 2000, 6);
}

TEST(Audio, ResampleGivesTheExactLengthAndFrequency) {
  std::vector<float> tone = Sine(440.0, 44100, 2.0, 0.5);
  std::vector<float> out = Resample(tone, 44100, 16000);
  EXPECT_EQ(out.size(), 32000u);
  EXPECT_NEAR(ZeroCrossings(out), 2 * 440 * 2, 6);
  std::vector<float> up = Resample(Sine(440.0, 8000, 1.0, 0.5), 8000, 16000);
  EXPECT_EQ(up.size(), 16000u);
  EXPECT_NEAR(ZeroCrossings(up), 880, 6);
  EXPECT_EQ(Resample(tone, 44100, 44100), tone);
  EXPECT_TRUE(Resample(tone, 0, 16000).empty());
}

TEST(Audio, UndecodableBytesAreCorruptionNamingTheSource) {
  const std::string garbage = "this is certainly not an audio file, just some text";
  auto out = DecodeAudio(garbage.data(), garbage.size(), "shard.tar: 0001.flac");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Status::Code::kCorruption);
  EXPECT_NE(out.status().message().find("shard.tar: 0001.flac"), std::string::npos);
}

TEST(Audio, EmptyInputIsCorruption) {
  auto out = DecodeAudio("", 0, "empty.wav");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Status::Code::kCorruption);
  std::string header_only = MakeWav(1, kSampleRate, {});
  out = DecodeAudio(header_only.data(), header_only.size(), "frameless.wav");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Status::Code::kCorruption);
}

TEST(Audio, TruncatedFlacHeaderIsCorruption) {
  std::vector<float> in = Sine(440.0, kSampleRate, 1.0, 0.5);
  auto bytes = EncodeAudio(in, kSampleRate, AudioFormat::kFlac);
  ASSERT_OK(bytes);
  std::string cut = bytes->substr(0, 20);  // inside the STREAMINFO block
  auto out = DecodeAudio(cut.data(), cut.size(), "cut.flac");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Status::Code::kCorruption);
}

TEST(Audio, EncodeRejectsBadArguments) {
  EXPECT_EQ(EncodeAudio({}, kSampleRate, AudioFormat::kFlac).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(EncodeAudio({0.1f}, 0, AudioFormat::kWav).status().code(), Status::Code::kInvalidArgument);
}

TEST(Audio, DecodeAudioFileReadsAndReportsMissingFiles) {
  testing::ScratchDir dir;
  auto bytes = EncodeAudio(Sine(500.0, kSampleRate, 0.25, 0.5), kSampleRate, AudioFormat::kFlac);
  ASSERT_OK(bytes);
  testing::WriteAll(dir.File("a.flac"), bytes.value());
  auto out = DecodeAudioFile(dir.File("a.flac"));
  ASSERT_OK(out);
  EXPECT_EQ(out->size(), 4000u);
  auto half_rate = DecodeAudioFile(dir.File("a.flac"), 8000);
  ASSERT_OK(half_rate);
  EXPECT_EQ(half_rate->size(), 2000u);
  auto missing = DecodeAudioFile(dir.File("missing.flac"));
  EXPECT_EQ(missing.status().code(), Status::Code::kNotFound);
}

}  // namespace
}  // namespace flap::sharding
