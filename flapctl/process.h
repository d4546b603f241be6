// Child processes for `flapctl sweep run`: started (fork, exec) in their own process group
// (so a Ctrl-C at the terminal reaches flapctl alone, which then stops them in order), with
// stdout and stderr appended to a log file, and watched without blocking. A child dies with
// the thread that started it: its parent-death signal (prctl PR_SET_PDEATHSIG) is SIGKILL,
// set before exec, so a flapctl killed with SIGKILL leaves nothing running (no coordinator
// holding the journal's lock, no group holding a trial), and the same command resumes at once.
//
// Thread-safety: one Process per owner thread; start children from a thread that lives as long
// as they should (sweep run: the main thread).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/status.h"

namespace flap::flapctl {

class Process {
 public:
  // Starts argv[0] (a path) with `env` ("NAME=value") added to this process's environment;
  // stdout and stderr go to `log_path` (appended); SIGKILL when the calling thread ends.
  // IOError naming the program when it cannot be started (exec failed, log not writable).
  static StatusOr<Process> Start(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                                 const std::string& log_path);
  Process() = default;

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0 && !exited_; }
  // Reaps the process if it has ended (non-blocking); true when it has.
  bool Poll();
  // Waits up to timeout_s for it to end; true when it has.
  bool WaitFor(double timeout_s);
  // The exit code once ended: the status, or 128 + the signal that killed it.
  int exit_code() const { return exit_code_; }
  // Sends `sig` to its process group (it and anything it started).
  void Signal(int sig) const;
  // SIGTERM, then SIGKILL if it has not ended within grace_s; waits for it.
  void Stop(double grace_s);

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  int exit_code_ = -1;
};

// The first existing file among `candidates`, or NotFound listing them.
StatusOr<std::string> FindProgram(const std::string& what, const std::vector<std::string>& candidates);
// A program of this project: `given` when set (NotFound unless it is an executable file), else
// the first of `name` beside this executable, <this executable's folder>/../<subdir>/<name>
// (the build tree), /usr/local/bin/<name> and /usr/bin/<name> (NotFound listing them).
StatusOr<std::string> FindFlapProgram(const std::string& given, const std::string& name, const std::string& subdir);
// A TCP port free on 127.0.0.1 right now (bound to port 0, then released).
StatusOr<int> FreeLocalPort();
// The folder of this executable (/proc/self/exe), "" if unknown.
std::string SelfDir();
// The last `n` lines of the file at `path` (a child's log), each indented by two spaces and
// ended by a newline; "" when it cannot be read.
std::string LogTail(const std::string& path, size_t n);

}  // namespace flap::flapctl
