// flap::Mutex, MutexLock and CondVar (common/mutex.h) at run time: the lock excludes, a signal
// wakes a waiter, timed waits say whether their deadline passed. (What the annotations prove
// at compile time is tests/thread_safety_check_test.sh's.)
#include "common/mutex.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

namespace flap {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

TEST(Mutex, ExcludesOtherThreads) {
  Mutex mu;
  int64_t count = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 100000; ++i) {
        MutexLock lock(&mu);
        ++count;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(count, 400000);
}

TEST(Mutex, TryLockFailsWhileHeldElsewhere) {
  Mutex mu;
  mu.Lock();
  bool taken = true;
  std::thread([&] {
    taken = mu.TryLock();
    if (taken) mu.Unlock();
  }).join();
  EXPECT_FALSE(taken);
  mu.Unlock();
  ASSERT_TRUE(mu.TryLock());
  mu.Unlock();
}

TEST(CondVar, SignalWakesAWaiterThatHoldsTheLockAgain) {
  Mutex mu;
  CondVar cv;
  bool ready = false;
  std::thread signaller([&] {
    std::this_thread::sleep_for(milliseconds(20));
    MutexLock lock(&mu);
    ready = true;
    cv.SignalAll();
  });
  {
    MutexLock lock(&mu);
    while (!ready) cv.Wait(&mu);
    EXPECT_TRUE(ready);
  }
  signaller.join();
}

TEST(CondVar, TimedWaitsSayWhetherTheDeadlinePassed) {
  Mutex mu;
  CondVar cv;
  MutexLock lock(&mu);
  const auto t0 = steady_clock::now();
  EXPECT_TRUE(cv.WaitFor(&mu, milliseconds(30)));  // nobody signals
  EXPECT_GE(steady_clock::now() - t0, milliseconds(30));
  EXPECT_TRUE(cv.WaitUntil(&mu, steady_clock::now() - milliseconds(1)));  // already past

  bool ready = false;
  std::thread signaller([&] {
    MutexLock l(&mu);
    ready = true;
    cv.SignalAll();
  });
  const auto deadline = steady_clock::now() + std::chrono::seconds(30);
  bool timed_out = false;
  while (!ready && !timed_out) timed_out = cv.WaitUntil(&mu, deadline);
  EXPECT_TRUE(ready);
  EXPECT_FALSE(timed_out);
  signaller.join();  // it released the lock before this thread took it back
}

}  // namespace
}  // namespace flap
