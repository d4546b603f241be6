// The names of where a rank computes and in which precision (train.device, train.precision):
// parsing only, free of LibTorch, so that the trial configuration (config/) checks them in
// processes without it. device.h resolves a DeviceSpec against this process.
//
// Thread-safety: pure functions; safe from any thread.
#pragma once

#include <string>

#include "common/status.h"

namespace flap::core {

struct DeviceSpec {
  enum class Kind { kAuto, kCpu, kCuda };
  Kind kind = Kind::kAuto;
  int index = -1;  // cuda:N: N; -1: chosen by local rank
};

// "auto" | "cpu" | "cuda" | "cuda:N" (N >= 0); InvalidArgument naming train.device otherwise.
StatusOr<DeviceSpec> ParseDeviceSpec(const std::string& text);

enum class Precision { kFp32, kBf16 };
// "fp32" | "bf16"; InvalidArgument naming train.precision otherwise.
StatusOr<Precision> ParsePrecision(const std::string& text);
const char* PrecisionName(Precision p);

}  // namespace flap::core
