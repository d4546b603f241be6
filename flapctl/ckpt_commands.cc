// Implementation of flapctl/ckpt_commands.h. Boost.Program_options exceptions are caught here,
// at the CLI edge, and become usage errors (exit 2).
#include "flapctl/ckpt_commands.h"

#include <boost/program_options.hpp>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "checkpoint/store.h"

namespace flap::flapctl {
namespace po = boost::program_options;

namespace {

struct CommonArgs {
  std::string root;
  std::string trial;
};

// Parses ROOT (positional) and --trial plus `extra`; returns kExitOk to go on, or an exit code.
int Parse(const std::string& command, const std::string& usage, const std::vector<std::string>& args,
          po::options_description* extra, CommonArgs* common, po::variables_map* vm) {
  po::options_description visible(usage + "\n\nOptions");
  visible.add_options()("help,h", "show this help")("trial", po::value<std::string>(&common->trial), "only this trial");
  visible.add(*extra);
  po::options_description hidden;
  hidden.add_options()("root", po::value<std::string>(&common->root), "checkpoint root");
  po::positional_options_description positional;
  positional.add("root", 1);
  if (!ParseArgs("ckpt " + command, args, visible, hidden, positional, vm)) return kExitUsage;
  if (vm->count("help")) {
    std::cout << visible << "\n";
    return -1;
  }
  if (common->root.empty()) {
    std::cerr << "flapctl ckpt " << command << ": missing the checkpoint root\n";
    return kExitUsage;
  }
  return kExitOk;
}

StatusOr<std::unique_ptr<checkpoint::Store>> OpenRoot(const std::string& root, bool read_only) {
  checkpoint::StoreOptions options;
  options.read_only = read_only;
  return checkpoint::Store::Open(root, options);
}

StatusOr<std::vector<std::string>> TrialsOf(checkpoint::Store* store, const std::string& trial) {
  if (!trial.empty()) return std::vector<std::string>{trial};
  return store->Trials();
}

std::string HumanBytes(uint64_t bytes) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1);
  if (bytes >= (1ull << 30)) {
    out << bytes / double(1ull << 30) << " GiB";
  } else if (bytes >= (1ull << 20)) {
    out << bytes / double(1ull << 20) << " MiB";
  } else if (bytes >= (1ull << 10)) {
    out << bytes / double(1ull << 10) << " KiB";
  } else {
    out << bytes << " B";
  }
  return out.str();
}

std::string Metrics(const checkpoint::Entry& e) {
  std::ostringstream out;
  for (const auto& [name, value] : e.metadata.metrics) {
    out << (out.tellp() > 0 ? " " : "") << name << "=" << value;
  }
  return out.tellp() > 0 ? out.str() : "-";
}

int CkptList(const std::vector<std::string>& args) {
  CommonArgs common;
  po::options_description extra;
  po::variables_map vm;
  int rc = Parse("list",
                 "Usage: flapctl ckpt list ROOT [--trial T]\n\nLists the committed "
                 "checkpoints, newest first, and whether each verifies.",
                 args, &extra, &common, &vm);
  if (rc != kExitOk) return rc < 0 ? kExitOk : rc;
  auto store = OpenRoot(common.root, /*read_only=*/true);
  if (!store.ok()) {
    std::cerr << "flapctl ckpt list: " << store.status().ToString() << "\n";
    return kExitFailure;
  }
  auto trials = TrialsOf(store->get(), common.trial);
  if (!trials.ok()) {
    std::cerr << "flapctl ckpt list: " << trials.status().ToString() << "\n";
    return kExitFailure;
  }
  bool ok = true;
  std::cout << std::left << std::setw(20) << "TRIAL" << std::setw(14) << "STEP" << std::setw(7) << "EPOCH"
            << std::setw(11) << "SIZE" << std::setw(10) << "VERIFIED"
            << "METRICS\n";
  for (const std::string& trial : *trials) {
    std::vector<std::string> problems;
    auto entries = store.value()->List(trial, &problems);
    if (!entries.ok()) {
      std::cerr << "flapctl ckpt list: " << entries.status().ToString() << "\n";
      ok = false;
      continue;
    }
    for (const std::string& p : problems) std::cerr << "index damaged: " << p << "\n";
    for (const checkpoint::Entry& e : *entries) {
      const bool verified = store.value()->Verify(e).ok();
      std::cout << std::left << std::setw(20) << trial << std::setw(14) << e.step << std::setw(7) << e.metadata.epoch
                << std::setw(11) << HumanBytes(e.TotalBytes()) << std::setw(10) << (verified ? "yes" : "DAMAGED")
                << Metrics(e) << "\n";
    }
  }
  return ok ? kExitOk : kExitFailure;
}

int CkptVerify(const std::vector<std::string>& args) {
  CommonArgs common;
  po::options_description extra;
  po::variables_map vm;
  int rc = Parse("verify",
                 "Usage: flapctl ckpt verify ROOT [--trial T]\n\nChecks every "
                 "committed checkpoint's files against its manifest (sizes, XXH64).\nExits 1 "
                 "naming each damaged checkpoint and file.",
                 args, &extra, &common, &vm);
  if (rc != kExitOk) return rc < 0 ? kExitOk : rc;
  auto store = OpenRoot(common.root, /*read_only=*/true);
  if (!store.ok()) {
    std::cerr << "flapctl ckpt verify: " << store.status().ToString() << "\n";
    return kExitFailure;
  }
  auto trials = TrialsOf(store->get(), common.trial);
  if (!trials.ok()) {
    std::cerr << "flapctl ckpt verify: " << trials.status().ToString() << "\n";
    return kExitFailure;
  }
  int checked = 0, damaged = 0;
  for (const std::string& trial : *trials) {
    std::vector<std::string> problems;
    auto entries = store.value()->List(trial, &problems);
    if (!entries.ok()) {
      std::cerr << "damaged: " << entries.status().message() << "\n";
      ++damaged;
      continue;
    }
    for (const std::string& p : problems) {
      std::cerr << "damaged: " << p << "\n";
      ++damaged;
    }
    for (const checkpoint::Entry& e : *entries) {
      ++checked;
      Status s = store.value()->Verify(e);
      if (!s.ok()) {
        std::cerr << "damaged: " << s.message() << "\n";
        ++damaged;
      }
    }
  }
  if (damaged > 0) {
    std::cerr << "flapctl ckpt verify: " << damaged << " damaged (" << checked << " checkpoints checked)\n";
    return kExitFailure;
  }
  std::cout << "OK: " << checked << " checkpoints verified\n";
  return kExitOk;
}

int CkptGc(const std::vector<std::string>& args) {
  CommonArgs common;
  checkpoint::GcOptions options;
  std::string mode = "max";
  po::options_description extra;
  extra.add_options()("keep-last", po::value<int>(&options.keep_last)->required(), "keep the newest N (required)")(
      "keep-best", po::value<int>(&options.keep_best)->default_value(0), "and the best K by --metric")(
      "metric", po::value<std::string>(&options.metric), "metric for --keep-best")(
      "mode", po::value<std::string>(&mode)->default_value("max"), "max or min: which is best");
  po::variables_map vm;
  int rc = Parse("gc",
                 "Usage: flapctl ckpt gc ROOT --trial T --keep-last N [--keep-best K "
                 "--metric M --mode max|min]\n\nDeletes the trial's checkpoints but the newest N, "
                 "the best K and the newest verified one,\nand removes unindexed step folders "
                 "(interrupted saves and deletions) while some indexed\ncheckpoint verifies. "
                 "Only step folders (12-digit names) are ever deleted, never through a\n"
                 "symbolic link; a trial folder that is a symbolic link is refused. Refused "
                 "while a\nprocess (a running worker) writes the trial.",
                 args, &extra, &common, &vm);
  if (rc != kExitOk) return rc < 0 ? kExitOk : rc;
  if (common.trial.empty() || (mode != "max" && mode != "min") || (options.keep_best > 0 && options.metric.empty())) {
    std::cerr << "flapctl ckpt gc: needs --trial, --mode max|min, and --metric with --keep-best\n";
    return kExitUsage;
  }
  options.maximize = mode == "max";
  auto store = OpenRoot(common.root, /*read_only=*/false);
  if (!store.ok()) {
    std::cerr << "flapctl ckpt gc: " << store.status().ToString() << "\n";
    return kExitFailure;
  }
  auto report = store.value()->Gc(common.trial, options);
  if (!report.ok()) {
    std::cerr << "flapctl ckpt gc: " << report.status().ToString() << "\n";
    return report.status().code() == Status::Code::kInvalidArgument ? kExitUsage : kExitFailure;
  }
  for (const std::string& w : report->warnings) std::cerr << "warning: " << w << "\n";
  for (int64_t step : report->deleted) std::cout << "deleted " << common.trial << " step " << step << "\n";
  for (const std::string& o : report->removed_orphans) std::cout << "removed unindexed " << o << "\n";
  std::cout << "kept " << report->kept.size() << " checkpoints; newest verified step " << report->newest_verified
            << "\n";
  return kExitOk;
}

int CkptRebuildIndex(const std::vector<std::string>& args) {
  CommonArgs common;
  po::options_description extra;
  po::variables_map vm;
  int rc = Parse("reindex",
                 "Usage: flapctl ckpt reindex ROOT --trial T\n\n"
                 "Recreates a trial's index from its checkpoints' manifests (the old index is "
                 "moved aside).\nRefused while a process (a running worker) has the index "
                 "open: stop it first.",
                 args, &extra, &common, &vm);
  if (rc != kExitOk) return rc < 0 ? kExitOk : rc;
  if (common.trial.empty()) {
    std::cerr << "flapctl ckpt reindex: needs --trial\n";
    return kExitUsage;
  }
  auto store = OpenRoot(common.root, /*read_only=*/false);
  if (!store.ok()) {
    std::cerr << "flapctl ckpt reindex: " << store.status().ToString() << "\n";
    return kExitFailure;
  }
  std::vector<std::string> problems;
  auto n = store.value()->RebuildIndex(common.trial, &problems);
  for (const std::string& p : problems) std::cerr << "skipped: " << p << "\n";
  if (!n.ok()) {
    std::cerr << "flapctl ckpt reindex: " << n.status().ToString() << "\n";
    return kExitFailure;
  }
  std::cout << "indexed " << *n << " checkpoints of " << common.trial << "\n";
  return kExitOk;
}

}  // namespace

int RunCkptList(const std::vector<std::string>& args) { return CkptList(args); }
int RunCkptVerify(const std::vector<std::string>& args) { return CkptVerify(args); }
int RunCkptGc(const std::vector<std::string>& args) { return CkptGc(args); }
int RunCkptRebuildIndex(const std::vector<std::string>& args) { return CkptRebuildIndex(args); }

CommandGroup CkptCommandGroup() {
  return CommandGroup{"ckpt",
                      "Inspect, verify and clean a checkpoint root.",
                      {
                          {"list", "list checkpoints (newest first) and whether each verifies", RunCkptList},
                          {"verify", "check every checkpoint against its manifest", RunCkptVerify},
                          {"gc", "apply retention (newest N, best K) and remove leftovers", RunCkptGc},
                          {"reindex", "recreate a trial's index from its manifests", RunCkptRebuildIndex},
                      }};
}

}  // namespace flap::flapctl
