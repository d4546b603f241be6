#include "worker/core/model.h"

#include "worker/core/torch_compat.h"

#include <ATen/ATen.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/init.h>

#include <cmath>
#include <string>

namespace flap::core {
namespace {

// 1-D sin-cos embedding of positions 0..n-1 into `dim` channels (dim even): first half sin,
// second half cos, frequencies 1 / 10000^(2i/dim) as in MAE.
torch::Tensor SinCos1d(int dim, int n) {
  auto omega = at::arange(dim / 2, at::kDouble) / (dim / 2.0);
  omega = 1.0 / at::pow(10000.0, omega);
  auto pos = at::arange(n, at::kDouble);
  auto out = at::outer(pos, omega);
  return at::cat({at::sin(out), at::cos(out)}, 1).to(at::kFloat);
}

void InitLinear(torch::nn::Linear& l) {
  torch::nn::init::xavier_uniform_(l->weight);
  if (l->bias.defined()) torch::nn::init::zeros_(l->bias);
}

}  // namespace

torch::Tensor SinCos2d(int dim, int time_patches, int freq_patches, bool freq_first) {
  auto t = SinCos1d(dim / 2, time_patches);  // (W, dim/2)
  auto f = SinCos1d(dim / 2, freq_patches);  // (F, dim/2)
  auto tt = t.unsqueeze(1).expand({time_patches, freq_patches, dim / 2});
  auto ff = f.unsqueeze(0).expand({time_patches, freq_patches, dim / 2});
  return at::cat({freq_first ? ff : tt, freq_first ? tt : ff}, 2)
      .reshape({time_patches * freq_patches, dim})
      .contiguous();
}

torch::Tensor Patchify(const torch::Tensor& spec, int p) {
  const int64_t b = spec.size(0), t = spec.size(1), m = spec.size(2);
  const int64_t w = t / p, f = m / p;
  return spec.reshape({b, w, p, f, p}).permute({0, 1, 3, 2, 4}).reshape({b, w * f, p * p});
}

torch::Tensor Unpatchify(const torch::Tensor& patches, int p, int frames, int mel_bins) {
  const int64_t b = patches.size(0), w = frames / p, f = mel_bins / p;
  return patches.reshape({b, w, f, p, p}).permute({0, 1, 3, 2, 4}).reshape({b, frames, mel_bins});
}

AttentionImpl::AttentionImpl(int width, int heads) : heads_(heads) {
  qkv_ = register_module("qkv", torch::nn::Linear(width, 3 * width));
  proj_ = register_module("proj", torch::nn::Linear(width, width));
  InitLinear(qkv_);
  InitLinear(proj_);
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& key_pad) {
  const int64_t b = x.size(0), l = x.size(1), width = x.size(2), hd = width / heads_;
  auto qkv = qkv_->forward(x).reshape({b, l, 3, heads_, hd}).permute({2, 0, 3, 1, 4});
  auto out = compat::Attention(qkv[0], qkv[1], qkv[2], key_pad).transpose(1, 2).reshape({b, l, width});
  return proj_->forward(out);
}

BlockImpl::BlockImpl(int width, int heads, int mlp_ratio) {
  norm1_ = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({width}).eps(1e-6)));
  attn_ = register_module("attn", Attention(width, heads));
  norm2_ = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({width}).eps(1e-6)));
  fc1_ = register_module("fc1", torch::nn::Linear(width, mlp_ratio * width));
  fc2_ = register_module("fc2", torch::nn::Linear(mlp_ratio * width, width));
  InitLinear(fc1_);
  InitLinear(fc2_);
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const torch::Tensor& key_pad) {
  auto h = x + attn_->forward(norm1_->forward(x), key_pad);
  return h + fc2_->forward(at::gelu(fc1_->forward(norm2_->forward(h))));
}

FlapModelImpl::FlapModelImpl(const ModelConfig& c, double logit_scale_init) : config_(c) {
  const int n = c.num_patches();
  auto ln = [](int w) { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({w}).eps(1e-6)); };

  patch_embed_ = register_module("patch_embed", torch::nn::Linear(c.patch_dim(), c.audio_width));
  InitLinear(patch_embed_);
  audio_pos_ = register_buffer("audio_pos", SinCos2d(c.audio_width, c.time_patches(), c.freq_patches(),
                                                            c.audio_pos_freq_first()));
  audio_blocks_ = register_module("audio_blocks", torch::nn::ModuleList());
  for (int i = 0; i < c.audio_depth; ++i) audio_blocks_->push_back(Block(c.audio_width, c.audio_heads, c.mlp_ratio));
  audio_norm_ = register_module("audio_norm", ln(c.audio_width));
  audio_proj1_ = register_module("audio_proj1", torch::nn::Linear(c.audio_width, c.embed_dim));
  audio_proj2_ = register_module("audio_proj2", torch::nn::Linear(c.embed_dim, c.embed_dim));
  InitLinear(audio_proj1_);
  InitLinear(audio_proj2_);

  if (c.text_roberta()) {
    RobertaShape shape;
    shape.vocab_size = c.vocab_size;
    shape.hidden = c.text_width;
    shape.layers = c.text_depth;
    shape.heads = c.text_heads;
    shape.intermediate = c.text_mlp();
    shape.positions = c.text_position_rows();
    shape.pad_id = c.text_pad_id;
    roberta_ = register_module("roberta", RobertaText(shape));
  } else {
    token_embed_ = register_module("token_embed", torch::nn::Embedding(c.vocab_size, c.text_width));
    // Unit-variance token embeddings: a token's identity dominates its 0.01-scale position in the
    // residual stream. With N(0, 0.02) the text side learned far more slowly (docs/benchmarks.md:
    // 1.4x the steps to t2a R@1 30% at mask ratio 0.75 on the synthetic set).
    torch::nn::init::normal_(token_embed_->weight, 0.0, 1.0);
    text_pos_ = register_parameter("text_pos", at::randn({c.text_max_len, c.text_width}) * 0.01);
    text_blocks_ = register_module("text_blocks", torch::nn::ModuleList());
    for (int i = 0; i < c.text_depth; ++i) text_blocks_->push_back(Block(c.text_width, c.text_heads, c.mlp_ratio));
    text_norm_ = register_module("text_norm", ln(c.text_width));
  }
  text_proj1_ = register_module("text_proj1", torch::nn::Linear(c.text_width, c.embed_dim));
  text_proj2_ = register_module("text_proj2", torch::nn::Linear(c.embed_dim, c.embed_dim));
  InitLinear(text_proj1_);
  InitLinear(text_proj2_);

  decoder_in_ = register_module("decoder_in", torch::nn::Linear(c.recon_from_embedding() ? c.embed_dim : c.audio_width, c.decoder_width));
  InitLinear(decoder_in_);
  decoder_pos_ = register_buffer("decoder_pos", SinCos2d(c.decoder_width, c.time_patches(), c.freq_patches(),
                                                                c.audio_pos_freq_first()));
  decoder_blocks_ = register_module("decoder_blocks", torch::nn::ModuleList());
  for (int i = 0; i < c.decoder_depth; ++i) {
    decoder_blocks_->push_back(Block(c.decoder_width, c.decoder_heads, c.mlp_ratio));
  }
  decoder_norm_ = register_module("decoder_norm", ln(c.decoder_width));
  decoder_out_ = register_module("decoder_out", torch::nn::Linear(c.decoder_width, c.patch_dim()));
  InitLinear(decoder_out_);
  (void)n;

  logit_scale_ = register_parameter("logit_scale", at::full({}, logit_scale_init, at::kFloat));
}

AudioOutput FlapModelImpl::EncodeAudio(const torch::Tensor& spec, const torch::Tensor& keep) {
  // Embedding and position are per patch, so the kept patches are gathered first and only they
  // are embedded: the same tokens as embedding every patch and dropping afterwards.
  auto patches = Patchify(spec, config_.patch_size);
  torch::Tensor pos = audio_pos_;
  if (keep.defined()) {
    patches = patches.gather(1, keep.unsqueeze(-1).expand({keep.size(0), keep.size(1), patches.size(2)}));
    pos = audio_pos_.index_select(0, keep.reshape({-1})).view({keep.size(0), keep.size(1), audio_pos_.size(1)});
  }
  auto x = patch_embed_->forward(patches) + pos;
  for (const auto& block : *audio_blocks_) x = block->as<Block>()->forward(x);
  x = audio_norm_->forward(x);
  AudioOutput out;
  out.pooled = x.mean(1);
  // Normalised in fp32 (a no-op cast unless the forward runs under bf16 autocast).
  auto e = audio_proj2_->forward(at::relu(audio_proj1_->forward(out.pooled))).to(at::kFloat);
  out.embedding = e / e.norm(2, -1, true).clamp_min(1e-12);
  return out;
}

torch::Tensor FlapModelImpl::EncodeText(const torch::Tensor& tokens) {
  torch::Tensor pooled;
  if (roberta_) {
    pooled = roberta_->forward(tokens).select(1, 0);  // the hidden state at <s>
  } else {
    const int64_t len = tokens.size(1);
    auto pad = tokens.eq(config_.text_pad_id);
    auto x = token_embed_->forward(tokens) + text_pos_.slice(0, 0, len);
    for (const auto& block : *text_blocks_) x = block->as<Block>()->forward(x, pad);
    x = text_norm_->forward(x);
    auto keep = pad.logical_not().unsqueeze(-1).to(x.scalar_type());  // (B, L, 1)
    pooled = (x * keep).sum(1) / keep.sum(1).clamp_min(1.0);
  }
  auto e = text_proj2_->forward(at::relu(text_proj1_->forward(pooled))).to(at::kFloat);
  return e / e.norm(2, -1, true).clamp_min(1e-12);
}

torch::Tensor FlapModelImpl::Decode(const torch::Tensor& pooled) {
  auto x = decoder_in_->forward(pooled).unsqueeze(1) + decoder_pos_;  // (B, N, Wd)
  for (const auto& block : *decoder_blocks_) x = block->as<Block>()->forward(x);
  return decoder_out_->forward(decoder_norm_->forward(x));
}

ModelOutput FlapModelImpl::forward(const torch::Tensor& spec, const torch::Tensor& keep, const torch::Tensor& tokens,
                                   bool with_recon) {
  ModelOutput out;
  AudioOutput audio = EncodeAudio(spec, keep);
  out.audio = audio.embedding;
  out.text = EncodeText(tokens);
  out.logit_scale = logit_scale_;
  if (with_recon) out.recon = Decode(config_.recon_from_embedding() ? audio.embedding : audio.pooled);
  return out;
}

double TrainStepFlops(const ModelConfig& c, int64_t batch, int64_t kept, int64_t text_len, bool with_decoder,
                      int views) {
  // Per token and layer: qkv + proj (4 w^2) and MLP (2 * ratio * w^2) multiply-adds, plus
  // attention scores and mixing (2 * L * w). Two FLOPs per multiply-add.
  auto encoder = [&](double width, double depth, double len) {
    const double per_token = (4.0 + 2.0 * c.mlp_ratio) * width * width + 2.0 * len * width;
    return 2.0 * depth * len * per_token;
  };
  const double n = c.num_patches();
  // Per view: the patch embedding of the kept patches, the encoder over the kept tokens, the
  // audio projection, and the decoder.
  double audio = 2.0 * static_cast<double>(kept) * c.patch_dim() * c.audio_width +
                 encoder(c.audio_width, c.audio_depth, static_cast<double>(kept)) +
                 2.0 * (c.audio_width + c.embed_dim) * c.embed_dim;
  if (with_decoder) {
    const double decoder_in = c.recon_from_embedding() ? c.embed_dim : c.audio_width;
    audio += 2.0 * decoder_in * c.decoder_width + encoder(c.decoder_width, c.decoder_depth, n) +
             2.0 * n * c.decoder_width * c.patch_dim();
  }
  // The text encoder's MLP is text_mlp() wide (mlp_ratio x width for the flap tower).
  const double tw = c.text_width, tl = static_cast<double>(text_len);
  const double text = 2.0 * c.text_depth * tl * (4.0 * tw * tw + 2.0 * c.text_mlp() * tw + 2.0 * tl * tw) +
                      2.0 * (c.text_width + c.embed_dim) * c.embed_dim;
  return 3.0 * (static_cast<double>(views) * audio + text) * static_cast<double>(batch);
}

}  // namespace flap::core
