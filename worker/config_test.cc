#include "worker/config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

namespace flap::worker {
namespace {

std::string WriteConfig(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

Status Parse(const std::vector<std::string>& args, TrialConfig* c) {
  bool help = false;
  std::string text;
  return ParseTrialConfig(args, c, &help, &text);
}

TEST(TrialConfig, FileSectionsAndCommandLineOverrides) {
  const std::string path = WriteConfig("ok.ini",
                                       "[model]\npreset = tiny\naudio_depth = 2\n"
                                       "[mask]\nratio = 0.5\nstrategy = 1d\n"
                                       "[recon]\nweight = 0.3\n[text]\naugment = 0.25\n"
                                       "[train]\nbatch_size = 16\n");
  TrialConfig c;
  ASSERT_TRUE(Parse({"--config", path, "--mask.ratio", "0.75", "--train.seed=9"}, &c).ok());
  EXPECT_EQ(c.model.audio_depth, 2);
  EXPECT_EQ(c.model.audio_width, 192);  // from the preset
  EXPECT_DOUBLE_EQ(c.mask.ratio, 0.75);  // the flag beats the file
  EXPECT_EQ(c.mask.strategy, core::MaskStrategy::k1d);
  EXPECT_DOUBLE_EQ(c.loss.recon_weight, 0.3);
  EXPECT_DOUBLE_EQ(c.augment_prob, 0.25);
  EXPECT_EQ(c.train.batch_size, 16);
  EXPECT_EQ(c.train.seed, 9u);
}

TEST(TrialConfig, BasePresetThenOverride) {
  TrialConfig c;
  ASSERT_TRUE(Parse({"--model.preset", "base", "--model.decoder_depth", "2"}, &c).ok());
  EXPECT_EQ(c.model.audio_width, 768);
  EXPECT_EQ(c.model.decoder_depth, 2);
}

TEST(TrialConfig, UnknownKeyInFileIsNamedWithTheFile) {
  const std::string path = WriteConfig("unknown.ini", "[mask]\nratoi = 0.5\n");
  TrialConfig c;
  Status s = Parse({"--config", path}, &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("mask.ratoi"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("unknown.ini"), std::string::npos) << s.message();
}

TEST(TrialConfig, UnknownFlagIsNamed) {
  TrialConfig c;
  Status s = Parse({"--mask.rate", "0.5"}, &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("mask.rate"), std::string::npos) << s.message();
}

TEST(TrialConfig, RatioOutsideHalfOpenUnitIntervalIsRefused) {
  for (const char* bad : {"1.0", "-0.2", "1.5"}) {
    TrialConfig c;
    Status s = Parse({"--mask.ratio", bad}, &c);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_NE(s.message().find("mask.ratio"), std::string::npos) << s.message();
  }
}

TEST(TrialConfig, MalformedValuesAreNamed) {
  TrialConfig c;
  Status s = Parse({"--mask.ratio", "half"}, &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("mask.ratio"), std::string::npos);
  EXPECT_NE(s.message().find("half"), std::string::npos);
  s = Parse({"--train.batch_size", "3.5"}, &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("train.batch_size"), std::string::npos);
}

TEST(TrialConfig, UnknownStrategyAndAugmentPolicyAreRefused) {
  TrialConfig c;
  Status s = Parse({"--mask.strategy", "3d"}, &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("mask.strategy"), std::string::npos);
  s = Parse({"--text.augment", "sometimes"}, &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("text.augment"), std::string::npos);
  s = Parse({"--model.preset", "huge"}, &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("huge"), std::string::npos);
}

TEST(TrialConfig, MissingFileIsNotFound) {
  TrialConfig c;
  Status s = Parse({"--config", "/nonexistent/x.ini"}, &c);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Status::Code::kNotFound);
  EXPECT_NE(s.message().find("/nonexistent/x.ini"), std::string::npos);
}

TEST(TrialConfig, HashIgnoresOperationalKeysOnly) {
  TrialConfig a, b;
  ASSERT_TRUE(Parse({"--train.output_dir", "/tmp/a", "--train.log_every", "5"}, &a).ok());
  ASSERT_TRUE(Parse({"--train.output_dir", "/tmp/b"}, &b).ok());
  EXPECT_EQ(a.Hash(), b.Hash());
  ASSERT_TRUE(Parse({"--mask.ratio", "0.5"}, &b).ok());
  EXPECT_NE(a.Hash(), b.Hash());
  EXPECT_EQ(a.ToMap().at("mask.strategy"), "2d");
}

TEST(TrialConfig, ShippedConfigsParse) {
  for (const char* name : {"tiny.ini", "base.ini", "demo.ini"}) {
    auto c = LoadTrialConfigFile(std::string(FLAP_CONFIG_DIR) + "/" + name);
    EXPECT_TRUE(c.ok()) << name << ": " << c.status().ToString();
  }
}

}  // namespace
}  // namespace flap::worker

namespace flap::worker {
namespace {

TEST(TrialConfig, DistKeysParseAndDoNotChangeTheHash) {
  TrialConfig a, b;
  ASSERT_TRUE(Parse({}, &a).ok());
  ASSERT_TRUE(Parse({"--dist.launcher", "slurm", "--dist.backend", "gloo", "--dist.timeout", "30",
                     "--dist.bucket_mb", "0", "--dist.overlap", "false"}, &b).ok());
  EXPECT_EQ(b.dist.launcher, "slurm");
  EXPECT_EQ(b.dist.timeout, 30.0);
  EXPECT_EQ(b.dist.bucket_mb, 0.0);
  EXPECT_FALSE(b.dist.overlap);
  EXPECT_TRUE(a.dist.overlap);
  EXPECT_EQ(b.ToMap().at("dist.overlap"), "false");
  EXPECT_EQ(a.Hash(), b.Hash());
}

TEST(TrialConfig, BadDistValuesAreNamed) {
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"dist.launcher", "pbs"}, {"dist.backend", "mpi"}, {"dist.timeout", "0"},
           {"dist.bucket_mb", "-1"}, {"dist.overlap", "maybe"}}) {
    TrialConfig c;
    Status s = Parse({"--" + key, value}, &c);
    ASSERT_FALSE(s.ok()) << key;
    EXPECT_NE(s.message().find(key), std::string::npos) << s.message();
  }
}

}  // namespace
}  // namespace flap::worker
