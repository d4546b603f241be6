// Turns samples into the batches a training step consumes, deterministically: each sample's
// caption (augmentation policy) and its token mask are pure functions of (trial seed, sample
// key, epoch), so the same step of a resumed run gets the same batch. The sample order itself
// is the streaming loader's (loader.h).
//
// Thread-safety: const methods are safe from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/trial_config.h"
#include "worker/core/masking.h"
#include "worker/core/train_step.h"
#include "worker/shard_features.h"

namespace flap::worker {

// Which caption a training sample uses at `epoch`: with probability augment_prob (drawn from
// (seed, key, epoch)) one of the augmented captions when the clip has any, else one of the
// originals. Within each pool the captions are taken in a random order that covers the pool
// every n epochs (n its size; a new order each cycle, seeded by (seed, key, epoch / n)), so
// that every caption of a clip is trained on: with augmentation off, all n originals within
// any n consecutive epochs that start at a multiple of n.
struct CaptionChoice {
  bool augmented = false;
  size_t index = 0;
};
CaptionChoice ChooseCaption(double augment_prob, uint64_t seed, const std::string& key, int64_t epoch,
                            size_t num_original, size_t num_augmented);

// Pads or truncates token lists into a (B, L) int64 tensor filled with `pad_id`, L the length
// of the longest caption capped at max_len. A caption cut to L ids whose last id is `end_id`
// (the tokenizer's end token, RoBERTa's </s>; -1: none) keeps it as its last id, as RoBERTa's
// truncation does.
at::Tensor PadTokens(const std::vector<const std::vector<int>*>& captions, int max_len, int pad_id = 0,
                     int end_id = -1);

// One sample as the batch builder sees it: its clip (key, captions) and its spectrogram
// (frames x bins floats, frames >= model.target_frames). Both are borrowed.
struct SampleView {
  const Clip* clip = nullptr;
  const float* spec = nullptr;
  int frames = 0;
};

// The first frame of the training window of a clip of `frames` stored frames (window T):
// data.crop = random draws it uniformly from [0, frames - T] seeded by (seed, key, epoch);
// first (or a clip of T frames) gives 0.
int64_t CropStart(const TrialConfig& config, const std::string& key, int64_t epoch, int frames);

// The training batch of `samples` in `epoch`, on the CPU: each sample's window (CropStart)
// copied in order, each
// sample's caption picked by ChooseCaption and its kept patches by core::KeepIndices, one draw
// per view (mask.views; view-major rows; undefined keep when mask.ratio is 0). A pure function of its arguments.
// `pinned`: allocated in pinned (page-locked) host memory, for asynchronous copies to a GPU (needs a CUDA build).
core::Batch AssembleBatch(const std::vector<SampleView>& samples, int64_t epoch, const TrialConfig& config,
                          bool pinned = false);

}  // namespace flap::worker
