// A worker group: the ranks (processes) of one trial, joined by LibTorch's c10d. The only
// door to c10d in the project: every c10d call sits in worker_group.cc, because c10d's C++
// API differs between LibTorch 1.13 and 2.x. Everything else (the differentiable gather, the
// gradient averaging, the trainer) talks to this small interface.
//
// Rendezvous: rank 0 hosts a c10d TCPStore at the Rendezvous address (launcher.h says where
// it comes from); every rank connects, announces itself, and waits until all W have (the
// ranks that never came are named on timeout). The communicator is Gloo for CPU tensors and
// NCCL for CUDA tensors when this LibTorch has it (compiled in when CMake finds it:
// FLAP_WITH_NCCL; never required).
//
// Failure: every collective and the rendezvous wait at most GroupOptions::timeout_s. Each
// rank beats a heartbeat into the store (its own connection, from its own thread) carrying
// the number of collectives it has started. When a collective fails (a peer's connection
// closed, or the timeout) the rank reads the heartbeats and names the missing rank: one whose
// heartbeat stopped (dead or stopped) or one that is alive but has not reached that
// collective (stuck elsewhere). The group is then broken: every later call returns the same
// error at once, and its communicator is abandoned rather than joined, so that shutting down
// never waits on a dead peer. Rank 0 keeps the store up a few seconds after a failure so that
// the other survivors can still diagnose.
//
// With NCCL the communicator works on CUDA tensors only: a CPU tensor handed to a collective
// is copied to GroupOptions::device, reduced there and copied back, so callers need not care.
// NCCL's watchdog and blocking wait (TORCH_NCCL_ASYNC_ERROR_HANDLING, TORCH_NCCL_BLOCKING_WAIT,
// set unless the user set them) make a collective that a dead peer never joins fail within the
// timeout instead of hanging.
//
// Collectives are matched by order: every rank must issue the same collectives, with tensors
// of the same shape and dtype, in the same order. A world of 1 needs no rendezvous and every
// collective is the identity.
//
// Thread-safety: collectives may be started from any thread (autograd hooks run on the
// device's backward thread), one at a time: a mutex orders their issue. Pending handles are
// waited on by one thread.
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <memory>
#include <string>

#include "common/status.h"
#include "worker/core/launcher.h"

namespace flap::core {

struct GroupOptions {
  std::string backend = "auto";  // auto (NCCL for CUDA tensors when compiled in, else Gloo) | gloo | nccl
  double timeout_s = 300.0;      // rendezvous and every collective; seconds
  double heartbeat_s = 0.0;      // heartbeat period; <= 0: min(1 s, timeout / 4)
  // Where the training tensors live (core/device.h picks it). With NCCL, collectives on CPU
  // tensors (the trainer's small control values, serialised state) are staged through it.
  c10::Device device = c10::Device(c10::DeviceType::CPU);
  // A world of 1 normally needs no communicator (every collective is the identity); true
  // builds one anyway, so that a backend can be exercised on a single device (tests).
  bool communicator_for_one = false;
};

// True when this build has the NCCL backend.
bool NcclCompiledIn();

class WorkerGroup {
 public:
  // Joins the group described by `rendezvous`. Blocks until every rank has joined or
  // timeout_s has passed: DeadlineExceeded naming the ranks that did not come. InvalidArgument
  // for a backend this build lacks.
  static StatusOr<std::unique_ptr<WorkerGroup>> Create(const Rendezvous& rendezvous, const GroupOptions& options = {});
  // A group of one (no network).
  static std::unique_ptr<WorkerGroup> Single();
  ~WorkerGroup();
  WorkerGroup(const WorkerGroup&) = delete;
  WorkerGroup& operator=(const WorkerGroup&) = delete;

  int rank() const;
  int world_size() const;
  const std::string& backend() const;  // "gloo", "nccl", or "none" for a world of 1

  // Concatenates every rank's `local` (same shape everywhere) along dim 0, rank-major, into
  // *gathered (a new tensor). Not differentiable: collectives.h has the autograd version.
  Status AllGather(const at::Tensor& local, at::Tensor* gathered);
  // Sums `tensor` (contiguous) across ranks, in place.
  Status AllReduceSum(at::Tensor& tensor);
  // Copies rank `root`'s `tensor` into every rank's, in place.
  Status Broadcast(at::Tensor& tensor, int root);
  Status Barrier();

  // An all-reduce in flight. Wait() returns once `tensor` holds the sum (or the failure);
  // the tensor must stay alive and untouched until then.
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual Status Wait() = 0;
  };
  // Starts summing `tensor` (contiguous) across ranks in place; returns at once.
  StatusOr<std::unique_ptr<Pending>> StartAllReduceSum(at::Tensor tensor);

  // The first failure, or OK.
  Status status() const;

  // Orderly end: waits (within the timeout) until every rank has reached it, stops the
  // heartbeat; rank 0 keeps its store up until every rank has left. Idempotent; the
  // destructor calls it when it was not called.
  Status Shutdown();

  struct Impl;

 private:
  explicit WorkerGroup(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flap::core
