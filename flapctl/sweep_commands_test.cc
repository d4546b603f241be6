// flapctl sweep, run as a process against a real coordinator served on 127.0.0.1: submit
// (refusing a bad file with every error), status, watch, cancel and report.
#include <gtest/gtest.h>

#include <filesystem>
#include <iostream>
#include <map>

#include "coordinator/service_test_util.h"
#include "coordinator/sim_group.h"

namespace flap::flapctl {
namespace {

using coordinator::testing::TestCoordinator;
using flap::testing::ReadFile;
using flap::testing::RunCommand;
using flap::testing::WriteFile;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class SweepCli : public ::testing::Test {
 protected:
  SweepCli() : c_("flapctl_sweep", Options()) {}
  static coordinator::ServiceOptions Options() {
    auto o = coordinator::testing::FastServiceOptions();
    o.heartbeat_timeout_ms = 10000;
    return o;
  }
  // Runs flapctl sweep ARGS against the test coordinator.
  flap::testing::RunResult Flapctl(const std::string& args) {
    return RunCommand(std::string(FLAPCTL_BIN) + " sweep " + args + " --coordinator " + c_.server()->address() +
                      " --token-file " + (c_.dir() / "state/token"));
  }
  TestCoordinator c_;
};

TEST_F(SweepCli, SubmitRefusesAnInvalidFileListingEveryErrorAndSendsNothing) {
  const std::string file = c_.dir() / "bad.ini";
  WriteFile(file, "[sweep]\nname = bad\n\n[factor.mask.ratio]\nvalues = 2\n\n[factor.nope]\nvalues = 1\n");
  auto r = Flapctl("submit " + file);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(Contains(r.output, "bad.ini:5")) << r.output;
  EXPECT_TRUE(Contains(r.output, "bad.ini:7")) << r.output;
  auto list = c_.Client()->ListSweeps();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->sweeps_size(), 0);
}

TEST_F(SweepCli, SubmitsTheShippedMaskSweepWithItsBaseConfig) {
  auto r = Flapctl(std::string("submit ") + FLAP_CONFIG_DIR + "/mask-sweep.ini");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "submitted sweep mask-ablation (15 trials)")) << r.output;
  auto again = Flapctl(std::string("submit ") + FLAP_CONFIG_DIR + "/mask-sweep.ini");
  EXPECT_TRUE(Contains(again.output, "already submitted")) << again.output;
  auto next = c_.Client();
  ASSERT_TRUE(next->Register("g", "g", 1).ok());
  auto a = next->NextTrial("g");
  ASSERT_TRUE(a.ok() && a->assigned);
  EXPECT_EQ(a->assignment.base_config, ReadFile(std::string(FLAP_CONFIG_DIR) + "/tiny.ini"));
  EXPECT_EQ(a->assignment.overrides.at("mask.ratio"), "0");
  EXPECT_EQ(a->assignment.overrides.count("mask.strategy"), 0u);
}

// configs/demo.ini, the base config of the demo and augmentation sweeps, sets data.path (it also
// serves `flap-worker train --config configs/demo.ini`): a key local to each worker, which submit
// refuses, before sending anything, as the coordinator would (`sweep run` gives it to its own
// workers instead: tests/sweep_run_test.cc). With a base config that leaves it to the workers,
// both sweeps are accepted.
TEST_F(SweepCli, SubmitsTheShippedDemoAndAugmentationSweeps) {
  auto refused = Flapctl(std::string("submit ") + FLAP_CONFIG_DIR + "/demo-sweep.ini");
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_TRUE(Contains(refused.output, "the base config (demo.ini) sets data.path: data.path is local to each worker"))
      << refused.output;
  auto list = c_.Client()->ListSweeps();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->sweeps_size(), 0);

  std::string base = ReadFile(std::string(FLAP_CONFIG_DIR) + "/demo.ini");
  base.erase(base.find("path = demo-data\n"), std::string("path = demo-data\n").size());
  const std::string base_file = c_.dir() / "demo-base.ini";
  WriteFile(base_file, base);
  auto demo = Flapctl(std::string("submit ") + FLAP_CONFIG_DIR + "/demo-sweep.ini --base-config " + base_file);
  ASSERT_EQ(demo.exit_code, 0) << demo.output;
  // ratio 0, 0.5, 0.75 x seeds 1, 2, with a [report] target.
  EXPECT_TRUE(Contains(demo.output, "submitted sweep demo-ablation (6 trials)")) << demo.output;
  auto augment = Flapctl(std::string("submit ") + FLAP_CONFIG_DIR + "/augment-sweep.ini --base-config " + base_file);
  ASSERT_EQ(augment.exit_code, 0) << augment.output;
  EXPECT_TRUE(Contains(augment.output, "submitted sweep augment-ablation (9 trials)")) << augment.output;
  auto st = c_.Client()->GetSweep("augment-ablation");
  ASSERT_TRUE(st.ok());
  std::map<std::string, int> levels;
  for (const auto& t : st->trials()) levels[t.factors().at("text.augment")]++;
  EXPECT_EQ(levels, (std::map<std::string, int>{{"0.5", 3}, {"off", 3}, {"on", 3}}));
}

// Issue 32, item 2: submit checks a sweep as the coordinator does, so a base config setting
// train.output_dir, data.fbank_cache and metrics.sd_dir, and a train.trial_id factor, are
// refused here, naming each key, and nothing is sent. Run against the code before the fix
// (d6a2f28): both were submitted.
TEST_F(SweepCli, SubmitRefusesKeysASweepCannotSet) {
  const std::string base = c_.dir() / "paths.ini";
  WriteFile(base, "[train]\noutput_dir = /tmp/out\n[data]\nfbank_cache = /tmp/cache\n[metrics]\nsd_dir = /tmp/sd\n");
  const std::string paths = c_.dir() / "paths-sweep.ini";
  WriteFile(paths, "[sweep]\nname = paths\nbase_config = paths.ini\n\n[factor.mask.ratio]\nvalues = 0.5\n");
  auto r = Flapctl("submit " + paths);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  for (const char* key : {"train.output_dir", "data.fbank_cache", "metrics.sd_dir"}) {
    EXPECT_TRUE(Contains(
        r.output, std::string("the base config (paths.ini) sets ") + key + ": " + key + " is local to each worker"))
        << r.output;
  }
  const std::string tid = c_.dir() / "tid.ini";
  WriteFile(tid, "[sweep]\nname = tid\n\n[factor.train.trial_id]\nvalues = mine\n");
  r = Flapctl("submit " + tid);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(Contains(r.output, "tid.ini:4: [factor.train.trial_id]: train.trial_id is set by the coordinator"))
      << r.output;
  auto list = c_.Client()->ListSweeps();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->sweeps_size(), 0);
}

TEST_F(SweepCli, WrongTokenIsReportedClearly) {
  const std::string file = c_.dir() / "s.ini";
  WriteFile(file, coordinator::testing::MaskSweep("s", "1"));
  const std::string bad = c_.dir() / "bad_token";
  ASSERT_TRUE(flap::testing::WriteTokenFile(bad, "ffffffffffffffffffffffffffffffff"));  // well formed, wrong
  auto r = RunCommand(std::string(FLAPCTL_BIN) + " sweep submit " + file + " --coordinator " + c_.server()->address() +
                      " --token-file " + bad);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "UNAUTHENTICATED")) << r.output;
  EXPECT_TRUE(Contains(r.output, "wrong token")) << r.output;
}

TEST_F(SweepCli, SubmitStatusWatchReportAndCancel) {
  const std::string base = c_.dir() / "base.ini";
  WriteFile(base, "[model]\npreset = tiny\n");
  const std::string file = c_.dir() / "mask.ini";
  WriteFile(file, coordinator::testing::MaskSweep("mask", "1, 2") + "\n");
  // base_config is resolved next to the sweep file.
  std::string text = ReadFile(file);
  text.insert(text.find("search"), "base_config = base.ini\n");
  WriteFile(file, text);
  auto sub = Flapctl("submit " + file);
  ASSERT_EQ(sub.exit_code, 0) << sub.output;
  EXPECT_TRUE(Contains(sub.output, "submitted sweep mask (8 trials)")) << sub.output;

  // One group runs two trials to completion and is in the middle of a third.
  coordinator::sim::SimOptions o;
  o.steps = 10;
  o.epochs = 1;
  o.shards = 2;
  auto group = c_.Client();
  coordinator::sim::SimGroup g(c_.Client(), "g0", o);
  std::atomic<bool> stop{false};
  std::thread runner([&] {
    // Stop after two finished trials by cancelling below; run until then.
    EXPECT_TRUE(g.Run(&stop).ok());
  });
  for (int i = 0; i < 500; ++i) {
    auto st = c_.Client()->GetSweep("mask");
    int done = 0;
    for (const auto& t : st->trials()) done += t.state() == "completed";
    if (done >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  stop = true;
  runner.join();
  auto st = c_.Client()->GetSweep("mask");
  ASSERT_TRUE(st.ok());
  int done_before = 0;
  for (const auto& t : st->trials()) done_before += t.state() == "completed";
  auto hb = group->Register("g1", "g1-x", 1);
  ASSERT_TRUE(hb.ok());
  auto next = group->NextTrial("g1");
  ASSERT_TRUE(next.ok() && next->assigned);
  ASSERT_TRUE(group
                  ->ReportMetrics(
                      "g1", next->assignment.trial, coordinator::MetricKind::kTrain, 4, 0,
                      {{"loss", 1.25}, {"samples_per_second", 321}, {"train_seconds", 42.4}, {"max_seconds", 60}}, 10)
                  .ok());
  ASSERT_TRUE(
      group->ReportMetrics("g1", next->assignment.trial, coordinator::MetricKind::kEval, 4, 0, {{"map10", 0.6234}}, 10)
          .ok());
  EXPECT_TRUE(st.ok() && st->sweep_text().find("base_config") != std::string::npos);

  auto status = Flapctl("status mask");
  ASSERT_EQ(status.exit_code, 0) << status.output;
  std::cout << status.output;  // what a user sees
  EXPECT_TRUE(Contains(status.output, "sweep mask: running, 8 trials")) << status.output;
  EXPECT_TRUE(Contains(status.output, "trial")) << status.output;
  EXPECT_TRUE(Contains(status.output, "progress")) << status.output;
  EXPECT_TRUE(Contains(status.output, "t0000  mask.ratio=0.5 mask.strategy=1d")) << status.output;
  EXPECT_TRUE(Contains(status.output, "completed")) << status.output;
  EXPECT_TRUE(Contains(status.output, "10/10")) << status.output;
  EXPECT_TRUE(Contains(status.output, "[############] 100%")) << status.output;
  EXPECT_TRUE(Contains(status.output, "4/10")) << status.output;
  EXPECT_TRUE(Contains(status.output, "1.25")) << status.output;
  EXPECT_TRUE(Contains(status.output, "321")) << status.output;
  // Progress: trials done / total; per trial its step / budget and seconds / time budget; the
  // evaluation metric as a percentage with one decimal.
  EXPECT_TRUE(Contains(status.output, ", " + std::to_string(done_before) + "/8 done")) << status.output;
  EXPECT_TRUE(Contains(status.output, "42/60 s")) << status.output;
  EXPECT_TRUE(Contains(status.output, "62.3%")) << status.output;

  auto list = Flapctl("status");
  ASSERT_EQ(list.exit_code, 0) << list.output;
  EXPECT_TRUE(Contains(list.output, "mask")) << list.output;

  auto watch = Flapctl("watch mask --interval 0.05 --count 2");
  ASSERT_EQ(watch.exit_code, 0) << watch.output;
  size_t tables = 0;
  for (size_t p = watch.output.find("sweep mask:"); p != std::string::npos;
       p = watch.output.find("sweep mask:", p + 1)) {
    ++tables;
  }
  EXPECT_EQ(tables, 2u) << watch.output;

  const std::string out = c_.dir() / "report";
  auto report = Flapctl("report mask --out " + out);
  ASSERT_EQ(report.exit_code, 0) << report.output;
  const std::string csv = ReadFile(out + "/trials.csv");
  EXPECT_TRUE(Contains(csv, "t0000,0,1,0.5,1d,completed")) << csv;
  EXPECT_TRUE(Contains(ReadFile(out + "/report.md"), "# Ablation report: mask"));
  if (RunCommand("command -v gnuplot").exit_code == 0) {
    EXPECT_TRUE(Contains(ReadFile(out + "/throughput.svg"), "<svg")) << report.output;
  }

  // The simulated group may finish a third trial before it sees `stop`: count what is left.
  auto before = c_.Client()->GetSweep("mask");
  ASSERT_TRUE(before.ok());
  int unfinished = 0;
  for (const auto& t : before->trials()) unfinished += t.state() != "completed";
  EXPECT_GE(unfinished, 5);
  auto cancel = Flapctl("cancel mask");
  ASSERT_EQ(cancel.exit_code, 0) << cancel.output;
  EXPECT_TRUE(Contains(cancel.output, "cancelled sweep mask (" + std::to_string(unfinished) + " trials"))
      << cancel.output;
  auto after = Flapctl("status mask");
  EXPECT_TRUE(Contains(after.output, "sweep mask: cancelled")) << after.output;
  // watch ends at once on a sweep that is over.
  auto done = Flapctl("watch mask --interval 0.05");
  EXPECT_EQ(done.exit_code, 0) << done.output;

  auto missing = Flapctl("status nosuch");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_TRUE(Contains(missing.output, "no sweep 'nosuch'")) << missing.output;
}

}  // namespace
}  // namespace flap::flapctl
