#include "worker/stop_signal.h"

#include <csignal>
#include <initializer_list>

namespace flap::worker {
namespace {

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void OnStopSignal(int sig) { g_stop_signal = sig; }

}  // namespace

void InstallStopSignalHandlers() {
  struct sigaction sa = {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGTERM, SIGUSR1, SIGUSR2, SIGINT}) sigaction(sig, &sa, nullptr);
}

int StopRequested() { return g_stop_signal; }

}  // namespace flap::worker
