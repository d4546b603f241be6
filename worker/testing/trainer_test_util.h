// Shared by the trainer's tests (test-only): a trial of a model small enough that a training
// step takes milliseconds on the CPU.
#pragma once

#include <string>

#include "config/trial_config.h"

namespace flap::worker {

// 32 mel bins x 32 frames (4 patches), encoders 32 wide and 1 deep, embedding 16; batch 4 per
// rank, 100 epochs, a progress record every step, warm-up of one step; on the dataset `data`
// with one loader thread.
inline TrialConfig SmallTrialConfig(const std::string& data) {
  TrialConfig c;
  core::ModelConfig& m = c.model;
  m.num_mel_bins = 32;
  m.target_frames = 32;
  m.audio_width = 32;
  m.audio_depth = 1;
  m.audio_heads = 2;
  m.text_max_len = 8;
  m.text_width = 32;
  m.text_depth = 1;
  m.text_heads = 2;
  m.mlp_ratio = 2;
  m.embed_dim = 16;
  m.decoder_width = 16;
  m.decoder_depth = 1;
  m.decoder_heads = 2;
  c.data.path = data;
  c.data.loader_threads = 1;
  c.train.batch_size = 4;
  c.train.epochs = 100;
  c.train.log_every = 1;
  c.train.eval_batch_size = 4;
  c.optim.warmup_steps = 1;
  return c;
}

}  // namespace flap::worker
