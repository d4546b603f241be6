#include "worker/stop_signal.h"

#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <initializer_list>
#include <mutex>
#include <thread>

namespace flap::worker {
namespace {

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void OnStopSignal(int sig) { g_stop_signal = sig; }

void Watchdog(double deadline_seconds) {
  while (g_stop_signal == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::this_thread::sleep_for(std::chrono::duration<double>(deadline_seconds));
  static const char kMessage[] =
      "flap-worker: stop deadline passed; exiting, resume uses the newest committed checkpoint\n";
  (void)!::write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
  std::_Exit(kExitStopped);
}

}  // namespace

void InstallStopSignalHandlers(double deadline_seconds) {
  static std::once_flag once;
  std::call_once(once, [deadline_seconds] {
    struct sigaction sa = {};
    sa.sa_handler = OnStopSignal;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGTERM, SIGUSR1, SIGUSR2, SIGINT}) sigaction(sig, &sa, nullptr);
    std::thread(Watchdog, deadline_seconds).detach();
  });
}

int StopRequested() { return g_stop_signal; }

}  // namespace flap::worker
