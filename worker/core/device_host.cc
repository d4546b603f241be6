// device_backend.h for a LibTorch without CUDA: no CUDA device exists, so nothing but
// CudaBuilt and CudaCount is ever reached (ResolveDevice refuses CUDA first).
#include "worker/core/device_backend.h"

namespace flap::core::backend {

bool CudaBuilt() { return false; }
int CudaCount() { return 0; }
DeviceInfo DescribeCuda(int index) { return {"cuda:" + std::to_string(index), "unavailable", 0}; }
void SetCudaDevice(int) {}
int64_t CudaPeakAllocated(int) { return 0; }
void ResetCudaPeak(int) {}

}  // namespace flap::core::backend
