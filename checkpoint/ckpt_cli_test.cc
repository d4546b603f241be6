// Runs the built flapctl's "ckpt" commands on a root made with the store library and checks
// their output and exit codes (list, verify with and without damage, gc).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>

#include "checkpoint/store.h"
#include "common/testing/testing.h"

namespace flap::checkpoint {
namespace {
namespace fs = std::filesystem;

testing::RunResult Flapctl(const std::string& args) {
  return testing::RunCommand(std::string(FLAPCTL_PATH) + " " + args);
}

class CkptCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path();
    auto store = Store::Open(root_);
    ASSERT_OK(store);
    for (int64_t step : {100, 200, 300}) {
      Metadata m;
      m.config_hash = "abc";
      m.epoch = step / 100;
      m.metrics["map10"] = step / 1000.0;
      ASSERT_OK(store.value()->Save("trial-7", step, {{"model.bin", std::string(5000, 'm')}, {"state.json", "{}"}}, m));
    }
  }
  testing::TempDir dir_{"ckpt_cli"};
  std::string root_;
};

TEST_F(CkptCliTest, ListShowsEveryCheckpoint) {
  auto r = Flapctl("ckpt list " + root_);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("TRIAL"), std::string::npos) << r.output;
  for (const char* step : {"100", "200", "300"}) EXPECT_NE(r.output.find(step), std::string::npos);
  EXPECT_NE(r.output.find("map10=0.3"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("yes"), std::string::npos);
}

TEST_F(CkptCliTest, VerifyNamesDamagedCheckpointAndFile) {
  auto ok = Flapctl("ckpt verify " + root_ + " --trial trial-7");
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("3 checkpoints verified"), std::string::npos) << ok.output;

  fs::resize_file(root_ + "/trial-7/000000000200/model.bin", 10);
  auto bad = Flapctl("ckpt verify " + root_);
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("trial-7/000000000200: model.bin"), std::string::npos) << bad.output;
  auto list = Flapctl("ckpt list " + root_);
  EXPECT_NE(list.output.find("DAMAGED"), std::string::npos) << list.output;
}

TEST_F(CkptCliTest, GcKeepsNewestAndBest) {
  EXPECT_EQ(Flapctl("ckpt gc " + root_ + " --keep-last 1").exit_code, 2);  // no --trial
  auto r = Flapctl("ckpt gc " + root_ + " --trial trial-7 --keep-last 1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("deleted trial-7 step 100"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(root_ + "/trial-7/000000000100"));
  EXPECT_FALSE(fs::exists(root_ + "/trial-7/000000000200"));
  EXPECT_TRUE(fs::exists(root_ + "/trial-7/000000000300"));
  EXPECT_EQ(Flapctl("ckpt verify " + root_).exit_code, 0);
}

}  // namespace
}  // namespace flap::checkpoint
