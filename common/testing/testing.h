// flap::testing: helpers shared by the tests of every part. Temporary folders, file
// contents, shell commands, child processes that are always reaped, free TCP ports, and
// GoogleTest assertions on Status / StatusOr that print the status when they fail.
// For tests only; no LibTorch. Not thread-safe unless a function says so.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <csignal>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace flap::testing {

// A fresh, empty folder under GoogleTest's temporary folder (unique to this process and
// object), removed with everything in it at destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& name = "tmp");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + name.
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// The whole file; "" when it cannot be read.
std::string ReadFile(const std::string& path);
// Replaces the file's contents (creating it); false on failure.
bool WriteFile(const std::string& path, const std::string& data);

// A token that passes the coordinator's and the clients' checks (32 hex digits, 128 bits).
inline constexpr char kTestToken[] = "0123456789abcdef0123456789abcdef";
// Writes `token` (and a newline) to `path` with mode 0600, as a token file must be; false on
// failure.
bool WriteTokenFile(const std::string& path, const std::string& token = kTestToken);

struct RunResult {
  int exit_code = -1;  // 128 + N when killed by signal N
  std::string output;  // stdout and stderr together
};
// Runs a shell command line to its end, capturing its output and exit code.
RunResult RunCommand(const std::string& command);

// A TCP port that was free on 127.0.0.1 a moment ago.
int FreePort();

// Starts `command` through /bin/sh with `env` ("NAME=value") added to this process's
// environment, stdout and stderr into `log_path` ("" = /dev/null). posix_spawn: nothing of
// this process's threads is forked. Its pid, -1 on failure. The caller reaps it (WaitExit).
pid_t Spawn(const std::string& command, const std::vector<std::string>& env = {}, const std::string& log_path = "");

// Waits up to `timeout_s` for `pid`; its exit code (128 + N when killed by signal N), or -1
// when it was still running (it is then killed with SIGKILL and reaped).
int WaitExit(pid_t pid, double timeout_s);

// Whether process `pid` exists and has not ended: a zombie (ended, not yet reaped, as are
// orphans where the init process does not reap) counts as ended.
bool ProcessAlive(pid_t pid);
// Waits up to `timeout_s` for every process of `pids` to end (ProcessAlive false); those still
// alive then, empty when all ended.
std::vector<pid_t> WaitGone(const std::vector<pid_t>& pids, double timeout_s);

// A child process owned by the test: killed (SIGKILL) and reaped at destruction if it still
// runs, so a failing assertion never leaves it behind. Move-only.
class ChildProcess {
 public:
  struct Options {
    std::vector<std::string> env;  // "NAME=value" added to this process's environment
    std::string log_path;          // stderr, and stdout unless pipe_stdout; "" = /dev/null
    bool pipe_stdout = false;      // stdout into a pipe that ReadStdoutUntil reads
    // Runs in the child just before exec (resource limits, signal dispositions); the child
    // is then made with fork instead of posix_spawn.
    std::function<void()> in_child;
  };

  ChildProcess() = default;
  // Starts argv[0] (looked up in PATH) with the arguments argv[1..]; running() says whether it
  // started.
  static ChildProcess Exec(const std::vector<std::string>& argv, const Options& options);
  // Starts `command` through /bin/sh ("exec command"), so the pid is the program's.
  static ChildProcess Shell(const std::string& command, const Options& options);
  static ChildProcess Shell(const std::string& command) { return Shell(command, Options()); }

  ChildProcess(ChildProcess&& other) noexcept { *this = std::move(other); }
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  // Started and not yet reaped.
  bool running() const { return pid_ > 0; }

  // Gives up ownership: the process is left running and the caller reaps it; its pid.
  pid_t Release();
  // Sends `signal`; false when the process is not running.
  bool Signal(int signal);
  // Waits up to `timeout_s` for it to exit: its exit code (128 + N when killed by signal N),
  // or -1 when it still runs (it is left running).
  int Wait(double timeout_s);
  // Sends `signal`, waits up to `timeout_s`, then SIGKILLs it if it still runs; its exit code.
  int Kill(int signal = SIGKILL, double timeout_s = 30);

  // Reads its stdout (Options::pipe_stdout) until `text` has appeared, the pipe closes or
  // `timeout_s` passes; everything read so far (also across calls).
  const std::string& ReadStdoutUntil(const std::string& text, double timeout_s);

 private:
  void Reset();  // kills and reaps a running process, closes the pipe

  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  int exit_code_ = -1;
  std::string stdout_;
};

// torchrun-style variables for rank `rank` of `world` meeting at master:port. LOCAL_RANK is the
// rank (all ranks on one node), or 0 with `one_per_node` (each rank on a node of its own, as
// tests/two_nodes.h places them).
std::vector<std::string> RankEnv(int rank, int world, int port, const std::string& master = "127.0.0.1",
                                 bool one_per_node = false);

namespace internal {
// The status to check: a Status, a StatusOr's, or any other status type with ok() and
// ToString() (rocksdb::Status).
template <typename S>
const S& StatusOf(const S& s) {
  return s;
}
template <typename T>
const Status& StatusOf(const StatusOr<T>& s) {
  return s.status();
}
// GoogleTest predicate-formatter: success for an OK status, else the expression and its status.
template <typename T>
::testing::AssertionResult IsOk(const char* expression, const T& value) {
  const auto& s = StatusOf(value);
  if (s.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << expression << ": " << s.ToString();
}
}  // namespace internal

}  // namespace flap::testing

// Assertions on a Status or StatusOr that print the status (code and message) on failure;
// more can be streamed after them, as after EXPECT_TRUE.
#define EXPECT_OK(expr) EXPECT_PRED_FORMAT1(::flap::testing::internal::IsOk, expr)
#define ASSERT_OK(expr) ASSERT_PRED_FORMAT1(::flap::testing::internal::IsOk, expr)

// Declares or assigns `lhs` from a StatusOr expression; a failed one fails the test (fatally,
// returning from the test function) and prints its status.
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  FLAP_ASSERT_OK_AND_ASSIGN_IMPL_(FLAP_CONCAT_(flap_statusor_, __LINE__), lhs, expr)
#define FLAP_ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr)              \
  auto tmp = (expr);                                                 \
  ASSERT_TRUE(tmp.ok()) << #expr << ": " << tmp.status().ToString(); \
  lhs = std::move(tmp).value()
