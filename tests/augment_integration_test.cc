// `flapctl data augment` as a program: killed midway and rerun, it resumes from its cache
// and ends with the output of an uninterrupted run; its output feeds training.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

#include "sharding/synth.h"
#include "tests/chat_test_server.h"
#include "tests/test_util.h"

namespace flap {
namespace {

using testing::RunCommand;
using testing::TempDir;

std::string Augment(const std::string& data, const std::string& url) {
  return std::string(FLAPCTL_BIN) + " data augment --data " + data + " --endpoint " + url +
         " --model test-model --concurrency 2 --timeout 5 --backoff 0.01 --prompt " + FLAP_CONFIG_DIR +
         "/augment_prompt.txt";
}

TEST(AugmentIntegration, KilledRunResumesFromTheCacheWithTheSameOutput) {
  TempDir dir("augment_kill");
  const sharding::SynthOptions o = sharding::SmallSynth(60, 4, 0.5, 20);
  ASSERT_OK(sharding::GenerateSynthetic(o, dir / "a"));
  std::filesystem::copy(dir / "a", dir / "b", std::filesystem::copy_options::recursive);
  testing::ChatTestServer server;
  ASSERT_TRUE(server.ok());
  server.set_delay_ms(20);

  auto whole = RunCommand(Augment(dir / "a", server.url()));
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  const int total = server.requests();
  ASSERT_GE(total, 120) << "every original caption is one request";

  // Killed after about a third of the requests.
  testing::ChildProcess killed = testing::ChildProcess::Shell(Augment(dir / "b", server.url()));
  for (int i = 0; i < 2000 && server.requests() < total + total / 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(killed.Kill(SIGKILL), 128 + SIGKILL) << "the run finished before the kill";
  EXPECT_FALSE(std::filesystem::exists(dir / "b/text_augment.jsonl"));  // no partial output
  const int before_rerun = server.requests();

  auto rerun = RunCommand(Augment(dir / "b", server.url()));
  ASSERT_EQ(rerun.exit_code, 0) << rerun.output;
  const int rerun_requests = server.requests() - before_rerun;
  EXPECT_LT(rerun_requests, total - total / 4) << "the rerun asked again for what was cached";
  EXPECT_NE(rerun.output.find("from the cache"), std::string::npos) << rerun.output;
  const std::string side_a = testing::ReadFile(dir / "a/text_augment.jsonl");
  EXPECT_FALSE(side_a.empty());
  EXPECT_EQ(testing::ReadFile(dir / "b/text_augment.jsonl"), side_a);
  auto ma = nlohmann::json::parse(testing::ReadFile(dir / "a/manifest.json"));
  auto mb = nlohmann::json::parse(testing::ReadFile(dir / "b/manifest.json"));
  EXPECT_EQ(ma["augment"], mb["augment"]);
  EXPECT_EQ(ma["augment"]["counts"]["augmented"], total);

  // Training reads the merged captions.
  auto train = RunCommand(std::string(FLAP_WORKER_BIN) + " train --data.path " + dir / "b" +
                          " --model.target_frames 48 --train.batch_size 8 --train.max_steps 2 --text.augment on");
  EXPECT_EQ(train.exit_code, 0) << train.output;
  EXPECT_NE(train.output.find("augmented captions for 60 clips from text_augment.jsonl (chat)"), std::string::npos)
      << train.output;
}

TEST(AugmentIntegration, OfflineTemplatesByDefault) {
  TempDir dir("augment_offline");
  const sharding::SynthOptions o = sharding::SmallSynth(10, 2, 0.5, 250);
  ASSERT_OK(sharding::GenerateSynthetic(o, dir / "d"));
  auto r = RunCommand(std::string(FLAPCTL_BIN) + " data augment --data " + dir / "d");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("(template)"), std::string::npos) << r.output;
  auto m = nlohmann::json::parse(testing::ReadFile(dir / "d/manifest.json"));
  EXPECT_EQ(m["augment"]["method"], "template");
  EXPECT_EQ(m["augment"]["counts"]["failed"], 0);
  auto bad =
      RunCommand(std::string(FLAPCTL_BIN) + " data augment --data " + dir / "d" + " --endpoint ftp://x --model m");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("must start with http"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace flap
