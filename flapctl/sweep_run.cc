// `flapctl sweep run`: a whole sweep on this machine. It starts flap-coordinator and N worker
// groups of W ranks (`flap-worker agent`, ranks joined through the torchrun-style variables
// on 127.0.0.1) as child processes, submits the sweep, shows progress, and when the sweep ends
// writes the ablation report and stops everything. It supervises like a cluster's launcher
// would: a group whose rank dies is restarted (its trial is requeued by the coordinator and
// resumes from its checkpoint elsewhere), a coordinator that dies is restarted on the same
// port from its journal.
//
// Ctrl-C (SIGINT) or SIGTERM stops cleanly: the groups get SIGTERM (each takes a last
// checkpoint and hands its trial back as preempted), then the coordinator; nothing is left
// running, and running the same command again resumes the sweep (the coordinator's state,
// checkpoints and the fbank cache live in --dir).
//
// The base config's keys local to each worker (data.path, ...), which the coordinator refuses
// in a sweep, are this machine's workers' own: they are taken out of the submitted base config
// and passed to every rank as flags (--data, --worker-arg and the run's own flags win).
//
// Layout of --dir:
//   state/        the coordinator's RocksDB state and token
//   ckpt/         checkpoints of every trial (shared by the groups)
//   logs/         coordinator.log, group-<g>-rank-<r>.log
//   report/       the ablation report (report.md, CSV, SVG plots)
//   run.json      the coordinator's address and pid, the sweep, the workers' data folder and
//                 the groups' pids (for tools and tests; `sweep best --dir` reads it)
//
// --export-best DIR: once the sweep has ended, validation's choice per cell is printed and
// exported as `flapctl sweep best --dir DIR_OF_RUN --export DIR` does (sweep_best.cc).
//
// With --metrics every process serves Prometheus /metrics on 127.0.0.1 (the ranks give theirs
// to the coordinator when they register), and --sd-file makes the coordinator keep a file_sd
// file listing itself and every live rank, which deploy/prometheus/prometheus.yml reads.
//
// Child processes live in their own process groups, so a terminal's Ctrl-C reaches flapctl
// alone and it stops them in order (workers first, so they can still report to the
// coordinator). Killed itself (SIGKILL), flapctl takes them along: each has SIGKILL as its
// parent-death signal (process.h), so nothing keeps the journal locked and the same command
// resumes at once.
#include <signal.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/atomic_file.h"
#include "coordinator/client.h"
#include "flapctl/cli.h"
#include "flapctl/process.h"
#include "flapctl/run_folder.h"
#include "flapctl/sweep_commands.h"
#include "flapctl/sweep_internal.h"

namespace flap::flapctl {
namespace po = boost::program_options;
namespace v1 = coordinator::v1;
namespace fs = std::filesystem;

namespace {

volatile sig_atomic_t g_stop_signal = 0;
void OnStopSignal(int sig) { g_stop_signal = sig; }

struct RunOptions {
  std::string sweep_file, base_config, dir, data, coordinator_bin, worker_bin, sd_file, export_best;
  int groups = 2, ranks = 1, max_restarts = 3;
  double interval = 2.0, stop_grace = 60.0;
  int64_t heartbeat_timeout_ms = 10000, lease_ttl_ms = 20000;
  std::vector<std::string> worker_args;  // KEY=VALUE
  bool metrics = false, plots = true;
};

struct Group {
  int index = 0;
  std::vector<Process> ranks;
  int restarts = 0;
  bool done = false;  // exited 0: every sweep is done
};

class LocalSweep {
 public:
  explicit LocalSweep(RunOptions o) : o_(std::move(o)), run_(o_.dir) {}

  int Run();

 private:
  // Folders, the sweep file, signals, the coordinator, the submission and the groups; an exit
  // code when the run cannot start, nullopt when it runs.
  std::optional<int> Start();
  // Until the sweep ends or a stop signal: restarts a dead coordinator or group, shows the
  // status. An exit code when the run must end early (a signal, too many restarts, nothing
  // left to run the sweep), nullopt when the sweep ended; `status` is its last status.
  std::optional<int> Watch(v1::SweepStatus* status);
  // Restarts the coordinator if it died; false when it cannot be or died too often.
  bool KeepCoordinator();
  // Restarts each group a rank of which failed; marks the groups that ended.
  void KeepGroups();
  // The report (and --export-best); then the groups and the coordinator are stopped.
  int Finish(int rc, const v1::SweepStatus& status);
  Status StartCoordinator();
  Status StartGroup(Group* g);
  std::string WorkersDataPath() const;
  void StopGroups(double grace_s);
  void WriteRunFile() const;
  void Log(const std::string& line) const { std::cout << line << std::endl; }
  std::string Path(const std::string& rel) const { return run_.Path(rel); }

  RunOptions o_;
  RunFolder run_;
  int port_ = 0;
  LocalCoordinator coordinator_;
  int coordinator_restarts_ = 0;
  // Down since it exited, until a restart answers; a restart that fails (its journal's disk
  // still full, say) is tried again at coordinator_retry_at_, 1, 2, 4, then every 8 s.
  bool coordinator_down_ = false;
  int coordinator_failed_starts_ = 0;
  std::chrono::steady_clock::time_point coordinator_retry_at_;
  std::string sweep_;  // once submitted
  std::vector<Group> groups_;
  std::map<std::string, std::string> base_worker_values_;  // ReadSweepFiles' worker_values
};

Status LocalSweep::StartCoordinator() {
  LocalCoordinator::Options co;
  co.bin = o_.coordinator_bin;
  co.port = port_;
  co.log = Path("logs/coordinator.log");
  co.extra_args = {"--heartbeat-interval-ms", "1000", "--heartbeat-timeout-ms", std::to_string(o_.heartbeat_timeout_ms),
                   "--lease-ttl-ms", std::to_string(o_.lease_ttl_ms)};
  if (o_.metrics) co.extra_args.insert(co.extra_args.end(), {"--metrics-listen", "127.0.0.1:0"});
  if (!o_.sd_file.empty()) co.extra_args.insert(co.extra_args.end(), {"--sd-file", fs::absolute(o_.sd_file).string()});
  return coordinator_.Start(run_, co);
}

// The data folder the workers read (the last --data.path their flags give), absolute; "" when
// they are given none (their trial config's, which a sweep never sets).
std::string LocalSweep::WorkersDataPath() const {
  std::string data = o_.data;
  for (const std::string& kv : o_.worker_args) {
    if (kv.compare(0, kv.find('='), "data.path") == 0) data = kv.substr(kv.find('=') + 1);
  }
  if (data.empty() && base_worker_values_.count("data.path")) data = base_worker_values_.at("data.path");
  return data.empty() ? "" : fs::absolute(data).lexically_normal().string();
}

Status LocalSweep::StartGroup(Group* g) {
  g->ranks.clear();
  FLAP_ASSIGN_OR_RETURN(int master_port, FreeLocalPort());
  for (int r = 0; r < o_.ranks; ++r) {
    std::vector<std::string> argv = {o_.worker_bin,   "agent",
                                     "--coordinator", coordinator_.address(),
                                     "--token-file",  run_.token_file(),
                                     "--group",       "local-" + std::to_string(g->index),
                                     "--ckpt.root",   Path("ckpt")};
    if (!o_.data.empty()) argv.insert(argv.end(), {"--data.path", o_.data});
    if (o_.metrics) argv.insert(argv.end(), {"--metrics.listen", "127.0.0.1:0"});
    std::vector<std::string> env;
    if (o_.ranks > 1) {
      argv.insert(argv.end(), {"--dist.launcher", "env"});
      env = {"MASTER_ADDR=127.0.0.1",           "MASTER_PORT=" + std::to_string(master_port),
             "RANK=" + std::to_string(r),       "WORLD_SIZE=" + std::to_string(o_.ranks),
             "LOCAL_RANK=" + std::to_string(r), "LOCAL_WORLD_SIZE=" + std::to_string(o_.ranks)};
    }
    for (const std::string& kv : o_.worker_args) {
      const size_t eq = kv.find('=');
      argv.push_back("--" + kv.substr(0, eq));
      argv.push_back(kv.substr(eq + 1));
    }
    // The base config's keys local to the workers are theirs to set (and the flags above win).
    for (const auto& [key, value] : base_worker_values_) {
      if (std::find(argv.begin(), argv.end(), "--" + key) == argv.end()) argv.insert(argv.end(), {"--" + key, value});
    }
    const std::string log = Path("logs/group-" + std::to_string(g->index) + "-rank-" + std::to_string(r) + ".log");
    auto p = Process::Start(argv, env, log);
    if (!p.ok()) {
      for (auto& started : g->ranks) started.Stop(5);
      return p.status();
    }
    g->ranks.push_back(std::move(*p));
  }
  return Status::OK();
}

void LocalSweep::StopGroups(double grace_s) {
  for (auto& g : groups_) {
    for (auto& r : g.ranks) r.Signal(SIGTERM);
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(grace_s);
  for (auto& g : groups_) {
    for (auto& r : g.ranks) {
      const double left = std::chrono::duration<double>(until - std::chrono::steady_clock::now()).count();
      if (!r.WaitFor(std::max(0.0, left))) {
        r.Signal(SIGKILL);
        r.WaitFor(10);
      }
    }
  }
}

void LocalSweep::WriteRunFile() const {
  nlohmann::json j = {{"coordinator", {{"address", coordinator_.address()}, {"pid", coordinator_.pid()}}},
                      {"token_file", run_.token_file()},
                      {"sweep", sweep_},
                      {"data", WorkersDataPath()},
                      {"groups", nlohmann::json::array()}};
  for (const auto& g : groups_) {
    nlohmann::json pids = nlohmann::json::array();
    for (const auto& r : g.ranks) pids.push_back(r.pid());
    j["groups"].push_back({{"group", "local-" + std::to_string(g.index)}, {"pids", pids}, {"restarts", g.restarts}});
  }
  (void)flap::WriteFileAtomic(run_.run_file(), j.dump(2) + "\n");  // best effort: the run file is for the user
}

std::string Summary(const v1::SweepStatus& s) {
  int64_t step = 0, total = 0;
  for (const auto& t : s.trials()) {
    step += t.step();
    total += t.total_steps();
  }
  return SweepHeadline(s) + ", steps " + std::to_string(step) + "/" + std::to_string(total);
}

std::optional<int> LocalSweep::Start() {
  // state/ is the coordinator's to make, private to this user (0700).
  for (const char* sub : {"logs", "ckpt", "report"}) {
    std::error_code ec;
    fs::create_directories(Path(sub), ec);
    if (ec) {
      std::cerr << "flapctl sweep run: cannot create " << Path(sub) << ": " << ec.message() << "\n";
      return kExitFailure;
    }
  }
  auto files = ReadSweepFiles(o_.sweep_file, o_.base_config, /*local_keys_to_workers=*/true);
  if (!files.ok()) {
    std::cerr << files.status().message() << "\n";
    return files.status().code() == Status::Code::kNotFound ? kExitFailure : kExitUsage;
  }
  base_worker_values_ = files->worker_values;
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  auto port = FreeLocalPort();
  if (!port.ok()) return std::cerr << "flapctl sweep run: " << port.status().message() << "\n", kExitFailure;
  port_ = *port;
  Status s = StartCoordinator();
  if (!s.ok()) {
    coordinator_.Stop(5);
    std::cerr << "flapctl sweep run: " << s.message() << "\n";
    return kExitFailure;
  }
  auto submitted = coordinator_.client().SubmitSweep(files->text, files->path, files->base_config);
  if (!submitted.ok()) {
    coordinator_.Stop(10);
    std::cerr << "flapctl sweep run: " << submitted.status().message() << "\n";
    return kExitFailure;
  }
  sweep_ = submitted->sweep_id();
  Log(std::string(submitted->already_submitted() ? "resuming" : "submitted") + " sweep " + sweep_ + " (" +
      std::to_string(submitted->num_trials()) + " trials) on flap-coordinator " + coordinator_.address() +
      ", " + std::to_string(o_.groups) + " group(s) of " + std::to_string(o_.ranks) + " rank(s); logs in " +
      Path("logs"));
  groups_.resize(static_cast<size_t>(o_.groups));
  for (int i = 0; i < o_.groups; ++i) {
    groups_[static_cast<size_t>(i)].index = i;
    s = StartGroup(&groups_[static_cast<size_t>(i)]);
    if (!s.ok()) break;
  }
  WriteRunFile();
  if (!s.ok()) {
    StopGroups(10);
    coordinator_.Stop(10);
    std::cerr << "flapctl sweep run: " << s.message() << "\n";
    return kExitFailure;
  }
  return std::nullopt;
}

bool LocalSweep::KeepCoordinator() {
  const auto now = std::chrono::steady_clock::now();
  if (!coordinator_down_) {
    if (!coordinator_.Poll()) return true;
    coordinator_down_ = true;
    coordinator_failed_starts_ = 0;
    coordinator_retry_at_ = now;
    Log("flap-coordinator exited with " + std::to_string(coordinator_.exit_code()) +
        ": restarting it from its journal");
  }
  if (now < coordinator_retry_at_) return true;
  if (++coordinator_restarts_ > o_.max_restarts) {
    std::cerr << "flapctl sweep run: flap-coordinator exited with " << coordinator_.exit_code()
              << " too often; giving up (state kept in " << Path("state") << ")\n";
    return false;
  }
  if (Status s = StartCoordinator(); !s.ok()) {
    // Tried again later (the groups keep their records for it meanwhile), within --max-restarts;
    // giving up at once stopped the groups while no coordinator could take their records.
    const int wait_s = 1 << std::min(coordinator_failed_starts_++, 3);
    std::cerr << "flapctl sweep run: " << s.message() << "\n";
    Log("flap-coordinator did not start; trying again in " + std::to_string(wait_s) + " s");
    coordinator_retry_at_ = now + std::chrono::seconds(wait_s);
    return true;
  }
  coordinator_down_ = false;
  WriteRunFile();
  return true;
}

void LocalSweep::KeepGroups() {
  for (auto& g : groups_) {
    if (g.done) continue;
    bool any_failed = false, all_ended = true;
    int failed_code = 0;
    for (auto& r : g.ranks) {
      if (!r.Poll()) {
        all_ended = false;
        continue;
      }
      if (r.exit_code() != 0) {
        any_failed = true;
        failed_code = r.exit_code();
      }
    }
    if (all_ended && !any_failed) {
      g.done = true;
      continue;
    }
    if (!any_failed) continue;
    for (auto& r : g.ranks) r.Stop(5);
    if (++g.restarts > o_.max_restarts) {
      Log("group local-" + std::to_string(g.index) + " failed " + std::to_string(g.restarts) +
          " times; not restarting it");
      g.done = true;
      continue;
    }
    Log("group local-" + std::to_string(g.index) + ": a rank exited with " + std::to_string(failed_code) +
        "; restarting the group (its trial resumes from its last checkpoint)");
    if (Status s = StartGroup(&g); !s.ok()) Log("group local-" + std::to_string(g.index) + ": " + s.message());
    WriteRunFile();
  }
}

std::optional<int> LocalSweep::Watch(v1::SweepStatus* status) {
  const bool tty = isatty(STDOUT_FILENO) != 0;
  std::string last_line;
  auto last_print = std::chrono::steady_clock::now() - std::chrono::hours(1);
  for (;;) {
    if (g_stop_signal != 0) {
      Log("signal " + std::to_string(g_stop_signal) + ": stopping the worker groups (each takes a last checkpoint)");
      StopGroups(o_.stop_grace);
      coordinator_.Stop(15);
      WriteRunFile();
      Log("stopped; run the same command again to resume the sweep");
      return 128 + g_stop_signal;
    }
    if (!KeepCoordinator()) return kExitFailure;
    KeepGroups();
    auto st = coordinator_down_ ? StatusOr<v1::SweepStatus>(Status::IOError("the coordinator is restarting"))
                                : coordinator_.client().GetSweep(sweep_);
    if (st.ok()) {
      *status = *st;
      if (status->state() != "running") return std::nullopt;
      const auto now = std::chrono::steady_clock::now();
      if (now - last_print >= std::chrono::duration<double>(o_.interval)) {
        last_print = now;
        if (tty) {
          std::cout << "\033[H\033[2J" << FormatSweepStatus(*status) << std::flush;
        } else {
          const std::string line = Summary(*status);
          if (line != last_line) Log(line);
          last_line = line;
        }
      }
    }
    bool all_done = true;
    for (const auto& g : groups_) all_done = all_done && g.done;
    if (all_done) {
      std::cerr << "flapctl sweep run: every worker group has ended but the sweep is still running\n";
      return kExitFailure;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

int LocalSweep::Finish(int rc, const v1::SweepStatus& status) {
  if (rc == kExitOk) {
    std::cout << FormatSweepStatus(status);
    std::vector<std::string> names;
    Status s = FetchReport(coordinator_.client(), sweep_, Path("report"), 0, o_.plots, &names);
    if (s.ok() || s.code() == Status::Code::kFailedPrecondition) {
      if (!s.ok()) std::cerr << "flapctl sweep run: " << s.message() << "\n";
      Log("report: " + Path("report/report.md"));
    } else {
      std::cerr << "flapctl sweep run: the report: " << s.message() << "\n";
      rc = kExitFailure;
    }
  }
  if (rc == kExitOk && !o_.export_best.empty()) {
    sweep_internal::BestRequest best;
    best.command = "run";
    best.sweep = sweep_;
    best.export_dir = o_.export_best;
    best.worker = o_.worker_bin;
    const std::string data = WorkersDataPath();
    if (!data.empty()) best.forwarded = {"--data.path", data};
    rc = sweep_internal::ShowBest(coordinator_.client(), best);
  }
  // The groups exit by themselves once every sweep is done; whatever is left is stopped.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (auto& g : groups_) {
    for (auto& r : g.ranks) {
      const double left = std::chrono::duration<double>(until - std::chrono::steady_clock::now()).count();
      r.WaitFor(std::max(0.0, left));
    }
  }
  StopGroups(o_.stop_grace);
  coordinator_.Stop(15);
  WriteRunFile();
  return rc;
}

int LocalSweep::Run() {
  if (std::optional<int> failed = Start()) return *failed;
  v1::SweepStatus status;
  const std::optional<int> ended = Watch(&status);
  // A stop signal has stopped everything already; the run resumes with the same command.
  if (ended && g_stop_signal != 0 && *ended == 128 + g_stop_signal) return *ended;
  return Finish(ended.value_or(kExitOk), status);
}

}  // namespace

int RunSweepRun(const std::vector<std::string>& args) {
  RunOptions o;
  po::options_description visible(
      "usage: flapctl sweep run SWEEP.ini --dir DIR [options]\n"
      "Runs the sweep on this machine: flap-coordinator and --groups worker groups of --ranks ranks\n"
      "(flap-worker agent), progress on stdout, the report in DIR/report when it ends. Ctrl-C stops\n"
      "everything cleanly; the same command resumes.\n\nOptions");
  visible.add_options()("help,h", "show this help")("dir", po::value(&o.dir)->required(),
                                                    "folder of the run: state, checkpoints, logs, report")(
      "groups", po::value(&o.groups)->default_value(o.groups), "worker groups")(
      "ranks", po::value(&o.ranks)->default_value(o.ranks), "ranks per group")(
      "data", po::value(&o.data), "dataset folder (data.path of every trial; default: the base config's)")(
      "base-config", po::value(&o.base_config), "the trial config the factors override (default: [sweep] base_config)")(
      "worker-arg", po::value(&o.worker_args)->composing(),
      "KEY=VALUE: a config override for every trial (repeatable)")(
      "metrics", "the coordinator and the workers serve Prometheus metrics on 127.0.0.1 (any free port)")(
      "sd-file", po::value(&o.sd_file),
      "the coordinator keeps a Prometheus file_sd file at PATH listing itself and every worker rank "
      "(with --metrics; e.g. deploy/prometheus/sd/flap.json, docs/metrics.md)")(
      "no-plots", "report without gnuplot plots")("interval", po::value(&o.interval)->default_value(o.interval),
                                                  "seconds between progress updates")(
      "heartbeat-timeout-ms", po::value(&o.heartbeat_timeout_ms)->default_value(o.heartbeat_timeout_ms),
      "a group silent this long loses its trial")(
      "lease-ttl-ms", po::value(&o.lease_ttl_ms)->default_value(o.lease_ttl_ms), "shard lease lifetime")(
      "max-restarts", po::value(&o.max_restarts)->default_value(o.max_restarts),
      "restarts of a failed group (and of the coordinator) before giving up on it")(
      "stop-grace", po::value(&o.stop_grace)->default_value(o.stop_grace),
      "seconds the groups get to checkpoint and exit when stopping")(
      "coordinator-bin", po::value(&o.coordinator_bin), "flap-coordinator (default: found beside flapctl)")(
      "worker-bin", po::value(&o.worker_bin), "flap-worker (default: found beside flapctl)")(
      "export-best", po::value(&o.export_best),
      "once the sweep has ended, print validation's choice per cell and export those models to DIR "
      "(as `flapctl sweep best --dir DIR_OF_RUN --export DIR`)");
  po::options_description hidden;
  hidden.add_options()("sweep-file", po::value(&o.sweep_file), "sweep file");
  po::positional_options_description positional;
  positional.add("sweep-file", 1);
  po::variables_map vm;
  if (!ParseArgs("sweep run", args, visible, hidden, positional, &vm)) return kExitUsage;
  if (vm.count("help")) {
    std::cout << visible << "\n";
    return kExitOk;
  }
  o.metrics = vm.count("metrics") > 0;
  o.plots = vm.count("no-plots") == 0;
  std::string error;
  if (o.sweep_file.empty())
    error = "missing the sweep file";
  else if (o.groups < 1 || o.groups > 64)
    error = "--groups must be in [1, 64]";
  else if (o.ranks < 1 || o.ranks > 64)
    error = "--ranks must be in [1, 64]";
  else if (!(o.interval > 0))
    error = "--interval must be > 0";
  else if (o.heartbeat_timeout_ms < 1000)
    error = "--heartbeat-timeout-ms must be >= 1000";
  for (const std::string& kv : o.worker_args) {
    if (kv.find('=') == std::string::npos || kv.find('=') == 0) error = "--worker-arg '" + kv + "': expected KEY=VALUE";
  }
  if (!error.empty()) {
    std::cerr << "flapctl sweep run: " << error << "\n";
    return kExitUsage;
  }
  auto coordinator_bin = FindFlapProgram(o.coordinator_bin, "flap-coordinator", "coordinator");
  auto worker_bin = FindFlapProgram(o.worker_bin, "flap-worker", "worker");
  for (const auto* found : {&coordinator_bin, &worker_bin}) {
    if (!found->ok()) {
      std::cerr << "flapctl sweep run: " << found->status().message() << " (give --coordinator-bin / --worker-bin)\n";
      return kExitUsage;
    }
  }
  o.coordinator_bin = *coordinator_bin;
  o.worker_bin = *worker_bin;
  // Absolute, so that what the run records (checkpoint references, run.json) holds from any
  // working folder.
  o.dir = fs::absolute(o.dir).lexically_normal().string();
  return LocalSweep(o).Run();
}

}  // namespace flap::flapctl
