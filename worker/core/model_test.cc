#include "worker/core/model.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/utils.h>

#include "worker/core/masking.h"
#include "worker/core/synthetic_batch.h"
#include "worker/core/train_step.h"
#include "common/testing/testing.h"

namespace flap::core {
namespace {

// The tiny preset shrunk further so that tests are quick.
ModelConfig Small() { return ModelConfig::Small(64, 32, 32, 1, 2, 50); }

TEST(Patchify, RoundTripAndLayout) {
  auto spec = at::randn({2, 64, 32});
  auto p = Patchify(spec, 16);
  ASSERT_EQ(p.sizes(), (at::IntArrayRef{2, 8, 256}));
  // Patch index w * F + f holds frames [16w, 16w+16) x bins [16f, 16f+16), time-major inside.
  const int F = 2;
  auto expect = spec[1].slice(0, 16 * 3, 16 * 4).slice(1, 16 * 1, 16 * 2).reshape({256});
  EXPECT_TRUE(at::equal(p[1][3 * F + 1], expect));
  EXPECT_TRUE(at::equal(Unpatchify(p, 16, 64, 32), spec));
}

TEST(SinCos2d, ShapeAndDistinctPositions) {
  auto pe = SinCos2d(32, 4, 2);
  ASSERT_EQ(pe.sizes(), (at::IntArrayRef{8, 32}));
  // Time channels equal for equal time, frequency channels equal for equal frequency.
  EXPECT_TRUE(at::equal(pe[0].slice(0, 0, 16), pe[1].slice(0, 0, 16)));
  EXPECT_TRUE(at::equal(pe[0].slice(0, 16, 32), pe[2].slice(0, 16, 32)));
  EXPECT_FALSE(at::equal(pe[0], pe[3]));
}

TEST(FlapModel, OutputShapesWithAndWithoutDropping) {
  torch::manual_seed(0);
  FlapModel model(Small());
  auto spec = at::randn({3, 64, 32});
  auto tokens = at::randint(1, 50, {3, 8}, at::kLong);
  auto out = model->forward(spec, at::Tensor(), tokens, true);
  EXPECT_EQ(out.audio.sizes(), (at::IntArrayRef{3, 16}));
  EXPECT_EQ(out.text.sizes(), (at::IntArrayRef{3, 16}));
  EXPECT_EQ(out.recon.sizes(), (at::IntArrayRef{3, 8, 256}));
  EXPECT_NEAR(out.audio.norm(2, 1).mean().item<double>(), 1.0, 1e-5);
  auto keep = at::tensor(std::vector<int64_t>{0, 5, 1, 2, 3, 7}, at::kLong).reshape({3, 2});
  auto dropped = model->forward(spec, keep, tokens, false);
  EXPECT_EQ(dropped.audio.sizes(), (at::IntArrayRef{3, 16}));
  EXPECT_FALSE(dropped.recon.defined());
  EXPECT_FALSE(at::allclose(dropped.audio, out.audio));
}

TEST(FlapModel, KeepingEveryPatchEqualsNoDropping) {
  torch::manual_seed(0);
  FlapModel model(Small());
  auto spec = at::randn({2, 64, 32});
  auto all = at::arange(8, at::kLong).unsqueeze(0).expand({2, 8}).contiguous();
  EXPECT_TRUE(at::allclose(model->EncodeAudio(spec, all).embedding, model->EncodeAudio(spec).embedding, 1e-5, 1e-6));
}

TEST(FlapModel, KeptTokensAreTheirPatchesEmbeddedPlusTheirPositions) {
  // Without encoder blocks the pooled output is the mean of the normalised kept tokens, so it
  // can be checked against embedding every patch, adding every position and dropping after.
  torch::manual_seed(0);
  ModelConfig c = Small();
  c.audio_depth = 0;
  FlapModel model(c);
  auto spec = at::randn({2, 64, 32});
  auto keep = at::tensor(std::vector<int64_t>{1, 4, 6, 0, 2, 7}, at::kLong).reshape({2, 3});
  auto params = model->named_parameters();
  auto buffers = model->named_buffers();
  auto all =
      at::linear(Patchify(spec, 16), params["patch_embed.weight"], params["patch_embed.bias"]) + buffers["audio_pos"];
  auto kept = all.gather(1, keep.unsqueeze(-1).expand({2, 3, all.size(2)}));
  auto expect =
      at::layer_norm(kept, {c.audio_width}, params["audio_norm.weight"], params["audio_norm.bias"], 1e-6).mean(1);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(model->EncodeAudio(spec, keep).pooled, expect, 1e-5, 1e-6));
}

TEST(FlapModel, TextPaddingDoesNotChangeTheEmbedding) {
  torch::manual_seed(0);
  FlapModel model(Small());
  auto short_tokens = at::tensor(std::vector<int64_t>{5, 9, 12, 0, 0, 0, 0, 0}, at::kLong).reshape({1, 8});
  auto trimmed = at::tensor(std::vector<int64_t>{5, 9, 12}, at::kLong).reshape({1, 3});
  EXPECT_TRUE(at::allclose(model->EncodeText(short_tokens), model->EncodeText(trimmed), 1e-5, 1e-6));
}

Batch MakeBatch(const ModelConfig& c, int64_t b, double ratio) {
  Batch batch;
  batch.spec = at::randn({b, c.target_frames, c.num_mel_bins});
  batch.tokens = at::randint(1, c.vocab_size, {b, c.text_max_len}, at::kLong);
  MaskConfig mask;
  mask.ratio = ratio;
  MaskGeometry g{c.freq_patches(), c.time_patches()};
  std::vector<int64_t> flat;
  for (int64_t i = 0; i < b; ++i) {
    auto k = KeepIndices(mask, g, 1, "s" + std::to_string(i), 0);
    flat.insert(flat.end(), k.begin(), k.end());
  }
  batch.keep = at::tensor(flat, at::kLong).reshape({b, NumKept(mask, g)});
  return batch;
}

std::vector<at::Tensor> TrainFewSteps(uint64_t seed) {
  torch::manual_seed(seed);
  ModelConfig c = Small();
  FlapModel model(c);
  LossConfig loss;
  loss.recon_weight = 1.0;
  OptimConfig optim;
  optim.warmup_steps = 1;
  optim.total_steps = 4;
  TrainStep step(model, loss, optim);
  torch::manual_seed(seed + 1);
  for (int i = 0; i < 4; ++i) {
    auto r = step.Run(MakeBatch(c, 4, 0.5), i);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    const StepStats& st = *r;
    EXPECT_TRUE(std::isfinite(st.loss));
    EXPECT_GT(st.recon, 0.0);
  }
  std::vector<at::Tensor> params;
  for (auto& p : model->parameters()) params.push_back(p.detach().clone());
  return params;
}

TEST(TrainStep, SameSeedGivesBitIdenticalParameters) {
  auto a = TrainFewSteps(3);
  auto b = TrainFewSteps(3);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i], b[i])) << "parameter " << i;
  auto c = TrainFewSteps(4);
  EXPECT_FALSE(at::equal(a[0], c[0]));
}

TEST(TrainStep, LossDecreasesOnAFixedBatchAndScaleStaysClamped) {
  torch::manual_seed(0);
  ModelConfig c = Small();
  FlapModel model(c);
  LossConfig loss;
  loss.recon_weight = 0.5;
  loss.logit_scale_init = 4.6;  // just below ln(100)
  OptimConfig optim;
  optim.lr = 3e-3;
  optim.warmup_steps = 0;
  optim.total_steps = 40;
  TrainStep step(model, loss, optim);
  auto batch = MakeBatch(c, 8, 0.0);
  double first = step.Run(batch, 0)->loss, last = 0;
  for (int i = 1; i < 40; ++i) {
    StepStats st = *step.Run(batch, i);
    last = st.loss;
    EXPECT_LE(st.logit_scale, 100.0 + 1e-3);
  }
  EXPECT_LT(last, 0.5 * first);
}

TEST(TrainStep, WeightDecaySparesEmbeddingsPositionsBiasesAndNorms) {
  torch::manual_seed(0);
  FlapModel model(Small());
  LossConfig loss;
  OptimConfig optim;
  optim.weight_decay = 0.1;
  TrainStep step(model, loss, optim);
  auto& groups = step.optimizer().param_groups();
  ASSERT_EQ(groups.size(), 2u);
  auto in_group = [&](size_t g, const at::Tensor& t) {
    for (const auto& p : groups[g].params()) {
      if (p.is_same(t)) return true;
    }
    return false;
  };
  EXPECT_DOUBLE_EQ(static_cast<torch::optim::AdamWOptions&>(groups[0].options()).weight_decay(), 0.1);
  EXPECT_DOUBLE_EQ(static_cast<torch::optim::AdamWOptions&>(groups[1].options()).weight_decay(), 0.0);
  size_t decayed = 0;
  for (const auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    const bool spared = name == "token_embed.weight" || name == "text_pos" || item.value().dim() < 2;
    EXPECT_EQ(in_group(1, item.value()), spared) << name;
    EXPECT_EQ(in_group(0, item.value()), !spared) << name;
    decayed += !spared;
  }
  EXPECT_GT(decayed, 10u);  // the linear layers' weights
}

// Records what a step hands to the gradient sync.
class RecordingSync : public GradientSync {
 public:
  void Attach(const std::vector<at::Tensor>& params) override { attached = params; }
  std::vector<at::Tensor> attached;
};

TEST(TrainStep, WithoutReconstructionTheDecoderStaysOutOfTheGradientSync) {
  torch::manual_seed(0);
  FlapModel model(Small());
  auto decoder_in_sync = [&](double recon_weight) {
    LossConfig loss;
    loss.recon_weight = recon_weight;
    RecordingSync sync;
    TrainStep step(model, loss, OptimConfig{}, nullptr, &sync);
    size_t decoder = 0;
    for (const auto& item : model->named_parameters()) {
      if (!IsDecoderParameter(item.key())) continue;
      for (const auto& p : sync.attached) decoder += p.is_same(item.value());
    }
    EXPECT_GT(sync.attached.size(), 10u);
    return decoder;
  };
  EXPECT_EQ(decoder_in_sync(0.0), 0u);
  size_t all_decoder = 0;
  for (const auto& item : model->named_parameters()) all_decoder += IsDecoderParameter(item.key());
  EXPECT_GT(all_decoder, 0u);
  EXPECT_EQ(decoder_in_sync(0.5), all_decoder);
}

TEST(MaskedViews, EachViewHasItsOwnKeepSetAndTheLossAveragesThem) {
  ModelConfig c = Small();
  MaskConfig mask;
  mask.ratio = 0.5;
  mask.views = 3;
  ASSERT_OK(mask.Validate());
  Batch batch = SyntheticBatch(c, mask, 4, 0, 4, 21);
  ASSERT_EQ(batch.views(), 3);
  ASSERT_EQ(batch.keep.size(0), 12);
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_FALSE(at::equal(batch.keep[i], batch.keep[4 + i])) << "sample " << i;
    EXPECT_FALSE(at::equal(batch.keep[4 + i], batch.keep[8 + i])) << "sample " << i;
  }
  torch::manual_seed(5);
  FlapModel model(c);
  LossConfig loss;
  loss.recon_weight = 1.0;
  TrainStep step(model, loss, OptimConfig{});
  auto all = step.ComputeGradients(batch);
  ASSERT_OK(all);
  double contrastive = 0, recon = 0;
  for (int64_t v = 0; v < 3; ++v) {
    Batch one = batch;
    one.keep = batch.keep.narrow(0, v * 4, 4);
    auto st = step.ComputeGradients(one);
    ASSERT_OK(st);
    contrastive += st->contrastive / 3;
    recon += st->recon / 3;
  }
  EXPECT_NEAR(all->contrastive, contrastive, 1e-5);
  EXPECT_NEAR(all->recon, recon, 1e-5);

  MaskConfig unmasked;
  unmasked.views = 2;
  EXPECT_FALSE(unmasked.Validate().ok());  // identical views
  Batch bad = batch;
  bad.keep = batch.keep.narrow(0, 0, 5);
  auto refused = step.ComputeGradients(bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Status::Code::kInvalidArgument);
}

TEST(TrainStepFlops, DroppingTokensCutsEncoderFlops) {
  ModelConfig c;
  const double full = TrainStepFlops(c, 1, c.num_patches(), 32, false);
  const double quarter = TrainStepFlops(c, 1, c.num_patches() / 4, 32, false);
  EXPECT_LT(quarter, 0.5 * full);
  EXPECT_GT(TrainStepFlops(c, 2, 32, 32, true), 2 * TrainStepFlops(c, 1, 32, 32, false));
  // Two views of a quarter of the tokens cost more than one, less than two full views.
  EXPECT_GT(TrainStepFlops(c, 1, 32, 32, true, 2), TrainStepFlops(c, 1, 32, 32, true));
  EXPECT_LT(TrainStepFlops(c, 1, 32, 32, true, 2), 2 * TrainStepFlops(c, 1, 32, 32, true));
}

// The FLOPs a training step counts (train.max_flops), by hand for the tiny preset: one clip of
// 128 patches (8 x 16 of 16 x 16 over 128 mel bins x 256 frames), a caption 10 tokens wide,
// reconstruction on (from the 128-wide embedding). Two FLOPs per multiply-add; a block of width
// w over L tokens costs (4 + 2 x 4) w^2 per token (qkv, output, MLP of ratio 4) plus 2 L w
// (scores and mixing); backward is twice the forward.
TEST(TrainStepFlops, StepFlopsIsTheHandCountAtRatiosZeroAndThreeQuarters) {
  ASSERT_OK_AND_ASSIGN(const ModelConfig c, ModelConfig::Preset("tiny"));
  ASSERT_EQ(c.num_patches(), 128);
  const double decoder = 2.0 * 128 * 128                               // decoder input: 128 -> 128
                         + 2.0 * 1 * 128 * (12.0 * 128 * 128 + 2.0 * 128 * 128)  // 1 block, 128 tokens
                         + 2.0 * 128 * 128 * 256;                       // patch predictions
  const double text = 2.0 * 2 * 10 * (12.0 * 192 * 192 + 2.0 * 10 * 192)  // 2 blocks, 10 tokens
                      + 2.0 * (192 + 128) * 128;                          // projection
  const double projection = 2.0 * (192 + 128) * 128;
  auto audio = [](double kept) {
    return 2.0 * kept * 256 * 192                                // patch embedding of the kept patches
           + 2.0 * 4 * kept * (12.0 * 192 * 192 + 2.0 * kept * 192);  // 4 blocks over the kept tokens
  };
  const double hand_r0 = 3.0 * (audio(128) + projection + decoder + text);
  const double hand_r75 = 3.0 * (audio(32) + projection + decoder + text);  // 2d, 0.75: 96 of 128 dropped
  EXPECT_DOUBLE_EQ(hand_r0, 1803159552.0);
  EXPECT_DOUBLE_EQ(hand_r75, 614074368.0);
  for (const double ratio : {0.0, 0.75}) {
    MaskConfig mask;
    mask.ratio = ratio;
    Batch b = SyntheticBatch(c, mask, 1, 0, 1, 7);
    b.tokens = at::ones({1, 10}, at::kLong);
    EXPECT_DOUBLE_EQ(StepFlops(c, b, true), ratio == 0 ? hand_r0 : hand_r75) << "ratio " << ratio;
  }
}

}  // namespace
}  // namespace flap::core
