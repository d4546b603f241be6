// Where a rank computes and in which precision (train.device, train.precision).
//
//   Device spec  "auto" | "cpu" | "cuda" | "cuda:N". auto takes CUDA when a device is visible,
//                else the CPU; cuda demands one. With several visible GPUs a rank takes
//                cuda:<local rank> (LOCAL_RANK, then OMPI_COMM_WORLD_LOCAL_RANK, then
//                SLURM_LOCALID); with exactly one visible (a launcher that binds one GPU per
//                task through CUDA_VISIBLE_DEVICES) every rank takes cuda:0. The CUDA runtime
//                applies CUDA_VISIBLE_DEVICES itself: indices here count visible devices.
//   Precision    fp32 | bf16. bf16 runs the model's forward under autocast (matrix products
//                and attention in bfloat16, reductions and norms in float32); the losses, the
//                logit scale, softmax over the similarity matrix and the optimizer stay fp32.
//
// The CUDA queries (device name, memory, the current device, peak allocation) live in
// device_cuda.cc, compiled only against a LibTorch built with CUDA; the CPU-only build has
// device_host.cc in its place (no CUDA devices). Everything else here is pure and tested on
// the CPU; the names (DeviceSpec, Precision) are parsed in device_spec.h, free of LibTorch.
// Thread-safety: the functions are thread-safe; an AutocastGuard acts on the calling thread
// only (autocast state is thread-local).
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <optional>
#include <string>

#include "common/status.h"
#include "config/device_spec.h"
#include "worker/core/launcher.h"

namespace flap::core {

// This rank's index among the ranks of its node: LOCAL_RANK, else OMPI_COMM_WORLD_LOCAL_RANK,
// else SLURM_LOCALID, else 0. InvalidArgument naming the variable when it is malformed.
StatusOr<int> LocalRankFromEnv(const EnvLookup& env);

// Pure: the device for `spec` given `visible` CUDA devices and this rank's local rank.
// `cuda_visible` is CUDA_VISIBLE_DEVICES as set (only quoted in messages). InvalidArgument
// when CUDA is demanded but none is visible, or the index is out of range.
StatusOr<c10::Device> ResolveDevice(const DeviceSpec& spec, int local_rank, int visible,
                                    const std::optional<std::string>& cuda_visible);

// ParseDeviceSpec + LocalRankFromEnv + ResolveDevice against this process (CudaDeviceCount()),
// then makes a CUDA device the current one.
StatusOr<c10::Device> SelectDevice(const std::string& spec, const EnvLookup& env);

// Whether this LibTorch build has CUDA (device_cuda.cc compiled in), and the devices visible.
bool CudaCompiledIn();
int CudaDeviceCount();

struct DeviceInfo {
  std::string device;        // "cpu", "cuda:0"
  std::string name;          // "NVIDIA H100 80GB HBM3", or the CPU model
  int64_t memory_bytes = 0;  // device memory, or the host's physical memory for the CPU
};
DeviceInfo DescribeDevice(const c10::Device& device);

// Makes `device` the calling thread's current CUDA device; nothing for the CPU.
void ActivateDevice(const c10::Device& device);
// Peak bytes allocated by LibTorch on a CUDA device since the last reset; the process's peak
// resident set size for the CPU (not resettable).
int64_t PeakMemoryBytes(const c10::Device& device);
void ResetPeakMemory(const c10::Device& device);

// Sets LibTorch's intra-op threads and, when LibTorch runs on OpenBLAS, OpenBLAS's own thread
// pool to `threads` (>= 1). OpenBLAS keeps one thread per core by default, which
// at::set_num_threads does not reach: a "one-thread" trainer then runs every GEMM on all cores
// and competes with its own loader threads.
void SetComputeThreads(int threads);
// The BLAS library's thread count, or 0 when it offers no such query (MKL, reference BLAS).
int BlasThreads();

// Keeps the host allocator from returning tensor-sized buffers to the kernel between steps:
// nothing to do under tcmalloc (linked into flap-worker where available); under glibc's
// malloc, raises the mmap and trim thresholds (buffers up to 32 MiB come from the heap and
// stay mapped). Returns the allocator's name, "tcmalloc" or "glibc malloc (tuned)".
std::string TuneHostAllocator();

// Autocast to bfloat16 on `device`'s type for the guard's lifetime when `precision` is bf16
// (nothing for fp32); restores the previous state and clears autocast's weight-cast cache on
// exit. Scope it around forward passes only: backward and the optimizer run outside.
class AutocastGuard {
 public:
  AutocastGuard(const c10::Device& device, Precision precision);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool active_ = false;
  c10::DeviceType type_ = c10::DeviceType::CPU;
  bool was_enabled_ = false;
};

}  // namespace flap::core
