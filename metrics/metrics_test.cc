#include "metrics/metrics.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include "metrics/worker_metrics.h"
#include "tests/http_client.h"
#include "tests/prometheus_server.h"

namespace flap::metrics {
namespace {

using flap::testing::HttpGet;

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
  ASSERT_TRUE(first.ok());
  auto taken = MetricsServer::Start("127.0.0.1:" + std::to_string((*first)->port()));
  ASSERT_FALSE(taken.ok());
  EXPECT_NE(taken.status().message().find(std::to_string((*first)->port())), std::string::npos);
  EXPECT_EQ(HttpGet("http://" + (*first)->endpoint() + "/other").status, 404);
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
  ASSERT_TRUE(WriteFileSd(dir / "targets.json", {{(*server)->endpoint(), {{"job", "flap-worker"}, {"sweep", "s1"}}}}).ok());
  const std::string config =
      "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
      "scrape_configs:\n  - job_name: flap-workers\n    file_sd_configs:\n      - files: ['" + dir / "targets.json" +
      "']\n        refresh_interval: 1s\n";
  flap::testing::PrometheusServer prom(dir / "prom", config);
  ASSERT_TRUE(prom.ok()) << prom.Log();
  auto result = prom.WaitFor("flap_worker_samples_total{trial=\"trial-sd\",sweep=\"s1\"}", 30);
  ASSERT_EQ(result.size(), 1u) << prom.Log();
  EXPECT_EQ(result[0]["value"][1], "16");
}

}  // namespace
}  // namespace flap::metrics
