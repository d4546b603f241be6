// `flapctl data ingest` killed with SIGKILL midway and run again ends with the shards,
// manifest and tokenizer of an uninterrupted run, byte for byte.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <thread>

#include "sharding/synth.h"
#include "tests/test_util.h"

namespace flap {
namespace {

std::map<std::string, std::string> Outputs(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (e.path().extension() == ".tar" || name == "manifest.json" || name == "tokenizer.model") {
      out[name] = testing::ReadFile(e.path().string());
    }
  }
  return out;
}

TEST(IngestKill, SigkilledIngestionRerunEqualsAnUninterruptedRun) {
  testing::TempDir dir("ingest_kill");
  const sharding::SynthOptions o = sharding::SmallSynth(240, 0, 2.0, 40);
  ASSERT_OK(sharding::GenerateSynthetic(o, dir / "src"));
  auto ingest = [&](const std::string& out) {
    return std::string(FLAPCTL_BIN) + " data ingest --format wds --shards '" + dir / "src" + "/train-*.tar'" +
           " --split train --shard-size 8 --threads 1 --vocab-size 64 --out " + out;
  };
  auto whole = testing::RunCommand(ingest(dir / "whole"));
  ASSERT_EQ(whole.exit_code, 0) << whole.output;

  testing::ChildProcess killed = testing::ChildProcess::Shell(ingest(dir / "killed"));
  // Kill once a few of the 30 shards are written.
  auto written = [&] {
    int n = 0;
    if (std::filesystem::exists(dir / "killed")) {
      for (const auto& e : std::filesystem::directory_iterator(dir / "killed")) n += e.path().extension() == ".tar";
    }
    return n;
  };
  for (int i = 0; i < 6000 && written() < 5; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(killed.Kill(SIGKILL), 128 + SIGKILL) << "ingestion finished before the kill";
  EXPECT_FALSE(std::filesystem::exists(dir / "killed/manifest.json"));  // a folder with a manifest is complete

  auto rerun = testing::RunCommand(ingest(dir / "killed"));
  ASSERT_EQ(rerun.exit_code, 0) << rerun.output;
  EXPECT_NE(rerun.output.find("kept from an earlier run"), std::string::npos) << rerun.output;
  const auto a = Outputs(dir / "whole"), b = Outputs(dir / "killed");
  EXPECT_EQ(a.size(), 32u);  // 30 shards, manifest, tokenizer
  EXPECT_TRUE(a == b) << "the rerun's shards differ from the uninterrupted run's";
}

}  // namespace
}  // namespace flap
