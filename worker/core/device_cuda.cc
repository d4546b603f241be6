// device_backend.h against a LibTorch built with CUDA: device properties from the CUDA
// runtime, the current device and peak allocation from LibTorch's caching allocator.
#include "worker/core/device_backend.h"

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#include <torch/cuda.h>

namespace flap::core::backend {

bool CudaBuilt() { return true; }

int CudaCount() { return static_cast<int>(torch::cuda::device_count()); }

DeviceInfo DescribeCuda(int index) {
  DeviceInfo info;
  info.device = "cuda:" + std::to_string(index);
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, index) == cudaSuccess) {
    info.name = prop.name;
    info.memory_bytes = static_cast<int64_t>(prop.totalGlobalMem);
  } else {
    info.name = "unknown CUDA device";
  }
  return info;
}

void SetCudaDevice(int index) { c10::cuda::set_device(static_cast<c10::DeviceIndex>(index)); }

int64_t CudaPeakAllocated(int index) {
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(index));
  // Index 0 of each stat array is StatType::AGGREGATE (all pools) in every LibTorch 1.x / 2.x.
  return stats.allocated_bytes[0].peak;
}

void ResetCudaPeak(int index) { c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(index)); }

}  // namespace flap::core::backend
