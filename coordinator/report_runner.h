// ReportRunner: runs the coordinator's report jobs (writing a finished sweep's ablation report,
// coordinator/report.h) each on a thread of its own, so that a slow report (gnuplot, a large
// history) never holds up a handler or the reaper.
//
// A job's thread is joined by the next Start after the job has returned, or by JoinAll, so
// finished threads do not pile up however many sweeps come and go (`threads()` counts those
// not yet joined).
//
// Thread-safety: every method may be called from any thread, concurrently; a job must not call
// JoinAll or the destructor of its own runner (it would wait for itself).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <thread>
#include <vector>

#include "common/mutex.h"

namespace flap::coordinator {

class ReportRunner {
 public:
  ReportRunner() = default;
  ReportRunner(const ReportRunner&) = delete;
  ReportRunner& operator=(const ReportRunner&) = delete;
  // JoinAll.
  ~ReportRunner();

  // Runs `job` on a new thread; first joins the threads of earlier jobs that have returned.
  void Start(std::function<void()> job) EXCLUDES(mu_);
  // Blocks until every job started so far has returned.
  void WaitAll() EXCLUDES(mu_);
  // Waits for every job started so far and joins its thread.
  void JoinAll() EXCLUDES(mu_);
  // Threads started and not yet joined.
  size_t threads() const EXCLUDES(mu_);

 private:
  mutable Mutex mu_;
  CondVar done_;                                             // signalled when a job returns
  int in_flight_ GUARDED_BY(mu_) = 0;                        // jobs started and not yet returned
  std::map<uint64_t, std::thread> threads_ GUARDED_BY(mu_);  // by job number
  std::vector<uint64_t> finished_ GUARDED_BY(mu_);           // returned, not yet joined
  uint64_t next_ GUARDED_BY(mu_) = 0;
};

}  // namespace flap::coordinator
