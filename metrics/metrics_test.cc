#include "metrics/metrics.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include "metrics/coordinator_metrics.h"
#include "metrics/worker_metrics.h"
#include "tests/exposition.h"
#include "tests/http_client.h"
#include "tests/prometheus_server.h"
#include "common/testing/testing.h"

namespace flap::metrics {
namespace {

using flap::testing::FindSamples;
using flap::testing::HttpGet;
using flap::testing::ParseExposition;

TEST(MetricsServer, ServesTheWorkerMetricsInTextFormat) {
  auto server = MetricsServer::Start("127.0.0.1:0");
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  WorkerMetrics w((*server)->registry(), "trial-a", 1);
  w.ObserveStep(0.01, 0.5, 0.1, 32);
  w.ObserveStep(0.02, 0.5, 0.1, 32);
  w.SetLosses(2.5, 2.0, 1.0, 14.3);
  w.SetEvaluation({{"t2a_r1", 0.125}});
  w.UpdateMemory();
  auto r = HttpGet("http://" + (*server)->endpoint() + "/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("flap_worker_steps_total{rank=\"1\",trial=\"trial-a\"} 2"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("flap_worker_samples_total{rank=\"1\",trial=\"trial-a\"} 64"), std::string::npos);
  EXPECT_NE(r.body.find("flap_worker_step_phase_seconds_total{phase=\"data_wait\",rank=\"1\",trial=\"trial-a\"} 0.03"),
            std::string::npos);
  EXPECT_NE(r.body.find("flap_worker_loss{kind=\"contrastive\",rank=\"1\",trial=\"trial-a\"} 2"), std::string::npos);
  EXPECT_NE(r.body.find("flap_worker_eval{metric=\"t2a_r1\",rank=\"1\",trial=\"trial-a\"} 0.125"), std::string::npos);
  EXPECT_EQ(r.body.find("flap_worker_resident_memory_bytes{rank=\"1\",trial=\"trial-a\"} 0\n"), std::string::npos)
      << "memory was not read";
}

TEST(MetricsServer, RefusesBadAddressesClearly) {
  EXPECT_EQ(MetricsServer::Start("nonsense").status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(MetricsServer::Start("127.0.0.1:x1").status().code(), Status::Code::kInvalidArgument);
  auto first = MetricsServer::Start("127.0.0.1:0");
  ASSERT_OK(first);
  auto taken = MetricsServer::Start("127.0.0.1:" + std::to_string((*first)->port()));
  ASSERT_FALSE(taken.ok());
  EXPECT_NE(taken.status().message().find(std::to_string((*first)->port())), std::string::npos);
  EXPECT_EQ(HttpGet("http://" + (*first)->endpoint() + "/other").status, 404);
}

// A worker process runs trials one after another on one MetricsServer: each trial's
// WorkerMetrics takes its series away when it ends, so only the current trial is exposed.
TEST(WorkerMetrics, ADestroyedTrialLeavesNoSeriesAndTheNextOneReusesTheRegistry) {
  auto server = MetricsServer::Start("127.0.0.1:0");
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  {
    WorkerMetrics first((*server)->registry(), "trial-1", 0);
    first.ObserveStep(0.1, 0.2, 0.0, 8);
    first.SetEvaluation({{"t2a_r1", 0.5}, {"map10", 0.25}});
    first.ObserveCheckpoint(0.5, 1024);
    auto during = ParseExposition(HttpGet("http://" + (*server)->endpoint() + "/metrics").body);
    EXPECT_EQ(FindSamples(during, "flap_worker_eval", {{"trial", "trial-1"}}).size(), 2u);
  }
  auto between = ParseExposition(HttpGet("http://" + (*server)->endpoint() + "/metrics").body);
  for (const auto& s : between) ADD_FAILURE() << "left behind: " << flap::testing::Describe(s.name, s.labels);

  WorkerMetrics second((*server)->registry(), "trial-2", 0);
  second.ObserveStep(0.0, 0.3, 0.0, 16);
  second.SetEvaluation({{"t2a_r1", 0.75}});
  auto after = ParseExposition(HttpGet("http://" + (*server)->endpoint() + "/metrics").body);
  auto steps = FindSamples(after, "flap_worker_steps_total");
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(steps[0].labels.at("trial"), "trial-2");
  EXPECT_EQ(steps[0].value, 1);
  EXPECT_EQ(FindSamples(after, "flap_worker_samples_total", {{"trial", "trial-2"}})[0].value, 16);
  auto eval = FindSamples(after, "flap_worker_eval");
  ASSERT_EQ(eval.size(), 1u);
  EXPECT_EQ(eval[0].labels.at("metric"), "t2a_r1");
  EXPECT_EQ(eval[0].value, 0.75);
  for (const auto& s : after) EXPECT_EQ(s.labels.at("trial"), "trial-2") << s.name;
}

TEST(ParseHostPort, SplitsAddressesAndRefusesBadOnes) {
  auto ok = ParseHostPort("node-7.cluster:9100");
  ASSERT_OK(ok);
  EXPECT_EQ(ok->host, "node-7.cluster");
  EXPECT_EQ(ok->port, 9100);
  EXPECT_EQ(ParseHostPort("*:0")->host, "*");
  EXPECT_EQ(ParseHostPort("[::1]:80")->host, "[::1]");
  for (const char* bad : {"", "host", ":80", "host:", "host:65536", "host:8o", "a b:80", "h\"x:80", "a*:80"}) {
    auto r = ParseHostPort(bad);
    EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find(std::string("'") + bad + "'"), std::string::npos) << r.status().message();
  }
}

// The coordinator's state families: one series set per trial, labelled with its factors.
TEST(CoordinatorMetrics, ASnapshotBecomesLabelledFamilies) {
  CoordinatorSnapshot snap;
  SweepSnapshot& sweep = snap.sweeps.emplace_back();
  sweep.sweep = "abl";
  sweep.state = "running";
  sweep.eta_seconds = 42;
  sweep.trials_by_state = {{"pending", 1}, {"running", 1}, {"failed", 0}};
  TrialSnapshot& t = sweep.trials.emplace_back();
  t.trial = "t0001";
  t.config = {{"mask.ratio", "0.5"}, {"mask.strategy", "1d"}, {"loss.recon_weight", ""}};
  t.seed = 3;
  t.state = "running";
  t.attempts = 2;
  t.failures = {{"preemption", 1}, {"node_fault", 0}};
  t.step = 25;
  t.total_steps = 100;
  t.train = {{"loss", 2.5}, {"contrastive", 2.0}, {"samples_per_second", 310}, {"lr", 1e-3}};
  t.eval = {{"t2a_r1", 0.125}, {"map10", 0.2}};
  TrialSnapshot& pending = sweep.trials.emplace_back();
  pending.trial = "t0002";
  pending.state = "pending";
  pending.failures = {{"preemption", 0}, {"node_fault", 2}};
  snap.sweeps_by_state = {{"running", 1}};
  snap.groups_live = 3;
  snap.leases_active = 4;
  snap.leases_expired = 5;

  const auto all = ParseExposition(prometheus::TextSerializer().Serialize(SnapshotFamilies(snap)));
  const std::map<std::string, std::string> t1 = {
      {"sweep", "abl"},      {"trial", "t0001"},    {"mask_ratio", "0.5"}, {"mask_strategy", "1d"},
      {"recon_weight", "-"}, {"text_augment", "-"}, {"seed", "3"}};
  auto one = [&](const std::string& name, std::map<std::string, std::string> labels) {
    auto found = FindSamples(all, name, labels);
    EXPECT_EQ(found.size(), 1u) << flap::testing::Describe(name, labels);
    return found.empty() ? -1.0 : found[0].value;
  };
  auto with = [&](const std::string& k, const std::string& v) {
    auto l = t1;
    l[k] = v;
    return l;
  };
  EXPECT_EQ(one("flap_trial_state", with("state", "running")), 1);
  EXPECT_EQ(FindSamples(all, "flap_trial_state", {{"trial", "t0001"}}).size(), 1u) << "only the current state";
  EXPECT_EQ(one("flap_trial_step", t1), 25);
  EXPECT_EQ(one("flap_trial_planned_steps", t1), 100);
  EXPECT_EQ(one("flap_trial_progress_ratio", t1), 0.25);
  EXPECT_EQ(one("flap_trial_loss", with("kind", "total")), 2.5);
  EXPECT_EQ(one("flap_trial_loss", with("kind", "contrastive")), 2.0);
  EXPECT_TRUE(FindSamples(all, "flap_trial_loss", {{"kind", "recon"}}).empty()) << "not reported: no series";
  EXPECT_TRUE(FindSamples(all, "flap_trial_logit_scale").empty());
  EXPECT_EQ(one("flap_trial_samples_per_second", t1), 310);
  EXPECT_EQ(one("flap_trial_learning_rate", t1), 1e-3);
  EXPECT_EQ(one("flap_trial_eval", with("metric", "t2a_r1")), 0.125);
  EXPECT_EQ(one("flap_trial_eval", with("metric", "map10")), 0.2);
  EXPECT_EQ(one("flap_trial_attempts_total", t1), 2);
  EXPECT_EQ(one("flap_trial_failures_total", with("class", "preemption")), 1);
  EXPECT_TRUE(FindSamples(all, "flap_trial_eta_seconds").empty()) << "unknown ETA: no series";
  EXPECT_EQ(one("flap_trial_progress_ratio", {{"trial", "t0002"}, {"mask_ratio", "-"}, {"seed", "0"}}), 0);
  EXPECT_EQ(one("flap_sweep_trials", {{"sweep", "abl"}, {"state", "failed"}}), 0);
  EXPECT_EQ(one("flap_sweep_trials", {{"sweep", "abl"}, {"state", "running"}}), 1);
  EXPECT_EQ(one("flap_sweep_planned_trials", {{"sweep", "abl"}}), 2);
  EXPECT_EQ(one("flap_sweep_eta_seconds", {{"sweep", "abl"}}), 42);
  EXPECT_EQ(one("flap_sweep_failures_total", {{"sweep", "abl"}, {"class", "preemption"}}), 1);
  EXPECT_EQ(one("flap_sweep_failures_total", {{"sweep", "abl"}, {"class", "node_fault"}}), 2);
  EXPECT_EQ(one("flap_sweep_state", {{"sweep", "abl"}, {"state", "running"}}), 1);
  EXPECT_EQ(one("flap_coordinator_sweeps", {{"state", "running"}}), 1);
  EXPECT_EQ(one("flap_coordinator_groups_live", {}), 3);
  EXPECT_EQ(one("flap_coordinator_leases_active", {}), 4);
  EXPECT_EQ(one("flap_coordinator_leases_expired_total", {}), 5);
}

// The server works in a process that has loaded LibTorch (prometheus-cpp's CivetWeb exposer
// does not): the worker binary serves its metrics, tested in tests/metrics_integration_test.cc.

// A real Prometheus finds the worker through a file_sd file and scrapes it.
TEST(MetricsServer, RealPrometheusScrapesTargetsFromAFileSdFile) {
  flap::testing::TempDir dir("prom_sd");
  auto server = MetricsServer::Start("127.0.0.1:0");
  ASSERT_TRUE(server.ok());
  WorkerMetrics w((*server)->registry(), "trial-sd", 0);
  w.ObserveStep(0.0, 0.2, 0.0, 16);
  ASSERT_OK(WriteFileSd(dir / "targets.json", {{(*server)->endpoint(), {{"job", "flap-worker"}, {"sweep", "s1"}}}}));
  const std::string config =
      "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
      "scrape_configs:\n  - job_name: flap-workers\n    file_sd_configs:\n      - files: ['" +
      dir / "targets.json" + "']\n        refresh_interval: 1s\n";
  flap::testing::PrometheusServer prom(dir / "prom", config);
  ASSERT_TRUE(prom.ok()) << prom.Log();
  auto result = prom.WaitFor("flap_worker_samples_total{trial=\"trial-sd\",sweep=\"s1\"}", 30);
  ASSERT_EQ(result.size(), 1u) << prom.Log();
  EXPECT_EQ(result[0]["value"][1], "16");
}

}  // namespace
}  // namespace flap::metrics
