// The shipped observability deployment against a real run: Debian's Prometheus, started with
// deploy/prometheus/prometheus.yml copied unchanged, finds flap-coordinator and every worker
// rank through the file_sd file the coordinator writes, and every query of every panel and
// template variable of the Grafana dashboards in deploy/grafana/dashboards returns data while
// a sweep trains. The run: `flapctl sweep run` (flap-coordinator and two groups of real
// `flap-worker agent` ranks training tiny FLAP on synthetic data).
#include <signal.h>
#include <sys/types.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/prometheus_server.h"
#include "tests/test_util.h"

namespace flap {
namespace {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Starting a local sweep: `flapctl sweep run` with metrics on. Everything the run needs is
// here, apart from the checks below.

struct LocalSweepOptions {
  std::string dir;          // working folder (data, the run's folder, logs)
  std::string sd_file;      // where the coordinator keeps its file_sd file
  std::string sweep_text;   // the sweep file (its base_config is written beside it)
  std::string base_config;  // the base config's text
};

// A running `flapctl sweep run`; stopped (cleanly, like Ctrl-C) when destroyed, and anything
// it started that is still there is killed.
class LocalSweep {
 public:
  explicit LocalSweep(std::string dir) : dir_(std::move(dir)) {}
  ~LocalSweep() {
    if (run_ > 0) {
      ::kill(run_, SIGTERM);
      testing::WaitExit(run_, 90);  // SIGKILL past that
    }
    const json j = json::parse(testing::ReadFile(dir_ + "/run/run.json"), nullptr, false);
    if (!j.is_object()) return;
    std::vector<pid_t> pids = {j["coordinator"].value("pid", -1)};
    for (const json& g : j["groups"]) {
      for (const json& p : g["pids"]) pids.push_back(p.get<pid_t>());
    }
    for (pid_t pid : pids) {
      if (pid > 0 && ::kill(pid, 0) == 0) ::kill(pid, SIGKILL);
    }
  }
  std::string log() const { return testing::ReadFile(dir_ + "/run.log"); }
  std::string coordinator_log() const { return testing::ReadFile(dir_ + "/run/logs/coordinator.log"); }

 private:
  friend std::unique_ptr<LocalSweep> StartLocalSweep(const LocalSweepOptions& o, std::string* error);
  std::string dir_;
  pid_t run_ = -1;
};

// Makes a small synthetic dataset and starts `flapctl sweep run` on it: flap-coordinator and
// two groups of one `flap-worker agent` rank each, every process serving /metrics
// (--metrics), the coordinator keeping o.sd_file (--sd-file). nullptr, with *error saying
// why, when the data cannot be made or the run does not start.
std::unique_ptr<LocalSweep> StartLocalSweep(const LocalSweepOptions& o, std::string* error) {
  const auto synth = testing::RunCommand(std::string(FLAPCTL_BIN) + " data synth --out " + o.dir +
                                         "/data --train 64 --val 16 --shard-size 16 --clip-seconds 1 --vocab-size 64");
  if (synth.exit_code != 0) {
    *error = "flapctl data synth: " + synth.output;
    return nullptr;
  }
  testing::WriteFile(o.dir + "/base.ini", o.base_config);
  std::string sweep = o.sweep_text;
  sweep.insert(sweep.find('\n') + 1, "base_config = base.ini\n");
  testing::WriteFile(o.dir + "/sweep.ini", sweep);
  auto run = std::make_unique<LocalSweep>(o.dir);
  run->run_ = testing::Spawn(std::string(FLAPCTL_BIN) + " sweep run " + o.dir + "/sweep.ini --dir " + o.dir +
                                 "/run --groups 2 --data " + o.dir + "/data --metrics --sd-file " + o.sd_file +
                                 " --interval 1 --heartbeat-timeout-ms 4000 --stop-grace 30 --no-plots",
                             {}, o.dir + "/run.log");
  if (run->run_ <= 0) {
    *error = "cannot start flapctl";
    return nullptr;
  }
  return run;
}

// ---------------------------------------------------------------------------------------------
// The dashboards

struct Query {
  std::string where;                   // "dashboard / panel / refId" or "dashboard / variable name"
  std::string expr;                    // as written in the dashboard
  std::vector<std::string> variables;  // the dashboard's template variables
};

// Every panel of a dashboard, rows' nested panels included.
void CollectPanels(const json& panels, std::vector<json>* out) {
  for (const json& p : panels) {
    out->push_back(p);
    if (p.contains("panels")) CollectPanels(p["panels"], out);
  }
}

// `expr` with Grafana's variables replaced as Grafana would with "All" selected (the
// dashboards' allValue, ".*", inside =~ matchers) and $__rate_interval / $__interval given a
// concrete duration. Forms: $name, ${name}, ${name:format}, [[name]]; an unknown name is left
// as written.
std::string Substitute(const std::string& expr, const std::vector<std::string>& variables) {
  static const std::regex kVariable("\\$\\{(\\w+)(?::\\w+)?\\}|\\$(\\w+)|\\[\\[(\\w+)\\]\\]");
  std::string out;
  auto from = expr.cbegin();
  for (std::sregex_iterator it(expr.begin(), expr.end(), kVariable), end; it != end; ++it) {
    const std::smatch& m = *it;
    const std::string name = m[1].matched ? m[1].str() : m[2].matched ? m[2].str() : m[3].str();
    std::string value = m.str();
    if (name == "__rate_interval") value = "1m";
    if (name == "__interval") value = "10s";
    if (std::find(variables.begin(), variables.end(), name) != variables.end()) value = ".*";
    out.append(from, m[0].first);
    out += value;
    from = m[0].second;
  }
  out.append(from, expr.cend());
  return out;
}

TEST(Dashboards, EveryPanelAndVariableQueryReturnsDataFromARealRun) {
  testing::TempDir dir("dashboards");
  const std::string deploy = std::string(FLAP_SOURCE_DIR) + "/deploy";
  const std::string prom_dir = dir / "prom";
  std::filesystem::create_directories(prom_dir + "/sd");
  testing::PrometheusServer prom(prom_dir, testing::ReadFile(deploy + "/prometheus/prometheus.yml"));
  ASSERT_TRUE(prom.ok()) << prom.Log();

  LocalSweepOptions o;
  o.dir = dir.path();
  o.sd_file = prom_dir + "/sd/flap.json";
  o.sweep_text =
      "[sweep]\nname = dash\nseeds = 1\n\n[factor.mask.ratio]\nvalues = 0.5, 0.75\n\n"
      "[factor.mask.strategy]\nvalues = 1d, 2d\n";
  // Long trials (the run is looked at while they train), with frequent records.
  o.base_config =
      "[model]\npreset = tiny\ntarget_frames = 96\n[mask]\nratio = 0.75\nstrategy = 2d\n"
      "[loss]\nrecon_weight = 0.5\n[text]\naugment = off\n"
      "[train]\nbatch_size = 8\nepochs = 1000\nmax_steps = 5000\nlog_every = 2\neval_every = 6\n"
      "eval_batch_size = 16\nthreads = 1\n[ckpt]\nevery = 6\nkeep_last = 2\n[data]\nloader_threads = 1\n";
  std::string error;
  auto run = StartLocalSweep(o, &error);
  ASSERT_NE(run, nullptr) << error;

  // Both groups train, and Prometheus found the coordinator and every rank only through the
  // coordinator's file_sd file.
  auto running = prom.WaitFor("count(flap_trial_state{sweep=\"dash\",state=\"running\"}) == 2", 300);
  ASSERT_EQ(running.size(), 1u) << run->log() << run->coordinator_log() << prom.Log();
  auto worker = prom.WaitFor("flap_worker_checkpoint_saves_total{group=~\"local-.*\"} > 0", 240);
  ASSERT_FALSE(worker.empty()) << run->log() << testing::ReadFile(o.sd_file);
  EXPECT_EQ(worker[0]["metric"].value("sweep", ""), "dash") << "the discovery label";
  EXPECT_EQ(worker[0]["metric"].value("trial", "").rfind("dash-t000", 0), 0u) << "the worker's own trial label wins";
  EXPECT_EQ(worker[0]["metric"].value("job", ""), "flap-workers");
  EXPECT_EQ(prom.WaitFor("up{job=\"flap-coordinator\"} == 1", 30).size(), 1u);
  EXPECT_FALSE(prom.WaitFor("flap_trial_eval{sweep=\"dash\",metric=\"t2a_r1\"}", 240).empty()) << run->log();

  const std::string datasources = testing::ReadFile(deploy + "/grafana/provisioning/datasources/flap.yml");
  std::smatch uid_match;
  ASSERT_TRUE(std::regex_search(datasources, uid_match, std::regex("uid: (\\S+)"))) << datasources;
  const std::string uid = uid_match[1];

  std::vector<Query> queries;
  int dashboards = 0;
  for (const auto& entry : std::filesystem::directory_iterator(deploy + "/grafana/dashboards")) {
    if (entry.path().extension() != ".json") continue;
    ++dashboards;
    const std::string file = entry.path().filename().string();
    const json d = json::parse(testing::ReadFile(entry.path().string()), nullptr, false);
    ASSERT_TRUE(d.is_object()) << file << " is not JSON";
    const std::string name = file + " (" + d.value("title", "?") + ")";
    EXPECT_FALSE(d.value("uid", "").empty()) << name;
    std::vector<std::string> variables;
    for (const json& v : d["templating"]["list"]) variables.push_back(v["name"]);
    for (const json& v : d["templating"]["list"]) {
      EXPECT_EQ(v["datasource"].value("uid", ""), uid) << name << " variable " << v["name"];
      const std::string q = v["query"].is_object() ? v["query"].value("query", "") : v["query"].get<std::string>();
      std::smatch m;
      ASSERT_TRUE(std::regex_match(q, m, std::regex("label_values\\((.+),\\s*(\\w+)\\)"))) << name << ": " << q;
      queries.push_back({name + " / variable " + v["name"].get<std::string>(),
                         "count by (" + m[2].str() + ") (" + m[1].str() + ")", variables});
    }
    std::vector<json> panels;
    CollectPanels(d["panels"], &panels);
    EXPECT_FALSE(panels.empty()) << name;
    for (const json& p : panels) {
      if (p.value("type", "") == "row") continue;
      const std::string where = name + " / " + p.value("title", "?");
      EXPECT_EQ(p["datasource"].value("uid", ""), uid) << where;
      ASSERT_TRUE(p.contains("targets") && !p["targets"].empty()) << where << " has no query";
      for (const json& t : p["targets"]) {
        EXPECT_EQ(t["datasource"].value("uid", ""), uid) << where;
        queries.push_back({where + " / " + t.value("refId", "?"), t.value("expr", ""), variables});
      }
    }
  }
  EXPECT_EQ(dashboards, 4);
  EXPECT_GT(queries.size(), 50u);

  // Each query, with the variables at "All", returns at least one series. A query may need a
  // few more scrapes (rates over a window that began when a target's labels changed), so each
  // is retried for a while.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  for (const Query& q : queries) {
    ASSERT_FALSE(q.expr.empty()) << q.where;
    const std::string expr = Substitute(q.expr, q.variables);
    EXPECT_EQ(expr.find('$'), std::string::npos) << q.where << ": unknown variable left in " << expr;
    const double left = std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
    std::string why;
    auto result = prom.WaitFor(expr, std::max(1.0, left), &why);
    EXPECT_FALSE(result.empty()) << q.where << " returned no data\n  query: " << expr << "\n  " << why;
  }
  // The variables offer the run's values: the sweep, both mask ratios, and the factors that
  // are not swept from the base config.
  auto sweeps = prom.Query("count by (sweep) (flap_sweep_trials)");
  ASSERT_EQ(sweeps.size(), 1u);
  EXPECT_EQ(sweeps[0]["metric"].value("sweep", ""), "dash");
  EXPECT_EQ(prom.Query("count by (mask_ratio) (flap_trial_state{sweep=~\"dash\"})").size(), 2u);
  auto recon = prom.Query("count by (recon_weight, text_augment) (flap_trial_state{sweep=~\"dash\"})");
  ASSERT_EQ(recon.size(), 1u);
  EXPECT_EQ(recon[0]["metric"].value("recon_weight", ""), "0.5");
  EXPECT_EQ(recon[0]["metric"].value("text_augment", ""), "off");
}

}  // namespace
}  // namespace flap
