#include "flapctl/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

extern char** environ;

namespace flap::flapctl {

StatusOr<Process> Process::Start(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                                 const std::string& log_path) {
  if (argv.empty()) return Status::InvalidArgument("no program to start");
  std::vector<std::string> vars(env);
  for (char** e = environ; *e != nullptr; ++e) vars.emplace_back(*e);
  std::vector<char*> envp, args;
  for (auto& v : vars) envp.push_back(v.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_copy(argv);
  for (auto& a : argv_copy) args.push_back(a.data());
  args.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &actions, &attr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return Status::IOError("cannot start '" + argv[0] + "': " + std::strerror(rc));
  Process p;
  p.pid_ = pid;
  return p;
}

bool Process::Poll() {
  if (pid_ <= 0 || exited_) return exited_;
  int status = 0;
  const pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exited_ = true;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  } else if (r < 0 && errno == ECHILD) {
    exited_ = true;
  }
  return exited_;
}

bool Process::WaitFor(double timeout_s) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (!Poll()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

void Process::Signal(int sig) const {
  if (pid_ > 0 && !exited_) kill(-pid_, sig);
}

void Process::Stop(double grace_s) {
  if (pid_ <= 0 || Poll()) return;
  Signal(SIGTERM);
  if (WaitFor(grace_s)) return;
  Signal(SIGKILL);
  WaitFor(10);
}

StatusOr<std::string> FindProgram(const std::string& what, const std::vector<std::string>& candidates) {
  std::string tried;
  for (const std::string& c : candidates) {
    if (c.empty()) continue;
    if (access(c.c_str(), X_OK) == 0) return c;
    tried += (tried.empty() ? "" : ", ") + c;
  }
  return Status::NotFound("cannot find " + what + " (tried " + tried + ")");
}

StatusOr<int> FreeLocalPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return Status::IOError(std::string("socket: ") + std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const std::string e = std::strerror(errno);
    close(fd);
    return Status::IOError("cannot find a free port on 127.0.0.1: " + e);
  }
  close(fd);
  return static_cast<int>(ntohs(a.sin_port));
}

std::string SelfDir() {
  std::error_code ec;
  const auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "" : p.parent_path().string();
}

}  // namespace flap::flapctl
