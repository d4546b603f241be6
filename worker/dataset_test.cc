// Tests for worker/dataset.h: split roles (an old dataset's "eval" read as "val", no "test" in
// it), the evaluation-set identity (key hash, counts, chance levels against hand-computed
// values) and the split-load observer.
#include "worker/dataset.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/mutex.h"
#include "common/testing/testing.h"
#include "sharding/manifest.h"
#include "sharding/shard_reader.h"
#include "sharding/synth.h"

namespace flap::worker {
namespace {

TEST(EvalSetChance, TextToAudioIsKOverClipsCappedAtOne) {
  EXPECT_DOUBLE_EQ(core::ChanceT2aRecall(20, 1), 0.05);
  EXPECT_DOUBLE_EQ(core::ChanceT2aRecall(20, 5), 0.25);
  EXPECT_DOUBLE_EQ(core::ChanceT2aRecall(20, 10), 0.5);
  EXPECT_DOUBLE_EQ(core::ChanceT2aRecall(4, 1), 0.25);
  EXPECT_DOUBLE_EQ(core::ChanceT2aRecall(4, 5), 1.0);
  EXPECT_DOUBLE_EQ(core::ChanceT2aRecall(4, 10), 1.0);
  EXPECT_DOUBLE_EQ(core::ChanceT2aRecall(0, 1), 0.0);
}

TEST(EvalSetChance, AudioToTextIsTheChanceThatOneOfTheClipsCaptionsIsDrawn) {
  // Clips with 1, 2 and 3 captions, N = 6.
  // k = 1: 1 - C(5,1)/C(6,1) = 1/6, 1 - C(4,1)/C(6,1) = 1/3, 1 - C(3,1)/C(6,1) = 1/2; mean 1/3.
  EXPECT_NEAR(core::ChanceA2tRecall({1, 2, 3}, 1), 1.0 / 3.0, 1e-12);
  // k = 5: 1 - C(5,5)/C(6,5) = 5/6; C(4,5) = C(3,5) = 0, so 1 and 1; mean 17/18.
  EXPECT_NEAR(core::ChanceA2tRecall({1, 2, 3}, 5), 17.0 / 18.0, 1e-12);
  // k = 10 >= N: every caption is in the top k.
  EXPECT_DOUBLE_EQ(core::ChanceA2tRecall({1, 2, 3}, 10), 1.0);
  // Five captions per clip (Clotho), five clips, N = 25.
  const std::vector<int64_t> clotho(5, 5);
  EXPECT_NEAR(core::ChanceA2tRecall(clotho, 1), 0.2, 1e-12);                             // 1 - 20/25
  EXPECT_NEAR(core::ChanceA2tRecall(clotho, 5), 1.0 - 15504.0 / 53130.0, 1e-12);         // 1 - C(20,5)/C(25,5)
  EXPECT_NEAR(core::ChanceA2tRecall(clotho, 10), 1.0 - 184756.0 / 3268760.0, 1e-12);     // 1 - C(20,10)/C(25,10)
  // A clip without captions is never found; one with all of them always is.
  EXPECT_DOUBLE_EQ(core::ChanceA2tRecall({0, 2}, 1), 0.5);
  EXPECT_DOUBLE_EQ(core::ChanceA2tRecall({}, 1), 0.0);
}

TEST(EvalSetIdentity, HashIsOfTheSortedKeysIn48Bits) {
  const EvalSetIdentity a = EvalSetIdentity::Of("val", "val", {"c", "a", "b"}, {1, 2, 3});
  const EvalSetIdentity b = EvalSetIdentity::Of("val", "val", {"a", "b", "c"}, {2, 3, 1});
  EXPECT_EQ(a.key_hash, b.key_hash);  // the same set in another order
  EXPECT_EQ(a.key_hash, XXH64("a\nb\nc\n", 6, 0) & 0xffffffffffffULL);
  EXPECT_NE(EvalSetIdentity::Of("val", "val", {"a", "b", "d"}, {1, 1, 1}).key_hash, a.key_hash);
  EXPECT_NE(EvalSetIdentity::Of("val", "val", {"a", "b"}, {1, 1}).key_hash, a.key_hash);
  // The empty set: XXH64 of no bytes is ef46db3751d8e999.
  const EvalSetIdentity empty = EvalSetIdentity::Of("test", "test", {}, {});
  EXPECT_EQ(empty.key_hash, 0xdb3751d8e999ULL);
  EXPECT_EQ(empty.HashHex(), "db3751d8e999");
  EXPECT_EQ(EvalSetIdentity{}.HashHex(), "000000000000");
  EXPECT_EQ(a.HashHex().size(), 12u);
  EXPECT_LT(a.key_hash, uint64_t{1} << 48);
  EXPECT_EQ(static_cast<uint64_t>(static_cast<double>(a.key_hash)), a.key_hash);  // exact in a double
}

TEST(EvalSetIdentity, RecordHoldsCountsHashAndChanceLevels) {
  const EvalSetIdentity id = EvalSetIdentity::Of("val", "val", {"x", "y", "z"}, {1, 2, 3});
  EXPECT_EQ(id.clips, 3);
  EXPECT_EQ(id.captions, 6);
  const std::map<std::string, double> r = id.ToRecord();
  std::set<std::string> names;
  for (const auto& [name, value] : r) names.insert(name);
  EXPECT_EQ(names, (std::set<std::string>{"set_clips", "set_captions", "set_hash", "chance_t2a_r1", "chance_t2a_r5",
                                          "chance_t2a_r10", "chance_a2t_r1", "chance_a2t_r5", "chance_a2t_r10"}));
  EXPECT_EQ(r.at("set_clips"), 3.0);
  EXPECT_EQ(r.at("set_captions"), 6.0);
  EXPECT_EQ(static_cast<uint64_t>(r.at("set_hash")), id.key_hash);
  EXPECT_NEAR(r.at("chance_t2a_r1"), 1.0 / 3.0, 1e-12);
  EXPECT_EQ(r.at("chance_t2a_r5"), 1.0);
  EXPECT_EQ(r.at("chance_t2a_r10"), 1.0);
  EXPECT_NEAR(r.at("chance_a2t_r1"), 1.0 / 3.0, 1e-12);
  EXPECT_NEAR(r.at("chance_a2t_r5"), 17.0 / 18.0, 1e-12);
  EXPECT_EQ(r.at("chance_a2t_r10"), 1.0);
  EXPECT_EQ(id.Describe(), "split 'val': 3 clips, 6 captions, set " + id.HashHex());
  const EvalSetIdentity old = EvalSetIdentity::Of("val", "eval", {"x"}, {1});
  EXPECT_NE(old.Describe().find("read from 'eval'"), std::string::npos) << old.Describe();
}

// Records every split Dataset::Load reads while it lives; restores the previous observer.
class LoadRecorder {
 public:
  LoadRecorder()
      : previous_(SetSplitLoadObserver([this](const std::string& dir, const std::string& split) {
          MutexLock lock(&mu_);
          loads_.emplace_back(dir, split);
        })) {}
  ~LoadRecorder() { SetSplitLoadObserver(previous_); }
  std::vector<std::pair<std::string, std::string>> loads() {
    MutexLock lock(&mu_);
    return loads_;
  }

 private:
  Mutex mu_;
  std::vector<std::pair<std::string, std::string>> loads_ GUARDED_BY(mu_);
  SplitLoadObserver previous_;
};

class DatasetSplits : public ::testing::Test {
 protected:
  // train 8, val 4, test 4 clips of 0.5 s (48 frames).
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir("dataset_splits");
    ASSERT_OK(sharding::GenerateSynthetic(sharding::SmallSynth(8, 4, 0.5, 4, 64), New()));
    // The same clips as a dataset made before val and test: "val" is called "eval", no test.
    std::filesystem::copy(New(), Old());
    ASSERT_OK_AND_ASSIGN(sharding::Manifest m, sharding::ReadManifest(Old()));
    std::vector<sharding::ShardInfo> shards;
    for (sharding::ShardInfo s : m.shards) {
      if (s.split == "test") continue;
      if (s.split == "val") s.split = "eval";
      shards.push_back(s);
    }
    m.shards = shards;
    ASSERT_OK(sharding::WriteManifest(Old(), m));
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string New() { return *dir_ / "new"; }
  static std::string Old() { return *dir_ / "old"; }
  static FeatureOptions Options() {
    FeatureOptions fo;
    fo.target_frames = 48;
    fo.threads = 1;
    return fo;
  }
  // The keys of the split's shards, read directly.
  static std::vector<std::string> Keys(const std::string& dir, const std::string& split) {
    std::vector<std::string> keys;
    auto m = sharding::ReadManifest(dir);
    EXPECT_OK(m);
    for (const sharding::ShardInfo& info : m->ShardsOf(split)) {
      auto samples = sharding::ReadShard(dir + "/" + info.name);
      EXPECT_OK(samples);
      for (const sharding::Sample& s : *samples) keys.push_back(s.key);
    }
    return keys;
  }
  static testing::TempDir* dir_;
};
testing::TempDir* DatasetSplits::dir_ = nullptr;

TEST_F(DatasetSplits, EachRoleIsItsOwnSplitAndTellsItsIdentity) {
  LoadRecorder recorder;
  ASSERT_OK_AND_ASSIGN(Dataset val, Dataset::Load(New(), "val", Options()));
  ASSERT_OK_AND_ASSIGN(Dataset test, Dataset::Load(New(), "test", Options()));
  EXPECT_EQ(recorder.loads(), (std::vector<std::pair<std::string, std::string>>{{New(), "val"}, {New(), "test"}}));

  const EvalSetIdentity& v = val.identity();
  EXPECT_EQ(v.split, "val");
  EXPECT_EQ(v.read_as, "val");
  EXPECT_EQ(v.clips, 4);
  EXPECT_EQ(v.captions, val.num_captions());
  std::vector<int64_t> per_clip;
  for (int64_t i = 0; i < val.size(); ++i) per_clip.push_back(static_cast<int64_t>(val.clip(i).captions.size()));
  const EvalSetIdentity expected = EvalSetIdentity::Of("val", "val", Keys(New(), "val"), per_clip);
  EXPECT_EQ(v.key_hash, expected.key_hash);
  EXPECT_DOUBLE_EQ(v.chance_t2a_r1, 0.25);
  EXPECT_DOUBLE_EQ(v.chance_a2t_r1, core::ChanceA2tRecall(per_clip, 1));
  EXPECT_EQ(val.Describe(), "split 'val': 4 clips, " + std::to_string(v.captions) + " captions, set " + v.HashHex());
  EXPECT_EQ(test.identity().split, "test");
  EXPECT_EQ(test.identity().clips, 4);
  EXPECT_NE(test.identity().key_hash, v.key_hash);  // other clips
}

TEST_F(DatasetSplits, OldDatasetReadsEvalAsValAndHasNoTest) {
  LoadRecorder recorder;
  ASSERT_OK_AND_ASSIGN(Dataset val, Dataset::Load(Old(), "val", Options()));
  EXPECT_EQ(val.identity().split, "val");
  EXPECT_EQ(val.identity().read_as, "eval");
  EXPECT_NE(val.Describe().find("read from 'eval'"), std::string::npos) << val.Describe();
  EXPECT_EQ(val.size(), 4);
  // The same clips as the new dataset's val: the same identity hash.
  ASSERT_OK_AND_ASSIGN(Dataset new_val, Dataset::Load(New(), "val", Options()));
  EXPECT_EQ(val.identity().key_hash, new_val.identity().key_hash);

  auto test = Dataset::Load(Old(), "test", Options());
  ASSERT_FALSE(test.ok());
  EXPECT_EQ(test.status().code(), Status::Code::kNotFound);
  EXPECT_NE(test.status().message().find(Old()), std::string::npos) << test.status().ToString();
  EXPECT_NE(test.status().message().find("'test'"), std::string::npos) << test.status().ToString();
  // The observer saw the split actually read, and no read of the missing one.
  EXPECT_EQ(recorder.loads(), (std::vector<std::pair<std::string, std::string>>{{Old(), "eval"}, {New(), "val"}}));
}

TEST_F(DatasetSplits, MissingSplitIsNotFoundNamingDatasetAndSplit) {
  auto other = Dataset::Load(New(), "eval", Options());  // a new dataset has no "eval"
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), Status::Code::kNotFound);
  EXPECT_NE(other.status().message().find(New()), std::string::npos) << other.status().ToString();
  EXPECT_NE(other.status().message().find("'eval'"), std::string::npos) << other.status().ToString();
  EXPECT_NE(other.status().message().find("train, val, test"), std::string::npos) << other.status().ToString();
}

TEST_F(DatasetSplits, ObserverCanBeRemoved) {
  int calls = 0;
  const SplitLoadObserver previous = SetSplitLoadObserver([&calls](const std::string&, const std::string&) { ++calls; });
  ASSERT_OK(Dataset::Load(New(), "train", Options()).status());
  EXPECT_EQ(calls, 1);
  SetSplitLoadObserver(nullptr);
  ASSERT_OK(Dataset::Load(New(), "train", Options()).status());
  EXPECT_EQ(calls, 1);
  SetSplitLoadObserver(previous);
}

}  // namespace
}  // namespace flap::worker
