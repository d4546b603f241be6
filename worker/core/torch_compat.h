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
//               No mask is an absent optional: SDPA refuses an undefined tensor as a mask.
//   MakeStore   a c10d TCPStore, server or client: from 2.2 the server can run on libuv, which
//               2.4+ asks for by default, but only a build with libuv has it (PyTorch's wheels
//               do, Debian's LibTorch does not); the backend follows the build.
//
// Header-only; the c10d names need the c10d headers, so they are only declared where
// FLAP_COMPAT_C10D is defined before inclusion (worker_group.cc, the only c10d user, and its
// tests).
#pragma once

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <string>

#define FLAP_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

#ifdef FLAP_COMPAT_C10D
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
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

// A TCPStore at host:port: the server (hosting `workers` ranks) or a client, with `timeout` on
// every wait. From 2.2 the server can run on libuv (2.4+ asks for it by default), but only a
// build with libuv has it (PyTorch's wheels do, Debian's LibTorch does not) and the build does
// not export the query: a server is started on libuv first and, where that fails, on the classic
// backend, which every build has (an error that is not about libuv recurs there and is thrown).
// Clients speak to either.
inline c10::intrusive_ptr<c10d::TCPStore> MakeStore(const std::string& host, int port, bool is_server, size_t workers,
                                                    std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(port);
  o.isServer = is_server;
  o.numWorkers = workers;
  o.waitWorkers = false;
  o.timeout = timeout;
#if FLAP_TORCH_AT_LEAST(2, 2)
  static std::atomic<bool> libuv{true};  // false once this build has refused it
  o.useLibUV = is_server && libuv.load();
  if (o.useLibUV) {
    try {
      return c10::make_intrusive<c10d::TCPStore>(host, o);
    } catch (const std::exception&) {
      o.useLibUV = false;
      auto store = c10::make_intrusive<c10d::TCPStore>(host, o);
      libuv = false;
      return store;
    }
  }
#endif
  return c10::make_intrusive<c10d::TCPStore>(host, o);
}
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
  c10::optional<at::Tensor> mask;
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
