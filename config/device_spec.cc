#include "config/device_spec.h"

namespace flap::core {

StatusOr<DeviceSpec> ParseDeviceSpec(const std::string& text) {
  DeviceSpec spec;
  if (text == "auto") return spec;
  if (text == "cpu") {
    spec.kind = DeviceSpec::Kind::kCpu;
    return spec;
  }
  if (text == "cuda") {
    spec.kind = DeviceSpec::Kind::kCuda;
    return spec;
  }
  const std::string index = text.rfind("cuda:", 0) == 0 ? text.substr(5) : "";
  if (!index.empty() && index.size() <= 6 && index.find_first_not_of("0123456789") == std::string::npos) {
    spec.kind = DeviceSpec::Kind::kCuda;
    spec.index = std::stoi(index);
    return spec;
  }
  return Status::InvalidArgument("train.device must be auto, cpu, cuda or cuda:N, got '" + text + "'");
}

StatusOr<Precision> ParsePrecision(const std::string& text) {
  if (text == "fp32") return Precision::kFp32;
  if (text == "bf16") return Precision::kBf16;
  return Status::InvalidArgument("train.precision must be fp32 or bf16, got '" + text + "'");
}

const char* PrecisionName(Precision p) { return p == Precision::kBf16 ? "bf16" : "fp32"; }

StatusOr<Launcher> ParseLauncher(const std::string& name) {
  if (name == "auto") return Launcher::kAuto;
  if (name == "none") return Launcher::kNone;
  if (name == "env") return Launcher::kEnv;
  if (name == "mpi") return Launcher::kMpi;
  if (name == "slurm") return Launcher::kSlurm;
  return Status::InvalidArgument("dist.launcher must be auto, none, env, mpi or slurm, got '" + name + "'");
}

const char* LauncherName(Launcher launcher) {
  switch (launcher) {
    case Launcher::kAuto:
      return "auto";
    case Launcher::kNone:
      return "none";
    case Launcher::kEnv:
      return "env";
    case Launcher::kMpi:
      return "mpi";
    case Launcher::kSlurm:
      return "slurm";
  }
  return "?";
}

}  // namespace flap::core
