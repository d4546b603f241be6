// RoBERTa's text encoder (Liu et al. 2019; Hugging Face's RobertaModel without its pooler), as
// FLAP's text tower when model.text_tower = roberta (model.h):
//   embeddings  word + learned absolute position + token type 0, then LayerNorm. Position ids
//               count the non-pad tokens from padding_idx + 1 on (pad tokens get padding_idx):
//               cumsum(tokens != pad) * (tokens != pad) + pad, Hugging Face's
//               create_position_ids_from_input_ids, padding_idx being the tokenizer's pad id.
//   layers      post-LayerNorm blocks: h = LN(x + Wo Attn(x)); out = LN(h + W2 GELU(W1 h)), GELU
//               the exact (erf) one, attention over the non-pad keys, scaled by 1/sqrt(head dim).
//   LayerNorm   eps 1e-5 (RoBERTa's layer_norm_eps) everywhere.
// forward returns every position's last hidden state; FLAP pools position 0 (<s>).
//
// Parameters carry Hugging Face's names below the module ("embeddings.word_embeddings.weight",
// "encoder.layer.N.attention.self.query.weight", ...): registered in a FlapModel as "roberta",
// a RoBERTa checkpoint's `roberta.*` tensors keep their names (docs/warm_start.md lists them).
//
// Not thread-safe: one module per training thread, like any torch::nn::Module.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

namespace flap::core {

struct RobertaShape {
  int vocab_size = 0;
  int hidden = 0;
  int layers = 0;
  int heads = 0;
  int intermediate = 0;
  int positions = 0;  // rows of the position table (RoBERTa-base: 514)
  int type_vocab = 1;
  int pad_id = 1;  // padding_idx: the tokenizer's pad id
};

inline constexpr double kRobertaLayerNormEps = 1e-5;

// One encoder layer, post-LN.
class RobertaLayerImpl : public torch::nn::Module {
 public:
  RobertaLayerImpl(int hidden, int heads, int intermediate);
  // x: (B, L, hidden); key_pad: (B, L) bool, true = padding.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& key_pad);

 private:
  int heads_;
  torch::nn::Linear query_{nullptr}, key_{nullptr}, value_{nullptr}, attn_out_{nullptr};
  torch::nn::LayerNorm attn_norm_{nullptr};
  torch::nn::Linear inter_{nullptr}, out_{nullptr};
  torch::nn::LayerNorm out_norm_{nullptr};
};
TORCH_MODULE(RobertaLayer);

class RobertaTextImpl : public torch::nn::Module {
 public:
  explicit RobertaTextImpl(const RobertaShape& shape);
  // tokens: (B, L) int64, padded with shape.pad_id -> (B, L, hidden) last hidden states.
  torch::Tensor forward(const torch::Tensor& tokens);
  // (B, L) position ids of `tokens` (see the top of this file).
  torch::Tensor PositionIds(const torch::Tensor& tokens) const;
  const RobertaShape& shape() const { return shape_; }

 private:
  RobertaShape shape_;
  torch::nn::Embedding word_{nullptr}, position_{nullptr}, token_type_{nullptr};
  torch::nn::LayerNorm embed_norm_{nullptr};
  torch::nn::ModuleList layers_{nullptr};
};
TORCH_MODULE(RobertaText);

}  // namespace flap::core
