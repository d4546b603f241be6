// The feature caches (shard_features.h, "Caches"), the stored clip length, training crops
// (batcher.h) and evaluation windows (evaluator.h).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <set>
#include <thread>

#include "common/testing/testing.h"
#include "sharding/manifest.h"
#include "sharding/synth.h"
#include "worker/batcher.h"
#include "worker/evaluator.h"
#include "worker/shard_features.h"

namespace flap::worker {
namespace {

// 3 training shards of 10 clips of 0.7 s: 68 frames each (snip_edges, 25 ms / 10 ms).
class FeatureCacheTest : public ::testing::Test {
 protected:
  static constexpr int kClipFrames = 68;
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir("feature_cache");
    const sharding::SynthOptions o = sharding::SmallSynth(30, 4, 0.7, 10);
    ASSERT_OK(sharding::GenerateSynthetic(o, Data()));
    ASSERT_OK_AND_ASSIGN(sharding::Manifest m, sharding::ReadManifest(Data()));
    shards_ = new std::vector<sharding::ShardInfo>(m.ShardsOf("train"));
    ASSERT_OK_AND_ASSIGN(sharding::TextTokenizer tok, sharding::TextTokenizer::LoadSentencePiece(Data() + "/tokenizer.model"));
    tokenizer_ = new sharding::TextTokenizer(tok);
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete shards_;
    delete dir_;
  }
  void SetUp() override { FeatureMemoryCache::Process().Clear(); }
  static std::string Data() { return *dir_ / "data"; }
  static FeatureOptions Options(int target, int max_frames) {
    FeatureOptions fo;
    fo.target_frames = target;
    fo.max_frames = max_frames;
    return fo;
  }
  static std::shared_ptr<const ShardFeatures> Fetch(size_t shard, const FeatureOptions& fo,
                                                    bool* from_memory = nullptr) {
    auto f = FetchShardFeatures(Data(), (*shards_)[shard], *tokenizer_, fo, from_memory);
    EXPECT_TRUE(f.ok()) << f.status().ToString();
    return f.ok() ? *f : nullptr;
  }

  static testing::TempDir* dir_;
  static std::vector<sharding::ShardInfo>* shards_;
  static sharding::TextTokenizer* tokenizer_;
};
testing::TempDir* FeatureCacheTest::dir_ = nullptr;
std::vector<sharding::ShardInfo>* FeatureCacheTest::shards_ = nullptr;
sharding::TextTokenizer* FeatureCacheTest::tokenizer_ = nullptr;

TEST_F(FeatureCacheTest, ClipsKeepTheirLengthUpToMaxFramesAndAtLeastTheWindow) {
  auto whole = Fetch(0, Options(32, 3000));
  auto capped = Fetch(0, Options(32, 50));
  auto first = Fetch(0, Options(32, 0));  // max 0: the window only
  auto padded = Fetch(0, Options(100, 3000));
  ASSERT_TRUE(whole && capped && first && padded);
  ASSERT_EQ(whole->size(), 10);
  for (int64_t i = 0; i < whole->size(); ++i) {
    EXPECT_EQ(whole->num_frames(i), kClipFrames);
    EXPECT_EQ(capped->num_frames(i), 50);
    EXPECT_EQ(first->num_frames(i), 32);
    EXPECT_EQ(padded->num_frames(i), 100);
    // The same frames whatever is stored: the first 32 agree bit for bit.
    EXPECT_EQ(std::memcmp(whole->spec(i), first->spec(i), sizeof(float) * 32 * 128), 0) << i;
    EXPECT_EQ(std::memcmp(whole->spec(i), padded->spec(i), sizeof(float) * kClipFrames * 128), 0) << i;
  }
  EXPECT_EQ(whole->specs.size(), static_cast<size_t>(10 * kClipFrames * 128));
}

TEST_F(FeatureCacheTest, MemoryCacheHitsMissesAndSharesOneCopy) {
  FeatureOptions fo = Options(32, 3000);
  fo.memory_budget_bytes = int64_t{1} << 30;
  bool from_memory = true;
  auto a = Fetch(0, fo, &from_memory);
  EXPECT_FALSE(from_memory);  // miss: computed
  auto b = Fetch(0, fo, &from_memory);
  EXPECT_TRUE(from_memory);  // hit: the same object, no copy
  EXPECT_EQ(a.get(), b.get());
  auto c = Fetch(1, fo, &from_memory);
  EXPECT_FALSE(from_memory);
  const auto stats = FeatureMemoryCache::Process().stats();
  EXPECT_EQ(stats.hits, 1);
  EXPECT_EQ(stats.loads, 2);
  EXPECT_EQ(stats.entries, 2);
  EXPECT_EQ(stats.bytes, a->bytes() + c->bytes());
}

TEST_F(FeatureCacheTest, AChangedFrontEndNeverReadsStaleFeatures) {
  testing::TempDir cache("feature_cache_fe");
  FeatureOptions fo = Options(32, 3000);
  fo.cache_dir = cache.path();
  fo.memory_budget_bytes = int64_t{1} << 30;
  auto a = Fetch(0, fo);
  ASSERT_TRUE(a);
  FeatureOptions bins = fo;
  bins.num_mel_bins = 64;
  FeatureOptions longer = fo;
  longer.max_frames = 40;
  EXPECT_NE(FrontEndKey(fo), FrontEndKey(bins));
  EXPECT_NE(FrontEndKey(fo), FrontEndKey(longer));
  EXPECT_NE(FeatureCachePath((*shards_)[0], fo), FeatureCachePath((*shards_)[0], longer));
  bool from_memory = true;
  auto b = Fetch(0, bins, &from_memory);
  EXPECT_FALSE(from_memory);  // another key in memory
  ASSERT_TRUE(b);
  EXPECT_EQ(b->bins, 64);
  EXPECT_FALSE(b->from_cache);

  // A disk file made by another front end, found under this one's name, is refused.
  FeatureMemoryCache::Process().Clear();
  std::filesystem::copy_file(FeatureCachePath((*shards_)[0], fo), FeatureCachePath((*shards_)[0], longer),
                             std::filesystem::copy_options::overwrite_existing);
  auto f = LoadShardFeatures(Data(), (*shards_)[0], *tokenizer_, longer);
  ASSERT_OK(f.status());
  EXPECT_FALSE(f->from_cache);
  EXPECT_NE(f->cache_note.find("another front end"), std::string::npos) << f->cache_note;
  EXPECT_EQ(f->num_frames(0), 40);
  auto again = LoadShardFeatures(Data(), (*shards_)[0], *tokenizer_, longer);  // rewritten: now a hit
  ASSERT_OK(again.status());
  EXPECT_TRUE(again->from_cache);
  EXPECT_EQ(again->specs, f->specs);
  EXPECT_EQ(again->frames, f->frames);
}

TEST_F(FeatureCacheTest, BeyondTheBudgetShardsGoToDiskInstead) {
  testing::TempDir cache("feature_cache_budget");
  FeatureOptions fo = Options(32, 3000);
  const int64_t shard_bytes = int64_t{10} * kClipFrames * 128 * 4;
  fo.memory_budget_bytes = shard_bytes + shard_bytes / 2;  // room for one shard
  fo.cache_dir = cache.path();
  fo.disk_overflow_only = true;
  ASSERT_TRUE(Fetch(0, fo));
  ASSERT_TRUE(Fetch(1, fo));
  const auto stats = FeatureMemoryCache::Process().stats();
  EXPECT_EQ(stats.entries, 1);
  EXPECT_EQ(stats.not_admitted, 1);
  EXPECT_EQ(stats.bytes, shard_bytes);
  // The admitted shard lives in memory only; the other was written to disk.
  EXPECT_FALSE(std::filesystem::exists(FeatureCachePath((*shards_)[0], fo)));
  EXPECT_TRUE(std::filesystem::exists(FeatureCachePath((*shards_)[1], fo)));
  bool from_memory = true;
  auto again = Fetch(1, fo, &from_memory);
  ASSERT_TRUE(again);
  EXPECT_FALSE(from_memory);
  EXPECT_TRUE(again->from_cache);  // read back from disk, not computed
  EXPECT_TRUE(Fetch(0, fo, &from_memory));
  EXPECT_TRUE(from_memory);
}

TEST_F(FeatureCacheTest, ConcurrentFetchesComputeEachShardOnce) {
  FeatureOptions fo = Options(32, 3000);
  fo.memory_budget_bytes = int64_t{1} << 30;
  constexpr int kThreads = 8;
  std::vector<std::vector<const ShardFeatures*>> seen(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (size_t s = 0; s < shards_->size(); ++s) {
        auto f = FetchShardFeatures(Data(), (*shards_)[(s + t) % shards_->size()], *tokenizer_, fo);
        seen[t].push_back(f.ok() ? f->get() : nullptr);
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<const ShardFeatures*> distinct;
  for (const auto& v : seen) {
    for (const ShardFeatures* p : v) {
      EXPECT_NE(p, nullptr);
      distinct.insert(p);
    }
  }
  EXPECT_EQ(distinct.size(), shards_->size());  // one object per shard, shared by every thread
  const auto stats = FeatureMemoryCache::Process().stats();
  EXPECT_EQ(stats.loads, static_cast<int64_t>(shards_->size()));
  EXPECT_EQ(stats.hits, static_cast<int64_t>(kThreads * shards_->size() - shards_->size()));
}

// Two trials sharing one cache folder (as two worker processes would, no shared memory): both
// get the features the other wrote, bit for bit, whichever wrote first.
TEST_F(FeatureCacheTest, ConcurrentTrialsShareOneDiskCache) {
  testing::TempDir cache("feature_cache_shared");
  FeatureOptions fo = Options(32, 3000);
  fo.cache_dir = cache.path();  // memory budget 0: disk only
  std::vector<std::vector<ShardFeatures>> got(2);
  std::vector<std::thread> trials;
  for (int t = 0; t < 2; ++t) {
    trials.emplace_back([&, t] {
      for (int round = 0; round < 2; ++round) {
        for (const auto& info : *shards_) {
          auto f = LoadShardFeatures(Data(), info, *tokenizer_, fo);
          EXPECT_TRUE(f.ok()) << f.status().ToString();
          EXPECT_TRUE(f->cache_note.empty()) << f->cache_note;
          if (f.ok()) got[t].push_back(std::move(*f));
        }
      }
    });
  }
  for (auto& t : trials) t.join();
  ASSERT_EQ(got[0].size(), 2 * shards_->size());
  ASSERT_EQ(got[1].size(), 2 * shards_->size());
  for (size_t i = 0; i < got[0].size(); ++i) {
    EXPECT_EQ(got[0][i].specs, got[1][i].specs) << i;
    EXPECT_TRUE(got[0][i].from_cache || i < shards_->size());  // the second round always hits
  }
}

TrialConfig CropConfig(const std::string& crop) {
  TrialConfig c;
  c.model.target_frames = 32;
  c.train.seed = 5;
  c.data.crop = crop;
  return c;
}

TEST(Crop, RandomWindowsAreSeededInRangeAndExactOnResume) {
  const TrialConfig c = CropConfig("random");
  std::set<int64_t> starts;
  for (int64_t epoch = 0; epoch < 40; ++epoch) {
    const int64_t s = CropStart(c, "clip-7", epoch, 100);
    EXPECT_GE(s, 0);
    EXPECT_LE(s, 100 - 32);
    EXPECT_EQ(s, CropStart(c, "clip-7", epoch, 100));  // a pure function: a resumed run cuts the same
    starts.insert(s);
  }
  EXPECT_GT(starts.size(), 20u);  // the window moves from epoch to epoch
  TrialConfig other = c;
  other.train.seed = 6;
  int differ = 0;
  for (int64_t epoch = 0; epoch < 10; ++epoch)
    differ += CropStart(c, "clip-7", epoch, 100) != CropStart(other, "clip-7", epoch, 100);
  EXPECT_GT(differ, 5);
  EXPECT_EQ(CropStart(c, "clip-7", 3, 32), 0);  // nothing to choose
  EXPECT_EQ(CropStart(CropConfig("first"), "clip-7", 3, 100), 0);
}

TEST(Crop, BatchesCutTheDrawnWindow) {
  const TrialConfig c = CropConfig("random");
  const int frames = 50, bins = c.model.num_mel_bins;
  std::vector<float> spec(static_cast<size_t>(frames * bins));
  for (size_t i = 0; i < spec.size(); ++i) spec[i] = static_cast<float>(i / static_cast<size_t>(bins));  // row index
  Clip clip;
  clip.key = "clip-3";
  clip.captions = {{5, 6}};
  const core::Batch b = AssembleBatch({{&clip, spec.data(), frames}}, 4, c);
  const int64_t start = CropStart(c, clip.key, 4, frames);
  ASSERT_EQ(b.spec.size(1), 32);
  for (int64_t t = 0; t < 32; ++t) EXPECT_EQ(b.spec[0][t][0].item<float>(), static_cast<float>(start + t));
}

TEST(EvalCrop, WindowsCoverTheClipAsStated) {
  EXPECT_EQ(EvalWindows(EvalCrop::kFirst, 100, 32), (std::vector<int64_t>{0}));
  EXPECT_EQ(EvalWindows(EvalCrop::kCenter, 100, 32), (std::vector<int64_t>{34}));
  EXPECT_EQ(EvalWindows(EvalCrop::kChunks, 100, 32), (std::vector<int64_t>{0, 32, 64, 68}));
  EXPECT_EQ(EvalWindows(EvalCrop::kChunks, 96, 32), (std::vector<int64_t>{0, 32, 64}));
  for (EvalCrop crop : {EvalCrop::kFirst, EvalCrop::kCenter, EvalCrop::kChunks}) {
    EXPECT_EQ(EvalWindows(crop, 32, 32), (std::vector<int64_t>{0}));
  }
  ASSERT_OK_AND_ASSIGN(EvalCrop parsed, ParseEvalCrop("chunks"));
  EXPECT_EQ(parsed, EvalCrop::kChunks);
  auto bad = ParseEvalCrop("middle");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("eval.crop"), std::string::npos);
}

}  // namespace
}  // namespace flap::worker
