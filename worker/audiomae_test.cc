// The audio encoder as AudioMAE pre-trained it: its position layout (frequency in the first half
// of the channels) against AudioMAE's published formula, a warm-started encoder's forward
// against an AudioMAE encoder written independently in PyTorch (tests/audiomae_reference.py),
// and 1-D masking dropping whole time columns under both layouts.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>
#include <sstream>
#include <string>

#include "tests/test_util.h"
#include "worker/core/masking.h"
#include "worker/core/model.h"
#include "worker/safetensors.h"
#include "worker/warm_start.h"

namespace flap::worker {
namespace {

// The reference's model: 64 frames x 32 mel bins (a 4 x 2 patch grid), width 32, 2 blocks of
// 2 heads, MLP ratio 4.
core::ModelConfig ReferenceShape(const std::string& layout) {
  core::ModelConfig c = core::ModelConfig::Small(64, 32, 32, 2, 2, 64);
  c.mlp_ratio = 4;
  c.audio_pos_layout = layout;
  return c;
}

class AudioMaeReference : public ::testing::Test {
 protected:
  void SetUp() override {
    if (flap::testing::RunCommand("/usr/bin/python3 -c 'import numpy, torch'").exit_code != 0) {
      GTEST_SKIP() << "/usr/bin/python3 with numpy and torch (python3-torch) is needed for the AudioMAE reference";
    }
    auto r = flap::testing::RunCommand("/usr/bin/python3 " FLAP_SOURCE_DIR "/tests/audiomae_reference.py '" +
                                       dir_.path() + "'");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto io = ReadSafetensors(dir_ / "io.safetensors");
    ASSERT_OK(io);
    io_ = *io;
  }
  flap::testing::TempDir dir_{"audiomae"};
  std::map<std::string, at::Tensor> io_;
};

TEST_F(AudioMaeReference, PositionsFollowAudioMaesFormulaAndItsFileSelectsThem) {
  // AudioMAE's table (without its class row) is the audiomae layout, and not the flap one.
  EXPECT_TRUE(torch::allclose(core::SinCos2d(32, 4, 2, /*freq_first=*/true), io_["pos"], 0, 1e-6));
  EXPECT_FALSE(torch::allclose(core::SinCos2d(32, 4, 2, /*freq_first=*/false), io_["pos"], 0, 1e-3));
  // "auto" picks the layout from the warm-start file: AudioMAE's names select audiomae.
  auto layout = ResolveAudioPosLayout("auto", dir_ / "audiomae.safetensors");
  ASSERT_OK(layout);
  EXPECT_EQ(*layout, "audiomae");
  EXPECT_EQ(*ResolveAudioPosLayout("auto", ""), "flap");
  EXPECT_EQ(*ResolveAudioPosLayout("flap", dir_ / "audiomae.safetensors"), "flap");
  EXPECT_EQ(ResolveAudioPosLayout("auto", dir_ / "missing.safetensors").status().code(), Status::Code::kNotFound);
}

TEST_F(AudioMaeReference, AWarmStartedEncoderComputesAudioMaesForward) {
  auto encode = [&](const std::string& layout) {
    core::FlapModel model(ReferenceShape(layout));
    std::ostringstream log;
    EXPECT_OK(WarmStart(model, dir_ / "audiomae.safetensors", "", log));
    model->eval();
    torch::NoGradGuard no_grad;
    return model->EncodeAudio(io_["spec"]).pooled;
  };
  const at::Tensor pooled = encode(*ResolveAudioPosLayout("auto", dir_ / "audiomae.safetensors"));
  EXPECT_TRUE(torch::allclose(pooled, io_["pooled"], 0, 1e-5))
      << "max difference " << (pooled - io_["pooled"]).abs().max().item<double>();
  // Under the other layout the same weights compute something else: the check sees the layout.
  const at::Tensor wrong = encode("flap");
  EXPECT_GT((wrong - io_["pooled"]).abs().max().item<double>(), 1e-3);
}

TEST(AudioPosLayout, OneDimensionalMaskingDropsWholeTimeColumnsUnderBothLayouts) {
  const core::MaskGeometry g{/*freq_patches=*/2, /*time_patches=*/8};
  core::MaskConfig mask;
  mask.ratio = 0.5;
  mask.strategy = core::MaskStrategy::k1d;
  for (const char* layout : {"flap", "audiomae"}) {
    core::ModelConfig c = core::ModelConfig::Small(128, 32, 16, 1, 2, 16);
    c.audio_pos_layout = layout;
    core::FlapModel model(c);
    at::Tensor pos;
    for (const auto& b : model->named_buffers()) {
      if (b.key() == "audio_pos") pos = b.value();
    }
    ASSERT_TRUE(pos.defined());
    const bool freq_first = std::string(layout) == "audiomae";
    const at::Tensor time_half = freq_first ? pos.narrow(1, 8, 8) : pos.narrow(1, 0, 8);
    for (uint64_t seed = 1; seed <= 5; ++seed) {
      const std::vector<int64_t> keep = core::KeepIndices(mask, g, seed, "clip", 0);
      ASSERT_EQ(keep.size(), 8u) << layout;  // 4 of 8 columns, 2 patches each
      std::set<int64_t> kept(keep.begin(), keep.end()), columns;
      for (int64_t i : keep) columns.insert(i / g.freq_patches);
      for (int64_t w : columns) {
        for (int64_t f = 0; f < g.freq_patches; ++f) {
          EXPECT_TRUE(kept.count(w * g.freq_patches + f)) << layout << ": column " << w << " kept in part";
        }
        // The kept tokens of a column carry that column's time code, whatever their frequency.
        EXPECT_TRUE(torch::equal(time_half[w * g.freq_patches], time_half[w * g.freq_patches + 1])) << layout;
      }
      EXPECT_EQ(columns.size(), 4u);
    }
    // Different columns have different time codes.
    EXPECT_FALSE(torch::equal(time_half[0], time_half[g.freq_patches])) << layout;
  }
}

}  // namespace
}  // namespace flap::worker
