// SdFileWriter (coordinator/sd_file_writer.h).
#include "coordinator/sd_file_writer.h"

#include <cstdio>
#include <filesystem>
#include <system_error>
#include <utility>

namespace flap::coordinator {

SdFileWriter::SdFileWriter(std::string path) : path_(std::move(path)) {}

Status SdFileWriter::Write(const std::vector<metrics::ScrapeTarget>& targets) {
  MutexLock lock(&mu_);
  return WriteLocked(targets);
}

Status SdFileWriter::Update(const std::vector<metrics::ScrapeTarget>& targets) {
  MutexLock lock(&mu_);
  Status s = WriteLocked(targets);
  if (!s.ok() && s.code() != last_update_.code()) {
    std::fprintf(stderr, "flap-coordinator: %s\n", s.ToString().c_str());
  }
  last_update_ = s;
  return s;
}

Status SdFileWriter::WriteLocked(const std::vector<metrics::ScrapeTarget>& targets) {
  if (written_once_ && targets == written_) return Status::OK();
  if (!written_once_) {
    // A folder that cannot be made shows as WriteFileSd's error, naming the file.
    const std::filesystem::path dir = std::filesystem::path(path_).parent_path();
    std::error_code ec;
    if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  }
  FLAP_RETURN_IF_ERROR(metrics::WriteFileSd(path_, targets).WithContext("--sd-file"));
  written_ = targets;
  written_once_ = true;
  return Status::OK();
}

}  // namespace flap::coordinator
