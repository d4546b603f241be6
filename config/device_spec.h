// The names of where a rank computes, in which precision and under which launcher
// (train.device, train.precision, dist.launcher): parsing only, free of LibTorch, so that the
// trial configuration checks them in processes without it. worker/core/device.h resolves a
// DeviceSpec against this process; worker/core/launcher.h reads a launcher's variables.
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

// Where rank and world size come from (worker/core/launcher.h says what each one reads).
enum class Launcher { kAuto, kNone, kEnv, kMpi, kSlurm };
// "auto" | "none" | "env" | "mpi" | "slurm"; InvalidArgument naming dist.launcher otherwise.
StatusOr<Launcher> ParseLauncher(const std::string& name);
const char* LauncherName(Launcher launcher);

}  // namespace flap::core
