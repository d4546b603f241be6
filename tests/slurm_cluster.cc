#include "tests/slurm_cluster.h"

#include <dirent.h>
#include <netdb.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

namespace flap::testing {
namespace {

bool OnPath(const std::string& program) { return RunCommand("command -v " + program + " >/dev/null").exit_code == 0; }

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string Tail(const std::string& path, int lines) {
  return RunCommand("tail -n " + std::to_string(lines) + " " + path + " 2>/dev/null").output;
}

bool Alive(pid_t pid) {
  if (kill(pid, 0) != 0) return false;
  int status = 0;
  return waitpid(pid, &status, WNOHANG) == 0;  // reaps it when it has exited
}

// Pids of processes whose environment contains `needle`.
std::vector<pid_t> ProcessesWithEnv(const std::string& needle) {
  std::vector<pid_t> pids;
  DIR* proc = opendir("/proc");
  if (!proc) return pids;
  while (dirent* e = readdir(proc)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0 || pid == getpid()) continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/environ", std::ios::binary);
    std::string env((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (env.find(needle) != std::string::npos) pids.push_back(pid);
  }
  closedir(proc);
  return pids;
}

}  // namespace

std::string SlurmCluster::MissingPrograms() {
  std::string missing;
  for (const char* p : {"munged", "slurmctld", "slurmd", "srun", "sbatch", "squeue", "scontrol", "scancel", "sinfo"}) {
    if (!OnPath(p)) missing += std::string(missing.empty() ? "" : ", ") + p;
  }
  return missing;
}

StatusOr<std::unique_ptr<SlurmCluster>> SlurmCluster::Start(const SlurmClusterOptions& options) {
  std::unique_ptr<SlurmCluster> c(new SlurmCluster());
  Status s = c->Launch(options);
  if (!s.ok()) {
    const std::string logs = c->Logs();
    c->Stop();
    return Status::FailedPrecondition("one-node Slurm cluster: " + s.ToString() + "\n" + logs);
  }
  return c;
}

SlurmCluster::~SlurmCluster() { Stop(); }

std::string SlurmCluster::EnvPrefix() const { return "env SLURM_CONF=" + conf_ + " " + marker_ + " "; }

RunResult SlurmCluster::Client(const std::string& command_line, double timeout_s) const {
  const std::string command =
      EnvPrefix() + "timeout -k 5 " + std::to_string(static_cast<int>(timeout_s)) + " " + command_line;
  return RunCommand(nodes_ == nullptr ? command : nodes_->On(nodes_->a(), command));
}

Status SlurmCluster::Launch(const SlurmClusterOptions& o) {
  if (const std::string missing = MissingPrograms(); !missing.empty()) {
    return Status::FailedPrecondition("missing programs: " + missing + " (apt-get install slurm-wlm munge)");
  }
  nodes_ = o.nodes;
  // Each node: name, address (and where its daemons run).
  std::vector<std::pair<std::string, std::string>> nodes;
  if (nodes_ != nullptr) {
    nodes = {{nodes_->a().host, nodes_->a().address}, {nodes_->b().host, nodes_->b().address}};
    node_ = nodes_->a().host;
  } else {
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    node_ = host;
    addrinfo* ai = nullptr;
    if (getaddrinfo(node_.c_str(), nullptr, nullptr, &ai) != 0) {
      return Status::FailedPrecondition("hostname '" + node_ + "' does not resolve (add it to /etc/hosts)");
    }
    freeaddrinfo(ai);
    nodes = {{node_, "127.0.0.1"}};
  }

  std::random_device rd;
  dir_ = ::testing::TempDir() + "/flap_slurm_" + std::to_string(getpid()) + "_" + std::to_string(rd() % 100000);
  marker_ = "FLAP_SLURM_CLUSTER=" + dir_;
  std::filesystem::remove_all(dir_);
  for (const char* sub : {"", "/munge", "/state", "/spool", "/log"}) std::filesystem::create_directories(dir_ + sub);
  // munged wants its key private and its socket folder searchable by everyone.
  chmod(dir_.c_str(), 0711);
  chmod((dir_ + "/munge").c_str(), 0711);
  {
    std::ofstream key(dir_ + "/munge/munge.key", std::ios::binary);
    for (int i = 0; i < 1024; ++i) key.put(static_cast<char>(rd() & 0xff));
  }
  chmod((dir_ + "/munge/munge.key").c_str(), 0400);
  const std::string sock = dir_ + "/munge/munge.socket";

  const int ctld_port = FreePort();
  int slurmd_port = FreePort();
  while (slurmd_port == ctld_port) slurmd_port = FreePort();
  conf_ = dir_ + "/slurm.conf";
  {
    std::ofstream c(conf_);
    c << "ClusterName=flaptest\n"
      << "SlurmctldHost=" << node_ << "(" << nodes[0].second << ")\n"
      << "SlurmctldPort=" << ctld_port << "\nSlurmdPort=" << slurmd_port << "\n"
      << "SlurmUser=root\nSlurmdUser=root\n"
      << "AuthType=auth/munge\nCredType=cred/munge\nAuthInfo=socket=" << sock
      << (o.requeue_delay_s > 0 ? ",cred_expire=" + std::to_string(o.requeue_delay_s) : std::string()) << "\n"
      << "StateSaveLocation=" << dir_ << "/state\nSlurmdSpoolDir=" << dir_ << "/spool/%n\n"
      << "SlurmctldPidFile=" << dir_ << "/slurmctld.pid\nSlurmdPidFile=" << dir_ << "/slurmd-%n.pid\n"
      << "SlurmctldLogFile=" << dir_ << "/log/slurmctld.log\nSlurmdLogFile=" << dir_ << "/log/slurmd-%n.log\n"
      << "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nJobAcctGatherType=jobacct_gather/none\n"
      << "AccountingStorageType=accounting_storage/none\nSwitchType=switch/none\nMpiDefault=none\n"
      << "SchedulerType=sched/backfill\nSelectType=select/cons_tres\nSelectTypeParameters=CR_CPU\n"
      << "ReturnToService=2\nSlurmdParameters=config_overrides\n"
      << "SlurmctldTimeout=30\nSlurmdTimeout=" << o.slurmd_timeout_s << "\nInactiveLimit=0\nMinJobAge=300\nKillWait=30\n";
    for (const auto& line : o.extra_config) c << line << "\n";
    for (const auto& [name, address] : nodes) {
      c << "NodeName=" << name << " NodeAddr=" << address << " CPUs=" << o.cpus << " RealMemory=" << o.real_memory_mb
        << " State=UNKNOWN\n";
    }
    c << "PartitionName=" << o.partition << " Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES\n";
  }

  auto launch = [&](const std::string& cmd, const std::string& log) { return LaunchDaemon(cmd, log); };
  FLAP_RETURN_IF_ERROR(launch("munged -F -f --socket=" + sock + " --key-file=" + dir_ +
                                  "/munge/munge.key --log-file=" + dir_ + "/log/munged.log --pid-file=" + dir_ +
                                  "/munge/munged.pid --seed-file=" + dir_ + "/munge/munged.seed",
                              "munged.out"));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.start_timeout_s);
  while (!std::filesystem::exists(sock)) {
    if (std::chrono::steady_clock::now() > deadline || !Alive(daemons_[0])) {
      return Status::DeadlineExceeded("munged did not create its socket");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // On a node of the two-node fixture, or here.
  auto on = [&](size_t node, const std::string& cmd) {
    return nodes_ == nullptr ? cmd : nodes_->On(node == 0 ? nodes_->a() : nodes_->b(), cmd);
  };
  // Each node's slurmd reads its own copy of slurm.conf, beside an mpi.conf of its own: the
  // nodes share this machine's /tmp, where PMIx would put both nodes' client folders under one
  // name.
  std::vector<std::string> node_conf(nodes.size(), conf_);
  for (size_t i = 0; i < nodes.size(); ++i) {
    const std::string& name = nodes[i].first;
    std::filesystem::create_directories(dir_ + "/spool/" + name);
    if (nodes.size() == 1) break;
    const std::string etc = dir_ + "/etc-" + name;
    std::filesystem::create_directories(etc);
    std::filesystem::create_directories(dir_ + "/pmix/" + name);
    std::filesystem::copy_file(conf_, etc + "/slurm.conf", std::filesystem::copy_options::overwrite_existing);
    if (!WriteFile(etc + "/mpi.conf", "PMIxCliTmpDirBase=" + dir_ + "/pmix/" + name + "\n")) {
      return Status::Internal("cannot write " + etc + "/mpi.conf");
    }
    node_conf[i] = etc + "/slurm.conf";
  }
  FLAP_RETURN_IF_ERROR(launch(on(0, "slurmctld -D -f " + conf_), "slurmctld.out"));
  for (size_t i = 0; i < nodes.size(); ++i) {
    slurmds_.push_back({nodes[i].first, on(i, "slurmd -D -f " + node_conf[i] + " -N " + nodes[i].first),
                        daemons_.size()});
    FLAP_RETURN_IF_ERROR(launch(slurmds_.back().command, "slurmd-" + nodes[i].first + ".out"));
  }
  std::string state;
  while (std::chrono::steady_clock::now() < deadline) {
    for (size_t i = 0; i < daemons_.size(); ++i) {
      if (!Alive(daemons_[i]))
        return Status::Internal(std::string(i == 0   ? "munged"
                                            : i == 1 ? "slurmctld"
                                                     : "slurmd of " + nodes[i - 2].first) +
                                " exited during start");
    }
    state = Trim(Client("sinfo -h -N -o %T", 10).output);
    std::string idle;
    for (size_t i = 0; i < nodes.size(); ++i) idle += std::string(i ? "\n" : "") + "idle";
    if (state == idle) return Status::OK();
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  return Status::DeadlineExceeded("node(s) not idle after " + std::to_string(o.start_timeout_s) + " s (last states: '" +
                                  state + "')");
}

Status SlurmCluster::LaunchDaemon(const std::string& command, const std::string& log) {
  const pid_t pid = Spawn(command, {"SLURM_CONF=" + conf_, marker_}, dir_ + "/log/" + log);
  if (pid <= 0) return Status::Internal("cannot start: " + command);
  daemons_.push_back(pid);
  return Status::OK();
}

Status SlurmCluster::KillSlurmd(const std::string& node) {
  for (const Slurmd& d : slurmds_) {
    if (d.node != node) continue;
    // The daemon started is the shell that entered the node's namespaces; slurmd may be its
    // child. slurmd's own pid is in its pid file.
    const pid_t shell = daemons_[d.daemon];
    const std::string pid_file = dir_ + "/slurmd-" + node + ".pid";
    const pid_t pid = static_cast<pid_t>(std::atol(ReadFile(pid_file).c_str()));
    if (pid <= 0 || Trim(ReadFile("/proc/" + std::to_string(pid) + "/comm")) != "slurmd") {
      return Status::Internal("no running slurmd of " + node + " in " + pid_file);
    }
    kill(pid, SIGKILL);
    for (int i = 0; i < 200 && (Alive(shell) || kill(pid, 0) == 0); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (kill(pid, 0) == 0) return Status::Internal("the slurmd of " + node + " (pid " + std::to_string(pid) + ") did not end");
    // Its pid file would tell a new slurmd that it still runs.
    std::filesystem::remove(pid_file);
    return Status::OK();
  }
  return Status::NotFound("this cluster has no node '" + node + "'");
}

Status SlurmCluster::RestartSlurmd(const std::string& node) {
  for (Slurmd& d : slurmds_) {
    if (d.node != node) continue;
    if (Alive(daemons_[d.daemon])) return Status::FailedPrecondition("the slurmd of " + node + " still runs");
    FLAP_RETURN_IF_ERROR(LaunchDaemon(d.command, "slurmd-" + node + ".out"));
    d.daemon = daemons_.size() - 1;
    return Status::OK();
  }
  return Status::NotFound("this cluster has no node '" + node + "'");
}

std::string SlurmCluster::NodeState(const std::string& node) const {
  return Trim(Client("sinfo -h -N -n " + node + " -o %T", 10).output);
}

RunResult SlurmCluster::Srun(const std::string& args, double timeout_s) const {
  RunResult r = Client("srun " + args, timeout_s);
  if (r.exit_code != 0) {
    if (const std::string hint = Hint(r.output); !hint.empty()) r.output += "\n" + hint + "\n";
  }
  return r;
}

std::string SlurmCluster::Hint(const std::string& output) {
  if (output.find("can not load PMIx library") != std::string::npos ||
      output.find("Couldn't load specified plugin name for mpi/pmix") != std::string::npos) {
    return "hint: Slurm's mpi/pmix plugin (mpi_pmix_v4.so) dlopens libpmix.so, the unversioned link that only "
           "libpmix-dev installs: apt-get install libpmix-dev (scripts/setup.sh installs it; "
           "scripts/check_runtime_deps.sh checks for it)";
  }
  return "";
}

StatusOr<std::string> SlurmCluster::Sbatch(const std::string& args) const {
  RunResult r = Client("sbatch --parsable " + args, 60);
  if (r.exit_code != 0) return Status::Internal("sbatch " + args + " failed: " + r.output);
  std::string id = Trim(r.output);
  id = id.substr(0, id.find(';'));
  if (id.empty() || id.find_first_not_of("0123456789") != std::string::npos) {
    return Status::Internal("sbatch printed no job id: " + r.output);
  }
  return id;
}

StatusOr<std::string> SlurmCluster::JobField(const std::string& job_id, const std::string& field) const {
  RunResult r = Scontrol("show job -o " + job_id);
  if (r.exit_code != 0) return Status::NotFound("job " + job_id + ": " + r.output);
  const std::string key = field + "=";
  size_t at = r.output.find(key);
  while (at != std::string::npos && at > 0 && r.output[at - 1] != ' ') at = r.output.find(key, at + 1);
  if (at == std::string::npos) return Status::Internal("no " + field + " in: " + r.output);
  const size_t end = r.output.find_first_of(" \n", at);
  return r.output.substr(at + key.size(), end - at - key.size());
}

Status SlurmCluster::WaitJobState(const std::string& job_id, const std::vector<std::string>& states,
                                  double timeout_s) const {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  std::string last;
  while (std::chrono::steady_clock::now() < deadline) {
    auto s = JobState(job_id);
    if (s.ok()) {
      last = *s;
      for (const auto& want : states) {
        if (last == want) return Status::OK();
      }
    } else {
      last = s.status().message();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return Status::DeadlineExceeded("job " + job_id + " still '" + last + "' after " + std::to_string(timeout_s) + " s");
}

std::vector<SlurmCluster::JobRecord> SlurmCluster::ShowJobs(const std::string& job_id) const {
  std::vector<JobRecord> jobs;
  RunResult r = Scontrol("show job -o " + job_id);
  if (r.exit_code != 0) return jobs;
  std::istringstream lines(r.output);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("JobId=", 0) != 0) continue;
    JobRecord job;
    std::string last;
    std::istringstream tokens(line);
    std::string token;
    while (tokens >> token) {
      const size_t eq = token.find('=');
      const bool field =
          eq != std::string::npos && eq > 0 &&
          token.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_:/") >= eq;
      if (field) {
        last = token.substr(0, eq);
        job[last] = token.substr(eq + 1);
      } else if (!last.empty()) {
        job[last] += " " + token;  // a value with spaces
      }
    }
    jobs.push_back(std::move(job));
  }
  return jobs;
}

bool SlurmCluster::FailedState(const std::string& state) {
  for (const char* s : {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}) {
    if (state == s) return true;
  }
  return false;
}

std::string SlurmCluster::FailedJobs(const std::vector<std::string>& job_ids, int log_lines) const {
  std::string out;
  for (const auto& id : job_ids) {
    if (id.empty()) continue;
    for (auto& job : ShowJobs(id)) {
      if (!FailedState(job["JobState"])) continue;
      const std::string name = job.count("ArrayTaskId") ? job["ArrayJobId"] + "_" + job["ArrayTaskId"] : job["JobId"];
      out += "job " + name + " (" + job["JobName"] + ") ended " + job["JobState"] + ", ExitCode=" + job["ExitCode"] +
             ", Reason=" + job["Reason"] + ", after " + job["RunTime"] + "\n";
      const std::string log = job["StdOut"];
      if (log.empty()) continue;
      const std::string tail = Tail(log, log_lines);
      out += "--- " + log + " (last " + std::to_string(log_lines) + " lines)\n" + tail;
      if (!tail.empty() && tail.back() != '\n') out += "\n";
      if (const std::string hint = Hint(tail); !hint.empty()) out += hint + "\n";
    }
  }
  return out;
}

std::string SlurmCluster::Logs() const {
  std::string out;
  std::error_code ec;
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir_ + "/log", ec)) files.push_back(e.path().filename());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) out += "--- " + f + "\n" + Tail(dir_ + "/log/" + f, 15);
  return out;
}

void SlurmCluster::Stop() {
  if (stopped_ || dir_.empty()) return;
  stopped_ = true;
  if (daemons_.size() >= 2 && Alive(daemons_[1])) {
    Client("scancel --full --partition=debug", 15);
    Client("scontrol shutdown", 15);
  }
  // Daemons: wait for the shutdown, then make sure.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (pid_t pid : daemons_) {
    if (pid == daemons_.front()) kill(pid, SIGTERM);  // munged has no shutdown command
    while (Alive(pid) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (Alive(pid)) {
      kill(pid, SIGKILL);
      int status = 0;
      waitpid(pid, &status, 0);
    }
  }
  // Whatever else this cluster started: slurmstepd, job steps, batch scripts.
  for (int round = 0; round < 3; ++round) {
    const std::vector<pid_t> left = ProcessesWithEnv(marker_);
    if (left.empty()) break;
    for (pid_t pid : left) kill(pid, SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

}  // namespace flap::testing
