// The shipped observability deployment against a real run: Debian's Prometheus, started with
// deploy/prometheus/prometheus.yml copied unchanged, finds flap-coordinator and a real
// flap-worker through the file_sd file the coordinator writes, and every query of every panel
// and template variable of the Grafana dashboards in deploy/grafana/dashboards returns data.
// The run: a sweep on flap-coordinator driven by simulated worker groups (one of which dies),
// one group speaking for a real `flap-worker train` whose /metrics it registers.
#include <signal.h>
#include <sys/types.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "coordinator/client.h"
#include "coordinator/sim_group.h"
#include "tests/prometheus_server.h"
#include "tests/test_util.h"

namespace flap {
namespace {

using coordinator::CoordinatorClient;
using nlohmann::json;

// Waits up to `timeout_s` for `pattern` to match in the file at `path`; the first capture
// group, or "" on timeout.
std::string WaitForLine(const std::string& path, const std::string& pattern, double timeout_s) {
  const std::regex re(pattern);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    std::smatch m;
    const std::string text = testing::ReadFile(path);
    if (std::regex_search(text, m, re)) return m[1];
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return "";
}

void Stop(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  testing::WaitExit(pid, 30);
}

// ---------------------------------------------------------------------------------------------
// Starting a local sweep. Everything a run needs in one place, so that it can become
// `flapctl sweep run` (which starts the coordinator and the worker agents) without touching
// the checks below.

struct LocalSweepOptions {
  std::string dir;          // working folder (state, data, checkpoints, logs)
  std::string sd_file;      // the coordinator's --sd-file
  std::string sweep_text;   // the sweep file
  std::string base_config;  // its base config's text
};

// What StartLocalSweep started; stops all of it when destroyed.
class LocalSweep {
 public:
  ~LocalSweep() {
    stop_ = true;
    for (auto& t : groups_) t.join();
    Stop(worker_);
    Stop(coordinator_);
  }
  const std::string& coordinator_log() const { return coordinator_log_; }
  const std::string& worker_log() const { return worker_log_; }
  std::unique_ptr<CoordinatorClient> Client() const {
    coordinator::ClientOptions o;
    o.target = address_;
    o.token = token_;
    o.deadline_ms = 10000;
    auto c = CoordinatorClient::Connect(o);
    return c.ok() ? std::move(*c) : nullptr;
  }

 private:
  friend std::unique_ptr<LocalSweep> StartLocalSweep(const LocalSweepOptions& o, std::string* error);

  // Runs simulated group `id` through the sweep's trials, then keeps it alive (heartbeats)
  // until the sweep is stopped, so its endpoints stay listed.
  void RunGroup(const std::string& id, coordinator::sim::SimOptions options) {
    groups_.emplace_back([this, id, options] {
      coordinator::sim::SimGroup group(Client(), id, options);
      const Status s = group.Run(&stop_);
      if (!s.ok()) std::fprintf(stderr, "group %s: %s\n", id.c_str(), s.ToString().c_str());
      if (options.die_after_steps >= 0) return;  // a dead group says nothing more
      auto client = Client();
      while (!stop_) {
        client->Heartbeat(id);
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    });
  }

  pid_t coordinator_ = -1;
  pid_t worker_ = -1;
  std::string address_, token_, coordinator_log_, worker_log_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> groups_;
};

// Starts flap-coordinator (metrics on 127.0.0.1:0, file_sd into o.sd_file), submits the sweep,
// and drives it: a real flap-worker trains and serves its metrics, registered by group
// "g-worker", which runs trials together with "g-sim" (two ranks, no endpoints); "g-dies"
// takes a trial and dies, so the trial is requeued as a node fault. nullptr, with *error
// saying why, when something does not start.
std::unique_ptr<LocalSweep> StartLocalSweep(const LocalSweepOptions& o, std::string* error) {
  auto run = std::make_unique<LocalSweep>();
  run->coordinator_log_ = o.dir + "/coordinator.log";
  run->coordinator_ = testing::Spawn(std::string(FLAP_COORDINATOR_BIN) + " --state-dir " + o.dir + "/state" +
                                         " --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --sd-file " +
                                         o.sd_file +
                                         " --heartbeat-interval-ms 200 --heartbeat-timeout-ms 2000 --no-plots",
                                     {}, run->coordinator_log_);
  run->address_ = WaitForLine(run->coordinator_log_, "listening on (\\S+)", 30);
  if (run->address_.empty()) {
    *error = "flap-coordinator did not start: " + testing::ReadFile(run->coordinator_log_);
    return nullptr;
  }
  run->token_ = testing::ReadFile(o.dir + "/state/token");
  run->token_ = run->token_.substr(0, run->token_.find('\n'));
  auto client = run->Client();
  auto submitted = client ? client->SubmitSweep(o.sweep_text, "dash.ini", o.base_config)
                          : StatusOr<coordinator::v1::SubmitSweepResponse>(Status::Internal("no client"));
  if (!submitted.ok()) {
    *error = "submit: " + submitted.status().ToString();
    return nullptr;
  }

  const auto synth = testing::RunCommand(std::string(FLAPCTL_BIN) + " data synth --out " + o.dir +
                                         "/data --train 32 --eval 4 --clip-seconds 1 --vocab-size 64");
  if (synth.exit_code != 0) {
    *error = "flapctl data synth: " + synth.output;
    return nullptr;
  }
  run->worker_log_ = o.dir + "/worker.log";
  run->worker_ = testing::Spawn(std::string(FLAP_WORKER_BIN) + " train --data.path " + o.dir + "/data" +
                                    " --model.target_frames 96 --train.batch_size 8 --train.epochs 1000"
                                    " --train.max_steps 100000 --train.log_every 5 --train.threads 1"
                                    " --train.trial_id dash-worker --metrics.listen 127.0.0.1:0"
                                    " --ckpt.root " + o.dir + "/ckpt --ckpt.every 5 --ckpt.keep_last 2",
                                {}, run->worker_log_);
  const std::string worker_endpoint = WaitForLine(run->worker_log_, "serves metrics on http://(\\S+)/metrics", 120);
  if (worker_endpoint.empty()) {
    *error = "flap-worker did not serve metrics: " + testing::ReadFile(run->worker_log_);
    return nullptr;
  }

  coordinator::sim::SimOptions sim;
  sim.steps = 20;
  sim.eval_every = 5;
  sim.step_sleep_ms = 100;
  sim.worker_train_keys = true;
  sim.retry_for_ms = 10000;
  coordinator::sim::SimOptions dies = sim;
  dies.world_size = 1;
  dies.die_after_steps = 3;
  run->RunGroup("g-dies", dies);
  run->groups_.back().join();  // it took the first trial and died
  run->groups_.pop_back();
  coordinator::sim::SimOptions with_worker = sim;
  with_worker.world_size = 1;
  with_worker.metrics_endpoints = {worker_endpoint};
  run->RunGroup("g-worker", with_worker);
  run->RunGroup("g-sim", sim);
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
  o.sd_file = prom_dir + "/sd/flap-coordinator.json";
  o.sweep_text = "[sweep]\nname = dash\nseeds = 1\n\n[factor.mask.ratio]\nvalues = 0.5, 0.75\n\n"
                 "[factor.mask.strategy]\nvalues = 1d, 2d\n";
  o.base_config = testing::ReadFile(std::string(FLAP_SOURCE_DIR) + "/configs/tiny.ini");
  std::string error;
  auto run = StartLocalSweep(o, &error);
  ASSERT_NE(run, nullptr) << error;

  // The sweep ends (one trial after a node fault), and Prometheus has seen it and the worker,
  // which it found only through the coordinator's file_sd file.
  auto done = prom.WaitFor("flap_sweep_trials{sweep=\"dash\",state=\"completed\"} == 4", 240);
  ASSERT_EQ(done.size(), 1u) << testing::ReadFile(run->coordinator_log()) << prom.Log();
  EXPECT_EQ(prom.WaitFor("flap_sweep_failures_total{sweep=\"dash\",class=\"node_fault\"} == 1", 30).size(), 1u);
  auto worker = prom.WaitFor("flap_worker_checkpoint_saves_total{group=\"g-worker\"} > 0", 120);
  ASSERT_FALSE(worker.empty()) << testing::ReadFile(run->worker_log()) << testing::ReadFile(o.sd_file);
  EXPECT_EQ(worker[0]["metric"].value("trial", ""), "dash-worker") << "the worker's own trial label wins";
  EXPECT_EQ(worker[0]["metric"].value("job", ""), "flap-workers");
  EXPECT_EQ(prom.WaitFor("up{job=\"flap-coordinator\"} == 1", 30).size(), 1u);

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
  // The variables offer the run's values.
  auto sweeps = prom.Query("count by (sweep) (flap_sweep_trials)");
  ASSERT_EQ(sweeps.size(), 1u);
  EXPECT_EQ(sweeps[0]["metric"].value("sweep", ""), "dash");
  EXPECT_EQ(prom.Query("count by (mask_ratio) (flap_trial_state{sweep=~\"dash\"})").size(), 2u);
  auto recon = prom.Query("count by (recon_weight) (flap_trial_state{sweep=~\"dash\"})");
  ASSERT_EQ(recon.size(), 1u);
  EXPECT_EQ(recon[0]["metric"].value("recon_weight", ""), "0.5") << "from the base config (configs/tiny.ini)";
  // The ablation matrix has one cell per mask ratio x strategy.
  EXPECT_EQ(prom.Query("max by (mask_ratio, mask_strategy) (flap_trial_eval{metric=\"t2a_r1\", sweep=~\".*\"})").size(),
            4u);
}

}  // namespace
}  // namespace flap
