// Warm starts: a FlapModel's audio or text encoder initialised from a safetensors checkpoint
// (model.init_audio, model.init_text), through the name maps of docs/warm_start.md.
//
// Audio files may use the AudioMAE / timm ViT names (`patch_embed.proj.weight` as a 1-channel
// convolution, `blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`, `norm` or
// `fc_norm`) or this model's own (`patch_embed`, `audio_blocks.N.*`, `audio_norm`); text files
// the CLIP text-tower names (`token_embedding`, `positional_embedding`,
// `transformer.resblocks.N.{ln_1,attn.in_proj_*,attn.out_proj,ln_2,mlp.c_fc,mlp.c_proj}`,
// `ln_final`) or this model's own (`token_embed`, `text_pos`, `text_blocks.N.*`, `text_norm`).
// A leading `module.`, `model.` or `audio_encoder.` / `text_encoder.` is removed first.
// Position tables and class tokens of the audio file, MAE decoders and classifier heads are
// ignored by name (and logged), and so are this model's own names outside the encoder (an
// exported model's other tower, projections, decoder and temperature: export.h); any other tensor the map does not place, any encoder
// parameter the file lacks and any shape that differs fail the load, each named, and leave
// the model untouched.
//
// Thread-safety: the model is written; one caller per model, like any torch::nn::Module.
#pragma once

#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "common/status.h"
#include "sharding/text_tokenizer.h"
#include "worker/core/model.h"

namespace flap::worker {

enum class Encoder { kAudio, kText };
const char* EncoderName(Encoder e);  // "audio" | "text"

struct WarmStartResult {
  int64_t loaded = 0;                // model tensors written
  std::vector<std::string> ignored;  // file tensors skipped by name (as named in the file)
};

// The model parameter a file tensor name maps to for `encoder` ("" when the map has no place
// for it); *ignored is set when the name is one the map skips on purpose.
std::string MapTensorName(Encoder encoder, const std::string& file_name, bool* ignored);

// Copies `tensors` (as read from `file`, which names it in errors) into the model's encoder.
StatusOr<WarmStartResult> LoadEncoder(core::FlapModel& model, Encoder encoder,
                                      const std::map<std::string, at::Tensor>& tensors, const std::string& file);
// Reads a safetensors file and loads it as above.
StatusOr<WarmStartResult> LoadEncoderFile(core::FlapModel& model, Encoder encoder, const std::string& path);

// The audio position layout (core::ModelConfig::audio_pos_layout) a model is built with: `layout`
// when it is "flap" or "audiomae"; for "auto", "audiomae" when `init_audio` names a safetensors
// file in AudioMAE's (timm's) names (its patch embedding a `patch_embed.proj.weight`
// convolution), else "flap". Reads only the file's header; errors as ReadSafetensorsIndex.
StatusOr<std::string> ResolveAudioPosLayout(const std::string& layout, const std::string& init_audio);

// The safetensors metadata keys under which an export records the tokenizer its text encoder
// was trained with (kind "sentencepiece" | "bpe", and its identity: text_tokenizer.h).
inline constexpr char kTokenizerKindKey[] = "tokenizer_kind";
inline constexpr char kTokenizerIdentityKey[] = "tokenizer_identity";

// OK unless `metadata` (of `file`) records a tokenizer identity other than `tokenizer`'s:
// then InvalidArgument naming both. A file that records none (a public checkpoint) passes.
Status CheckTokenizerIdentity(const std::map<std::string, std::string>& metadata, const std::string& file,
                              const sharding::TextTokenizer& tokenizer);

// The model config to build for a roberta text tower warm-started from `init_text`: the
// tower's shape read from the file's header (width and vocabulary from
// embeddings.word_embeddings.weight, layers from the encoder.layer.N present, MLP width from
// layer 0's intermediate.dense.weight, position rows from embeddings.position_embeddings.weight)
// into text_width, text_depth, text_intermediate and text_positions; text_heads is kept when
// `heads_given` (the config set model.text_heads), else width / 64 (RoBERTa's head size).
// `model` itself for the flap tower or without a file. InvalidArgument naming the file when it
// is no RoBERTa checkpoint, its vocabulary differs from model.vocab_size (the tokenizer's) or
// the resulting config is invalid (model.text_max_len beyond its positions); read errors as
// ReadSafetensorsIndex.
StatusOr<core::ModelConfig> ResolveTextTower(const core::ModelConfig& model, const std::string& init_text,
                                             bool heads_given);

// The config's warm starts (each path may be empty = none), one log line per file loaded.
// Call before the model moves to its device and before its optimizer exists. With `tokenizer`,
// a text file recording another tokenizer is refused (CheckTokenizerIdentity).
Status WarmStart(core::FlapModel& model, const std::string& init_audio, const std::string& init_text,
                 std::ostream& log, const sharding::TextTokenizer* tokenizer = nullptr);

}  // namespace flap::worker
