// The CUDA half of device.h, implemented twice: device_cuda.cc against a LibTorch built with
// CUDA, device_host.cc (no CUDA devices) for a CPU-only LibTorch. CMake compiles exactly one.
// Internal to worker/core; callers use device.h.
#pragma once

#include <cstdint>

#include "worker/core/device.h"

namespace flap::core::backend {

bool CudaBuilt();
int CudaCount();
DeviceInfo DescribeCuda(int index);
void SetCudaDevice(int index);
int64_t CudaPeakAllocated(int index);
void ResetCudaPeak(int index);

}  // namespace flap::core::backend
