// `flapctl sweep best` (flapctl/sweep_commands.h): validation's choice in each cell, from the
// coordinator's GetBest (coordinator/report.h SelectBest), printed; with --export, each chosen
// model written by `flap-worker export` from its checkpoint, with the trial's config and a card
// of its figures.
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

// The last `n` lines of a file.
std::string Tail(const std::string& path, size_t n) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::string out;
  for (size_t i = lines.size() > n ? lines.size() - n : 0; i < lines.size(); ++i) out += "  " + lines[i] + "\n";
  return out;
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
                            std::to_string(p->exit_code()) + "; its output:\n" + Tail(log_path, 20));
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

int RunSweepBest(const std::vector<std::string>& given) {
  Connection conn;
  std::string sweep, cell, export_dir, worker;
  std::vector<std::string> args = given, forwarded;
  std::string error;
  if (!SplitForwarded(&args, &forwarded, &error)) {
    std::cerr << "flapctl sweep best: " << error << "\n";
    return kExitUsage;
  }
  po::options_description extra;
  extra.add_options()("cell", po::value(&cell), "only this cell: its number or its label (as printed)")(
      "export", po::value(&export_dir),
      "write each printed cell's model to DIR/<cell-name> with `flap-worker export` (an existing one is refused)")(
      "worker", po::value(&worker), "flap-worker for --export (default: found beside flapctl)");
  const int rc =
      Parse(kCommand,
            "usage: flapctl sweep best SWEEP [--cell N] [--export DIR [--worker PATH] [-- --KEY VALUE ...]] [options]\n"
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
            "the worker's exit status).",
            args, &extra, &conn, &sweep, "sweep", true);
  if (rc != kExitOk) return rc < 0 ? kExitOk : rc;
  if (std::string p = PathNameProblem(sweep); !p.empty()) {
    std::cerr << "flapctl sweep best: the sweep name '" << sweep << "' " << p << "\n";
    return kExitUsage;
  }
  if (!forwarded.empty() && export_dir.empty()) {
    std::cerr << "flapctl sweep best: arguments after -- are for flap-worker export: give --export DIR\n";
    return kExitUsage;
  }
  if (!worker.empty() && export_dir.empty()) {
    std::cerr << "flapctl sweep best: --worker is for --export: give --export DIR\n";
    return kExitUsage;
  }
  if (!export_dir.empty()) {
    StatusOr<std::string> found = FindFlapProgram(worker, "flap-worker", "worker");
    if (!found.ok()) {
      std::cerr << "flapctl sweep best: " << found.status().message() << " (give --worker PATH)\n";
      return kExitUsage;
    }
    worker = *found;
  }
  auto client = Connect(conn);
  if (!client.ok()) return Fail(kCommand, client.status());
  StatusOr<v1::GetBestResponse> best = (*client)->GetBest(sweep);
  if (!best.ok()) return Fail(kCommand, best.status());

  // The cells to print.
  std::vector<const v1::CellChoice*> cells;
  for (const v1::CellChoice& c : best->cells()) {
    if (cell.empty() || cell == std::to_string(c.cell()) || cell == c.label()) cells.push_back(&c);
  }
  if (cells.empty()) {
    std::string list;
    for (const v1::CellChoice& c : best->cells()) {
      list += (list.empty() ? "" : "; ") + std::to_string(c.cell()) + " (" + c.label() + ")";
    }
    std::cerr << "flapctl sweep best: "
              << (best->cells().empty() ? "sweep " + sweep + " has no cells"
                                        : "no cell '" + cell + "' in sweep " + sweep + "; its cells: " + list)
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
    std::cerr << "flapctl sweep best: "
              << (cells.size() == 1 ? "cell " + std::to_string(cells[0]->cell()) + " of sweep " + sweep +
                                          " has no trial to choose: " + cells[0]->reason()
                                    : "sweep " + sweep +
                                          " has no trial to choose in any cell: no completed trial "
                                          "has a validation " +
                                          best->metric() + " at the step validation selected")
              << "\n";
    return kExitFailure;
  }
  if (export_dir.empty()) return kExitOk;

  // --export: every output is checked before anything runs.
  std::vector<std::pair<const v1::CellChoice*, std::string>> jobs;
  std::string problems;
  for (const v1::CellChoice* c : cells) {
    const std::string what = "cell " + std::to_string(c->cell()) + " (" + c->label() + ")";
    if (c->trial_id().empty()) {
      std::cerr << "flapctl sweep best: not exporting " << what << ": " << c->reason() << "\n";
      continue;
    }
    const std::string out = (fs::path(export_dir) / CellName(*c)).string();
    std::error_code ec;
    if (fs::exists(fs::symlink_status(out, ec))) {
      problems += "  " + out + " already exists (" + what + "): remove it or choose another --export folder\n";
    } else if (c->checkpoint().empty()) {
      problems += "  " + what + ": no checkpoint to export: " + c->reason() + "\n";
    } else if (!fs::is_directory(c->checkpoint(), ec)) {
      problems += "  " + what + ": its checkpoint " + c->checkpoint() +
                  " is not a folder on this machine (removed by retention? ckpt.keep_best keeps validation's best)\n";
    }
    jobs.push_back({c, out});
  }
  if (!problems.empty()) {
    std::cerr << "flapctl sweep best: nothing exported:\n" << problems;
    return kExitFailure;
  }
  std::error_code ec;
  fs::create_directories(export_dir, ec);
  if (ec) return Fail(kCommand, Status::IOError("cannot create " + export_dir + ": " + ec.message()));
  for (const auto& [c, out] : jobs) {
    Status s = ExportCell(*best, *c, out, worker, forwarded);
    if (!s.ok()) return Fail(kCommand, s);
    std::cout << "exported cell " << c->cell() << " (trial " << c->trial_id() << ", step " << c->selected_step()
              << ") to " << out << "\n";
  }
  return kExitOk;
}

}  // namespace flap::flapctl
