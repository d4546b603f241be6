// ReportRunner (coordinator/report_runner.h).
#include "coordinator/report_runner.h"

#include <utility>

namespace flap::coordinator {

ReportRunner::~ReportRunner() { JoinAll(); }

void ReportRunner::Start(std::function<void()> job) {
  std::vector<std::thread> finished;
  MutexLock lock(&mu_);
  for (uint64_t n : finished_) {
    auto t = threads_.find(n);
    if (t == threads_.end()) continue;
    finished.push_back(std::move(t->second));
    threads_.erase(t);
  }
  finished_.clear();
  // They have said they are done: each join waits at most for its thread's return.
  for (std::thread& t : finished) t.join();
  ++in_flight_;
  const uint64_t number = next_++;
  threads_[number] = std::thread([this, number, job = std::move(job)] {
    job();
    MutexLock l(&mu_);
    --in_flight_;
    finished_.push_back(number);
    done_.SignalAll();
  });
}

void ReportRunner::WaitAll() {
  MutexLock lock(&mu_);
  while (in_flight_ > 0) done_.Wait(&mu_);
}

void ReportRunner::JoinAll() {
  WaitAll();
  std::map<uint64_t, std::thread> threads;
  {
    MutexLock lock(&mu_);
    threads.swap(threads_);
    finished_.clear();
  }
  for (auto& [n, t] : threads) t.join();
}

size_t ReportRunner::threads() const {
  MutexLock lock(&mu_);
  return threads_.size();
}

}  // namespace flap::coordinator
