// flap-worker and flapctl as a user runs them: bad input gets a clear error and an exit code,
// never a crash.
#include <gtest/gtest.h>

#include "sharding/audio.h"
#include "sharding/manifest.h"
#include "sharding/synth.h"
#include "tests/test_util.h"

namespace flap {
namespace {

using testing::RunCommand;
using testing::TempDir;

class WorkerCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("cli");
    const sharding::SynthOptions o = sharding::SmallSynth(48, 16, 1.0, 32, 64);
    ASSERT_OK(sharding::GenerateSynthetic(o, (*dir_) / "data"));
  }
  static void TearDownTestSuite() { delete dir_; }

  // A copy of the good dataset the test may damage.
  std::string CopyData(const std::string& name) {
    const std::string to = (*dir_) / name;
    std::filesystem::remove_all(to);
    std::filesystem::copy((*dir_) / "data", to);
    return to;
  }
  static std::string Train(const std::string& data, const std::string& extra = "") {
    return std::string(FLAP_WORKER_BIN) +
           " train --train.batch_size 8 --train.max_steps 2 --model.target_frames 96 --data.path " + data + " " + extra;
  }
  static TempDir* dir_;
};
TempDir* WorkerCli::dir_ = nullptr;

TEST_F(WorkerCli, TrainsAndPrintsJsonSummary) {
  auto r = RunCommand(Train((*dir_) / "data", "--train.output_dir " + (*dir_) / "out"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\"config_hash\""), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("text->audio"), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::exists((*dir_) / "out/summary.json"));
  EXPECT_TRUE(std::filesystem::exists((*dir_) / "out/model.pt"));
  auto e = RunCommand(std::string(FLAP_WORKER_BIN) + " eval --model.target_frames 96 --data.path " + (*dir_) / "data" +
                      " --model " + (*dir_) / "out/model.pt");
  ASSERT_EQ(e.exit_code, 0) << e.output;
  EXPECT_NE(e.output.find("\"num_clips\": 16"), std::string::npos) << e.output;
}

TEST_F(WorkerCli, UnknownConfigKeyIsNamed) {
  const std::string ini = (*dir_) / "bad.ini";
  testing::WriteFile(ini, "[mask]\nratio = 0.5\nstrategie = 1d\n");
  auto r = RunCommand(Train((*dir_) / "data", "--config " + ini));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("mask.strategie"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("bad.ini"), std::string::npos) << r.output;
}

TEST_F(WorkerCli, RatioOutOfRangeAndUnknownStrategyAreRefused) {
  auto r = RunCommand(Train((*dir_) / "data", "--mask.ratio 1.0"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("mask.ratio must be in [0, 1)"), std::string::npos) << r.output;
  r = RunCommand(Train((*dir_) / "data", "--mask.strategy diagonal"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("diagonal"), std::string::npos) << r.output;
}

TEST_F(WorkerCli, MissingDatasetIsNamed) {
  auto r = RunCommand(Train("/nonexistent/dataset"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/dataset"), std::string::npos) << r.output;
}

TEST_F(WorkerCli, MissingShardIsNamed) {
  const std::string data = CopyData("missing");
  std::filesystem::remove(data + "/train-000001.tar");
  auto r = RunCommand(Train(data));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("train-000001.tar"), std::string::npos) << r.output;
}

TEST_F(WorkerCli, CorruptShardIsNamed) {
  const std::string data = CopyData("corrupt");
  std::string bytes = testing::ReadFile(data + "/train-000000.tar");
  bytes[bytes.size() / 2] ^= 0x5a;
  testing::WriteFile(data + "/train-000000.tar", bytes);
  auto r = RunCommand(Train(data));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("train-000000.tar"), std::string::npos) << r.output;
}

// Replaces shard `name` of `data` with a tar built from `members` and fixes the manifest's
// size and checksum, so the damage is found by decoding, not by the checksum.
void ReplaceShard(const std::string& data, const std::string& name,
                  const std::vector<std::pair<std::string, std::string>>& members, int64_t num_samples) {
  const std::string staging = data + "/staging";
  std::filesystem::create_directories(staging);
  std::string list;
  for (const auto& [member, contents] : members) {
    testing::WriteFile(staging + "/" + member, contents);
    list += " " + member;
  }
  ASSERT_EQ(RunCommand("tar -cf " + data + "/" + name + " -C " + staging + list).exit_code, 0);
  std::filesystem::remove_all(staging);
  auto m = sharding::ReadManifest(data);
  ASSERT_OK(m);
  for (auto& s : m->shards) {
    if (s.name != name) continue;
    auto d = sharding::DescribeShard(data + "/" + name, s.split, num_samples);
    ASSERT_OK(d);
    s = *d;
  }
  ASSERT_OK(sharding::WriteManifest(data, *m));
}

TEST_F(WorkerCli, UndecodableAudioIsNamed) {
  const std::string data = CopyData("undecodable");
  ReplaceShard(data, "val-000000.tar",
               {{"clip-a.flac", "this is not audio at all"}, {"clip-a.json", R"({"text": ["a low tone"]})"}}, 1);
  auto r = RunCommand(Train(data));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("clip-a"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("val-000000.tar"), std::string::npos) << r.output;
}

TEST_F(WorkerCli, EmptyCaptionIsNamed) {
  const std::string data = CopyData("empty_caption");
  auto sample = sharding::SynthesizeSample(1, "val", 0, 1.0);
  auto wav = sharding::EncodeAudio(sample.audio, 16000, sharding::AudioFormat::kWav);
  ASSERT_OK(wav);
  ReplaceShard(data, "val-000000.tar", {{"clip-b.wav", *wav}, {"clip-b.json", R"({"text": [""]})"}}, 1);
  auto r = RunCommand(Train(data));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("clip-b"), std::string::npos) << r.output;
}

TEST(FlapctlCli, SynthWritesShardsReadableByTar) {
  TempDir dir("flapctl");
  auto r = RunCommand(std::string(FLAPCTL_BIN) + " data synth --out " + dir / "d" +
                      " --train 20 --val 5 --test 3 --shard-size 10");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto m = sharding::ReadManifest(dir / "d");
  ASSERT_OK(m);
  EXPECT_EQ(m->Splits(), (std::vector<std::string>{"train", "val", "test"}));
  EXPECT_EQ(m->NumSamples("val"), 5);
  EXPECT_EQ(m->NumSamples("test"), 3);
  auto t = RunCommand("tar -tf " + dir / "d/train-000000.tar");
  ASSERT_EQ(t.exit_code, 0) << t.output;
  EXPECT_NE(t.output.find("train-00000000.flac"), std::string::npos) << t.output;
  EXPECT_NE(t.output.find("train-00000000.json"), std::string::npos) << t.output;
  auto v = RunCommand(std::string(FLAPCTL_BIN) + " data verify " + dir / "d");
  EXPECT_EQ(v.exit_code, 0) << v.output;
  EXPECT_NE(v.output.find("test: 1 shard, 3 samples"), std::string::npos) << v.output;
}

TEST(FlapctlCli, SynthTakesEvalAsTheOldNameOfValAndTestDefaultsToValsCount) {
  TempDir dir("flapctl");
  auto r = RunCommand(std::string(FLAPCTL_BIN) + " data synth --out " + dir / "d" +
                      " --train 10 --eval 4 --shard-size 10 --clip-seconds 0.5 --vocab-size 64");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto m = sharding::ReadManifest(dir / "d");
  ASSERT_OK(m);
  EXPECT_EQ(m->NumSamples("val"), 4);
  EXPECT_EQ(m->NumSamples("test"), 4);
  EXPECT_EQ(m->NumSamples("eval"), 0);
  auto both = RunCommand(std::string(FLAPCTL_BIN) + " data synth --out " + dir / "e" + " --val 4 --eval 4");
  EXPECT_EQ(both.exit_code, 2) << both.output;
  EXPECT_NE(both.output.find("--eval"), std::string::npos) << both.output;
}

TEST(FlapctlCli, IngestRejectsFractionsOutOfRangeByName) {
  TempDir dir("flapctl");
  const std::string base = std::string(FLAPCTL_BIN) + " data ingest --format wds --out " + dir / "o" +
                           " --shards '" + dir / "none-*.tar" + "'";
  auto r = RunCommand(base + " --val-fraction 0.7 --test-fraction 0.4");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--val-fraction + --test-fraction"), std::string::npos) << r.output;
  r = RunCommand(base + " --test-fraction 1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--test-fraction must lie in [0, 1)"), std::string::npos) << r.output;
  r = RunCommand(base + " --eval-fraction 0.2 --val-fraction 0.1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--eval-fraction"), std::string::npos) << r.output;
  r = RunCommand(base + " --shuffle-seed=-3");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--shuffle-seed"), std::string::npos) << r.output;
  auto help = RunCommand(std::string(FLAPCTL_BIN) + " data ingest --help");
  EXPECT_EQ(help.exit_code, 0) << help.output;
  EXPECT_NE(help.output.find("old name of --val-fraction"), std::string::npos) << help.output;
}

}  // namespace
}  // namespace flap
