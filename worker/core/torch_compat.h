// The one place where LibTorch's C++ API differs between the versions the project builds
// against: Debian's 1.13 (CPU) and the 2.x that ships with PyTorch on GPU nodes. Everything
// else calls these names and stays version-free.
//
//   Comm        the c10d communicator base: ProcessGroup in 1.x, Backend in 2.x.
//   SetAutocast turns autocast on or off for a device type with a given lower precision:
//               per-type setters up to 2.3, set_autocast_enabled(device_type, ...) from 2.4.
//   Attention   softmax(q k^T / sqrt(d)) v with a key padding mask: LibTorch 2.x's fused
//               scaled_dot_product_attention (flash / memory-efficient kernels on GPUs; no
//               L x L matrix kept for backward), the plain matmul-softmax-matmul before 2.0.
//
// Header-only; the c10d alias needs the c10d headers, so it is only declared where
// FLAP_COMPAT_C10D is defined before inclusion (worker_group.cc, the only c10d user).
#pragma once

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <cmath>
#include <limits>

#define FLAP_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

#ifdef FLAP_COMPAT_C10D
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#if FLAP_TORCH_AT_LEAST(2, 0)
#include <torch/csrc/distributed/c10d/Backend.hpp>
#endif
#endif

namespace flap::core::compat {

#ifdef FLAP_COMPAT_C10D
#if FLAP_TORCH_AT_LEAST(2, 0)
using Comm = c10d::Backend;
#else
using Comm = c10d::ProcessGroup;
#endif
#endif

// Autocast for `type` (kCPU or kCUDA) on or off, casting eligible ops to `dtype` while on.
inline void SetAutocast(c10::DeviceType type, bool enabled, c10::ScalarType dtype) {
#if FLAP_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_dtype(type, dtype);
  at::autocast::set_autocast_enabled(type, enabled);
#else
  if (type == c10::DeviceType::CUDA) {
    at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::set_enabled(enabled);
  } else {
    at::autocast::set_autocast_cpu_dtype(dtype);
    at::autocast::set_cpu_enabled(enabled);
  }
#endif
}

// Whether autocast is on for `type`.
inline bool AutocastEnabled(c10::DeviceType type) {
#if FLAP_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(type);
#else
  return type == c10::DeviceType::CUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

// q, k, v: (B, H, L, d). key_pad: (B, L) bool, true = padding (not attended to); may be
// undefined. Returns (B, H, L, d).
inline at::Tensor Attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& key_pad) {
#if FLAP_TORCH_AT_LEAST(2, 0)
  at::Tensor mask;
  if (key_pad.defined()) mask = key_pad.logical_not().view({key_pad.size(0), 1, 1, key_pad.size(1)});
  return at::scaled_dot_product_attention(q, k, v, mask);
#else
  auto scores = at::matmul(q * (1.0 / std::sqrt(static_cast<double>(q.size(-1)))), k.transpose(-2, -1));
  if (key_pad.defined()) {
    scores = scores.masked_fill(key_pad.view({key_pad.size(0), 1, 1, key_pad.size(1)}),
                                -std::numeric_limits<float>::infinity());
  }
  return at::matmul(at::softmax(scores, -1), v);
#endif
}

}  // namespace flap::core::compat
