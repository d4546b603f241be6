#include "common/testing/testing.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace flap::testing {
namespace {

int ExitCode(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

// This process's environment with `extra` in front (the first of a name wins in getenv).
std::vector<std::string> Environment(const std::vector<std::string>& extra) {
  std::vector<std::string> vars(extra);
  for (char** e = environ; *e != nullptr; ++e) vars.emplace_back(*e);
  return vars;
}

std::vector<char*> Pointers(std::vector<std::string>& strings) {
  std::vector<char*> p;
  for (auto& s : strings) p.push_back(s.data());
  p.push_back(nullptr);
  return p;
}

}  // namespace

TempDir::TempDir(const std::string& name) {
  std::string tmpl = ::testing::TempDir() + "/flap_" + name + "_XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp " << tmpl;
  }
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  return static_cast<bool>(out.flush());
}

RunResult RunCommand(const std::string& command) {
  RunResult r;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  r.exit_code = ExitCode(::pclose(pipe));
  return r;
}

int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int port = 0;
  socklen_t len = sizeof(a);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

pid_t Spawn(const std::string& command, const std::vector<std::string>& env, const std::string& log_path) {
  ChildProcess::Options o;
  o.env = env;
  o.log_path = log_path;
  return ChildProcess::Shell(command, o).Release();
}

int WaitExit(pid_t pid, double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return ExitCode(status);
    if (r < 0) return -2;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return -1;
}

bool WriteTokenFile(const std::string& path, const std::string& token) {
  return WriteFile(path, token + "\n") && ::chmod(path.c_str(), 0600) == 0;
}

bool ProcessAlive(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  // /proc/PID/stat: "PID (COMM) STATE ...", COMM may hold spaces and parentheses.
  const std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  const size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return false;  // gone meanwhile
  const char state = stat[close + 2];
  return state != 'Z' && state != 'X';
}

std::vector<pid_t> WaitGone(const std::vector<pid_t>& pids, double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  std::vector<pid_t> alive;
  for (;;) {
    alive.clear();
    for (pid_t pid : pids) {
      if (ProcessAlive(pid)) alive.push_back(pid);
    }
    if (alive.empty() || std::chrono::steady_clock::now() >= deadline) return alive;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

ChildProcess ChildProcess::Exec(const std::vector<std::string>& argv, const Options& options) {
  ChildProcess child;
  std::vector<std::string> args(argv);
  std::vector<std::string> vars = Environment(options.env);
  std::vector<char*> arg_ptrs = Pointers(args);
  std::vector<char*> env_ptrs = Pointers(vars);
  const std::string log = options.log_path.empty() ? "/dev/null" : options.log_path;
  int fds[2] = {-1, -1};
  if (options.pipe_stdout && ::pipe2(fds, O_CLOEXEC) != 0) return child;

  if (options.in_child) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(options.pipe_stdout ? fds[1] : out, 1);
      ::dup2(out, 2);
      if (options.pipe_stdout) {
        ::close(fds[0]);
        ::close(fds[1]);
      }
      options.in_child();
      ::execvpe(arg_ptrs[0], arg_ptrs.data(), env_ptrs.data());
      ::_exit(127);
    }
    child.pid_ = pid;
  } else {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (options.pipe_stdout) {
      posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
      posix_spawn_file_actions_addclose(&actions, fds[0]);
      posix_spawn_file_actions_addclose(&actions, fds[1]);
    } else {
      posix_spawn_file_actions_adddup2(&actions, 2, 1);
    }
    pid_t pid = -1;
    if (::posix_spawnp(&pid, arg_ptrs[0], &actions, nullptr, arg_ptrs.data(), env_ptrs.data()) != 0) pid = -1;
    posix_spawn_file_actions_destroy(&actions);
    child.pid_ = pid;
  }
  if (options.pipe_stdout) {
    ::close(fds[1]);
    child.stdout_fd_ = fds[0];
  }
  return child;
}

ChildProcess ChildProcess::Shell(const std::string& command, const Options& options) {
  return Exec({"/bin/sh", "-c", "exec " + command}, options);
}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    Reset();
    pid_ = std::exchange(other.pid_, -1);
    stdout_fd_ = std::exchange(other.stdout_fd_, -1);
    exit_code_ = other.exit_code_;
    stdout_ = std::move(other.stdout_);
  }
  return *this;
}

ChildProcess::~ChildProcess() { Reset(); }

void ChildProcess::Reset() {
  if (pid_ > 0) Kill(SIGKILL, 10);
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
  pid_ = -1;
  stdout_fd_ = -1;
}

pid_t ChildProcess::Release() {
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
  stdout_fd_ = -1;
  return std::exchange(pid_, -1);
}

bool ChildProcess::Signal(int signal) { return pid_ > 0 && ::kill(pid_, signal) == 0; }

int ChildProcess::Wait(double timeout_s) {
  if (pid_ <= 0) return exit_code_;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_ || r < 0) {
      exit_code_ = r == pid_ ? ExitCode(status) : -2;
      pid_ = -1;
      return exit_code_;
    }
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

int ChildProcess::Kill(int signal, double timeout_s) {
  if (pid_ <= 0) return exit_code_;
  Signal(signal);
  const int code = Wait(timeout_s);
  if (pid_ <= 0) return code;
  Signal(SIGKILL);
  return Wait(1e9);
}

const std::string& ChildProcess::ReadStdoutUntil(const std::string& text, double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (stdout_fd_ >= 0 && stdout_.find(text) == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd p{stdout_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::read(stdout_fd_, buf, sizeof(buf));
    if (n <= 0) break;
    stdout_.append(buf, static_cast<size_t>(n));
  }
  return stdout_;
}

std::vector<std::string> RankEnv(int rank, int world, int port, const std::string& master, bool one_per_node) {
  return {"RANK=" + std::to_string(rank), "WORLD_SIZE=" + std::to_string(world),
          "LOCAL_RANK=" + std::to_string(one_per_node ? 0 : rank), "MASTER_ADDR=" + master,
          "MASTER_PORT=" + std::to_string(port)};
}

}  // namespace flap::testing
