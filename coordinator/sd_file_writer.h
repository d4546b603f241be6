// SdFileWriter: keeps the coordinator's Prometheus file_sd file (ServiceOptions::sd_file, see
// "Observability" in coordinator/service.h) up to date: each Write replaces the file atomically
// (metrics::WriteFileSd) unless the targets equal what it holds already.
//
// Thread-safety: every method may be called from any thread; writes are serialised.
#pragma once

#include <string>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "metrics/metrics.h"

namespace flap::coordinator {

class SdFileWriter {
 public:
  // Writes to `path` (not empty); its folder is created by the first Write.
  explicit SdFileWriter(std::string path);

  // Replaces the file with `targets` unless it holds them already. An error (e.g. IOError
  // naming the file, prefixed "--sd-file") leaves the file as it was, and the next Write tries
  // again.
  Status Write(const std::vector<metrics::ScrapeTarget>& targets) EXCLUDES(mu_);
  // Write, for a caller that retries at intervals (the reaper): prints a failure to stderr,
  // prefixed "flap-coordinator: ", when writes start failing and again when the failure's code
  // changes (not at every retry: an error's message names a fresh temporary file each time),
  // and returns it.
  Status Update(const std::vector<metrics::ScrapeTarget>& targets) EXCLUDES(mu_);

  const std::string& path() const { return path_; }

 private:
  Status WriteLocked(const std::vector<metrics::ScrapeTarget>& targets) REQUIRES(mu_);

  const std::string path_;
  Mutex mu_;
  std::vector<metrics::ScrapeTarget> written_ GUARDED_BY(mu_);  // what the file holds
  bool written_once_ GUARDED_BY(mu_) = false;
  Status last_update_ GUARDED_BY(mu_);  // what the last Update returned
};

}  // namespace flap::coordinator
