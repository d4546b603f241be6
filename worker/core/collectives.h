// What a training step needs from a worker group (worker_group.h), built on its interface
// only (no c10d here):
//
//   GroupGather: the all-gather that autograd understands. Forward concatenates every rank's
//   (B, D) embeddings into (W*B, D), rank-major; backward all-reduces (sums) the (W*B, D)
//   gradient and returns to this rank its own B rows: the sum over ranks of the gradient that
//   each rank's loss sends to this rank's embeddings. With ContrastiveLoss scoring local rows
//   against all columns (labels offset by rank * B), W ranks x B give the loss and gradients
//   of 1 rank x W*B once GroupGradientSync has averaged the parameter gradients.
//
//   GroupGradientSync: gradient averaging across ranks. Parameters are packed, in reverse
//   order of registration (roughly the order backward produces their gradients), into
//   buckets of at most bucket_mb. With overlap, a hook on each parameter copies its gradient
//   into its bucket as backward produces it, and a full bucket's all-reduce starts at once,
//   so communication runs while backward goes on; buckets are started strictly in order so
//   that every rank issues the same collectives in the same order. Without overlap (the
//   plain path, kept for comparison) the same buckets are all-reduced after backward, one
//   after the other; bucket_mb = 0 makes one all-reduce per parameter. Finish() waits, divides
//   by W and writes the means back into .grad(): parameters stay bit-identical across ranks
//   (every rank receives the same sums and applies the same update).
//
// Failure: a failed collective surfaces as CollectiveError (gather, inside autograd) or as
// Finish()'s Status; the message is the group's, naming the missing rank.
//
// Thread-safety: one training thread; the hooks run on the backward thread of that step.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "worker/core/losses.h"
#include "worker/core/train_step.h"
#include "worker/core/worker_group.h"

namespace flap::core {

class GroupGather : public EmbeddingGather {
 public:
  // `group` must outlive the gather.
  explicit GroupGather(WorkerGroup* group) : group_(group) {}
  int rank() const override { return group_->rank(); }
  int world_size() const override { return group_->world_size(); }
  // Throws CollectiveError on failure (forward or backward).
  at::Tensor AllGather(const at::Tensor& local) override;
  double seconds() const override { return seconds_; }

  WorkerGroup* group() { return group_; }
  void AddSeconds(double s) { seconds_ += s; }

 private:
  WorkerGroup* group_;
  double seconds_ = 0.0;
};

struct GradSyncOptions {
  double bucket_mb = 4.0;  // bucket capacity in MiB; 0: one all-reduce per parameter
  bool overlap = true;     // start buckets from gradient hooks during backward; false: after it
};

class GroupGradientSync : public GradientSync {
 public:
  // `group` must outlive the sync; the sync must outlive the backward passes it hooks.
  GroupGradientSync(WorkerGroup* group, const GradSyncOptions& options = {});
  ~GroupGradientSync() override;
  void Attach(const std::vector<at::Tensor>& params) override;
  Status Finish() override;

  int num_buckets() const { return static_cast<int>(buckets_.size()); }

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_
    at::Tensor flat;             // the bucket's gradients, concatenated
    size_t ready = 0;            // gradients copied in this step
    std::unique_ptr<WorkerGroup::Pending> pending;
  };
  void OnGradient(size_t index, const at::Tensor& grad);
  void LaunchReady();

  WorkerGroup* group_;
  GradSyncOptions options_;
  std::vector<at::Tensor> params_;
  std::vector<size_t> bucket_of_;   // per parameter
  std::vector<int64_t> offset_of_;  // per parameter, within its bucket
  std::vector<bool> copied_;        // per parameter, this step
  std::vector<unsigned> hooks_;     // per parameter (overlap only)
  std::vector<Bucket> buckets_;
  size_t next_launch_ = 0;
  Status error_;  // first failure of this step
};

// Bytes between ranks, for the small messages around training (an agent's instructions, a
// restored optimizer state): *bytes of rank `root` replaces every other rank's. Two
// collectives (the length, then the bytes), so every rank must call it.
Status BroadcastBytes(WorkerGroup& group, std::string* bytes, int root);
// Every rank's `mine` (at most max_bytes), in rank order, on every rank.
StatusOr<std::vector<std::string>> AllGatherStrings(WorkerGroup& group, const std::string& mine,
                                                    size_t max_bytes = 256);

}  // namespace flap::core
