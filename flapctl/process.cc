#include "flapctl/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

extern char** environ;

namespace flap::flapctl {

StatusOr<Process> Process::Start(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                                 const std::string& log_path) {
  if (argv.empty()) return Status::InvalidArgument("no program to start");
  // Everything the child needs is made before fork: between fork and exec it makes system
  // calls only (this process has threads: gRPC's).
  std::vector<std::string> vars(env);
  for (char** e = environ; *e != nullptr; ++e) vars.emplace_back(*e);
  std::vector<char*> envp, args;
  for (auto& v : vars) envp.push_back(v.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_copy(argv);
  for (auto& a : argv_copy) args.push_back(a.data());
  args.push_back(nullptr);
  // The child reports a failure before exec (its errno) through this pipe; exec closes it.
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return Status::IOError(std::string("pipe: ") + std::strerror(errno));
  sigset_t all, old_mask;
  sigfillset(&all);
  // No signal handler of this process may run in the child before its dispositions are reset.
  pthread_sigmask(SIG_SETMASK, &all, &old_mask);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto fail = [&](int err) {
      (void)!::write(report[1], &err, sizeof(err));
      ::_exit(127);
    };
    // Dies with the thread that started it (SIGKILL), however that ends; if it has already
    // ended, getppid() is no longer its pid.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail(errno);
    if (::getppid() != parent) ::_exit(128 + SIGKILL);
    if (::setpgid(0, 0) != 0) fail(errno);
    const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (log < 0 || null < 0) fail(errno);
    if (::dup2(log, 1) < 0 || ::dup2(log, 2) < 0 || ::dup2(null, 0) < 0) fail(errno);
    for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);  // fails harmlessly for KILL, STOP
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, nullptr);
    ::execve(args[0], args.data(), envp.data());
    fail(errno);
  }
  const int fork_err = errno;
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::close(report[1]);
  if (pid < 0) {
    ::close(report[0]);
    return Status::IOError("cannot start '" + argv[0] + "': fork: " + std::strerror(fork_err));
  }
  int child_err = 0;
  ssize_t n;
  do {
    n = ::read(report[0], &child_err, sizeof(child_err));
  } while (n < 0 && errno == EINTR);
  ::close(report[0]);
  if (n == static_cast<ssize_t>(sizeof(child_err))) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    return Status::IOError("cannot start '" + argv[0] + "': " + std::strerror(child_err));
  }
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

StatusOr<std::string> FindFlapProgram(const std::string& given, const std::string& name, const std::string& subdir) {
  if (!given.empty()) return FindProgram(name, {given});
  const std::string self = SelfDir();
  return FindProgram(
      name, {self + "/" + name, self + "/../" + subdir + "/" + name, "/usr/local/bin/" + name, "/usr/bin/" + name});
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

std::string LogTail(const std::string& path, size_t n) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::string out;
  for (size_t i = lines.size() > n ? lines.size() - n : 0; i < lines.size(); ++i) out += "  " + lines[i] + "\n";
  return out;
}

}  // namespace flap::flapctl
