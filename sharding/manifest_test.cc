// Tests for sharding/manifest.h: JSON round trip, clear errors, checksums and VerifyShard.
#include "sharding/manifest.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "sharding/testing/test_util.h"
#include "common/testing/testing.h"

namespace flap::sharding {
namespace {

using testing::ReadAll;
using testing::ScratchDir;
using testing::WriteAll;

Manifest TwoSplitManifest() {
  Manifest m;
  m.name = "demo";
  m.shards = {
      {"train-000000.tar", "train", 250, 1000, "0123456789abcdef"},
      {"train-000001.tar", "train", 100, 2000, "fedcba9876543210"},
      {"eval-000000.tar", "eval", 40, 3000, "00000000000000ff"},
  };
  m.provenance = {{"generator", "test"}, {"seed", 7}};
  return m;
}

void WriteManifestJson(const std::string& dir, const std::string& text) { WriteAll(dir + "/manifest.json", text); }

void ExpectCorruptionMentioning(const StatusOr<Manifest>& m, const std::string& what) {
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Status::Code::kCorruption) << m.status().ToString();
  EXPECT_NE(m.status().message().find("manifest.json"), std::string::npos) << m.status().ToString();
  EXPECT_NE(m.status().message().find(what), std::string::npos) << m.status().ToString();
}

TEST(Manifest, WriteThenReadRoundTrips) {
  ScratchDir dir;
  const Manifest in = TwoSplitManifest();
  ASSERT_OK(WriteManifest(dir.path(), in));
  EXPECT_FALSE(std::filesystem::exists(dir.File("manifest.json.tmp")));
  auto out = ReadManifest(dir.path());
  ASSERT_OK(out);
  EXPECT_EQ(out->format_version, 1);
  EXPECT_EQ(out->name, "demo");
  EXPECT_EQ(out->sample_rate, kSampleRate);
  EXPECT_EQ(out->tokenizer, "tokenizer.model");
  ASSERT_EQ(out->shards.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(out->shards[i].name, in.shards[i].name);
    EXPECT_EQ(out->shards[i].split, in.shards[i].split);
    EXPECT_EQ(out->shards[i].num_samples, in.shards[i].num_samples);
    EXPECT_EQ(out->shards[i].bytes, in.shards[i].bytes);
    EXPECT_EQ(out->shards[i].xxh64, in.shards[i].xxh64);
  }
  EXPECT_EQ(out->provenance, in.provenance);
}

TEST(Manifest, SplitsAreQueriedInManifestOrder) {
  const Manifest m = TwoSplitManifest();
  EXPECT_EQ(m.ShardsOf("train").size(), 2u);
  EXPECT_EQ(m.ShardsOf("train")[1].name, "train-000001.tar");
  EXPECT_EQ(m.NumSamples("train"), 350);
  EXPECT_EQ(m.NumSamples("eval"), 40);
  EXPECT_EQ(m.NumSamples("test"), 0);
  EXPECT_TRUE(m.ShardsOf("test").empty());
  EXPECT_EQ(m.Splits(), (std::vector<std::string>{"train", "eval"}));
}

TEST(Manifest, ResolveSplitReadsAnOldEvalSplitAsValAndFindsNoTestInIt) {
  // Made before the roles: "eval" serves as val; there is no test split.
  const Manifest old = TwoSplitManifest();
  EXPECT_EQ(old.ResolveSplit("train"), "train");
  EXPECT_EQ(old.ResolveSplit("val"), "eval");
  EXPECT_EQ(old.ResolveSplit("eval"), "eval");
  EXPECT_EQ(old.ResolveSplit("test"), "");
  EXPECT_EQ(old.ResolveSplit("other"), "");

  // With the roles: each is itself, "eval" is no role.
  Manifest roles = TwoSplitManifest();
  roles.shards[2] = {"val-000000.tar", "val", 40, 3000, "00000000000000ff"};
  roles.shards.push_back({"test-000000.tar", "test", 30, 3000, "00000000000000fe"});
  EXPECT_EQ(roles.ResolveSplit("val"), "val");
  EXPECT_EQ(roles.ResolveSplit("test"), "test");
  EXPECT_EQ(roles.ResolveSplit("eval"), "");

  // A manifest with both reads "val" as itself.
  Manifest both = TwoSplitManifest();
  both.shards.push_back({"val-000000.tar", "val", 40, 3000, "00000000000000fd"});
  EXPECT_EQ(both.ResolveSplit("val"), "val");
  EXPECT_EQ(both.ResolveSplit("eval"), "eval");
}

TEST(Manifest, MissingManifestIsNotFound) {
  ScratchDir dir;
  auto m = ReadManifest(dir.path());
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Status::Code::kNotFound);
  EXPECT_NE(m.status().message().find("manifest.json"), std::string::npos);
}

TEST(Manifest, ErrorsNameTheFileAndTheField) {
  ScratchDir dir;
  WriteManifestJson(dir.path(), "{\"format_version\": 1,");
  ExpectCorruptionMentioning(ReadManifest(dir.path()), "not valid JSON");

  nlohmann::json j = ManifestToJson(TwoSplitManifest());
  j["shards"][1].erase("xxh64");
  WriteManifestJson(dir.path(), j.dump());
  ExpectCorruptionMentioning(ReadManifest(dir.path()), "shards[1].xxh64 is missing");

  j = ManifestToJson(TwoSplitManifest());
  j["shards"][2]["num_samples"] = "forty";
  WriteManifestJson(dir.path(), j.dump());
  ExpectCorruptionMentioning(ReadManifest(dir.path()), "shards[2].num_samples is not an integer");

  j = ManifestToJson(TwoSplitManifest());
  j["format_version"] = 9;
  WriteManifestJson(dir.path(), j.dump());
  ExpectCorruptionMentioning(ReadManifest(dir.path()), "format_version 9");

  j = ManifestToJson(TwoSplitManifest());
  j["shards"][0]["name"] = "../elsewhere.tar";
  WriteManifestJson(dir.path(), j.dump());
  ExpectCorruptionMentioning(ReadManifest(dir.path()), "shards[0].name");

  j = ManifestToJson(TwoSplitManifest());
  j["shards"][1]["name"] = "train-000000.tar";
  WriteManifestJson(dir.path(), j.dump());
  ExpectCorruptionMentioning(ReadManifest(dir.path()), "appears twice");

  j = ManifestToJson(TwoSplitManifest());
  j["shards"][0]["xxh64"] = "ABCDEF0123456789";
  WriteManifestJson(dir.path(), j.dump());
  ExpectCorruptionMentioning(ReadManifest(dir.path()), "shards[0].xxh64");
}

TEST(Manifest, WriteRejectsWhatReadWouldReject) {
  ScratchDir dir;
  Manifest m = TwoSplitManifest();
  m.shards[1].name = m.shards[0].name;
  EXPECT_EQ(WriteManifest(dir.path(), m).code(), Status::Code::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(dir.File("manifest.json")));
}

TEST(Manifest, FileXxh64IsTheXxh64OfTheBytes) {
  ScratchDir dir;
  WriteAll(dir.File("empty"), "");
  auto empty = FileXxh64(dir.File("empty"));
  ASSERT_OK(empty);
  EXPECT_EQ(empty.value(), "ef46db3751d8e999");  // XXH64("", seed 0)
  WriteAll(dir.File("a"), "hello");
  WriteAll(dir.File("b"), "hellp");
  EXPECT_NE(FileXxh64(dir.File("a")).value(), FileXxh64(dir.File("b")).value());
  EXPECT_EQ(FileXxh64(dir.File("missing")).status().code(), Status::Code::kNotFound);
}

TEST(Manifest, VerifyShardCatchesFlippedBytesAndTruncation) {
  ScratchDir dir;
  std::string data(100000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 + 7);
  WriteAll(dir.File("s.tar"), data);
  auto info = DescribeShard(dir.File("s.tar"), "train", 5);
  ASSERT_OK(info);
  EXPECT_EQ(info->name, "s.tar");
  EXPECT_EQ(info->bytes, 100000);
  EXPECT_EQ(info->num_samples, 5);
  EXPECT_OK(VerifyShard(dir.path(), info.value()));

  std::string flipped = data;
  flipped[54321] ^= 0x01;
  WriteAll(dir.File("s.tar"), flipped);
  Status s = VerifyShard(dir.path(), info.value());
  EXPECT_EQ(s.code(), Status::Code::kCorruption);
  EXPECT_NE(s.message().find("s.tar"), std::string::npos);
  EXPECT_NE(s.message().find("checksum"), std::string::npos);

  WriteAll(dir.File("s.tar"), data.substr(0, 99000));
  s = VerifyShard(dir.path(), info.value());
  EXPECT_EQ(s.code(), Status::Code::kCorruption);
  EXPECT_NE(s.message().find("99000 bytes"), std::string::npos) << s.ToString();

  std::filesystem::remove(dir.File("s.tar"));
  s = VerifyShard(dir.path(), info.value());
  EXPECT_EQ(s.code(), Status::Code::kNotFound);
  EXPECT_NE(s.message().find("s.tar"), std::string::npos);
}

}  // namespace
}  // namespace flap::sharding
