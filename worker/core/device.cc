#include "worker/core/device.h"

#include <dlfcn.h>
#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <fstream>

#include "worker/core/device_backend.h"
#include "worker/core/torch_compat.h"

#include <ATen/Parallel.h>

namespace flap::core {
namespace {

bool ParseIndex(const std::string& text, int* out) {
  if (text.empty() || text.size() > 6) return false;
  for (char c : text) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  *out = std::stoi(text);
  return true;
}

std::string VisibleNote(const std::optional<std::string>& cuda_visible) {
  return cuda_visible ? " (CUDA_VISIBLE_DEVICES='" + *cuda_visible + "')" : "";
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        std::string name = line.substr(colon + 1);
        name.erase(0, name.find_first_not_of(' '));
        return name;
      }
    }
  }
  return "CPU";
}

}  // namespace

StatusOr<int> LocalRankFromEnv(const EnvLookup& env) {
  for (const char* name : {"LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"}) {
    const auto value = env(name);
    if (!value) continue;
    int rank = 0;
    if (!ParseIndex(*value, &rank)) {
      return Status::InvalidArgument(std::string(name) + " must be a local rank (an integer >= 0), got '" + *value +
                                     "'");
    }
    return rank;
  }
  return 0;
}

StatusOr<c10::Device> ResolveDevice(const DeviceSpec& spec, int local_rank, int visible,
                                    const std::optional<std::string>& cuda_visible) {
  if (spec.kind == DeviceSpec::Kind::kCpu) return c10::Device(c10::DeviceType::CPU);
  if (visible <= 0) {
    if (spec.kind == DeviceSpec::Kind::kAuto) return c10::Device(c10::DeviceType::CPU);
    return Status::InvalidArgument(
        "train.device " + std::string(spec.index >= 0 ? "cuda:" + std::to_string(spec.index) : "cuda") +
        ": no CUDA device is visible" + VisibleNote(cuda_visible) +
        (backend::CudaBuilt()
             ? ""
             : "; this build's LibTorch has no CUDA support (docs/gpu.md: building against PyTorch's LibTorch)") +
        " (train.device cpu or auto trains on the CPU)");
  }
  int index = spec.index;
  if (index < 0) {
    if (visible == 1) {
      index = 0;  // one GPU bound to this task: whatever its local rank
    } else if (local_rank < visible) {
      index = local_rank;
    } else {
      return Status::InvalidArgument(
          "train.device " + std::string(spec.kind == DeviceSpec::Kind::kAuto ? "auto" : "cuda") + ": local rank " +
          std::to_string(local_rank) + " has no GPU of its own, only " + std::to_string(visible) + " are visible" +
          VisibleNote(cuda_visible) + " (start one rank per GPU)");
    }
  } else if (index >= visible) {
    return Status::InvalidArgument("train.device cuda:" + std::to_string(index) + ": only " + std::to_string(visible) +
                                   " CUDA device(s) are visible" + VisibleNote(cuda_visible));
  }
  return c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index));
}

bool CudaCompiledIn() { return backend::CudaBuilt(); }
int CudaDeviceCount() { return backend::CudaCount(); }

StatusOr<c10::Device> SelectDevice(const std::string& text, const EnvLookup& env) {
  FLAP_ASSIGN_OR_RETURN(DeviceSpec spec, ParseDeviceSpec(text));
  FLAP_ASSIGN_OR_RETURN(int local_rank, LocalRankFromEnv(env));
  const int visible = spec.kind == DeviceSpec::Kind::kCpu ? 0 : CudaDeviceCount();
  FLAP_ASSIGN_OR_RETURN(c10::Device device, ResolveDevice(spec, local_rank, visible, env("CUDA_VISIBLE_DEVICES")));
  ActivateDevice(device);
  return device;
}

DeviceInfo DescribeDevice(const c10::Device& device) {
  if (device.is_cuda()) return backend::DescribeCuda(device.index() < 0 ? 0 : device.index());
  DeviceInfo info;
  info.device = "cpu";
  info.name = CpuModel();
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  info.memory_bytes = pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : 0;
  return info;
}

void ActivateDevice(const c10::Device& device) {
  if (device.is_cuda()) backend::SetCudaDevice(device.index() < 0 ? 0 : device.index());
}

int64_t PeakMemoryBytes(const c10::Device& device) {
  if (device.is_cuda()) return backend::CudaPeakAllocated(device.index() < 0 ? 0 : device.index());
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

void ResetPeakMemory(const c10::Device& device) {
  if (device.is_cuda()) backend::ResetCudaPeak(device.index() < 0 ? 0 : device.index());
}

AutocastGuard::AutocastGuard(const c10::Device& device, Precision precision) {
  if (precision != Precision::kBf16) return;
  type_ = device.type();
  was_enabled_ = compat::AutocastEnabled(type_);
  compat::SetAutocast(type_, true, c10::ScalarType::BFloat16);
  active_ = true;
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  compat::SetAutocast(type_, was_enabled_, c10::ScalarType::BFloat16);
  if (!was_enabled_) at::autocast::clear_cache();
}

void SetComputeThreads(int threads) {
  const int n = std::max(1, threads);
  at::set_num_threads(n);
  // Looked up at run time: the core links LibTorch alone, whatever BLAS it was built with.
  using SetFn = void (*)(int);
  if (auto set = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(n);
}

int BlasThreads() {
  using GetFn = int (*)();
  if (auto get = reinterpret_cast<GetFn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"))) return get();
  return 0;
}

std::string TuneHostAllocator() {
  if (dlsym(RTLD_DEFAULT, "tc_malloc") != nullptr) return "tcmalloc";
  // 32 MiB is glibc's ceiling for the mmap threshold on 64-bit; the trim threshold keeps a
  // step's worth of freed heap mapped for the next step.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  return "glibc malloc (tuned)";
}

}  // namespace flap::core
