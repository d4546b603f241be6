// Turns a Dataset into the batches a training step consumes, deterministically: the sample
// order of an epoch, each sample's caption (augmentation policy) and its token mask are pure
// functions of (trial seed, sample key, epoch), so the same step of a resumed run gets the
// same batch. The last incomplete batch of an epoch is dropped (every step has B samples).
//
// With W ranks a step's global batch is W*B consecutive samples of the epoch's order and rank
// r takes its contiguous slice [r*B, (r+1)*B): W ranks of B see what 1 rank of W*B sees.
//
// Thread-safety: const methods are safe from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "worker/config.h"
#include "worker/core/masking.h"
#include "worker/core/train_step.h"
#include "worker/dataset.h"

namespace flap::worker {

// Which caption a training sample uses at `epoch`: with probability augment_prob (drawn from
// (seed, key, epoch)) one of the augmented captions when the clip has any, else one of the
// originals, each chosen uniformly by the same draw.
struct CaptionChoice {
  bool augmented = false;
  size_t index = 0;
};
CaptionChoice ChooseCaption(double augment_prob, uint64_t seed, const std::string& key,
                            int64_t epoch, size_t num_original, size_t num_augmented);

// Pads or truncates token lists into a (B, L) int64 tensor (0 = padding), L the length of the
// longest caption capped at max_len.
at::Tensor PadTokens(const std::vector<const std::vector<int>*>& captions, int max_len);

class Batcher {
 public:
  // `dataset` must outlive the Batcher. `rank` of `world` ranks (B = train.batch_size per rank).
  Batcher(const Dataset& dataset, const TrialConfig& config, int rank = 0, int world = 1);

  int64_t steps_per_epoch() const;
  // The permutation of sample indices used in `epoch`.
  std::vector<int64_t> EpochOrder(int64_t epoch) const;
  // The batch of step `step_in_epoch` of `epoch`, on the CPU.
  core::Batch TrainBatch(int64_t epoch, int64_t step_in_epoch) const;
  // Keys of that batch's samples, in batch order (for tests and accounting).
  std::vector<std::string> BatchKeys(int64_t epoch, int64_t step_in_epoch) const;

 private:
  const Dataset& dataset_;
  TrialConfig config_;
  core::MaskGeometry geometry_;
  int rank_ = 0;
  int world_ = 1;
  // Position in the epoch's order of this rank's sample i of step `step_in_epoch`.
  size_t Position(int64_t step_in_epoch, int64_t i) const;
};

}  // namespace flap::worker
