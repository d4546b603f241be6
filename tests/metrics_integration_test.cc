// flap-worker serves its metrics while it trains, announces itself through a file_sd file,
// and a real Prometheus scrapes it from there.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>

#include "sharding/synth.h"
#include "tests/prometheus_server.h"
#include "tests/test_util.h"

namespace flap {
namespace {

TEST(WorkerMetrics, PrometheusScrapesATrainingWorkerFoundThroughFileSd) {
  testing::TempDir dir("worker_metrics");
  const sharding::SynthOptions o = sharding::SmallSynth(32, 4, 1.0, 250, 64);
  ASSERT_OK(sharding::GenerateSynthetic(o, dir / "data"));
  const std::string sd = dir / "sd";
  std::filesystem::create_directories(sd);
  testing::PrometheusServer prom(dir / "prom",
                                 "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: flap-workers\n"
                                 "    file_sd_configs:\n      - files: ['" +
                                     sd + "/*.json']\n        refresh_interval: 1s\n");
  ASSERT_TRUE(prom.ok()) << prom.Log();

  testing::ChildProcess::Options options;
  options.log_path = dir / "out.log";
  testing::ChildProcess worker = testing::ChildProcess::Shell(
      std::string(FLAP_WORKER_BIN) + " train --data.path " + dir / "data" +
          " --model.target_frames 96 --train.batch_size 8 --train.epochs 1000 --train.max_steps 400"
          " --train.log_every 2 --train.trial_id metrics-t --metrics.listen 127.0.0.1:0 --metrics.sd_dir " +
          sd,
      options);
  auto steps = prom.WaitFor("flap_worker_steps_total{trial=\"metrics-t\",rank=\"0\"} > 2", 90);
  auto loss = prom.WaitFor("flap_worker_loss{trial=\"metrics-t\",kind=\"contrastive\"}", 30);
  auto wait = prom.WaitFor("flap_worker_step_phase_seconds_total{trial=\"metrics-t\",phase=\"compute\"} > 0", 30);
  auto memory = prom.WaitFor("flap_worker_resident_memory_bytes{trial=\"metrics-t\"} > 1e7", 30);
  const int code = worker.Kill(SIGTERM, 60);
  const std::string log = testing::ReadFile(dir / "out.log");
  EXPECT_EQ(steps.size(), 1u) << log << prom.Log();
  EXPECT_EQ(loss.size(), 1u);
  EXPECT_EQ(wait.size(), 1u);
  EXPECT_EQ(memory.size(), 1u);
  EXPECT_NE(log.find("serves metrics on http://127.0.0.1:"), std::string::npos) << log;
  EXPECT_EQ(code, 75) << log;  // stopped by the signal
  EXPECT_TRUE(std::filesystem::is_empty(sd)) << "the rank's target file outlived it";
}

}  // namespace
}  // namespace flap
