// Regression tests of flap-worker's stop handling (hardening): a stop signal that comes while
// the config is read or the data is loaded is a stop (exit 75), never a crash (138 for SIGUSR1).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include "sharding/synth.h"
#include "tests/test_util.h"

namespace flap {
namespace {

using testing::Spawn;
using testing::TempDir;
using testing::WaitExit;

// Whether `pid` catches `sig` (the SigCgt mask of /proc/PID/status).
bool Catches(pid_t pid, int sig) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("SigCgt:", 0) != 0) continue;
    const unsigned long long mask = std::stoull(line.substr(7), nullptr, 16);
    return (mask >> (sig - 1)) & 1;
  }
  return false;
}

// Polls until `pid` catches `sig`, at most `timeout_s`.
bool WaitUntilCaught(pid_t pid, int sig, double timeout_s) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < until) {
    if (Catches(pid, sig)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

// The data never arrives (its manifest is a FIFO nobody writes): the stop must come from the
// signal and its deadline, while training has not started.
TEST(HardeningStop, SignalWhileTheDataLoadsIsAStopNotACrash) {
  TempDir dir("hardening_stop_fifo");
  std::filesystem::create_directories(dir / "data");
  ASSERT_EQ(::mkfifo((dir / "data/manifest.json").c_str(), 0600), 0);
  const pid_t pid = Spawn(std::string(FLAP_WORKER_BIN) + " train --config " + FLAP_CONFIG_DIR +
                              "/tiny.ini --data.path " + (dir / "data") + " --ckpt.stop_deadline 1",
                          {}, dir / "log");
  ASSERT_GT(pid, 0);
  const bool caught = WaitUntilCaught(pid, SIGUSR1, 30);
  // Let it reach the blocked read of the manifest: the signal must not fail it (EINTR).
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  kill(pid, SIGUSR1);
  const int code = WaitExit(pid, 30);
  EXPECT_TRUE(caught) << "flap-worker train did not catch SIGUSR1 while loading its data";
  EXPECT_EQ(code, 75) << testing::ReadFile(dir / "log");
}

// As reported: SIGUSR1 about 0.3 s after the start, on real data.
TEST(HardeningStop, SigusrSoonAfterTheStartExitsStopped) {
  TempDir dir("hardening_stop_early");
  const sharding::SynthOptions o = sharding::SmallSynth(64, 16, 1.0, 32, 64);
  ASSERT_OK(sharding::GenerateSynthetic(o, dir / "data"));
  const pid_t pid = Spawn(std::string(FLAP_WORKER_BIN) + " train --config " + FLAP_CONFIG_DIR +
                              "/tiny.ini --data.path " + (dir / "data") +
                              " --model.target_frames 96 --train.batch_size 8 --train.epochs 50"
                              " --ckpt.root " +
                              (dir / "ckpt") + " --ckpt.stop_deadline 20",
                          {}, dir / "log");
  ASSERT_GT(pid, 0);
  // 0.3 s, or as soon as the handlers are in when the machine is slower than that to reach main.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  WaitUntilCaught(pid, SIGUSR1, 10);
  kill(pid, SIGUSR1);
  EXPECT_EQ(WaitExit(pid, 120), 75) << testing::ReadFile(dir / "log");
}

}  // namespace
}  // namespace flap
