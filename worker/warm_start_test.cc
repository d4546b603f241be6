// The safetensors reader (format checks, dtype conversion) and warm starts of the encoders
// from AudioMAE / CLIP-text named files: the loaded model computes what the source weights
// compute, and every refused tensor is named.
#include "worker/warm_start.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "sharding/synth.h"
#include "tests/test_util.h"
#include "config/trial_config.h"
#include "worker/safetensors.h"
#include "worker/trainer.h"

namespace flap::worker {
namespace {

using TensorMap = std::map<std::string, at::Tensor>;

// Frames and mel bins differ (2 time x 3 frequency patches), so any mix-up of the token order
// or of the order of values inside a patch shows.
core::ModelConfig Small() {
  core::ModelConfig m = core::ModelConfig::Small(32, 48, 32, 2, 2, 40);
  m.text_width = 24;
  m.mlp_ratio = 2;
  return m;
}

core::FlapModel Build(const core::ModelConfig& c, uint64_t seed) {
  torch::manual_seed(seed);
  return core::FlapModel(c);
}

std::string Header(const std::string& json) {
  std::string out(8, '\0');
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + json;
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string Bytes(std::initializer_list<int> values) {
  std::string s;
  for (int v : values) s.push_back(static_cast<char>(v));
  return s;
}

// The audio encoder of `m` under AudioMAE's names (1-channel convolution patch embedding),
// with the tensors the map ignores (position table, class token, the MAE decoder).
TensorMap AudioMaeLayout(core::FlapModel& m, const std::string& prefix = "") {
  auto p = m->named_parameters();
  const auto& c = m->config();
  TensorMap out;
  out[prefix + "patch_embed.proj.weight"] =
      p["patch_embed.weight"].detach().reshape({c.audio_width, 1, c.patch_size, c.patch_size}).clone();
  out[prefix + "patch_embed.proj.bias"] = p["patch_embed.bias"].detach().clone();
  const std::vector<std::pair<std::string, std::string>> block = {{"norm1", "norm1"},         {"attn.qkv", "attn.qkv"},
                                                                  {"attn.proj", "attn.proj"}, {"norm2", "norm2"},
                                                                  {"mlp.fc1", "fc1"},         {"mlp.fc2", "fc2"}};
  for (int i = 0; i < c.audio_depth; ++i) {
    for (const auto& [theirs, ours] : block) {
      for (const char* wb : {".weight", ".bias"}) {
        out[prefix + "blocks." + std::to_string(i) + "." + theirs + wb] =
            p["audio_blocks." + std::to_string(i) + "." + ours + wb].detach().clone();
      }
    }
  }
  out[prefix + "norm.weight"] = p["audio_norm.weight"].detach().clone();
  out[prefix + "norm.bias"] = p["audio_norm.bias"].detach().clone();
  out[prefix + "cls_token"] = at::randn({1, 1, c.audio_width});
  out[prefix + "pos_embed"] = at::randn({1, c.num_patches() + 1, c.audio_width});
  out[prefix + "mask_token"] = at::randn({1, 1, 8});
  out[prefix + "decoder_embed.weight"] = at::randn({8, c.audio_width});
  out[prefix + "decoder_blocks.0.norm1.weight"] = at::randn({8});
  return out;
}

// The text encoder of `m` under the CLIP text tower's names, with the joint projection and
// temperature the map ignores.
TensorMap ClipTextLayout(core::FlapModel& m) {
  auto p = m->named_parameters();
  const auto& c = m->config();
  TensorMap out;
  out["token_embedding.weight"] = p["token_embed.weight"].detach().clone();
  out["positional_embedding"] = p["text_pos"].detach().clone();
  const std::vector<std::pair<std::string, std::string>> block = {
      {"ln_1", "norm1"}, {"attn.out_proj", "attn.proj"}, {"ln_2", "norm2"}, {"mlp.c_fc", "fc1"}, {"mlp.c_proj", "fc2"}};
  for (int i = 0; i < c.text_depth; ++i) {
    const std::string theirs = "transformer.resblocks." + std::to_string(i) + ".";
    const std::string ours = "text_blocks." + std::to_string(i) + ".";
    for (const auto& [t, o] : block) {
      out[theirs + t + ".weight"] = p[ours + o + ".weight"].detach().clone();
      out[theirs + t + ".bias"] = p[ours + o + ".bias"].detach().clone();
    }
    out[theirs + "attn.in_proj_weight"] = p[ours + "attn.qkv.weight"].detach().clone();
    out[theirs + "attn.in_proj_bias"] = p[ours + "attn.qkv.bias"].detach().clone();
  }
  out["ln_final.weight"] = p["text_norm.weight"].detach().clone();
  out["ln_final.bias"] = p["text_norm.bias"].detach().clone();
  out["text_projection"] = at::randn({c.text_width, 8});
  out["logit_scale"] = at::ones({});
  return out;
}

TensorMap Parameters(core::FlapModel& m) {
  TensorMap out;
  for (const auto& item : m->named_parameters()) out[item.key()] = item.value().detach().clone();
  return out;
}

bool SameParameters(const TensorMap& a, const TensorMap& b) {
  for (const auto& [name, t] : a) {
    if (!torch::equal(t, b.at(name))) return false;
  }
  return true;
}

at::Tensor Spec(const core::ModelConfig& c, int64_t batch) {
  return at::randn({batch, c.target_frames, c.num_mel_bins});
}

at::Tensor Tokens(const core::ModelConfig& c) {
  // Rows of different lengths, padding (0) at the end.
  auto t = at::randint(1, c.vocab_size, {3, c.text_max_len}, at::kLong);
  t.index_put_({0, torch::indexing::Slice(3, torch::indexing::None)}, 0);
  t.index_put_({1, torch::indexing::Slice(6, torch::indexing::None)}, 0);
  return t;
}

class WarmStart : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = std::make_unique<flap::testing::TempDir>("warm_start"); }
  std::string Path(const std::string& name) const { return *dir_ / name; }
  std::unique_ptr<flap::testing::TempDir> dir_;
};

using Safetensors = WarmStart;

// --- The reader --------------------------------------------------------------------------

TEST_F(Safetensors, ReadsAFileWrittenByHandAgainstTheSpec) {
  // F16 1.0, -2.0; BF16 3.140625 (0x4049), 1.0 (0x3F80); F64 0.5; metadata; header padded
  // with spaces as the reference writer does.
  const std::string json =
      R"({"__metadata__":{"format":"pt"},"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},)"
      R"("b":{"dtype":"BF16","shape":[1,2],"data_offsets":[4,8]},"d":{"dtype":"F64","shape":[],"data_offsets":[8,16]}}   )";
  std::string bytes = Header(json) + Bytes({0x00, 0x3c, 0x00, 0xc0, 0x49, 0x40, 0x80, 0x3f});
  const double half = 0.5;
  bytes.append(reinterpret_cast<const char*>(&half), 8);
  WriteBytes(Path("a.safetensors"), bytes);
  auto read = ReadSafetensorsWithMetadata(Path("a.safetensors"));
  ASSERT_OK(read);
  ASSERT_EQ(read->tensors.size(), 3u);
  EXPECT_EQ(read->metadata.at("format"), "pt");
  const auto& h = read->tensors.at("h");
  EXPECT_EQ(h.scalar_type(), at::kFloat);
  EXPECT_TRUE(torch::equal(h, torch::tensor({1.0f, -2.0f})));
  EXPECT_TRUE(torch::equal(read->tensors.at("b"), torch::tensor({{3.140625f, 1.0f}})));
  EXPECT_EQ(read->tensors.at("d").dim(), 0);
  EXPECT_EQ(read->tensors.at("d").item<float>(), 0.5f);
}

TEST_F(Safetensors, RoundTripConvertsF16Bf16F64ToFloat32) {
  torch::manual_seed(3);
  TensorMap in = {{"f32", at::randn({3, 4})},
                  {"f16", at::randn({5}).to(at::kHalf)},
                  {"bf16", at::randn({2, 2, 2}).to(at::kBFloat16)},
                  {"f64", at::randn({2}, at::kDouble)},
                  {"empty", at::zeros({0, 3})}};
  ASSERT_OK(WriteSafetensors(Path("r.safetensors"), in, {{"k", "v"}}));
  auto out = ReadSafetensors(Path("r.safetensors"));
  ASSERT_OK(out);
  ASSERT_EQ(out->size(), in.size());
  for (const auto& [name, t] : in) {
    const auto& r = out->at(name);
    EXPECT_EQ(r.scalar_type(), at::kFloat) << name;
    EXPECT_TRUE(torch::equal(r, t.to(at::kFloat))) << name;
  }
}

// Expects ReadSafetensors of `bytes` to fail with a message holding every one of `parts`.
void ExpectRefused(const std::string& path, const std::string& bytes, const std::vector<std::string>& parts) {
  WriteBytes(path, bytes);
  auto r = ReadSafetensors(path);
  ASSERT_FALSE(r.ok());
  for (const auto& p : parts) EXPECT_NE(r.status().message().find(p), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().ToString();
}

TEST_F(Safetensors, RefusesMalformedFilesNamingFileAndTensor) {
  const std::string one = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string data(8, '\1');
  ExpectRefused(Path("short"), std::string(5, '\0'), {"too short"});
  // Header length beyond the file, and beyond the format's limit.
  std::string beyond = Header(one) + data;
  beyond[0] = static_cast<char>(0xff);
  ExpectRefused(Path("beyond"), beyond, {"header length", "past the end of the file"});
  std::string huge = Header(one) + data;
  huge[4] = 1;  // 2^32 + ...
  ExpectRefused(Path("huge"), huge, {"over the format's limit"});
  // Truncated data: the tensor's bytes reach past the buffer.
  ExpectRefused(Path("truncated"), Header(one) + data.substr(0, 5), {"tensor 'w'", "past the end"});
  ExpectRefused(Path("offsets"), Header(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,80]}})") + data,
                {"tensor 'w'", "[0, 80]"});
  ExpectRefused(Path("reversed"), Header(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})") + data,
                {"tensor 'w'", "end before they begin"});
  ExpectRefused(Path("dtype"), Header(R"({"w":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})") + data,
                {"tensor 'w'", "unknown dtype 'Q7'"});
  ExpectRefused(Path("f8"), Header(R"({"w":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}})") + data,
                {"tensor 'w'", "F8_E4M3", "not supported"});
  ExpectRefused(Path("size"), Header(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})") + data,
                {"tensor 'w'", "does not take the 8 bytes"});
  ExpectRefused(Path("shape"), Header(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})") + data,
                {"tensor 'w'", "not a non-negative integer"});
  ExpectRefused(Path("overflow"),
                Header(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})") + data,
                {"tensor 'w'", "does not take"});
  ExpectRefused(
      Path("overlap"),
      Header(
          R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})") +
          data,
      {"tensor 'b'", "overlaps tensor 'a'"});
  ExpectRefused(Path("hole"), Header(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})") + data,
                {"bytes 0..4", "belong to no tensor"});
  ExpectRefused(Path("tail"), Header(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})") + data,
                {"bytes 4..8", "belong to no tensor"});
  ExpectRefused(Path("json"), Header(R"({"w":{"dtype":"F32",)") + data, {"not valid JSON"});
  ExpectRefused(Path("array"), Header("[1, 2]") + data, {"does not start with a JSON object"});
  ExpectRefused(
      Path("twice"),
      Header(
          R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})") +
          data,
      {"tensor 'w' is listed twice"});
  ExpectRefused(Path("fields"), Header(R"({"w":{"dtype":"F32","shape":[2]}})") + data, {"tensor 'w'", "data_offsets"});
  ExpectRefused(Path("metadata"), Header(R"({"__metadata__":{"a":1}})"), {"__metadata__"});

  auto missing = ReadSafetensors(Path("nowhere.safetensors"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Status::Code::kNotFound);
}

// --- Warm starts -------------------------------------------------------------------------

TEST_F(WarmStart, AudioMaeLayoutGivesTheSourceModelsAudioForward) {
  const auto c = Small();
  auto source = Build(c, 1);
  source->eval();
  ASSERT_OK(WriteSafetensors(Path("audio.safetensors"), AudioMaeLayout(source, "module.")));

  auto target = Build(c, 2);
  target->eval();
  torch::NoGradGuard no_grad;
  const auto spec = Spec(c, 3);
  const auto keep = torch::tensor({{0, 2, 5}, {1, 3, 4}, {0, 1, 2}}, at::kLong);
  const auto before = target->EncodeAudio(spec).pooled;
  ASSERT_FALSE(torch::allclose(before, source->EncodeAudio(spec).pooled));
  const auto text_before = Parameters(target);

  auto loaded = LoadEncoderFile(target, Encoder::kAudio, Path("audio.safetensors"));
  ASSERT_OK(loaded);
  EXPECT_EQ(loaded->loaded, 2 + 12 * c.audio_depth + 2);
  EXPECT_EQ(loaded->ignored.size(), 5u);  // cls_token, pos_embed, mask_token, decoder_* x2
  EXPECT_TRUE(torch::allclose(target->EncodeAudio(spec).pooled, source->EncodeAudio(spec).pooled, 1e-6, 1e-7));
  EXPECT_TRUE(
      torch::allclose(target->EncodeAudio(spec, keep).pooled, source->EncodeAudio(spec, keep).pooled, 1e-6, 1e-7));
  // Nothing outside the audio encoder moved.
  auto after = Parameters(target);
  for (const auto& [name, t] : text_before) {
    const bool audio =
        name.rfind("patch_embed.", 0) == 0 || name.rfind("audio_blocks.", 0) == 0 || name.rfind("audio_norm.", 0) == 0;
    if (!audio) {
      EXPECT_TRUE(torch::equal(t, after.at(name))) << name;
    }
  }
}

// timm's VisionTransformer forward over AudioMAE's (B, 1, T, F) input, written out with plain
// tensor operations from the file's tensors (position table: this model's fixed sin-cos).
at::Tensor ReferenceAudioMae(const TensorMap& t, const core::ModelConfig& c, const at::Tensor& spec) {
  const int64_t w = c.audio_width, h = c.audio_heads, hd = w / h, b = spec.size(0);
  auto x = at::conv2d(spec.unsqueeze(1), t.at("patch_embed.proj.weight"), t.at("patch_embed.proj.bias"),
                      {c.patch_size, c.patch_size});
  x = x.flatten(2).transpose(1, 2);  // (B, N, W), token = time patch * F + freq patch
  x = x + core::SinCos2d(c.audio_width, c.time_patches(), c.freq_patches());
  const int64_t n = x.size(1);
  for (int i = 0; i < c.audio_depth; ++i) {
    auto g = [&](const std::string& name) { return t.at("blocks." + std::to_string(i) + "." + name); };
    auto y = at::layer_norm(x, {w}, g("norm1.weight"), g("norm1.bias"), 1e-6);
    auto qkv =
        at::linear(y, g("attn.qkv.weight"), g("attn.qkv.bias")).reshape({b, n, 3, h, hd}).permute({2, 0, 3, 1, 4});
    auto attn = at::softmax(at::matmul(qkv[0], qkv[1].transpose(-2, -1)) / std::sqrt(static_cast<double>(hd)), -1);
    auto o = at::matmul(attn, qkv[2]).transpose(1, 2).reshape({b, n, w});
    x = x + at::linear(o, g("attn.proj.weight"), g("attn.proj.bias"));
    y = at::layer_norm(x, {w}, g("norm2.weight"), g("norm2.bias"), 1e-6);
    x = x + at::linear(at::gelu(at::linear(y, g("mlp.fc1.weight"), g("mlp.fc1.bias"))), g("mlp.fc2.weight"),
                       g("mlp.fc2.bias"));
  }
  return at::layer_norm(x, {w}, t.at("norm.weight"), t.at("norm.bias"), 1e-6).mean(1);
}

TEST_F(WarmStart, AudioMaeFileForwardEqualsTheReferenceViT) {
  // Random tensors in AudioMAE's layout, not derived from a FlapModel: the convolution's
  // (time, freq) kernel and the token order are checked against conv2d itself.
  const auto c = Small();
  auto shaped = Build(c, 5);
  auto shapes = AudioMaeLayout(shaped);
  torch::manual_seed(11);
  TensorMap file;
  for (const auto& [name, t] : shapes) {
    file[name] = name.find("norm") != std::string::npos && name.find(".weight") != std::string::npos
                     ? 1.0 + 0.1 * at::randn(t.sizes())
                     : 0.2 * at::randn(t.sizes());
  }
  ASSERT_OK(WriteSafetensors(Path("ref.safetensors"), file));
  auto model = Build(c, 2);
  model->eval();
  auto loaded = LoadEncoderFile(model, Encoder::kAudio, Path("ref.safetensors"));
  ASSERT_OK(loaded);
  torch::NoGradGuard no_grad;
  const auto spec = Spec(c, 2);
  const auto ours = model->EncodeAudio(spec).pooled;
  const auto reference = ReferenceAudioMae(file, c, spec);
  EXPECT_TRUE(torch::allclose(ours, reference, 1e-4, 1e-5)) << (ours - reference).abs().max();
  // A transposed kernel (an (F, T) input layout) would not match.
  file["patch_embed.proj.weight"] = file["patch_embed.proj.weight"].transpose(2, 3).contiguous();
  EXPECT_FALSE(torch::allclose(ours, ReferenceAudioMae(file, c, spec), 1e-3, 1e-3));
}

TEST_F(WarmStart, ClipTextLayoutGivesTheSourceModelsTextForward) {
  const auto c = Small();
  auto source = Build(c, 1);
  auto target = Build(c, 2);
  source->eval();
  target->eval();
  ASSERT_OK(WriteSafetensors(Path("text.safetensors"), ClipTextLayout(source)));
  auto loaded = LoadEncoderFile(target, Encoder::kText, Path("text.safetensors"));
  ASSERT_OK(loaded);
  EXPECT_EQ(loaded->loaded, 2 + 12 * c.text_depth + 2);
  EXPECT_EQ(loaded->ignored, (std::vector<std::string>{"logit_scale", "text_projection"}));
  // The projections to the joint space are not part of the encoder: copy them to compare.
  torch::NoGradGuard no_grad;
  auto sp = source->named_parameters();
  auto tp = target->named_parameters();
  for (const char* name : {"text_proj1.weight", "text_proj1.bias", "text_proj2.weight", "text_proj2.bias"}) {
    tp[name].copy_(sp[name]);
  }
  const auto tokens = Tokens(c);
  EXPECT_TRUE(torch::allclose(target->EncodeText(tokens), source->EncodeText(tokens), 1e-6, 1e-7));
}

// nn.MultiheadAttention's packed in_proj (CLIP's attention) computes what attn.qkv computes:
// a text encoder loaded from random CLIP-named tensors matches a reference forward built on
// torch::nn::MultiheadAttention with the file's tensors.
TEST_F(WarmStart, ClipAttentionPackingMatchesMultiheadAttention) {
  const auto c = Small();
  auto shaped = Build(c, 5);
  auto shapes = ClipTextLayout(shaped);
  torch::manual_seed(13);
  TensorMap file;
  for (const auto& [name, t] : shapes) {
    const bool ln_weight = (name.find("ln_") != std::string::npos) && name.find(".weight") != std::string::npos;
    file[name] = ln_weight ? 1.0 + 0.1 * at::randn(t.sizes()) : 0.2 * at::randn(t.sizes());
  }
  ASSERT_OK(WriteSafetensors(Path("clip.safetensors"), file));
  auto model = Build(c, 2);
  model->eval();
  auto loaded = LoadEncoderFile(model, Encoder::kText, Path("clip.safetensors"));
  ASSERT_OK(loaded);

  torch::NoGradGuard no_grad;
  const auto tokens = Tokens(c);
  const int64_t w = c.text_width, len = tokens.size(1);
  const auto pad = tokens.eq(0);
  auto x = at::embedding(file.at("token_embedding.weight"), tokens) + file.at("positional_embedding").slice(0, 0, len);
  for (int i = 0; i < c.text_depth; ++i) {
    auto g = [&](const std::string& name) {
      return file.at("transformer.resblocks." + std::to_string(i) + "." + name);
    };
    torch::nn::MultiheadAttention mha(torch::nn::MultiheadAttentionOptions(w, c.text_heads));
    mha->eval();
    mha->in_proj_weight.copy_(g("attn.in_proj_weight"));
    mha->in_proj_bias.copy_(g("attn.in_proj_bias"));
    mha->out_proj->weight.copy_(g("attn.out_proj.weight"));
    mha->out_proj->bias.copy_(g("attn.out_proj.bias"));
    auto y = at::layer_norm(x, {w}, g("ln_1.weight"), g("ln_1.bias"), 1e-6).transpose(0, 1);  // (L, B, W)
    x = x + std::get<0>(mha->forward(y, y, y, pad)).transpose(0, 1);
    y = at::layer_norm(x, {w}, g("ln_2.weight"), g("ln_2.bias"), 1e-6);
    x = x + at::linear(at::gelu(at::linear(y, g("mlp.c_fc.weight"), g("mlp.c_fc.bias"))), g("mlp.c_proj.weight"),
                       g("mlp.c_proj.bias"));
  }
  x = at::layer_norm(x, {w}, file.at("ln_final.weight"), file.at("ln_final.bias"), 1e-6);
  const auto keep = pad.logical_not().unsqueeze(-1).to(at::kFloat);
  const auto pooled = (x * keep).sum(1) / keep.sum(1);
  auto p = model->named_parameters();
  auto e = at::linear(at::relu(at::linear(pooled, p["text_proj1.weight"], p["text_proj1.bias"])),
                      p["text_proj2.weight"], p["text_proj2.bias"]);
  e = e / e.norm(2, -1, true);
  const auto ours = model->EncodeText(tokens);
  EXPECT_TRUE(torch::allclose(ours, e, 1e-4, 1e-5)) << (ours - e).abs().max();
}

TEST_F(WarmStart, OwnNamesAndFcNormLoadToo) {
  const auto c = Small();
  auto source = Build(c, 1);
  TensorMap file;
  for (const auto& [name, t] : Parameters(source)) {
    if (name.rfind("patch_embed.", 0) == 0 || name.rfind("audio_blocks.", 0) == 0) file["audio_encoder." + name] = t;
  }
  // A fine-tuned AudioMAE has fc_norm in place of norm.
  file["fc_norm.weight"] = source->named_parameters()["audio_norm.weight"].detach().clone();
  file["fc_norm.bias"] = source->named_parameters()["audio_norm.bias"].detach().clone();
  file["head.weight"] = at::randn({5, c.audio_width});
  auto target = Build(c, 2);
  auto loaded = LoadEncoder(target, Encoder::kAudio, file, "own.safetensors");
  ASSERT_OK(loaded);
  EXPECT_EQ(loaded->ignored, std::vector<std::string>{"head.weight"});
  auto after = Parameters(target);
  auto want = Parameters(source);
  for (const auto& [name, t] : after) {
    if (name.rfind("patch_embed.", 0) == 0 || name.rfind("audio_", 0) == 0) {
      if (name.rfind("audio_proj", 0) != 0) {
        EXPECT_TRUE(torch::equal(t, want.at(name))) << name;
      }
    }
  }
}

TEST_F(WarmStart, Bf16AndF16FilesLoadAsTheirFloat32Values) {
  const auto c = Small();
  auto source = Build(c, 1);
  for (const auto type : {at::kHalf, at::kBFloat16}) {
    TensorMap file = AudioMaeLayout(source);
    for (auto& [name, t] : file) t = t.to(type);
    const std::string path = Path(std::string("low_") + c10::toString(type) + ".safetensors");
    ASSERT_OK(WriteSafetensors(path, file));
    auto target = Build(c, 2);
    auto loaded = LoadEncoderFile(target, Encoder::kAudio, path);
    ASSERT_OK(loaded);
    auto p = target->named_parameters();
    EXPECT_TRUE(torch::equal(p["audio_blocks.1.fc2.weight"], file.at("blocks.1.mlp.fc2.weight").to(at::kFloat)));
    EXPECT_TRUE(torch::equal(p["patch_embed.weight"],
                             file.at("patch_embed.proj.weight").to(at::kFloat).reshape({c.audio_width, -1})));
    EXPECT_TRUE(torch::allclose(p["audio_norm.weight"], source->named_parameters()["audio_norm.weight"], 1e-2, 1e-2));
  }
}

// A refused file names every problem and leaves the model as it was.
void ExpectLoadRefused(core::FlapModel& model, Encoder encoder, const TensorMap& file,
                       const std::vector<std::string>& parts) {
  const auto before = Parameters(model);
  auto r = LoadEncoder(model, encoder, file, "bad.safetensors");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
  for (const auto& p : parts)
    EXPECT_NE(r.status().message().find(p), std::string::npos) << p << "\n" << r.status().ToString();
  EXPECT_NE(r.status().message().find("bad.safetensors"), std::string::npos);
  EXPECT_TRUE(SameParameters(before, Parameters(model)));
}

TEST_F(WarmStart, UnmappedMissingAndMismatchedTensorsAreNamed) {
  const auto c = Small();
  auto source = Build(c, 1);
  auto target = Build(c, 2);

  TensorMap unmapped = AudioMaeLayout(source);
  unmapped["blocks.0.attn.q_bias"] = at::zeros({c.audio_width});
  unmapped["extra.weight"] = at::zeros({2});
  ExpectLoadRefused(target, Encoder::kAudio, unmapped,
                    {"file tensors the name map does not place (2)", "blocks.0.attn.q_bias", "extra.weight"});

  TensorMap deeper = AudioMaeLayout(source);
  deeper["blocks.2.norm1.weight"] = at::ones({c.audio_width});
  ExpectLoadRefused(target, Encoder::kAudio, deeper,
                    {"blocks.2.norm1.weight (-> audio_blocks.2.norm1.weight, which this model does not have)"});

  TensorMap missing = AudioMaeLayout(source);
  missing.erase("blocks.1.mlp.fc1.bias");
  missing.erase("norm.weight");
  ExpectLoadRefused(target, Encoder::kAudio, missing,
                    {"encoder parameters missing from the file (2)", "audio_blocks.1.fc1.bias", "audio_norm.weight"});

  // An ImageNet ViT's 3-channel patch embedding, and a wider block.
  TensorMap shapes = AudioMaeLayout(source);
  shapes["patch_embed.proj.weight"] = at::zeros({c.audio_width, 3, 16, 16});
  shapes["blocks.0.attn.qkv.weight"] = at::zeros({3 * 48, 48});
  ExpectLoadRefused(
      target, Encoder::kAudio, shapes,
      {"shape mismatches (2)", "patch_embed.proj.weight (file [32, 3, 16, 16], model patch_embed.weight [32, 256])",
       "blocks.0.attn.qkv.weight (file [144, 48], model audio_blocks.0.attn.qkv.weight [96, 32])"});

  TensorMap twice = AudioMaeLayout(source);
  twice["audio_blocks.0.fc1.weight"] = twice.at("blocks.0.mlp.fc1.weight");
  ExpectLoadRefused(target, Encoder::kAudio, twice, {"tensors mapped twice", "audio_blocks.0.fc1.weight"});

  // Audio names in a text warm start are not placed.
  TensorMap text = ClipTextLayout(source);
  text["blocks.0.norm1.weight"] = at::ones({c.audio_width});
  text["positional_embedding"] = at::zeros({77, c.text_width});
  ExpectLoadRefused(target, Encoder::kText, text,
                    {"blocks.0.norm1.weight", "positional_embedding (file [77, 24], model text_pos [8, 24])"});
}

TEST_F(WarmStart, NameMapStripsWrappersAndSkipsIgnoredNames) {
  bool ignored = false;
  EXPECT_EQ(MapTensorName(Encoder::kAudio, "module.model.blocks.3.mlp.fc2.bias", &ignored), "audio_blocks.3.fc2.bias");
  EXPECT_FALSE(ignored);
  EXPECT_EQ(MapTensorName(Encoder::kAudio, "audio_encoder.patch_embed.proj.weight", &ignored), "patch_embed.weight");
  EXPECT_EQ(MapTensorName(Encoder::kAudio, "module.pos_embed", &ignored), "");
  EXPECT_TRUE(ignored);
  EXPECT_EQ(MapTensorName(Encoder::kAudio, "blocks.x.norm1.weight", &ignored), "");
  EXPECT_FALSE(ignored);
  EXPECT_EQ(MapTensorName(Encoder::kText, "text_encoder.transformer.resblocks.0.attn.in_proj_weight", &ignored),
            "text_blocks.0.attn.qkv.weight");
  EXPECT_EQ(MapTensorName(Encoder::kText, "ln_final.bias", &ignored), "text_norm.bias");
  EXPECT_EQ(MapTensorName(Encoder::kText, "visual.proj", &ignored), "");
  EXPECT_TRUE(ignored);
}

TEST_F(WarmStart, ConfigKeysAndHash) {
  TrialConfig config;
  bool help = false;
  std::string text;
  ASSERT_OK(ParseTrialConfig({"--model.init_audio", "a.safetensors", "--model.init_text", "t.safetensors"}, &config,
                             &help, &text));
  EXPECT_EQ(config.model.init_audio, "a.safetensors");
  EXPECT_EQ(config.model.init_text, "t.safetensors");
  EXPECT_EQ(config.ToMap().at("model.init_audio"), "a.safetensors");
  TrialConfig plain;
  TrialConfig audio = plain;
  audio.model.init_audio = "a.safetensors";
  TrialConfig other = plain;
  other.model.init_audio = "b.safetensors";
  EXPECT_NE(plain.Hash(), audio.Hash());
  EXPECT_NE(audio.Hash(), other.Hash());
  TrialConfig moved = plain;
  moved.model.init_text = "t.safetensors";
  EXPECT_NE(plain.Hash(), moved.Hash());
  // The preset does not reset them (they are not model architecture fields).
  TrialConfig preset;
  ASSERT_OK(ParseTrialConfig({"--model.preset", "tiny", "--model.init_audio", "a.safetensors"}, &preset, &help, &text));
  EXPECT_EQ(preset.model.init_audio, "a.safetensors");
}

// Training starts from the file: with a negligible learning rate the trained audio encoder is
// still the file's; a file that does not fit fails the run naming the key.
TEST_F(WarmStart, TrainingStartsFromTheFile) {
  const sharding::SynthOptions synth = sharding::SmallSynth(8, 4, 0.5, 8);
  ASSERT_OK(sharding::GenerateSynthetic(synth, Path("data")));
  TrialConfig config;
  config.model = Small();
  config.data.path = Path("data");
  config.train.batch_size = 4;
  config.train.epochs = 1;
  config.train.max_steps = 1;
  config.optim.lr = 1e-12;
  config.optim.min_lr = 0;
  config.optim.warmup_steps = 0;
  config.mask.ratio = 0.5;

  auto source = Build(config.model, 9);
  ASSERT_OK(WriteSafetensors(Path("init.safetensors"), AudioMaeLayout(source)));
  config.model.init_audio = Path("init.safetensors");
  std::ostringstream log;
  auto outcome = RunTraining(config, log);
  ASSERT_OK(outcome) << outcome.status().ToString() << "\n" << log.str();
  EXPECT_NE(log.str().find("warm start: audio encoder loaded from '" + config.model.init_audio + "' (" +
                           std::to_string(4 + 12 * config.model.audio_depth) + " tensors; ignored 5"),
            std::string::npos)
      << log.str();
  auto trained = Parameters(outcome->model);
  auto want = Parameters(source);
  for (const char* name : {"patch_embed.weight", "audio_blocks.1.attn.qkv.weight", "audio_norm.bias"}) {
    EXPECT_TRUE(torch::allclose(trained.at(name), want.at(name), 0, 1e-6)) << name;
  }

  config.model.init_text = Path("init.safetensors");  // audio names: nothing fits the text encoder
  std::ostringstream log2;
  auto refused = RunTraining(config, log2);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("model.init_text: cannot warm-start the text encoder"), std::string::npos)
      << refused.status().ToString();
  config.model.init_text = Path("absent.safetensors");
  auto absent = RunTraining(config, log2);
  ASSERT_FALSE(absent.ok());
  EXPECT_EQ(absent.status().code(), Status::Code::kNotFound);
  EXPECT_NE(absent.status().message().find("absent.safetensors"), std::string::npos);
}

}  // namespace
}  // namespace flap::worker
