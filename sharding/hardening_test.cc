// Regression tests of the audio decoder's hardening, on crafted WAV bytes: sample rates far from
// real audio are refused before resampling (1 Hz to 16 kHz would allocate 16,000 times the
// clip), and a WAV cut short is reported as truncated instead of decoding as a shorter clip.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sharding/audio.h"
#include "common/testing/testing.h"

namespace flap::sharding {
namespace {

void Put16(std::string* s, uint16_t v) {
  s->push_back(static_cast<char>(v & 0xff));
  s->push_back(static_cast<char>(v >> 8));
}
void Put32(std::string* s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// A 16-bit PCM mono WAV declaring `rate` and a data chunk of `declared_bytes`, holding `frames`
// frames of a small square wave.
std::string Wav(uint32_t rate, uint32_t frames, uint32_t declared_bytes) {
  std::string s = "RIFF";
  Put32(&s, 36 + declared_bytes);
  s += "WAVEfmt ";
  Put32(&s, 16);
  Put16(&s, 1);  // PCM
  Put16(&s, 1);  // mono
  Put32(&s, rate);
  Put32(&s, rate * 2);  // bytes per second
  Put16(&s, 2);         // block align
  Put16(&s, 16);        // bits
  s += "data";
  Put32(&s, declared_bytes);
  for (uint32_t i = 0; i < frames; ++i) Put16(&s, static_cast<uint16_t>((i / 8) % 2 ? 3000 : -3000));
  return s;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(HardeningAudio, WellFormedCraftedWavDecodes) {
  const std::string wav = Wav(16000, 1600, 3200);
  auto a = DecodeAudio(wav.data(), wav.size(), "ok.wav");
  ASSERT_OK(a);
  EXPECT_EQ(a->size(), 1600u);
  const std::string wav8k = Wav(8000, 800, 1600);
  auto b = DecodeAudio(wav8k.data(), wav8k.size(), "ok8k.wav");
  ASSERT_OK(b);
  EXPECT_EQ(b->size(), 1600u);
}

TEST(HardeningAudio, SampleRatesOutsideRealAudioAreRefusedBeforeResampling) {
  for (uint32_t rate : {1u, 100u, 999u, 384001u, 1000000u}) {
    const std::string wav = Wav(rate, 2000, 4000);
    auto a = DecodeAudio(wav.data(), wav.size(), "odd.wav");
    ASSERT_FALSE(a.ok()) << rate << " Hz accepted (" << a->size() << " samples)";
    EXPECT_EQ(a.status().code(), Status::Code::kCorruption);
    EXPECT_TRUE(Contains(a.status().message(), "sample rate " + std::to_string(rate) + " Hz")) << a.status().message();
  }
  for (uint32_t rate : {1000u, 384000u}) {
    const std::string wav = Wav(rate, 4000, 8000);
    EXPECT_OK(DecodeAudio(wav.data(), wav.size(), "edge.wav")) << rate;
  }
}

TEST(HardeningAudio, TruncatedWavIsRefusedAsTruncated) {
  // The data chunk declares 16000 frames; the file holds 6000.
  const std::string wav = Wav(16000, 6000, 32000);
  auto a = DecodeAudio(wav.data(), wav.size(), "cut.wav");
  ASSERT_FALSE(a.ok()) << "a truncated WAV decoded to " << a->size() << " samples";
  EXPECT_EQ(a.status().code(), Status::Code::kCorruption);
  EXPECT_TRUE(Contains(a.status().message(), "truncated")) << a.status().message();
  // Ingestion counts it as truncated (it looks for "decoding failed", as for a truncated FLAC).
  EXPECT_TRUE(Contains(a.status().message(), "decoding failed")) << a.status().message();
  // A streamed WAV whose header says "unknown length" is not truncated.
  const std::string streamed = Wav(16000, 6000, 0xFFFFFFFFu);
  EXPECT_OK(DecodeAudio(streamed.data(), streamed.size(), "streamed.wav"));
}

TEST(HardeningAudio, AudioLongerThanTheLimitIsRefused) {
  // An hour and a bit at 1 kHz: 3.7 M frames (7.4 MB).
  const uint32_t frames = static_cast<uint32_t>(kMaxDecodeSeconds * 1000) + 100000;
  const std::string wav = Wav(1000, frames, frames * 2);
  auto a = DecodeAudio(wav.data(), wav.size(), "long.wav");
  ASSERT_FALSE(a.ok());
  EXPECT_TRUE(Contains(a.status().message(), "3600 s")) << a.status().message();
}

}  // namespace
}  // namespace flap::sharding
