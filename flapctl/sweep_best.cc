// `flapctl sweep best` (flapctl/sweep_commands.h): validation's choice in each cell, from the
// coordinator's GetBest (coordinator/report.h SelectBest), printed; with --export, each chosen
// model written by `flap-worker export` from its checkpoint, with the trial's config and a card
// of its figures. With --dir, the coordinator is a `flapctl sweep run` folder's: the one the
// run still runs, else one started on the folder's state for this command (run_folder.h).
#include <stdlib.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "common/atomic_file.h"
#include "common/path_name.h"
#include "config/trial_config.h"
#include "coordinator/report.h"
#include "coordinator/sweep.h"
#include "flapctl/process.h"
#include "flapctl/run_folder.h"
#include "flapctl/sweep_commands.h"
#include "flapctl/sweep_internal.h"

namespace flap::flapctl {
namespace po = boost::program_options;
namespace v1 = coordinator::v1;
namespace fs = std::filesystem;
using namespace sweep_internal;  // NOLINT: this part's own helpers

namespace {

constexpr char kCommand[] = "best";

// A record's figures: the objective first, then the retrieval metrics it carries.
std::string Figures(const google::protobuf::Map<std::string, double>& m, const std::string& objective) {
  std::vector<std::string> names = {objective};
  for (const std::string& r : coordinator::RetrievalMetrics()) {
    if (r != objective) names.push_back(r);
  }
  std::string out;
  for (const std::string& n : names) {
    if (m.count(n)) out += (out.empty() ? "" : "  ") + n + " " + Metric(m, n);
  }
  return out.empty() ? "-" : out;
}

std::string Headline(const v1::GetBestResponse& best) {
  return "sweep " + best.sweep_id() + " (" + best.state() +
         "): per cell, the completed trial whose checkpoint validation selected has the best validation " +
         best.metric() + " (" + (best.higher_is_better() ? "higher" : "lower") +
         " is better); test figures are shown, never used to choose\n";
}

std::string FormatCell(const v1::GetBestResponse& best, const v1::CellChoice& c) {
  std::ostringstream out;
  out << "cell " << c.cell() << ": " << c.label() << "\n";
  if (c.trial_id().empty()) {
    out << "  no choice: " << c.reason() << "\n";
    return out.str();
  }
  out << "  trial       " << c.trial_id() << ", seed " << c.seed() << " (best of " << c.candidates()
      << " completed trial" << (c.candidates() == 1 ? "" : "s") << ")\n"
      << "  step        " << c.selected_step() << " (validation's choice within the trial)\n"
      << "  checkpoint  " << (c.checkpoint().empty() ? "unknown: " + c.reason() : c.checkpoint()) << "\n"
      << "  validation  " << Figures(c.validation(), best.metric()) << "\n";
  if (c.test().empty()) {
    out << "  test        none (no test record)\n";
  } else {
    out << "  test        " << Figures(c.test(), best.metric()) << " (not used to choose)\n";
  }
  return out.str();
}

// The folder name of a cell's export: "cell<N>" then "-" and its factors as key-value joined by
// "_" (characters outside [A-Za-z0-9_.-] as "_"), cut at kMaxPathNameLength.
std::string CellName(const v1::CellChoice& c) {
  std::string factors;
  for (const auto& [key, value] : std::map<std::string, std::string>(c.factors().begin(), c.factors().end())) {
    factors += (factors.empty() ? "" : "_") + key + "-" + value;
  }
  std::string name = "cell" + std::to_string(c.cell()) + (factors.empty() ? "" : "-" + factors);
  for (char& ch : name) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                    ch == '.' || ch == '-';
    if (!ok) ch = '_';
  }
  return name.substr(0, kMaxPathNameLength);
}

nlohmann::json Numbers(const google::protobuf::Map<std::string, double>& m) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [k, v] : std::map<std::string, double>(m.begin(), m.end())) {
    out[k] = std::isnan(v) ? nlohmann::json() : nlohmann::json(v);
  }
  return out;
}

// The card flap-worker export puts beside the model.
std::string Card(const v1::GetBestResponse& best, const v1::CellChoice& c) {
  nlohmann::json factors = nlohmann::json::object();
  for (const auto& [k, v] : c.factors()) factors[k] = v;
  nlohmann::json card = {
      {"sweep", best.sweep_id()},
      {"cell", c.label()},
      {"factors", factors},
      {"trial", c.trial_id()},
      {"seed", c.seed()},
      {"selected_step", c.selected_step()},
      {"checkpoint", c.checkpoint()},
      {"objective",
       {{"metric", best.metric()},
        {"value", std::isnan(c.objective()) ? nlohmann::json() : nlohmann::json(c.objective())},
        {"higher_is_better", best.higher_is_better()}}},
      {"validation", Numbers(c.validation())},
      {"test", c.test().empty() ? nlohmann::json() : Numbers(c.test())},
  };
  return card.dump(2) + "\n";
}

// The trial's config: the sweep's base config with the trial's values (coordinator/sweep.h
// TrialConfigValues), checked as a worker would load it. Keys local to a machine are left out,
// as a worker ignores them in what a coordinator sends: they come from the arguments after --.
StatusOr<std::string> TrialConfigFile(const v1::GetBestResponse& best, const v1::CellChoice& c) {
  coordinator::TrialSpec trial;
  trial.id = c.trial_id();
  trial.factors = std::map<std::string, std::string>(c.factors().begin(), c.factors().end());
  trial.seed = c.seed();
  trial.cell = c.cell();
  const std::string source = "the base config of sweep " + best.sweep_id();
  FLAP_ASSIGN_OR_RETURN(auto values,
                        coordinator::TrialConfigValues(best.base_config(), source, best.sweep_id(), trial));
  TakeLocalKeys(&values);
  const std::string text = ConfigText(values);
  StatusOr<TrialConfig> checked = TrialConfigFromText(text, source + " with trial " + trial.id + "'s values");
  if (!checked.ok()) return checked.status();
  return text;
}

// A folder under the system's temporary folder, removed with this object.
class TempFolder {
 public:
  static StatusOr<TempFolder> Create() {
    std::string pattern = (fs::temp_directory_path() / "flapctl-export-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      return Status::IOError("cannot make a temporary folder " + pattern + ": " + std::strerror(errno));
    }
    TempFolder t;
    t.path_ = pattern;
    return t;
  }
  TempFolder() = default;
  TempFolder(TempFolder&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  TempFolder& operator=(TempFolder&&) = delete;
  ~TempFolder() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Runs `flap-worker export` for one cell into `out`.
Status ExportCell(const v1::GetBestResponse& best, const v1::CellChoice& c, const std::string& out,
                  const std::string& worker, const std::vector<std::string>& forwarded) {
  const std::string what = "cell " + std::to_string(c.cell()) + " (" + c.label() + ")";
  FLAP_ASSIGN_OR_RETURN(std::string config, TrialConfigFile(best, c));
  FLAP_ASSIGN_OR_RETURN(TempFolder tmp, TempFolder::Create());
  const std::string config_path = tmp.path() + "/config.ini", card_path = tmp.path() + "/card.json",
                    log_path = tmp.path() + "/export.log";
  FLAP_RETURN_IF_ERROR(WriteFileAtomic(config_path, config));
  FLAP_RETURN_IF_ERROR(WriteFileAtomic(card_path, Card(best, c)));
  std::vector<std::string> argv = {worker,         "export", "--model",  c.checkpoint() + "/model.pt",
                                   "--out",        out,      "--config", config_path,
                                   "--card-extra", card_path};
  argv.insert(argv.end(), forwarded.begin(), forwarded.end());
  StatusOr<Process> p = Process::Start(argv, {}, log_path);
  if (!p.ok()) return p.status().WithContext("exporting " + what);
  while (!p->WaitFor(3600)) {
  }
  if (p->exit_code() != 0) {
    return Status::Internal("exporting " + what + " failed: " + worker + " exited with status " +
                            std::to_string(p->exit_code()) + "; its output:\n" + LogTail(log_path, 20));
  }
  return Status::OK();
}

// Splits `args` at "--": what follows goes to flap-worker export, as --KEY VALUE pairs.
bool SplitForwarded(std::vector<std::string>* args, std::vector<std::string>* forwarded, std::string* error) {
  auto dashes = std::find(args->begin(), args->end(), "--");
  if (dashes == args->end()) return true;
  forwarded->assign(dashes + 1, args->end());
  args->erase(dashes, args->end());
  for (size_t i = 0; i < forwarded->size(); i += 2) {
    const std::string& key = (*forwarded)[i];
    if (key.size() < 3 || key.compare(0, 2, "--") != 0 || i + 1 >= forwarded->size()) {
      *error = "after --, expected --KEY VALUE pairs for flap-worker export; got '" + key + "'" +
               (i + 1 >= forwarded->size() && key.compare(0, 2, "--") == 0 ? " without a value" : "");
      return false;
    }
  }
  return true;
}

}  // namespace


int sweep_internal::ShowBest(coordinator::CoordinatorClient& client, const BestRequest& r) {
  const std::string prefix = "flapctl sweep " + r.command + ": ";
  StatusOr<v1::GetBestResponse> best = client.GetBest(r.sweep);
  if (!best.ok()) return Fail(r.command, best.status());

  // The cells to print.
  std::vector<const v1::CellChoice*> cells;
  for (const v1::CellChoice& c : best->cells()) {
    if (r.cell.empty() || r.cell == std::to_string(c.cell()) || r.cell == c.label()) cells.push_back(&c);
  }
  if (cells.empty()) {
    std::string list;
    for (const v1::CellChoice& c : best->cells()) {
      list += (list.empty() ? "" : "; ") + std::to_string(c.cell()) + " (" + c.label() + ")";
    }
    std::cerr << prefix
              << (best->cells().empty() ? "sweep " + r.sweep + " has no cells"
                                        : "no cell '" + r.cell + "' in sweep " + r.sweep + "; its cells: " + list)
              << "\n";
    return best->cells().empty() ? kExitFailure : kExitUsage;
  }
  std::cout << Headline(*best);
  int chosen = 0;
  for (const v1::CellChoice* c : cells) {
    std::cout << FormatCell(*best, *c);
    chosen += !c->trial_id().empty();
  }
  if (chosen == 0) {
    std::cerr << prefix
              << (cells.size() == 1 ? "cell " + std::to_string(cells[0]->cell()) + " of sweep " + r.sweep +
                                          " has no trial to choose: " + cells[0]->reason()
                                    : "sweep " + r.sweep +
                                          " has no trial to choose in any cell: no completed trial "
                                          "has a validation " +
                                          best->metric() + " at the step validation selected")
              << "\n";
    return kExitFailure;
  }
  if (r.export_dir.empty()) return kExitOk;

  // Export: every output is checked before anything runs.
  std::vector<std::pair<const v1::CellChoice*, std::string>> jobs;
  std::string problems;
  for (const v1::CellChoice* c : cells) {
    const std::string what = "cell " + std::to_string(c->cell()) + " (" + c->label() + ")";
    if (c->trial_id().empty()) {
      std::cerr << prefix << "not exporting " << what << ": " << c->reason() << "\n";
      continue;
    }
    const std::string out = (fs::path(r.export_dir) / CellName(*c)).string();
    std::error_code ec;
    if (fs::exists(fs::symlink_status(out, ec))) {
      problems += "  " + out + " already exists (" + what + "): remove it or choose another export folder\n";
    } else if (c->checkpoint().empty()) {
      problems += "  " + what + ": no checkpoint to export: " + c->reason() + "\n";
    } else if (!fs::is_directory(c->checkpoint(), ec)) {
      problems += "  " + what + ": its checkpoint " + c->checkpoint() +
                  " is not a folder on this machine (removed by retention? ckpt.keep_best keeps validation's best)\n";
    }
    jobs.push_back({c, out});
  }
  if (!problems.empty()) {
    std::cerr << prefix << "nothing exported:\n" << problems;
    return kExitFailure;
  }
  std::error_code ec;
  fs::create_directories(r.export_dir, ec);
  if (ec) return Fail(r.command, Status::IOError("cannot create " + r.export_dir + ": " + ec.message()));
  for (const auto& [c, out] : jobs) {
    Status s = ExportCell(*best, *c, out, r.worker, r.forwarded);
    if (!s.ok()) return Fail(r.command, s);
    std::cout << "exported cell " << c->cell() << " (trial " << c->trial_id() << ", step " << c->selected_step()
              << ") to " << out << "\n";
  }
  return kExitOk;
}

namespace {

// A client of the coordinator of the `sweep run` folder `run`: the run's own while it runs (it
// answers at the address run.json publishes; the client is then kept in *running), else one
// started on the folder's state as *own (flap-coordinator: `coordinator_bin`, else found beside
// flapctl; NotFound when it is not there). *sweep, when empty, gets the run's sweep (run.json's,
// else the only one in the state); *data the run's workers' data folder ("" when unknown).
StatusOr<coordinator::CoordinatorClient*> RunCoordinator(const RunFolder& run, const std::string& coordinator_bin,
                                                         int64_t timeout_ms,
                                                         std::unique_ptr<coordinator::CoordinatorClient>* running,
                                                         LocalCoordinator* own, std::string* sweep, std::string* data) {
  std::error_code ec;
  if (!fs::is_directory(run.dir(), ec)) return Status::NotFound("--dir " + run.dir() + " is not a folder");
  if (!fs::is_directory(run.state_dir(), ec) || !fs::exists(run.token_file(), ec)) {
    return Status::NotFound("--dir " + run.dir() + " is not a folder of flapctl sweep run: it has no " +
                            run.token_file() + " (the coordinator's state and token)");
  }
  RunFileInfo info;
  if (StatusOr<RunFileInfo> read = ReadRunFile(run); read.ok()) {
    info = *read;
  } else if (read.status().code() != Status::Code::kNotFound) {
    return read.status();
  }
  *data = info.data;
  std::string running_problem;
  if (!info.coordinator_address.empty()) {
    auto answered = ConnectRunCoordinator(run, info.coordinator_address, 2000);
    if (answered.ok()) {
      std::cerr << "flapctl sweep best: asking the running coordinator of " << run.dir() << " at "
                << info.coordinator_address << "\n";
      *running = std::move(*answered);
    } else {
      running_problem = "; the coordinator " + run.run_file() + " publishes, " + info.coordinator_address +
                        ", does not answer (" + answered.status().message() + ")";
    }
  }
  if (!*running) {
    fs::create_directories(run.Path("logs"), ec);
    StatusOr<std::string> bin = FindFlapProgram(coordinator_bin, "flap-coordinator", "coordinator");
    if (!bin.ok()) return Status::NotFound(bin.status().message() + " (give --coordinator-bin PATH)");
    FLAP_ASSIGN_OR_RETURN(int port, FreeLocalPort());
    LocalCoordinator::Options o;
    o.bin = *bin;
    o.port = port;
    o.log = run.Path("logs/best-coordinator.log");
    o.call_deadline_ms = timeout_ms;
    Status started = own->Start(run, o);
    if (started.code() == Status::Code::kFailedPrecondition) {
      return Status::FailedPrecondition(run.dir() + " is in use by another process (a flapctl sweep run still " +
                                        "running?)" + running_problem + "; " + started.message());
    }
    if (!started.ok()) return started.WithContext("starting flap-coordinator on " + run.state_dir());
  }
  coordinator::CoordinatorClient* client = *running ? running->get() : &own->client();
  if (sweep->empty()) *sweep = info.sweep;
  if (sweep->empty()) {
    FLAP_ASSIGN_OR_RETURN(v1::ListSweepsResponse list, client->ListSweeps());
    std::string names;
    for (const auto& s : list.sweeps()) names += (names.empty() ? "" : ", ") + s.sweep_id();
    if (list.sweeps_size() != 1) {
      return Status::InvalidArgument(run.run_file() + " names no sweep and the state holds " +
                                     (names.empty() ? "none" : names) + ": give SWEEP");
    }
    *sweep = list.sweeps(0).sweep_id();
  }
  return client;
}

}  // namespace

int RunSweepBest(const std::vector<std::string>& given) {
  Connection conn;
  BestRequest request;
  std::string run_dir, coordinator_bin;
  std::vector<std::string> args = given;
  std::string error;
  if (!SplitForwarded(&args, &request.forwarded, &error)) {
    std::cerr << "flapctl sweep best: " << error << "\n";
    return kExitUsage;
  }
  po::options_description extra;
  extra.add_options()("cell", po::value(&request.cell), "only this cell: its number or its label (as printed)")(
      "export", po::value(&request.export_dir),
      "write each printed cell's model to DIR/<cell-name> with `flap-worker export` (an existing one is refused)")(
      "worker", po::value(&request.worker), "flap-worker for --export (default: found beside flapctl)")(
      "dir", po::value(&run_dir),
      "a `flapctl sweep run` folder: ask its coordinator (the running one, else one started on its state "
      "for this command); SWEEP defaults to the run's, and --export gets the run's --data.path")(
      "coordinator-bin", po::value(&coordinator_bin), "flap-coordinator for --dir (default: found beside flapctl)");
  po::variables_map vm;
  const int rc =
      Parse(kCommand,
            "usage: flapctl sweep best SWEEP [--cell N] [--export DIR [--worker PATH] [-- --KEY VALUE ...]] [options]\n"
            "       flapctl sweep best --dir RUN [SWEEP] [--cell N] [--export DIR ...]   (a sweep run's folder)\n"
            "Prints, per cell, the trial and checkpoint that validation selects, with its figures. Within a trial,\n"
            "the checkpoint is the one validation selected (the test record's selected_step: the trial's best\n"
            "evaluation by ckpt.metric). Across a cell's completed trials, the one whose selected checkpoint has\n"
            "the best validation value of the sweep's objective (the report's primary metric: [asha] metric, else\n"
            "[report] target's metric, else map10). Test figures are printed, never used to choose.\n"
            "--export DIR runs, for each printed cell,\n"
            "  flap-worker export --model CKPT/model.pt --out DIR/<cell-name> --config TRIAL.ini\n"
            "      --card-extra CARD.json [--KEY VALUE ...]\n"
            "with the trial's config (the sweep's base config with its factors, seed and trial id) and a card of\n"
            "its figures; the --KEY VALUE pairs after -- (e.g. -- --data.path data) are passed on as they are.\n"
            "<cell-name> is cell<N>-<key>-<value>_...; an existing DIR/<cell-name> is refused (nothing is\n"
            "overwritten). Exit 1 when no printed cell has a choice, or an export fails (naming the cell and\n"
            "the worker's exit status).\n"
            "--dir RUN (a folder of `flapctl sweep run`, finished, stopped or running): while the run runs,\n"
            "its coordinator (address in RUN/run.json) is asked; else flap-coordinator is started on RUN/state\n"
            "for this command and stopped after it. SWEEP defaults to the run's; --export passes the run's\n"
            "data folder as --data.path unless one is given after --.",
            args, &extra, &conn, &request.sweep, "sweep", false, &vm);
  if (rc != kExitOk) return rc < 0 ? kExitOk : rc;
  if (run_dir.empty() && request.sweep.empty()) {
    std::cerr << "flapctl sweep best: missing the sweep (or --dir, a sweep run's folder)\n";
    return kExitUsage;
  }
  if (!request.sweep.empty()) {
    if (std::string p = PathNameProblem(request.sweep); !p.empty()) {
      std::cerr << "flapctl sweep best: the sweep name '" << request.sweep << "' " << p << "\n";
      return kExitUsage;
    }
  }
  if (!run_dir.empty()) {
    std::string given;
    for (const char* o : {"coordinator", "token-file", "tls-ca", "insecure"}) {
      if (vm.count(o) && !vm[o].defaulted()) given += std::string(given.empty() ? "" : ", ") + "--" + o;
    }
    if (!given.empty()) {
      std::cerr << "flapctl sweep best: --dir asks the run's own coordinator on 127.0.0.1 with the run's token; "
                << given << " cannot go with it\n";
      return kExitUsage;
    }
  } else if (!coordinator_bin.empty()) {
    std::cerr << "flapctl sweep best: --coordinator-bin is for --dir: give --dir RUN\n";
    return kExitUsage;
  }
  if (!request.forwarded.empty() && request.export_dir.empty()) {
    std::cerr << "flapctl sweep best: arguments after -- are for flap-worker export: give --export DIR\n";
    return kExitUsage;
  }
  if (!request.worker.empty() && request.export_dir.empty()) {
    std::cerr << "flapctl sweep best: --worker is for --export: give --export DIR\n";
    return kExitUsage;
  }
  if (!request.export_dir.empty()) {
    StatusOr<std::string> found = FindFlapProgram(request.worker, "flap-worker", "worker");
    if (!found.ok()) {
      std::cerr << "flapctl sweep best: " << found.status().message() << " (give --worker PATH)\n";
      return kExitUsage;
    }
    request.worker = *found;
  }
  if (run_dir.empty()) {
    auto client = Connect(conn);
    if (!client.ok()) return Fail(kCommand, client.status());
    return ShowBest(**client, request);
  }

  // --dir: the run's coordinator.
  std::unique_ptr<coordinator::CoordinatorClient> running;
  LocalCoordinator own;
  std::string data;
  auto client = RunCoordinator(RunFolder(run_dir), coordinator_bin, conn.timeout_ms, &running, &own, &request.sweep, &data);
  int code = kExitFailure;
  if (!client.ok()) {
    Fail(kCommand, client.status());
    if (client.status().code() == Status::Code::kNotFound) code = kExitUsage;
  } else {
    const bool data_given =
        std::find(request.forwarded.begin(), request.forwarded.end(), "--data.path") != request.forwarded.end();
    if (!request.export_dir.empty() && !data.empty() && !data_given) {
      request.forwarded.insert(request.forwarded.end(), {"--data.path", data});
    }
    code = ShowBest(**client, request);
  }
  own.Stop(15);
  return code;
}

}  // namespace flap::flapctl
