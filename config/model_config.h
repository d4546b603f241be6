// Configuration of the FLAP model and of what a training step does with it: architecture,
// token dropping, loss weights, optimiser and schedule. Plain structs with the default written
// at each field; `Preset()` gives the `tiny` and `base` presets of DESIGN.md, every field of
// which can be overridden afterwards. Validate() says what is wrong, by field name.
//
// Part of the LibTorch-only core: no dependency beyond the standard library.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace flap::core {

enum class MaskStrategy {
  k2d,  // drop a uniformly random subset of round(r * N) patches
  k1d,  // drop round(r * W) whole time columns
};
const char* MaskStrategyName(MaskStrategy s);
StatusOr<MaskStrategy> ParseMaskStrategy(const std::string& name);

struct ModelConfig {
  // Audio front end.
  int num_mel_bins = 128;   // frequency extent of the spectrogram
  int target_frames = 256;  // T: frames after padding / cropping (10 ms each)
  int patch_size = 16;      // square patches over (time, freq)

  // Channel layout of the fixed 2-D sin-cos audio positions (audio encoder and decoder): "flap"
  // codes time in the first half of each position vector and frequency in the second;
  // "audiomae" the other way round, as AudioMAE's get_2d_sincos_pos_embed_flexible (so an
  // encoder warm-started from AudioMAE sees the codes it was pre-trained with); "auto" is
  // "audiomae" when model.init_audio names a file with AudioMAE's (timm's) tensor names, else
  // "flap" (the worker resolves it before building the model: worker/warm_start.h). Token order
  // is time-major under every layout.
  std::string audio_pos_layout = "auto";
  bool audio_pos_freq_first() const { return audio_pos_layout == "audiomae"; }

  // Audio encoder (pre-LN ViT, mean-pooled).
  int audio_width = 192;
  int audio_depth = 4;
  int audio_heads = 3;

  // Text encoder: text_tower "flap" (pre-LN transformer, mean-pooled over non-pad tokens) or
  // "roberta" (RoBERTa's post-LN encoder pooled at <s>: roberta.h; its width, depth and heads are
  // text_width, text_depth and text_heads).
  std::string text_tower = "flap";
  int vocab_size = 256;  // set from the run's tokenizer
  int text_pad_id = 0;   // set from the run's tokenizer: the padding id (RoBERTa's <pad>: 1)
  int text_end_id = -1;  // set from the run's tokenizer: the id ending each caption (</s>), -1: none
  int text_intermediate = 0;  // roberta: MLP hidden size; 0: mlp_ratio * text_width
  int text_positions = 0;     // roberta: rows of the position table; 0: text_max_len + text_pad_id + 1
  bool text_roberta() const { return text_tower == "roberta"; }
  int text_mlp() const { return text_intermediate > 0 ? text_intermediate : mlp_ratio * text_width; }
  int text_position_rows() const { return text_positions > 0 ? text_positions : text_max_len + text_pad_id + 1; }
  int text_max_len = 32;  // tokens per caption after truncation
  int text_width = 192;
  int text_depth = 2;
  int text_heads = 3;

  int mlp_ratio = 4;    // MLP hidden width = mlp_ratio * width
  int embed_dim = 128;  // D: joint audio-text embedding size

  // Reconstruction decoder, fed only by one vector per clip: recon_source "embedding" (the
  // per-sample audio embedding, projected and L2-normalised, as the paper does: reconstruction
  // then shapes the contrastive embedding's projection too) or "pooled" (the encoder's mean-pooled
  // output before the projection).
  int decoder_width = 128;
  int decoder_depth = 1;
  int decoder_heads = 4;
  std::string recon_source = "embedding";
  bool recon_from_embedding() const { return recon_source == "embedding"; }

  int freq_patches() const { return num_mel_bins / patch_size; }
  int time_patches() const { return target_frames / patch_size; }
  int num_patches() const { return freq_patches() * time_patches(); }
  int patch_dim() const { return patch_size * patch_size; }

  // "tiny" (CPU tests and demos) or "base" (ViT-B lineage); InvalidArgument otherwise.
  static StatusOr<ModelConfig> Preset(const std::string& name);
  // A small model for tests and examples: `frames` x `mel_bins` input; audio and text encoders of
  // `width` channels, `depth` blocks and `heads` heads; embedding and decoder width / 2 with
  // `heads` heads; a `vocab_size`-token vocabulary and captions of 8 tokens; the rest as declared.
  static ModelConfig Small(int frames, int mel_bins, int width, int depth, int heads, int vocab_size);
  Status Validate() const;
};

struct MaskConfig {
  double ratio = 0.0;  // r in [0, 1): fraction of tokens dropped in training
  MaskStrategy strategy = MaskStrategy::k2d;
  // V: each clip of a training step is encoded V times with independent keep sets (draw
  // view 0..V-1), each view contrasted with the texts and reconstructed from its own dropped
  // patches, the losses averaged over views. > 1 needs ratio > 0.
  int views = 1;
  Status Validate() const;
};

struct LossConfig {
  double recon_weight = 0.0;                    // lambda; 0 turns reconstruction off
  double logit_scale_init = 2.659260036932778;  // ln(1 / 0.07)
  double logit_scale_max = 4.605170185988092;   // ln(100)
  Status Validate() const;
};

struct OptimConfig {
  double lr = 1e-3;            // peak learning rate
  double min_lr = 1e-5;        // end of the cosine
  double weight_decay = 0.05;  // AdamW, on weight matrices only (not biases, norms, the logit scale, the token
                               // embedding or the text positions)
  double beta1 = 0.9;
  double beta2 = 0.98;
  double eps = 1e-6;
  int64_t warmup_steps = 50;
  int64_t total_steps = 1000;  // cosine reaches min_lr here
  double grad_clip = 1.0;      // max global L2 norm; <= 0 disables
  Status Validate() const;
};

// Learning rate at `step` (0-based): linear warm-up to lr over warmup_steps, then cosine to
// min_lr at total_steps.
double LearningRate(const OptimConfig& c, int64_t step);

// The same schedule fitted to a budget that is not counted in steps (FLOPs, seconds; trainer.h,
// "Schedule"): `progress` in [0, 1] is the fraction of the binding budget spent before this
// step and `warmup_end` the progress at which the warm-up ended (at step warmup_steps). Linear
// warm-up over the first warmup_steps steps, then a cosine from lr to min_lr over the progress
// from warmup_end to 1; min_lr from progress 1 on.
double ScheduledLearningRate(const OptimConfig& c, int64_t step, double progress, double warmup_end);

}  // namespace flap::core
