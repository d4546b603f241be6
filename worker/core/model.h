// The FLAP model (DESIGN.md, "The model"): a pre-LN ViT audio encoder over 16x16 log-mel
// patches with fixed 2-D sin-cos positions and optional token dropping, a pre-LN transformer
// text encoder over SentencePiece ids, Linear-ReLU-Linear projections to the joint space
// (L2-normalised), a learnable logit scale, and a light reconstruction decoder that sees only
// the per-sample pooled audio embedding.
//
// Not thread-safe: one model per training thread, like any torch::nn::Module.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include "config/model_config.h"
#include "worker/core/roberta.h"

namespace flap::core {

// Fixed 2-D sin-cos position embedding (MAE): (W * F, dim) for a time-major grid of W time
// patches and F frequency patches; the first dim/2 channels encode time and the rest frequency,
// or, with freq_first (AudioMAE's layout), frequency first and then time.
torch::Tensor SinCos2d(int dim, int time_patches, int freq_patches, bool freq_first = false);

// (B, T, M) spectrogram -> (B, N, p*p) patches, time-major (index w * F + f); each patch's
// values are ordered (time, freq) within the patch.
torch::Tensor Patchify(const torch::Tensor& spec, int patch_size);
// Inverse of Patchify.
torch::Tensor Unpatchify(const torch::Tensor& patches, int patch_size, int frames, int mel_bins);

// Multi-head self-attention with an optional key padding mask.
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int width, int heads);
  // x: (B, L, width). key_pad: (B, L) bool, true = padding (ignored as key); may be undefined.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& key_pad = {});

 private:
  int heads_;
  torch::nn::Linear qkv_{nullptr}, proj_{nullptr};
};
TORCH_MODULE(Attention);

// Pre-LN transformer block: x + Attn(LN(x)); x + MLP(LN(x)).
class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(int width, int heads, int mlp_ratio);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& key_pad = {});

 private:
  torch::nn::LayerNorm norm1_{nullptr}, norm2_{nullptr};
  Attention attn_{nullptr};
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(Block);

struct AudioOutput {
  torch::Tensor pooled;     // (B, audio_width): mean of the encoder's output tokens
  torch::Tensor embedding;  // (B, embed_dim), L2-normalised
};

struct ModelOutput {
  torch::Tensor audio;        // (B, D) normalised audio embeddings
  torch::Tensor text;         // (B, D) normalised text embeddings
  torch::Tensor logit_scale;  // scalar, the raw (log) parameter
  torch::Tensor recon;        // (B, N, p*p) predicted patches; undefined when not requested
};

class FlapModelImpl : public torch::nn::Module {
 public:
  explicit FlapModelImpl(const ModelConfig& config, double logit_scale_init = 2.659260036932778);

  // spec: (B, T, M) normalised log-mel. keep: (B, K) int64 sorted indices of kept patches, or
  // undefined to keep every patch (evaluation).
  AudioOutput EncodeAudio(const torch::Tensor& spec, const torch::Tensor& keep = {});
  // tokens: (B, L) int64 padded with config().text_pad_id; every row must hold at least one
  // non-pad token. The flap tower mean-pools its normalised outputs over the non-pad tokens;
  // the roberta tower takes the last hidden state at position 0 (<s>). Then the projection.
  torch::Tensor EncodeText(const torch::Tensor& tokens);
  // (B, audio_width) pooled audio -> (B, N, p*p) predicted patches.
  torch::Tensor Decode(const torch::Tensor& pooled);

  // Everything a training step needs; the decoder runs only if with_recon.
  ModelOutput forward(const torch::Tensor& spec, const torch::Tensor& keep, const torch::Tensor& tokens,
                      bool with_recon);

  const ModelConfig& config() const { return config_; }
  torch::Tensor& logit_scale() { return logit_scale_; }

 private:
  ModelConfig config_;
  // Audio.
  torch::nn::Linear patch_embed_{nullptr};
  torch::Tensor audio_pos_;  // buffer (N, audio_width)
  torch::nn::ModuleList audio_blocks_{nullptr};
  torch::nn::LayerNorm audio_norm_{nullptr};
  torch::nn::Linear audio_proj1_{nullptr}, audio_proj2_{nullptr};
  // Text: the flap tower (token_embed_ .. text_norm_) or the roberta tower (roberta_), then
  // the projection.
  RobertaText roberta_{nullptr};
  torch::nn::Embedding token_embed_{nullptr};
  torch::Tensor text_pos_;  // parameter (text_max_len, text_width)
  torch::nn::ModuleList text_blocks_{nullptr};
  torch::nn::LayerNorm text_norm_{nullptr};
  torch::nn::Linear text_proj1_{nullptr}, text_proj2_{nullptr};
  // Decoder.
  torch::nn::Linear decoder_in_{nullptr};
  torch::Tensor decoder_pos_;  // buffer (N, decoder_width)
  torch::nn::ModuleList decoder_blocks_{nullptr};
  torch::nn::LayerNorm decoder_norm_{nullptr};
  torch::nn::Linear decoder_out_{nullptr};
  // Contrastive temperature, as log(1 / tau).
  torch::Tensor logit_scale_;
};
TORCH_MODULE(FlapModel);

// Number of floating-point operations of one training step (forward + backward = 3x forward,
// matrix products only) for a batch of `batch` samples keeping `kept` audio tokens each and
// `text_len` text tokens, with the decoder on or off, each clip encoded `views` times. Used to
// report achieved FLOP/s and MFU.
double TrainStepFlops(const ModelConfig& c, int64_t batch, int64_t kept, int64_t text_len, bool with_decoder,
                      int views = 1);

}  // namespace flap::core
