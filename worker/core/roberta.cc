#include "worker/core/roberta.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <memory>
#include <string>

#include "worker/core/torch_compat.h"

namespace flap::core {
namespace {

// A named level of Hugging Face's module tree that holds only submodules ("attention",
// "attention.self", "embeddings", ...).
std::shared_ptr<torch::nn::Module> Level(torch::nn::Module& parent, const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

torch::nn::LayerNorm Norm(int width) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({width}).eps(kRobertaLayerNormEps));
}

// RoBERTa's initialisation (BERT's): N(0, 0.02) weights, zero biases; the padding row of the
// embeddings zero.
void InitLinear(torch::nn::Linear& l) {
  torch::nn::init::normal_(l->weight, 0.0, 0.02);
  torch::nn::init::zeros_(l->bias);
}

}  // namespace

RobertaLayerImpl::RobertaLayerImpl(int hidden, int heads, int intermediate) : heads_(heads) {
  auto attention = Level(*this, "attention");
  auto self = Level(*attention, "self");
  query_ = self->register_module("query", torch::nn::Linear(hidden, hidden));
  key_ = self->register_module("key", torch::nn::Linear(hidden, hidden));
  value_ = self->register_module("value", torch::nn::Linear(hidden, hidden));
  auto attention_output = Level(*attention, "output");
  attn_out_ = attention_output->register_module("dense", torch::nn::Linear(hidden, hidden));
  attn_norm_ = attention_output->register_module("LayerNorm", Norm(hidden));
  inter_ = Level(*this, "intermediate")->register_module("dense", torch::nn::Linear(hidden, intermediate));
  auto output = Level(*this, "output");
  out_ = output->register_module("dense", torch::nn::Linear(intermediate, hidden));
  out_norm_ = output->register_module("LayerNorm", Norm(hidden));
  for (auto* l : {&query_, &key_, &value_, &attn_out_, &inter_, &out_}) InitLinear(*l);
}

torch::Tensor RobertaLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& key_pad) {
  const int64_t b = x.size(0), l = x.size(1), hidden = x.size(2), hd = hidden / heads_;
  auto split = [&](const torch::Tensor& t) { return t.view({b, l, heads_, hd}).transpose(1, 2); };  // (B, H, L, d)
  auto context =
      compat::Attention(split(query_->forward(x)), split(key_->forward(x)), split(value_->forward(x)), key_pad)
          .transpose(1, 2)
          .reshape({b, l, hidden});
  auto h = attn_norm_->forward(attn_out_->forward(context) + x);
  return out_norm_->forward(out_->forward(at::gelu(inter_->forward(h))) + h);
}

RobertaTextImpl::RobertaTextImpl(const RobertaShape& s) : shape_(s) {
  auto embeddings = Level(*this, "embeddings");
  word_ = embeddings->register_module("word_embeddings", torch::nn::Embedding(s.vocab_size, s.hidden));
  position_ = embeddings->register_module("position_embeddings", torch::nn::Embedding(s.positions, s.hidden));
  token_type_ = embeddings->register_module("token_type_embeddings", torch::nn::Embedding(s.type_vocab, s.hidden));
  embed_norm_ = embeddings->register_module("LayerNorm", Norm(s.hidden));
  for (auto* e : {&word_, &position_, &token_type_}) torch::nn::init::normal_((*e)->weight, 0.0, 0.02);
  {
    at::NoGradGuard no_grad;
    word_->weight[s.pad_id].zero_();
    position_->weight[s.pad_id].zero_();
  }
  layers_ = Level(*this, "encoder")->register_module("layer", torch::nn::ModuleList());
  for (int i = 0; i < s.layers; ++i) layers_->push_back(RobertaLayer(s.hidden, s.heads, s.intermediate));
}

torch::Tensor RobertaTextImpl::PositionIds(const torch::Tensor& tokens) const {
  auto mask = tokens.ne(shape_.pad_id).to(at::kLong);
  return at::cumsum(mask, 1) * mask + shape_.pad_id;
}

torch::Tensor RobertaTextImpl::forward(const torch::Tensor& tokens) {
  auto pad = tokens.eq(shape_.pad_id);
  // Token type 0 for every token: its embedding row, broadcast.
  auto x = word_->forward(tokens) + position_->forward(PositionIds(tokens)) + token_type_->weight[0];
  x = embed_norm_->forward(x);
  for (const auto& layer : *layers_) x = layer->as<RobertaLayer>()->forward(x, pad);
  return x;
}

}  // namespace flap::core
