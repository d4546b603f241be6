#include "config/model_config.h"

#include <algorithm>
#include <cmath>

namespace flap::core {

const char* MaskStrategyName(MaskStrategy s) { return s == MaskStrategy::k1d ? "1d" : "2d"; }

StatusOr<MaskStrategy> ParseMaskStrategy(const std::string& name) {
  if (name == "2d") return MaskStrategy::k2d;
  if (name == "1d") return MaskStrategy::k1d;
  return Status::InvalidArgument("mask.strategy must be '1d' or '2d', got '" + name + "'");
}

StatusOr<ModelConfig> ModelConfig::Preset(const std::string& name) {
  ModelConfig c;
  if (name == "tiny") return c;  // the defaults are the tiny preset
  if (name == "base") {
    c.target_frames = 1024;
    c.audio_width = 768;
    c.audio_depth = 12;
    c.audio_heads = 12;
    c.text_width = 768;
    c.text_depth = 12;
    c.text_heads = 12;
    c.text_max_len = 64;
    c.vocab_size = 8000;
    c.embed_dim = 512;
    c.decoder_width = 512;
    c.decoder_depth = 8;
    c.decoder_heads = 16;
    return c;
  }
  return Status::InvalidArgument("model.preset must be 'tiny' or 'base', got '" + name + "'");
}

ModelConfig ModelConfig::Small(int frames, int mel_bins, int width, int depth, int heads, int vocab_size) {
  ModelConfig c;
  c.target_frames = frames;
  c.num_mel_bins = mel_bins;
  c.audio_width = c.text_width = width;
  c.audio_depth = c.text_depth = depth;
  c.audio_heads = c.text_heads = c.decoder_heads = heads;
  c.embed_dim = c.decoder_width = width / 2;
  c.vocab_size = vocab_size;
  c.text_max_len = 8;
  return c;
}

namespace {
Status Positive(const char* field, int64_t v) {
  if (v <= 0) return Status::InvalidArgument(std::string(field) + " must be > 0, got " + std::to_string(v));
  return Status::OK();
}
Status Divisible(const char* field, int64_t v, const char* by_field, int64_t by) {
  if (by <= 0 || v % by != 0) {
    return Status::InvalidArgument(std::string(field) + " (" + std::to_string(v) + ") must be a multiple of " +
                                   by_field + " (" + std::to_string(by) + ")");
  }
  return Status::OK();
}
}  // namespace

Status ModelConfig::Validate() const {
  if (audio_pos_layout != "auto" && audio_pos_layout != "flap" && audio_pos_layout != "audiomae")
    return Status::InvalidArgument("audio_pos_layout must be auto, flap or audiomae, not '" + audio_pos_layout + "'");
  if (text_tower != "flap" && text_tower != "roberta")
    return Status::InvalidArgument("model.text_tower must be flap or roberta, not '" + text_tower + "'");
  if (text_roberta() && text_max_len + text_pad_id + 1 > text_position_rows()) {
    return Status::InvalidArgument(
        "model.text_max_len (" + std::to_string(text_max_len) + ") needs " +
        std::to_string(text_max_len + text_pad_id + 1) + " rows of the RoBERTa position table (positions start after "
        "the padding id " + std::to_string(text_pad_id) + "), it has " + std::to_string(text_position_rows()) +
        " (model.text_positions)");
  }
  if (text_pad_id < 0 || text_pad_id >= vocab_size || text_end_id >= vocab_size) {
    return Status::InvalidArgument("the tokenizer's padding id " + std::to_string(text_pad_id) + " or end id " +
                                   std::to_string(text_end_id) + " lies outside its " + std::to_string(vocab_size) +
                                   " ids");
  }
  if (recon_source != "embedding" && recon_source != "pooled")
    return Status::InvalidArgument("recon_source must be embedding or pooled, not '" + recon_source + "'");
  FLAP_RETURN_IF_ERROR(Positive("model.patch_size", patch_size));
  FLAP_RETURN_IF_ERROR(Divisible("model.num_mel_bins", num_mel_bins, "model.patch_size", patch_size));
  FLAP_RETURN_IF_ERROR(Divisible("model.target_frames", target_frames, "model.patch_size", patch_size));
  FLAP_RETURN_IF_ERROR(Positive("model.num_mel_bins", num_mel_bins));
  FLAP_RETURN_IF_ERROR(Positive("model.target_frames", target_frames));
  FLAP_RETURN_IF_ERROR(Positive("model.audio_depth", audio_depth));
  FLAP_RETURN_IF_ERROR(Positive("model.audio_heads", audio_heads));
  FLAP_RETURN_IF_ERROR(Positive("model.text_depth", text_depth));
  FLAP_RETURN_IF_ERROR(Positive("model.text_heads", text_heads));
  FLAP_RETURN_IF_ERROR(Positive("model.decoder_depth", decoder_depth));
  FLAP_RETURN_IF_ERROR(Positive("model.decoder_heads", decoder_heads));
  FLAP_RETURN_IF_ERROR(Positive("model.vocab_size", vocab_size));
  FLAP_RETURN_IF_ERROR(Positive("model.text_max_len", text_max_len));
  FLAP_RETURN_IF_ERROR(Positive("model.embed_dim", embed_dim));
  FLAP_RETURN_IF_ERROR(Positive("model.mlp_ratio", mlp_ratio));
  FLAP_RETURN_IF_ERROR(Positive("model.text_intermediate", text_mlp()));
  FLAP_RETURN_IF_ERROR(Positive("model.text_positions", text_position_rows()));
  // 2-D sin-cos positions split the width in four (sin/cos for each axis).
  FLAP_RETURN_IF_ERROR(Divisible("model.audio_width", audio_width, "4", 4));
  FLAP_RETURN_IF_ERROR(Divisible("model.decoder_width", decoder_width, "4", 4));
  FLAP_RETURN_IF_ERROR(Positive("model.text_width", text_width));
  FLAP_RETURN_IF_ERROR(Divisible("model.audio_width", audio_width, "model.audio_heads", audio_heads));
  FLAP_RETURN_IF_ERROR(Divisible("model.text_width", text_width, "model.text_heads", text_heads));
  FLAP_RETURN_IF_ERROR(Divisible("model.decoder_width", decoder_width, "model.decoder_heads", decoder_heads));
  return Status::OK();
}

Status MaskConfig::Validate() const {
  if (!(ratio >= 0.0 && ratio < 1.0)) {
    return Status::InvalidArgument("mask.ratio must be in [0, 1), got " + std::to_string(ratio));
  }
  if (views < 1 || views > 16)
    return Status::InvalidArgument("mask.views must be in [1, 16], got " + std::to_string(views));
  if (views > 1 && ratio == 0.0) {
    return Status::InvalidArgument("mask.views " + std::to_string(views) +
                                   " needs mask.ratio > 0 (unmasked views are identical)");
  }
  return Status::OK();
}

Status LossConfig::Validate() const {
  if (!(recon_weight >= 0.0) || !std::isfinite(recon_weight)) {
    return Status::InvalidArgument("loss.recon_weight must be a finite number >= 0, got " + std::to_string(recon_weight));
  }
  if (!(logit_scale_init <= logit_scale_max)) {
    return Status::InvalidArgument("loss.logit_scale_init must not exceed loss.logit_scale_max");
  }
  return Status::OK();
}

Status OptimConfig::Validate() const {
  if (!(lr > 0.0) || !std::isfinite(lr)) {
    return Status::InvalidArgument("optim.lr must be a finite number > 0, got " + std::to_string(lr));
  }
  if (!(min_lr >= 0.0 && min_lr <= lr)) {
    return Status::InvalidArgument("optim.min_lr must be in [0, optim.lr], got " + std::to_string(min_lr));
  }
  if (!(weight_decay >= 0.0)) return Status::InvalidArgument("optim.weight_decay must be >= 0");
  if (!(beta1 >= 0.0 && beta1 < 1.0)) return Status::InvalidArgument("optim.beta1 must be in [0, 1)");
  if (!(beta2 >= 0.0 && beta2 < 1.0)) return Status::InvalidArgument("optim.beta2 must be in [0, 1)");
  if (!(eps > 0.0)) return Status::InvalidArgument("optim.eps must be > 0");
  if (warmup_steps < 0) return Status::InvalidArgument("optim.warmup_steps must be >= 0");
  FLAP_RETURN_IF_ERROR(Positive("optim.total_steps", total_steps));
  return Status::OK();
}

namespace {
// lr at the start of the cosine (fraction 0) down to min_lr at its end (fraction 1 and on).
double Cosine(const OptimConfig& c, double fraction) {
  return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + std::cos(M_PI * std::min(1.0, std::max(0.0, fraction))));
}
}  // namespace

double LearningRate(const OptimConfig& c, int64_t step) {
  if (c.warmup_steps > 0 && step < c.warmup_steps) {
    return c.lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup_steps);
  }
  const int64_t decay_steps = std::max<int64_t>(1, c.total_steps - c.warmup_steps);
  return Cosine(c, static_cast<double>(step - c.warmup_steps) / static_cast<double>(decay_steps));
}

double ScheduledLearningRate(const OptimConfig& c, int64_t step, double progress, double warmup_end) {
  if (c.warmup_steps > 0 && step < c.warmup_steps) {
    return c.lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup_steps);
  }
  if (progress >= 1.0) return c.min_lr;
  const double span = 1.0 - warmup_end;
  return Cosine(c, span > 0 ? (progress - warmup_end) / span : 1.0);
}

}  // namespace flap::core
