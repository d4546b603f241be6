#include "worker/stop_signal.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <thread>

#include "common/mutex.h"

namespace flap::worker {
namespace {

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void OnStopSignal(int sig) { g_stop_signal = sig; }

Mutex& HookMutex() {
  static Mutex mu;
  return mu;
}
std::function<void(int)>& Hook() REQUIRES(HookMutex()) {
  static std::function<void(int)> hook;
  return hook;
}

// Runs the hook on its own thread and waits for it at most kStopHookSeconds.
void RunHook(int sig) {
  std::function<void(int)> hook;
  {
    MutexLock lock(&HookMutex());
    hook = Hook();
  }
  if (!hook) return;
  auto done = std::make_shared<std::atomic<bool>>(false);
  std::thread([hook, sig, done] {
    hook(sig);
    *done = true;
  }).detach();
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(kStopHookSeconds);
  while (!*done && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void Watchdog(double deadline_seconds) {
  while (g_stop_signal == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::this_thread::sleep_for(std::chrono::duration<double>(deadline_seconds));
  static const char kMessage[] =
      "flap-worker: stop deadline passed; exiting, resume uses the newest committed checkpoint\n";
  (void)!::write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
  RunHook(g_stop_signal);
  std::_Exit(kExitStopped);
}

}  // namespace

void CatchStopSignals() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa = {};
    sa.sa_handler = OnStopSignal;
    // Restart interrupted calls: a read blocked while loading the data goes on (the stop is
    // seen between steps, or the watchdog ends it) instead of failing the run with EINTR.
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGTERM, SIGUSR1, SIGUSR2, SIGINT}) sigaction(sig, &sa, nullptr);
  });
}

void InstallStopSignalHandlers(double deadline_seconds) {
  CatchStopSignals();
  static std::once_flag once;
  std::call_once(once, [deadline_seconds] { std::thread(Watchdog, deadline_seconds).detach(); });
}

int StopRequested() { return g_stop_signal; }

void SetStopDeadlineHook(std::function<void(int)> hook) {
  MutexLock lock(&HookMutex());
  Hook() = std::move(hook);
}

}  // namespace flap::worker
