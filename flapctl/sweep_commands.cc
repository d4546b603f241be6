// Implementation of flapctl/sweep_commands.h. Boost.Program_options exceptions are caught by
// ParseArgs, at the CLI edge.
#include "flapctl/sweep_commands.h"

#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <thread>

#include "common/file_util.h"
#include "common/path_name.h"
#include "config/trial_config.h"
#include "coordinator/client.h"
#include "coordinator/report.h"
#include "coordinator/sweep.h"
#include "flapctl/sweep_internal.h"

namespace flap::flapctl {
namespace po = boost::program_options;
namespace v1 = coordinator::v1;

namespace sweep_internal {

void AddConnectionOptions(po::options_description* d, Connection* c) {
  const char* env = std::getenv("FLAP_COORDINATOR");
  c->coordinator = env && *env ? env : "127.0.0.1:7070";
  const char* ca = std::getenv("FLAP_COORDINATOR_TLS_CA");
  if (ca && *ca) c->tls_ca = ca;
  const char* insecure = std::getenv("FLAP_COORDINATOR_INSECURE");
  c->insecure = insecure && std::string(insecure) == "1";
  d->add_options()("coordinator", po::value(&c->coordinator)->default_value(c->coordinator),
                   "flap-coordinator's HOST:PORT ($FLAP_COORDINATOR)")(
      "token-file", po::value(&c->token_file),
      "the coordinator's token (default $FLAP_COORDINATOR_TOKEN or $FLAP_COORDINATOR_TOKEN_FILE)")(
      "tls-ca", po::value(&c->tls_ca), "PEM CA certificate: connect with TLS (default $FLAP_COORDINATOR_TLS_CA)")(
      "insecure", po::bool_switch(&c->insecure)->default_value(c->insecure),
      "allow plaintext to a coordinator that is not on loopback: the token crosses the network in the clear "
      "($FLAP_COORDINATOR_INSECURE=1)")("timeout-ms", po::value(&c->timeout_ms)->default_value(c->timeout_ms),
                                        "deadline of each call");
}

StatusOr<std::unique_ptr<coordinator::CoordinatorClient>> Connect(const Connection& c) {
  coordinator::ClientOptions o;
  o.target = c.coordinator;
  o.deadline_ms = c.timeout_ms;
  o.insecure = c.insecure;
  FLAP_ASSIGN_OR_RETURN(o.token, coordinator::ReadToken(c.token_file));
  if (!c.tls_ca.empty()) {
    StatusOr<std::string> pem = ReadFileToString(c.tls_ca);
    if (!pem.ok()) return Status::NotFound("cannot read the CA file " + c.tls_ca + ": " + pem.status().message());
    o.tls_ca = *std::move(pem);
  }
  return coordinator::CoordinatorClient::Connect(o);
}

int Fail(const std::string& command, const Status& s) {
  std::cerr << "flapctl sweep " << command << ": " << s.message() << "\n";
  return kExitFailure;
}

int Parse(const std::string& command, const std::string& usage, const std::vector<std::string>& args,
          po::options_description* extra, Connection* conn, std::string* positional_value, const char* positional_name,
          bool required, po::variables_map* vm_out) {
  po::options_description visible(usage + "\n\nOptions");
  visible.add_options()("help,h", "show this help");
  visible.add(*extra);
  AddConnectionOptions(&visible, conn);
  po::options_description hidden;
  hidden.add_options()(positional_name, po::value(positional_value), positional_name);
  po::positional_options_description positional;
  positional.add(positional_name, 1);
  po::variables_map vm;
  if (!ParseArgs("sweep " + command, args, visible, hidden, positional, &vm)) return kExitUsage;
  if (vm.count("help")) {
    std::cout << visible << "\n";
    return -1;
  }
  if (vm_out != nullptr) *vm_out = vm;
  if (required && positional_value->empty()) {
    std::cerr << "flapctl sweep " << command << ": missing the " << positional_name << "\n";
    return kExitUsage;
  }
  return kExitOk;
}

std::string Metric(const google::protobuf::Map<std::string, double>& m, const std::string& k) {
  auto it = m.find(k);
  if (it == m.end()) return "-";
  if (coordinator::IsFractionMetric(k)) return coordinator::Percent(it->second);
  std::ostringstream out;
  out << std::setprecision(4) << it->second;
  return out.str();
}

}  // namespace sweep_internal

using namespace sweep_internal;  // NOLINT: this part's own helpers

namespace {

std::string Duration(double seconds) {
  if (seconds < 0) return "?";
  const long s = std::lround(seconds);
  std::ostringstream out;
  if (s >= 3600)
    out << s / 3600 << "h" << std::setw(2) << std::setfill('0') << (s % 3600) / 60 << "m";
  else if (s >= 60)
    out << s / 60 << "m" << std::setw(2) << std::setfill('0') << s % 60 << "s";
  else
    out << s << "s";
  return out.str();
}

std::string Bar(int64_t step, int64_t total, int width = 12) {
  if (total <= 0) return std::string(width + 7, ' ');
  const double f = std::min(1.0, double(step) / total);
  const int filled = static_cast<int>(std::lround(f * width));
  std::ostringstream out;
  out << "[" << std::string(filled, '#') << std::string(width - filled, '.') << "] " << std::setw(3)
      << std::lround(f * 100) << "%";
  return out.str();
}

// Training seconds against the time budget ("42/60 s"), when the trial has one.
std::string TimeBudget(const v1::TrialStatus& t) {
  auto budget = t.latest_train().find("max_seconds");
  auto trained = t.latest_train().find("train_seconds");
  if (budget == t.latest_train().end() || trained == t.latest_train().end()) return "-";
  std::ostringstream out;
  out << std::fixed << std::setprecision(0) << std::min(trained->second, budget->second) << "/" << budget->second
      << " s";
  return out.str();
}

bool Terminal(const std::string& state) {
  return state == "completed" || state == "failed" || state == "stopped" || state == "cancelled";
}

}  // namespace

std::string SweepHeadline(const v1::SweepStatus& s) {
  std::map<std::string, int> states;
  for (const auto& t : s.trials()) states[t.state()]++;
  std::ostringstream out;
  out << "sweep " << s.sweep_id() << ": " << s.state() << ", " << s.trials_size() << " trials (";
  bool first = true;
  for (const auto& [state, n] : states) {
    out << (first ? "" : ", ") << n << " " << state;
    first = false;
  }
  out << ")";
  int done = 0;
  for (const auto& t : s.trials()) done += Terminal(t.state());
  out << ", " << done << "/" << s.trials_size() << " done";
  return out.str();
}

std::string FormatSweepStatus(const v1::SweepStatus& s) {
  const std::string eval = s.asha_metric().empty() ? "map10" : s.asha_metric();
  std::ostringstream out;
  out << SweepHeadline(s) << ", " << s.search() << " search, priority " << s.priority();
  if (!s.asha_metric().empty()) out << ", ASHA on " << s.asha_metric();
  out << "\n";
  // Column widths from the content.
  std::vector<std::string> factors;
  size_t fw = 7;
  for (const auto& t : s.trials()) {
    std::string f;
    for (const auto& name : s.factors()) {
      auto it = t.factors().find(name);
      if (it != t.factors().end()) f += (f.empty() ? "" : " ") + name + "=" + it->second;
    }
    if (f.empty()) f = "-";
    fw = std::max(fw, f.size());
    factors.push_back(f);
  }
  out << std::left << std::setw(7) << "trial" << std::setw(fw + 2) << "factors" << std::setw(6) << "seed"
      << std::setw(10) << "state" << std::setw(14) << "step" << std::setw(21) << "progress" << std::setw(11) << "time"
      << std::setw(9) << "loss" << std::setw(9) << eval << std::setw(9) << "samp/s"
      << "ETA\n";
  for (int i = 0; i < s.trials_size(); ++i) {
    const auto& t = s.trials(i);
    // The step budget (with a time budget: the step it is expected to run out at); a completed
    // trial ended at its budget, whichever it was.
    const int64_t total = t.state() == "completed" ? t.step() : t.total_steps();
    std::string step = std::to_string(t.step());
    if (total > 0) step += "/" + std::to_string(total);
    std::string state = t.state();
    if (t.attempt() > 1 && state != "pending") state += "#" + std::to_string(t.attempt());
    out << std::left << std::setw(7) << t.trial_id() << std::setw(fw + 2) << factors[i] << std::setw(6) << t.seed()
        << std::setw(10) << state << std::setw(14) << step << std::setw(21) << Bar(t.step(), total) << std::setw(11)
        << TimeBudget(t) << std::setw(9) << Metric(t.latest_train(), "loss") << std::setw(9)
        << Metric(t.latest_eval(), eval) << std::setw(9) << Metric(t.latest_train(), "samples_per_second")
        << (t.state() == "running" || t.state() == "assigned" ? Duration(t.eta_seconds()) : "-");
    if (!t.last_error().empty() && t.state() != "completed") out << "  (" << t.last_error() << ")";
    out << "\n";
  }
  return out.str();
}

namespace {}  // namespace

StatusOr<LocalSweepFiles> ReadSweepFiles(const std::string& file, std::string base_config, bool local_keys_to_workers) {
  // Refuse a bad file here, with every error, before talking to anyone.
  StatusOr<coordinator::SweepSpec> spec = coordinator::ParseSweepFile(file);
  if (!spec.ok()) return spec.status();
  LocalSweepFiles out;
  out.path = file;
  out.name = spec->name;
  FLAP_ASSIGN_OR_RETURN(out.text, ReadFileToString(file));
  if (base_config.empty() && !spec->base_config.empty()) {
    const std::filesystem::path beside = std::filesystem::path(file).parent_path() / spec->base_config;
    base_config = std::filesystem::exists(beside) ? beside.string() : spec->base_config;
  }
  if (!base_config.empty()) {
    StatusOr<std::string> text = ReadFileToString(base_config);
    if (!text.ok()) {
      return Status::InvalidArgument("cannot read the base config " + base_config + ": " + text.status().message());
    }
    out.base_config = *std::move(text);
  }
  if (local_keys_to_workers) {
    // A base config that does not parse is left for CheckTrialConfigs to report.
    StatusOr<std::map<std::string, std::string>> values = ParseConfigText(out.base_config, base_config);
    if (values.ok()) {
      out.worker_values = TakeLocalKeys(&values.value());
      if (!out.worker_values.empty()) out.base_config = ConfigText(*values);
    }
  }
  // The coordinator's check at submission, here first: every trial's config must validate.
  using Trials = std::vector<coordinator::TrialSpec>;
  FLAP_ASSIGN_OR_RETURN(Trials trials, coordinator::ExpandSweep(*spec));
  FLAP_RETURN_IF_ERROR(coordinator::CheckTrialConfigs(*spec, trials, out.base_config, file));
  return out;
}

Status FetchReport(coordinator::CoordinatorClient& client, const std::string& sweep, const std::string& out,
                   double target, bool plots, std::vector<std::string>* written) {
  if (std::string p = PathNameProblem(sweep); !p.empty()) {
    return Status::InvalidArgument("the sweep name '" + sweep + "' " + p);
  }
  FLAP_ASSIGN_OR_RETURN(std::vector<v1::ReportFile> files, client.GetReport(sweep, target));
  std::vector<coordinator::ReportFile> report;
  for (const auto& f : files) {
    // Names come from the coordinator: keep them inside `out`.
    if (!IsPathName(f.name())) {
      return Status::Corruption("the coordinator sent a report file named '" + f.name() + "'");
    }
    // Scripts are never taken from the coordinator: gnuplot's `system` would run its commands
    // here. The plots are made from the data, by scripts built on this side.
    if (f.name().size() > 3 && f.name().compare(f.name().size() - 3, 3, ".gp") == 0) continue;
    report.push_back({f.name(), f.content()});
    if (written != nullptr) written->push_back(f.name());
  }
  std::vector<coordinator::ReportFile> scripts;
  for (const auto& f : report) {
    if (f.name == "speed.dat") scripts = coordinator::PlotScripts(sweep, f.content);
  }
  for (coordinator::ReportFile& gp : scripts) {
    if (written != nullptr) written->push_back(gp.name);
    report.push_back(std::move(gp));
  }
  coordinator::WriteReportOptions wo;
  wo.plots = plots;
  return coordinator::WriteReport(report, out, wo);
}

namespace {

int RunSubmit(const std::vector<std::string>& args) {
  Connection conn;
  std::string file, base_config;
  po::options_description extra;
  extra.add_options()("base-config", po::value(&base_config),
                      "the trial config the factors override (default: [sweep] base_config, "
                      "relative to the sweep file's folder or the current one)");
  int rc = Parse("submit", "usage: flapctl sweep submit SWEEP.ini [options]", args, &extra, &conn, &file, "sweep-file",
                 true);
  if (rc != kExitOk) return rc < 0 ? kExitOk : rc;
  auto files = ReadSweepFiles(file, base_config);
  if (!files.ok()) {
    std::cerr << files.status().message() << "\n";
    return files.status().code() == Status::Code::kNotFound ? kExitFailure : kExitUsage;
  }
  auto client = Connect(conn);
  if (!client.ok()) return Fail("submit", client.status());
  auto r = (*client)->SubmitSweep(files->text, file, files->base_config);
  if (!r.ok()) return Fail("submit", r.status());
  std::cout << (r->already_submitted() ? "already submitted: sweep " : "submitted sweep ") << r->sweep_id() << " ("
            << r->num_trials() << " trials)\n";
  return kExitOk;
}

int RunStatus(const std::vector<std::string>& args) {
  Connection conn;
  std::string sweep;
  po::options_description extra;
  int rc =
      Parse("status", "usage: flapctl sweep status [SWEEP] [options]", args, &extra, &conn, &sweep, "sweep", false);
  if (rc != kExitOk) return rc < 0 ? kExitOk : rc;
  auto client = Connect(conn);
  if (!client.ok()) return Fail("status", client.status());
  if (sweep.empty()) {
    auto list = (*client)->ListSweeps();
    if (!list.ok()) return Fail("status", list.status());
    std::cout << std::left << std::setw(24) << "sweep" << std::setw(11) << "state" << std::setw(10) << "priority"
              << "trials done\n";
    for (const auto& s : list->sweeps()) {
      std::cout << std::left << std::setw(24) << s.sweep_id() << std::setw(11) << s.state() << std::setw(10)
                << s.priority() << s.num_terminal() << "/" << s.num_trials() << "\n";
    }
    return kExitOk;
  }
  auto st = (*client)->GetSweep(sweep);
  if (!st.ok()) return Fail("status", st.status());
  std::cout << FormatSweepStatus(*st);
  return kExitOk;
}

int RunWatch(const std::vector<std::string>& args) {
  Connection conn;
  std::string sweep;
  double interval = 2;
  int count = 0;
  po::options_description extra;
  extra.add_options()("interval", po::value(&interval)->default_value(interval), "seconds between refreshes")(
      "count", po::value(&count)->default_value(count), "stop after this many refreshes (0: until the sweep ends)");
  int rc = Parse("watch", "usage: flapctl sweep watch SWEEP [options]", args, &extra, &conn, &sweep, "sweep", true);
  if (rc != kExitOk) return rc < 0 ? kExitOk : rc;
  if (interval <= 0) {
    std::cerr << "flapctl sweep watch: --interval must be > 0\n";
    return kExitUsage;
  }
  auto client = Connect(conn);
  if (!client.ok()) return Fail("watch", client.status());
  for (int i = 0; count == 0 || i < count; ++i) {
    auto st = (*client)->GetSweep(sweep);
    if (!st.ok()) return Fail("watch", st.status());
    // Clear the screen and home the cursor, like watch(1).
    std::cout << "\033[H\033[2J" << FormatSweepStatus(*st) << std::flush;
    if (st->state() != "running") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(interval * 1000)));
  }
  return kExitOk;
}

int RunCancel(const std::vector<std::string>& args) {
  Connection conn;
  std::string sweep;
  po::options_description extra;
  int rc = Parse("cancel", "usage: flapctl sweep cancel SWEEP [options]", args, &extra, &conn, &sweep, "sweep", true);
  if (rc != kExitOk) return rc < 0 ? kExitOk : rc;
  auto client = Connect(conn);
  if (!client.ok()) return Fail("cancel", client.status());
  auto n = (*client)->CancelSweep(sweep);
  if (!n.ok()) return Fail("cancel", n.status());
  std::cout << "cancelled sweep " << sweep << " (" << *n << " trials were not finished)\n";
  return kExitOk;
}

int RunReport(const std::vector<std::string>& args) {
  Connection conn;
  std::string sweep, out;
  double target = 0;
  po::options_description extra;
  extra.add_options()("out", po::value(&out), "folder to write the report to (required)")(
      "target", po::value(&target)->default_value(0),
      "time-to-target threshold on the primary metric (0: 80% of the best final value)")(
      "no-plots", "write Markdown and CSV only (no gnuplot)");
  int rc = Parse("report", "usage: flapctl sweep report SWEEP --out DIR [options]", args, &extra, &conn, &sweep,
                 "sweep", true);
  if (rc != kExitOk) return rc < 0 ? kExitOk : rc;
  if (out.empty()) {
    std::cerr << "flapctl sweep report: missing --out DIR\n";
    return kExitUsage;
  }
  if (std::string p = PathNameProblem(sweep); !p.empty()) {
    std::cerr << "flapctl sweep report: the sweep name '" << sweep << "' " << p << "\n";
    return kExitUsage;
  }
  const bool plots = std::find(args.begin(), args.end(), "--no-plots") == args.end();
  auto client = Connect(conn);
  if (!client.ok()) return Fail("report", client.status());
  std::vector<std::string> names;
  Status s = FetchReport(**client, sweep, out, target, plots, &names);
  if (!s.ok() && s.code() != Status::Code::kFailedPrecondition) return Fail("report", s);
  if (!s.ok()) std::cerr << "flapctl sweep report: " << s.message() << "\n";
  std::cout << "wrote the report of " << sweep << " to " << out << "/report.md";
  for (const auto& name : names) {
    if (name != "report.md" && name.size() > 4 && name.substr(name.size() - 4) == ".csv") std::cout << ", " << name;
  }
  std::cout << (plots && s.ok() ? ", throughput.svg, time_to_target.svg" : "") << "\n";
  return kExitOk;
}

}  // namespace

CommandGroup SweepCommandGroup() {
  return CommandGroup{"sweep",
                      "Submit, watch, cancel and report sweeps on a flap-coordinator.",
                      {
                          {"submit", "validate a sweep file and submit it", RunSubmit},
                          {"status", "the trial table of a sweep (or the list of sweeps)", RunStatus},
                          {"watch", "the trial table, refreshed until the sweep ends", RunWatch},
                          {"cancel", "cancel every unfinished trial of a sweep", RunCancel},
                          {"report", "write the ablation report (Markdown, CSV, plots)", RunReport},
                          {"best",
                           "per cell, the trial and checkpoint validation selects, with its figures (--export: "
                           "write those models)",
                           RunSweepBest},
                          {"run", "run a sweep on this machine: a coordinator and N local worker groups", RunSweepRun},
                      }};
}

}  // namespace flap::flapctl
