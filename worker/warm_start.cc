#include "worker/warm_start.h"

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <cctype>
#include <set>
#include <sstream>

#include "worker/safetensors.h"

namespace flap::worker {
namespace {

bool StartsWith(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

bool Consume(std::string* s, const std::string& prefix) {
  if (!StartsWith(*s, prefix)) return false;
  s->erase(0, prefix.size());
  return true;
}

// Removes wrapper prefixes (DataParallel's `module.`, `model.`, a tower name), in any number.
std::string StripWrappers(Encoder encoder, std::string name) {
  const std::string tower = encoder == Encoder::kAudio ? "audio_encoder." : "text_encoder.";
  while (Consume(&name, "module.") || Consume(&name, "model.") || Consume(&name, tower)) {
  }
  return name;
}

// "<prefix>N.<rest>" -> N and rest; false if `name` is not a numbered child of `prefix`.
bool SplitBlock(const std::string& name, const std::string& prefix, std::string* index, std::string* rest) {
  if (!StartsWith(name, prefix)) return false;
  size_t i = prefix.size(), j = i;
  while (j < name.size() && std::isdigit(static_cast<unsigned char>(name[j]))) ++j;
  if (j == i || j >= name.size() || name[j] != '.') return false;
  *index = name.substr(i, j - i);
  *rest = name.substr(j + 1);
  return true;
}

// Maps the name of one tensor inside a block; "" when unknown.
std::string MapBlockTensor(const std::string& rest, const std::map<std::string, std::string>& table) {
  for (const auto& [from, to] : table) {
    if (rest == from + ".weight") return to + ".weight";
    if (rest == from + ".bias") return to + ".bias";
  }
  return "";
}

// Inside an audio block: timm / AudioMAE names and this model's own.
const std::map<std::string, std::string>& AudioBlockTable() {
  static const std::map<std::string, std::string> t = {
      {"norm1", "norm1"}, {"attn.qkv", "attn.qkv"}, {"attn.proj", "attn.proj"},
      {"norm2", "norm2"}, {"mlp.fc1", "fc1"},       {"mlp.fc2", "fc2"},
      {"fc1", "fc1"},     {"fc2", "fc2"},
  };
  return t;
}

// Inside a CLIP text block (nn.MultiheadAttention's packed q, k, v projection is the same
// (3 x width, width) layout as attn.qkv).
const std::map<std::string, std::string>& ClipBlockTable() {
  static const std::map<std::string, std::string> t = {
      {"ln_1", "norm1"}, {"attn.out_proj", "attn.proj"}, {"ln_2", "norm2"}, {"mlp.c_fc", "fc1"}, {"mlp.c_proj", "fc2"},
  };
  return t;
}

const std::map<std::string, std::string>& OwnBlockTable() {
  static const std::map<std::string, std::string> t = {
      {"norm1", "norm1"}, {"attn.qkv", "attn.qkv"}, {"attn.proj", "attn.proj"},
      {"norm2", "norm2"}, {"fc1", "fc1"},           {"fc2", "fc2"},
  };
  return t;
}

// RoBERTa (Hugging Face's RobertaModel names): the roberta tower's parameters carry the same
// names under `roberta.` (worker/core/roberta.h), so a file tensor maps to `roberta.` + its name
// without a leading `roberta.`. The tensors outside the layers, then those of layer N, under
// `encoder.layer.N.` (each with .weight and .bias).
const std::vector<std::string>& RobertaEmbeddingTensors() {
  static const std::vector<std::string> t = {
      "embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
      "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"};
  return t;
}
const std::vector<std::string>& RobertaLayerTensors() {
  static const std::vector<std::string> t = {"attention.self.query", "attention.self.key", "attention.self.value",
                                             "attention.output.dense", "attention.output.LayerNorm",
                                             "intermediate.dense", "output.dense", "output.LayerNorm"};
  return t;
}

// `n` without a leading "roberta.".
std::string WithoutRobertaPrefix(std::string n) {
  Consume(&n, "roberta.");
  return n;
}

// The roberta tower's parameter for a RoBERTa file tensor; "" when the name is not one.
std::string MapRoberta(const std::string& name) {
  const std::string n = WithoutRobertaPrefix(name);
  for (const std::string& e : RobertaEmbeddingTensors()) {
    if (n == e) return "roberta." + n;
  }
  std::string index, rest;
  if (SplitBlock(n, "encoder.layer.", &index, &rest)) {
    for (const std::string& t : RobertaLayerTensors()) {
      if (rest == t + ".weight" || rest == t + ".bias") return "roberta." + n;
    }
  }
  return "";
}

bool IsIgnored(Encoder encoder, const std::string& n) {
  if (encoder == Encoder::kAudio) {
    // Learnt or fixed position tables (ours is fixed sin-cos, sized by the config), class and
    // distillation tokens, the MAE decoder and mask token, classifier heads.
    return n == "pos_embed" || n == "cls_token" || n == "dist_token" || n == "mask_token" || n == "audio_pos" ||
           StartsWith(n, "decoder_") || StartsWith(n, "decoder.") || StartsWith(n, "head.") ||
           StartsWith(n, "head_dist.");
  }
  // CLIP: the joint projection, the temperature, the causal mask buffer, the image tower.
  // RoBERTa: Hugging Face's pooler (FLAP pools the raw <s> state), the masked-LM head and the
  // position / token-type id buffers some checkpoints carry.
  const std::string r = WithoutRobertaPrefix(n);
  return n == "text_projection" || n == "logit_scale" || n == "attn_mask" || StartsWith(n, "visual.") ||
         StartsWith(r, "pooler.") || StartsWith(n, "lm_head.") || r == "embeddings.position_ids" ||
         r == "embeddings.token_type_ids";
}

std::string MapStripped(Encoder encoder, const std::string& n) {
  std::string index, rest;
  if (encoder == Encoder::kAudio) {
    if (n == "patch_embed.proj.weight" || n == "patch_embed.weight") return "patch_embed.weight";
    if (n == "patch_embed.proj.bias" || n == "patch_embed.bias") return "patch_embed.bias";
    for (const char* prefix : {"blocks.", "audio_blocks."}) {
      if (SplitBlock(n, prefix, &index, &rest)) {
        const std::string to = MapBlockTensor(rest, AudioBlockTable());
        return to.empty() ? "" : "audio_blocks." + index + "." + to;
      }
    }
    for (const char* prefix : {"norm.", "fc_norm.", "audio_norm."}) {
      std::string r = n;
      if (Consume(&r, prefix) && (r == "weight" || r == "bias")) return "audio_norm." + r;
    }
    return "";
  }
  if (const std::string roberta = MapRoberta(n); !roberta.empty()) return roberta;
  if (n == "token_embedding.weight" || n == "token_embed.weight") return "token_embed.weight";
  if (n == "positional_embedding" || n == "text_pos") return "text_pos";
  if (SplitBlock(n, "transformer.resblocks.", &index, &rest)) {
    if (rest == "attn.in_proj_weight") return "text_blocks." + index + ".attn.qkv.weight";
    if (rest == "attn.in_proj_bias") return "text_blocks." + index + ".attn.qkv.bias";
    const std::string to = MapBlockTensor(rest, ClipBlockTable());
    return to.empty() ? "" : "text_blocks." + index + "." + to;
  }
  if (SplitBlock(n, "text_blocks.", &index, &rest)) {
    const std::string to = MapBlockTensor(rest, OwnBlockTable());
    return to.empty() ? "" : "text_blocks." + index + "." + to;
  }
  for (const char* prefix : {"ln_final.", "text_norm."}) {
    std::string r = n;
    if (Consume(&r, prefix) && (r == "weight" || r == "bias")) return "text_norm." + r;
  }
  return "";
}

// The model parameters a warm start of `encoder` must fill.
bool InEncoder(Encoder encoder, const std::string& name) {
  if (encoder == Encoder::kAudio) {
    return StartsWith(name, "patch_embed.") || StartsWith(name, "audio_blocks.") || StartsWith(name, "audio_norm.");
  }
  return StartsWith(name, "token_embed.") || name == "text_pos" || StartsWith(name, "text_blocks.") ||
         StartsWith(name, "text_norm.") || StartsWith(name, "roberta.");
}

// Lists `names` (at most `limit`, then a count) for a log line.
std::string Abbreviate(const std::vector<std::string>& names, size_t limit) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < limit; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > limit) s += " and " + std::to_string(names.size() - limit) + " more";
  return s;
}

}  // namespace

const char* EncoderName(Encoder e) { return e == Encoder::kAudio ? "audio" : "text"; }

std::string MapTensorName(Encoder encoder, const std::string& file_name, bool* ignored) {
  const std::string n = StripWrappers(encoder, file_name);
  *ignored = IsIgnored(encoder, n);
  return *ignored ? "" : MapStripped(encoder, n);
}

StatusOr<WarmStartResult> LoadEncoder(core::FlapModel& model, Encoder encoder,
                                      const std::map<std::string, at::Tensor>& tensors, const std::string& file) {
  // With both a token-wise `norm` and a pooled `fc_norm` (timm's global-pool heads), the
  // token-wise one is what this model's audio_norm is.
  bool has_norm = false;
  if (encoder == Encoder::kAudio) {
    for (const auto& entry : tensors) has_norm = has_norm || StripWrappers(encoder, entry.first) == "norm.weight";
  }

  if (encoder == Encoder::kText) {
    // A RoBERTa file needs the roberta tower, and the roberta tower a RoBERTa file.
    std::string roberta_tensor;
    for (const auto& entry : tensors) {
      bool ignored = false;
      if (StartsWith(MapTensorName(encoder, entry.first, &ignored), "roberta.")) roberta_tensor = entry.first;
    }
    if (!roberta_tensor.empty() && !model->config().text_roberta()) {
      return Status::InvalidArgument("'" + file + "' holds a RoBERTa text encoder (" + roberta_tensor +
                                     "): it needs model.text_tower = roberta (this model's text tower is " +
                                     model->config().text_tower + ")");
    }
    if (roberta_tensor.empty() && model->config().text_roberta()) {
      return Status::InvalidArgument("'" + file +
                                     "' holds no RoBERTa tensors (Hugging Face names such as "
                                     "roberta.embeddings.word_embeddings.weight): model.text_tower = roberta loads "
                                     "RoBERTa checkpoints only (name map: docs/warm_start.md)");
    }
  }
  auto params = model->named_parameters(/*recurse=*/true);
  // This model's own names outside the encoder (an exported model's other tower, projections,
  // decoder and temperature) are passed over: an export warm-starts either encoder.
  std::set<std::string> own;
  for (const auto& p : params) own.insert(p.key());
  for (const auto& b : model->named_buffers(/*recurse=*/true)) own.insert(b.key());
  WarmStartResult result;
  std::vector<std::string> unmapped, mismatched, duplicated, missing;
  std::map<std::string, std::pair<std::string, at::Tensor>> planned;  // model name -> (file name, value)
  std::set<std::string> refused;  // model names whose file tensor has the wrong shape
  for (const auto& [file_name, value] : tensors) {
    bool ignored = false;
    std::string target = MapTensorName(encoder, file_name, &ignored);
    if (!ignored && has_norm && StartsWith(StripWrappers(encoder, file_name), "fc_norm.")) ignored = true;
    const std::string stripped = StripWrappers(encoder, file_name);
    if (!ignored && own.count(stripped) && !InEncoder(encoder, stripped)) ignored = true;
    if (ignored) {
      result.ignored.push_back(file_name);
      continue;
    }
    const at::Tensor* param = target.empty() ? nullptr : params.find(target);
    if (param == nullptr) {
      unmapped.push_back(file_name + (target.empty() ? "" : " (-> " + target + ", which this model does not have)"));
      continue;
    }
    if (planned.count(target)) {
      duplicated.push_back(file_name + " and " + planned[target].first + " (both -> " + target + ")");
      continue;
    }
    at::Tensor v = value;
    // AudioMAE's patch embedding is a 1-channel convolution over (B, 1, T, F) input: weight
    // (width, 1, time, freq). Flattened, a kernel is ordered (time, freq), as Patchify orders
    // a patch's values, so the Linear weight is the kernel reshaped.
    if (target == "patch_embed.weight" && v.dim() == 4 && v.size(1) == 1) v = v.reshape({v.size(0), -1});
    if (!v.sizes().equals(param->sizes())) {
      mismatched.push_back(file_name + " (file " + ShapeText(value.sizes()) + ", model " + target + " " +
                           ShapeText(param->sizes()) + ")");
      refused.insert(target);
      continue;
    }
    planned.emplace(target, std::make_pair(file_name, v));
  }
  for (const auto& item : params) {
    // A parameter whose tensor is there with the wrong shape is reported as a mismatch only.
    if (InEncoder(encoder, item.key()) && !planned.count(item.key()) && !refused.count(item.key())) {
      missing.push_back(item.key());
    }
  }
  if (!unmapped.empty() || !mismatched.empty() || !duplicated.empty() || !missing.empty()) {
    std::string msg = "cannot warm-start the " + std::string(EncoderName(encoder)) + " encoder from '" + file +
                      "' (name map: docs/warm_start.md)";
    auto section = [&](const char* title, const std::vector<std::string>& items) {
      if (items.empty()) return;
      msg += std::string("; ") + title + " (" + std::to_string(items.size()) + "): ";
      for (size_t i = 0; i < items.size(); ++i) msg += (i ? ", " : "") + items[i];
    };
    section("file tensors the name map does not place", unmapped);
    section("shape mismatches", mismatched);
    section("tensors mapped twice", duplicated);
    section("encoder parameters missing from the file", missing);
    return Status::InvalidArgument(msg);
  }
  torch::NoGradGuard no_grad;
  for (auto& [target, source] : planned) {
    params[target].copy_(source.second);
    ++result.loaded;
  }
  return result;
}

StatusOr<std::string> ResolveAudioPosLayout(const std::string& layout, const std::string& init_audio) {
  if (layout != "auto") return layout;
  if (init_audio.empty()) return std::string("flap");
  FLAP_ASSIGN_OR_RETURN(SafetensorsIndex index, ReadSafetensorsIndex(init_audio));
  for (const auto& entry : index.tensors) {
    if (StripWrappers(Encoder::kAudio, entry.first) == "patch_embed.proj.weight") return std::string("audiomae");
  }
  return std::string("flap");
}

StatusOr<WarmStartResult> LoadEncoderFile(core::FlapModel& model, Encoder encoder, const std::string& path) {
  FLAP_ASSIGN_OR_RETURN(auto tensors, ReadSafetensors(path));
  return LoadEncoder(model, encoder, tensors, path);
}

Status CheckTokenizerIdentity(const std::map<std::string, std::string>& metadata, const std::string& file,
                              const sharding::TextTokenizer& tokenizer) {
  auto it = metadata.find(kTokenizerIdentityKey);
  if (it == metadata.end() || it->second == tokenizer.identity()) return Status::OK();
  auto kind = metadata.find(kTokenizerKindKey);
  return Status::InvalidArgument("'" + file + "' was trained with tokenizer " +
                                 (kind == metadata.end() ? std::string("?") : kind->second) + " " + it->second +
                                 ", this run tokenises with " + tokenizer.Describe() +
                                 ": its token ids would not mean the same (give text.tokenizer the file's tokenizer; "
                                 "an export's folder holds it)");
}

StatusOr<core::ModelConfig> ResolveTextTower(const core::ModelConfig& model, const std::string& init_text,
                                             bool heads_given) {
  if (!model.text_roberta() || init_text.empty()) return model;
  FLAP_ASSIGN_OR_RETURN(SafetensorsIndex index, ReadSafetensorsIndex(init_text));
  const std::string where = "model.init_text '" + init_text + "'";
  std::map<std::string, std::vector<int64_t>> shapes;  // by roberta tower parameter
  for (const auto& [name, info] : index.tensors) {
    const std::string target = MapRoberta(StripWrappers(Encoder::kText, name));
    if (!target.empty()) shapes[target] = info.shape;
  }
  auto matrix = [&](const std::string& name) -> StatusOr<std::vector<int64_t>> {
    auto it = shapes.find("roberta." + name);
    if (it == shapes.end() || it->second.size() != 2) {
      return Status::InvalidArgument(
          where + " has no 2-D tensor roberta." + name +
          " (or without the roberta. prefix): not a RoBERTa checkpoint (docs/warm_start.md)");
    }
    return it->second;
  };
  FLAP_ASSIGN_OR_RETURN(auto words, matrix("embeddings.word_embeddings.weight"));
  FLAP_ASSIGN_OR_RETURN(auto positions, matrix("embeddings.position_embeddings.weight"));
  FLAP_ASSIGN_OR_RETURN(auto intermediate, matrix("encoder.layer.0.intermediate.dense.weight"));
  int layers = 0;
  while (shapes.count("roberta.encoder.layer." + std::to_string(layers) + ".attention.self.query.weight")) ++layers;
  core::ModelConfig c = model;
  if (words[0] != model.vocab_size) {
    return Status::InvalidArgument(where + " has a " + std::to_string(words[0]) +
                                   "-token vocabulary and this run's tokenizer " + std::to_string(model.vocab_size) +
                                   " ids: give text.tokenizer the checkpoint's vocab.json + merges.txt");
  }
  c.text_width = static_cast<int>(words[1]);
  c.text_depth = layers;
  c.text_intermediate = static_cast<int>(intermediate[0]);
  c.text_positions = static_cast<int>(positions[0]);
  if (!heads_given) {
    // Heads leave no trace in the tensors' shapes: RoBERTa's checkpoints use 64 channels per
    // head (base: 768 / 12, large: 1024 / 16).
    if (c.text_width % 64 != 0) {
      return Status::InvalidArgument(where + " is " + std::to_string(c.text_width) +
                                     " wide, not a multiple of 64: give its attention heads with model.text_heads");
    }
    c.text_heads = c.text_width / 64;
  }
  FLAP_RETURN_IF_ERROR(c.Validate().WithContext(where));
  return c;
}

Status WarmStart(core::FlapModel& model, const std::string& init_audio, const std::string& init_text,
                 std::ostream& log, const sharding::TextTokenizer* tokenizer) {
  for (const auto& [encoder, path] :
       {std::make_pair(Encoder::kAudio, init_audio), std::make_pair(Encoder::kText, init_text)}) {
    if (path.empty()) continue;
    const std::string key = encoder == Encoder::kAudio ? "model.init_audio" : "model.init_text";
    auto load = [&, encoder = encoder, path = path]() -> StatusOr<WarmStartResult> {
      if (encoder != Encoder::kText) return LoadEncoderFile(model, encoder, path);
      FLAP_ASSIGN_OR_RETURN(SafetensorsContents contents, ReadSafetensorsWithMetadata(path));
      if (tokenizer != nullptr) FLAP_RETURN_IF_ERROR(CheckTokenizerIdentity(contents.metadata, path, *tokenizer));
      return LoadEncoder(model, encoder, contents.tensors, path);
    };
    auto loaded = load();
    if (!loaded.ok()) return loaded.status().WithContext(key);
    log << "warm start: " << EncoderName(encoder) << " encoder loaded from '" << path << "' (" << loaded->loaded
        << " tensors";
    if (!loaded->ignored.empty()) {
      log << "; ignored " << loaded->ignored.size() << ": " << Abbreviate(loaded->ignored, 6);
    }
    log << ")" << std::endl;
  }
  return Status::OK();
}

}  // namespace flap::worker
