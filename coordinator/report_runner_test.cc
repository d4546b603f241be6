// ReportRunner (coordinator/report_runner.h): every job runs, WaitAll waits for the running
// ones, finished threads are joined by the next Start, the destructor waits for what runs.
#include "coordinator/report_runner.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>

namespace flap::coordinator {
namespace {

using std::chrono::seconds;

TEST(ReportRunner, RunsEveryJobAndWaitAllWaitsForThem) {
  ReportRunner runner;
  std::atomic<int> done{0};
  for (int i = 0; i < 8; ++i) {
    runner.Start([&done] {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      ++done;
    });
  }
  runner.WaitAll();
  EXPECT_EQ(done.load(), 8);
}

TEST(ReportRunner, WaitAllBlocksWhileAJobRuns) {
  ReportRunner runner;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  runner.Start([released] { released.wait(); });
  std::future<void> waited = std::async(std::launch::async, [&runner] { runner.WaitAll(); });
  // The job cannot return before it is released, so neither can WaitAll.
  EXPECT_EQ(waited.wait_for(std::chrono::milliseconds(100)), std::future_status::timeout);
  release.set_value();
  ASSERT_EQ(waited.wait_for(seconds(30)), std::future_status::ready);
}

TEST(ReportRunner, FinishedThreadsAreJoinedByTheNextStart) {
  ReportRunner runner;
  for (int i = 0; i < 20; ++i) {
    runner.Start([] {});
    // The thread of the previous job, finished, was joined by this Start: only this one is left.
    EXPECT_EQ(runner.threads(), 1u) << "after job " << i;
    runner.WaitAll();
  }
  runner.JoinAll();
  EXPECT_EQ(runner.threads(), 0u);
}

TEST(ReportRunner, DestructorWaitsForRunningJobs) {
  auto done = std::make_shared<std::atomic<bool>>(false);
  {
    ReportRunner runner;
    runner.Start([done] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      *done = true;
    });
  }
  EXPECT_TRUE(*done);
}

}  // namespace
}  // namespace flap::coordinator
