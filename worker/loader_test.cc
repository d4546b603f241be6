#include "worker/loader.h"

#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <map>
#include <set>

#include "sharding/manifest.h"
#include "sharding/shard_order.h"
#include "sharding/synth.h"
#include "tests/test_util.h"

namespace flap::worker {
namespace {

// 9 training shards of 23 clips (the last holds 15): uneven, so blocks and batches straddle
// shard boundaries.
class LoaderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir("loader");
    const sharding::SynthOptions o = sharding::SmallSynth(199, 10, 0.7, 23);
    ASSERT_TRUE(sharding::GenerateSynthetic(o, Data()).ok());
    auto m = sharding::ReadManifest(Data());
    ASSERT_TRUE(m.ok());
    manifest_ = new sharding::Manifest(*m);
    auto tok = sharding::TextTokenizer::LoadSentencePiece(Data() + "/tokenizer.model");
    ASSERT_TRUE(tok.ok());
    tokenizer_ = new sharding::TextTokenizer(*tok);
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete manifest_;
    delete dir_;
  }
  static std::string Data() { return *dir_ / "data"; }

  static TrialConfig Config() {
    TrialConfig c;
    c.model.target_frames = 64;
    c.train.batch_size = 8;
    c.train.seed = 11;
    c.mask.ratio = 0.5;
    c.text.augment = "0.5";
    c.text.augment_prob = 0.5;
    return c;
  }
  static LoaderOptions Options(int threads, const std::string& cache = "", int shuffle_shards = 3) {
    LoaderOptions lo;
    lo.dataset_dir = Data();
    lo.threads = threads;
    lo.shuffle_shards = shuffle_shards;
    lo.prefetch_batches = 2;
    lo.features.target_frames = 64;
    lo.features.cache_dir = cache;
    return lo;
  }
  static std::unique_ptr<StreamingLoader> Start(const TrialConfig& c, int threads, const LoaderCursor& cursor = {},
                                                int rank = 0, int world = 1, const std::string& cache = "",
                                                int shuffle_shards = 3) {
    auto src = FixedShardSource::Create(manifest_->ShardsOf("train"), rank, world, c.train.batch_size, c.train.seed);
    EXPECT_TRUE(src.ok()) << src.status().ToString();
    auto loader =
        StreamingLoader::Start(Options(threads, cache, shuffle_shards), c, *tokenizer_, std::move(*src), cursor);
    EXPECT_TRUE(loader.ok()) << loader.status().ToString();
    return std::move(*loader);
  }
  static std::vector<LoadedBatch> Take(StreamingLoader& l, int n) {
    std::vector<LoadedBatch> out;
    for (int i = 0; i < n; ++i) {
      auto b = l.Next();
      EXPECT_TRUE(b.ok()) << b.status().ToString();
      if (!b.ok()) break;
      out.push_back(std::move(*b));
    }
    return out;
  }
  static void ExpectSameBatch(const LoadedBatch& a, const LoadedBatch& b) {
    EXPECT_EQ(a.keys, b.keys);
    EXPECT_EQ(a.epoch, b.epoch);
    EXPECT_EQ(a.step_in_epoch, b.step_in_epoch);
    EXPECT_TRUE(a.after == b.after);
    EXPECT_TRUE(at::equal(a.batch.spec, b.batch.spec));
    EXPECT_TRUE(at::equal(a.batch.tokens, b.batch.tokens));
    EXPECT_TRUE(at::equal(a.batch.keep, b.batch.keep));
  }

  static testing::TempDir* dir_;
  static sharding::Manifest* manifest_;
  static sharding::TextTokenizer* tokenizer_;
};
testing::TempDir* LoaderTest::dir_ = nullptr;
sharding::Manifest* LoaderTest::manifest_ = nullptr;
sharding::TextTokenizer* LoaderTest::tokenizer_ = nullptr;

TEST_F(LoaderTest, EpochVisitsEachSampleOnceAndOrderDiffersByEpoch) {
  const TrialConfig c = Config();
  auto l = Start(c, 2);
  ASSERT_EQ(l->steps_per_epoch(), 199 / 8);
  auto batches = Take(*l, 2 * static_cast<int>(l->steps_per_epoch()));
  std::set<std::string> epoch0, epoch1;
  std::vector<std::string> order0, order1;
  for (const auto& b : batches) {
    ASSERT_EQ(b.keys.size(), 8u);
    ASSERT_EQ(b.batch.spec.sizes(), (at::IntArrayRef{8, 64, 128}));
    for (const auto& k : b.keys) {
      (b.epoch == 0 ? epoch0 : epoch1).insert(k);
      (b.epoch == 0 ? order0 : order1).push_back(k);
    }
  }
  EXPECT_EQ(epoch0.size(), order0.size());  // no sample twice in an epoch
  EXPECT_EQ(epoch1.size(), order1.size());
  EXPECT_EQ(order0.size(), 24u * 8u);
  EXPECT_NE(order0, order1);
  EXPECT_EQ(batches.back().after, (LoaderCursor{2, 0, 0, 0, {}}));
}

TEST_F(LoaderTest, OrderAndBatchesAreTheSameWithOneAndFourThreads) {
  const TrialConfig c = Config();
  auto one = Start(c, 1);
  auto four = Start(c, 4);
  const int n = static_cast<int>(one->steps_per_epoch()) + 5;  // into the second epoch
  auto a = Take(*one, n), b = Take(*four, n);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ExpectSameBatch(a[i], b[i]);
}

TEST_F(LoaderTest, RestoredCursorContinuesWithExactlyTheSameSamples) {
  bool boundary = false;
  // Batch 8 straddles blocks of 3 shards; batch 23 with blocks of one shard of 23 ends batches
  // exactly on a block's end.
  for (auto [batch, shuffle] : {std::pair<int64_t, int>{8, 3}, {23, 1}}) {
    TrialConfig c = Config();
    c.train.batch_size = batch;
    auto full = Start(c, 2, {}, 0, 1, "", shuffle);
    const int steps = static_cast<int>(full->steps_per_epoch());
    const int n = steps + 6;
    auto reference = Take(*full, n);
    // Mid-block, at block boundaries, at the epoch boundary: every cursor resumes exactly.
    for (int cut : {0, 3, 5, steps - 1, steps, steps + 2}) {
      SCOPED_TRACE("batch " + std::to_string(batch) + ", resumed after batch " + std::to_string(cut));
      // Through JSON, as a checkpoint stores it.
      auto cursor = LoaderCursor::FromJson(reference[static_cast<size_t>(cut)].after.ToJson(), "test");
      ASSERT_TRUE(cursor.ok());
      auto resumed = Start(c, 3, *cursor, 0, 1, "", shuffle);
      auto rest = Take(*resumed, n - cut - 1);
      ASSERT_EQ(rest.size(), static_cast<size_t>(n - cut - 1));
      for (size_t i = 0; i < rest.size(); ++i) ExpectSameBatch(reference[static_cast<size_t>(cut) + 1 + i], rest[i]);
    }
    for (const auto& b : reference) boundary |= (b.after.position == 0 && b.after.shards_done > 0);
  }
  EXPECT_TRUE(boundary) << "no batch ended exactly at a block boundary: the test does not cover that cursor";
}

TEST_F(LoaderTest, CursorDerivedFromTheStepMatchesTheSavedOne) {
  const TrialConfig c = Config();
  auto full = Start(c, 1);
  auto reference = Take(*full, 12);
  const LoaderCursor& saved = reference[6].after;
  auto derived = Start(c, 1, LoaderCursor{saved.epoch, -1, 0, saved.step_in_epoch, {}});
  auto rest = Take(*derived, 5);
  for (size_t i = 0; i < rest.size(); ++i) ExpectSameBatch(reference[7 + i], rest[i]);
}

TEST_F(LoaderTest, CursorOfAnotherRunIsRefused) {
  const TrialConfig c = Config();
  LoaderCursor bad{0, 3, 2, 3, {"train-000999.tar"}};
  auto l = Start(c, 1, bad);
  auto b = l->Next();
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("differs from this rank's shards"), std::string::npos) << b.status().ToString();
  EXPECT_FALSE(l->Next().ok());  // sticky
  auto src = FixedShardSource::Create(manifest_->ShardsOf("train"), 0, 1, 8, 1);
  ASSERT_TRUE(src.ok());
  auto out_of_range =
      StreamingLoader::Start(Options(1), c, *tokenizer_, std::move(*src), LoaderCursor{0, 0, 0, 999, {}});
  EXPECT_FALSE(out_of_range.ok());
  EXPECT_FALSE(LoaderCursor::FromJson({{"epoch", 1}}, "ckpt").ok());
}

TEST_F(LoaderTest, RanksSplitShardsWithoutOverlapAndShareStepsPerEpoch) {
  const TrialConfig c = Config();
  std::set<std::string> all;
  int64_t steps = -1;
  for (int r = 0; r < 3; ++r) {
    auto src = FixedShardSource::Create(manifest_->ShardsOf("train"), r, 3, 8, 11);
    ASSERT_TRUE(src.ok());
    for (const auto& s : (*src)->shards()) EXPECT_TRUE(all.insert(s.name).second) << s.name << " on two ranks";
    if (steps < 0) steps = (*src)->StepsPerEpoch();
    EXPECT_EQ((*src)->StepsPerEpoch(), steps);
    auto l = Start(c, 1, {}, r, 3);
    auto batches = Take(*l, static_cast<int>(steps));
    std::set<std::string> mine;
    for (const auto& s : (*src)->shards()) {
      for (int64_t i = 0; i < s.num_samples; ++i) mine.insert(s.name);
    }
    for (const auto& b : batches) {
      for (const auto& k : b.keys) {
        const int index = std::stoi(k.substr(k.find('-') + 1));
        const std::string shard =
            "train-" + std::string(6 - std::to_string(index / 23).size(), '0') + std::to_string(index / 23) + ".tar";
        EXPECT_TRUE(mine.count(shard)) << k << " read by rank " << r << " which does not own " << shard;
      }
    }
  }
  EXPECT_EQ(all.size(), manifest_->ShardsOf("train").size());
  // Shards 0,3,6 | 1,4,7 | 2,5,8 (the last has 15 clips): rank 2 has 61 clips, 7 batches.
  EXPECT_EQ(steps, 61 / 8);
  EXPECT_FALSE(FixedShardSource::Create(manifest_->ShardsOf("train"), 0, 10, 8, 1).ok());
  EXPECT_FALSE(FixedShardSource::Create(manifest_->ShardsOf("train"), 0, 9, 32, 1).ok());
}

// The order of any group size (LoaderOptions::slice): three loaders of 4 over one fixed source
// of a group of one, each keeping its slice of a global batch of 12, yield together the batches
// (keys, spectrograms, masks) of one loader of 12, step by step across an epoch's end, with its
// cursors; a cursor taken from slice 0 places every slice, and a one-loader run, alike.
TEST_F(LoaderTest, SlicesOfOneOrderTogetherAreTheBatchesOfOneLoader) {
  TrialConfig whole = Config();
  whole.train.batch_size = 12;
  TrialConfig part = whole;
  part.train.batch_size = 4;
  const auto start = [&](const TrialConfig& c, int slice, int slices, const LoaderCursor& cursor) {
    auto src = FixedShardSource::Create(manifest_->ShardsOf("train"), 0, 1, 12, c.train.seed);
    EXPECT_TRUE(src.ok()) << src.status().ToString();
    LoaderOptions o = Options(1);
    o.slice = slice;
    o.slices = slices;
    auto loader = StreamingLoader::Start(o, c, *tokenizer_, std::move(*src), cursor);
    EXPECT_TRUE(loader.ok()) << loader.status().ToString();
    return std::move(*loader);
  };
  auto one = start(whole, 0, 1, {});
  const int n = static_cast<int>(one->steps_per_epoch()) + 3;  // into the second epoch
  const auto want = Take(*one, n);
  std::vector<std::vector<LoadedBatch>> got;
  for (int r = 0; r < 3; ++r) {
    auto l = start(part, r, 3, {});
    EXPECT_EQ(l->steps_per_epoch(), one->steps_per_epoch());
    got.push_back(Take(*l, n));
  }
  ASSERT_EQ(want.size(), static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const LoadedBatch& w = want[static_cast<size_t>(i)];
    std::vector<std::string> keys;
    std::vector<at::Tensor> specs;
    for (int r = 0; r < 3; ++r) {
      const LoadedBatch& g = got[static_cast<size_t>(r)][static_cast<size_t>(i)];
      ASSERT_EQ(g.keys.size(), 4u);
      keys.insert(keys.end(), g.keys.begin(), g.keys.end());
      specs.push_back(g.batch.spec);
      EXPECT_EQ(g.epoch, w.epoch);
      EXPECT_EQ(g.step_in_epoch, w.step_in_epoch);
      EXPECT_TRUE(g.after == w.after) << "step " << i << " slice " << r;
    }
    EXPECT_EQ(keys, w.keys) << "step " << i;
    EXPECT_TRUE(at::equal(at::cat(specs), w.batch.spec)) << "step " << i;
  }
  // Resumed from a slice's cursor mid-epoch, each slice goes on as the whole does.
  const LoaderCursor mid = got[0][4].after;
  auto resumed_one = start(whole, 0, 1, mid);
  auto resumed_two = start(part, 2, 3, mid);
  const auto a = Take(*resumed_one, 3), b = Take(*resumed_two, 3);
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    EXPECT_EQ(std::vector<std::string>(a[i].keys.begin() + 8, a[i].keys.end()), b[i].keys);
  }
  LoaderOptions bad = Options(1);
  bad.slice = 3;
  bad.slices = 3;
  auto src = FixedShardSource::Create(manifest_->ShardsOf("train"), 0, 1, 12, part.train.seed);
  ASSERT_TRUE(src.ok());
  EXPECT_FALSE(StreamingLoader::Start(bad, part, *tokenizer_, std::move(*src), {}).ok());
}

TEST_F(LoaderTest, FeatureCacheGivesIdenticalBatchesAndSkipsDecoding) {
  const TrialConfig c = Config();
  testing::TempDir cache("loader_cache");
  auto plain = Start(c, 2);
  auto first = Start(c, 2, {}, 0, 1, cache.path());
  const int n = 10;
  auto a = Take(*plain, n), b = Take(*first, n);
  for (int i = 0; i < n; ++i) ExpectSameBatch(a[static_cast<size_t>(i)], b[static_cast<size_t>(i)]);
  first.reset();  // joins: its prefetched shards are written too
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(cache.path())) files += e.path().extension() == ".fbank";
  EXPECT_GE(files, 3);
  auto second = Start(c, 2, {}, 0, 1, cache.path());
  auto d = Take(*second, n);
  for (int i = 0; i < n; ++i) ExpectSameBatch(a[static_cast<size_t>(i)], d[static_cast<size_t>(i)]);
  EXPECT_GE(second->stats().shards_cached, 3);

  // A damaged cache file is ignored (and said so), never trusted.
  auto shard0 = manifest_->ShardsOf("train")[0];
  LoaderOptions lo = Options(1, cache.path());
  const std::string path = FeatureCachePath(shard0, lo.features);
  ASSERT_TRUE(std::filesystem::exists(path));
  std::string bytes = testing::ReadFile(path);
  bytes[bytes.size() / 2] ^= 0x5a;
  testing::WriteFile(path, bytes);
  auto f = LoadShardFeatures(Data(), shard0, *tokenizer_, lo.features);
  ASSERT_TRUE(f.ok());
  EXPECT_FALSE(f->from_cache);
  EXPECT_NE(f->cache_note.find("checksum mismatch"), std::string::npos) << f->cache_note;
  auto again = LoadShardFeatures(Data(), shard0, *tokenizer_, lo.features);  // rewritten
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->from_cache);
  EXPECT_EQ(again->specs, f->specs);
}

TEST_F(LoaderTest, DamagedShardIsReportedByNameThroughNext) {
  testing::TempDir copy("loader_damaged");
  std::filesystem::copy(Data(), copy.path(), std::filesystem::copy_options::recursive);
  auto shards = manifest_->ShardsOf("train");
  std::string bytes = testing::ReadFile(copy / shards[4].name);
  bytes.resize(bytes.size() / 2);
  testing::WriteFile(copy / shards[4].name, bytes);
  const TrialConfig c = Config();
  auto src = FixedShardSource::Create(shards, 0, 1, 8, c.train.seed);
  ASSERT_TRUE(src.ok());
  LoaderOptions lo = Options(2);
  lo.dataset_dir = copy.path();
  auto l = StreamingLoader::Start(lo, c, *tokenizer_, std::move(*src));
  ASSERT_TRUE(l.ok());
  Status error;
  for (int i = 0; i < 30 && error.ok(); ++i) {
    auto b = (*l)->Next();
    if (!b.ok()) error = b.status();
  }
  ASSERT_FALSE(error.ok()) << "the damaged shard was never read";
  EXPECT_NE(error.message().find(shards[4].name), std::string::npos) << error.ToString();
}

// The shard of a clip of this fixture (23 clips per shard, keys "train-<index>").
int ShardOfKey(const std::string& key) { return std::stoi(key.substr(key.find('-') + 1)) / 23; }

// The fixed source's shards of `epoch`, in reading order.
std::vector<std::string> ShardOrder(FixedShardSource& src, int64_t epoch) {
  std::vector<std::string> names;
  for (int64_t i = 0;; ++i) {
    auto s = src.ShardAt(epoch, i);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    if (!s.ok() || !s->has_value()) break;
    names.push_back((*s)->name);
  }
  return names;
}

TEST_F(LoaderTest, TwoSeedsGiveDifferentShardOrdersEachCoveringEveryShardOnce) {
  const auto split = manifest_->ShardsOf("train");
  std::set<std::string> all;
  for (const auto& s : split) all.insert(s.name);
  std::map<std::pair<uint64_t, int64_t>, std::vector<std::string>> orders;
  for (uint64_t seed : {11, 12}) {
    auto src = FixedShardSource::Create(split, 0, 1, 8, seed);
    ASSERT_TRUE(src.ok());
    for (int64_t epoch : {0, 1}) {
      const auto order = ShardOrder(**src, epoch);
      EXPECT_EQ(order.size(), split.size()) << "seed " << seed << ", epoch " << epoch;
      EXPECT_EQ(std::set<std::string>(order.begin(), order.end()), all) << "seed " << seed << ", epoch " << epoch;
      orders[{seed, epoch}] = order;
    }
  }
  const auto& seed11 = orders[{11, 0}];
  const auto& seed12 = orders[{12, 0}];
  const auto& seed11_epoch1 = orders[{11, 1}];
  const auto& seed12_epoch1 = orders[{12, 1}];
  EXPECT_NE(seed11, seed12);
  EXPECT_NE(seed11_epoch1, seed12_epoch1);
  EXPECT_NE(seed11, seed11_epoch1);
  // The order the coordinator leases the split in to a trial of the seed (the same function).
  std::vector<std::string> names;
  for (const auto& s : split) names.push_back(s.name);
  for (const auto& [key, order] : orders) {
    std::vector<std::string> leased;
    for (size_t i : sharding::EpochShardOrder(key.first, key.second, names)) leased.push_back(names[i]);
    EXPECT_EQ(order, leased) << "seed " << key.first << ", epoch " << key.second;
  }

  // The loader reads the blocks in that order, so which shards are mixed together changes with
  // the seed: the first block's shards are the first three of the order.
  for (uint64_t seed : {11, 12}) {
    TrialConfig c = Config();
    c.train.seed = seed;
    auto l = Start(c, 1);
    auto batches = Take(*l, 2);
    ASSERT_EQ(batches.size(), 2u);
    const auto& order = orders[{seed, 0}];
    const std::set<std::string> first_block(order.begin(), order.begin() + 3);
    for (const auto& b : batches) {
      for (const auto& k : b.keys) EXPECT_TRUE(first_block.count(split[static_cast<size_t>(ShardOfKey(k))].name)) << k;
    }
  }
}

TEST_F(LoaderTest, ArmsOfOneSeedReadTheSameSamplesInTheSameOrder) {
  // Two arms of a sweep: the same seed, other mask ratio, strategy, learning rate and caption
  // policy. They read the same samples in the same batches, every epoch: a paired comparison.
  const TrialConfig a = Config();
  TrialConfig b = Config();
  b.mask.ratio = 0.75;
  b.mask.strategy = core::MaskStrategy::k1d;
  b.optim.lr = 3e-3;
  b.text.augment = "off";
  b.text.augment_prob = 0.0;
  auto la = Start(a, 1), lb = Start(b, 2);
  const int n = 2 * static_cast<int>(la->steps_per_epoch());
  auto ba = Take(*la, n), bb = Take(*lb, n);
  ASSERT_EQ(ba.size(), bb.size());
  for (size_t i = 0; i < ba.size(); ++i) {
    EXPECT_EQ(ba[i].keys, bb[i].keys) << "batch " << i;
    EXPECT_TRUE(ba[i].after == bb[i].after) << "batch " << i;
  }
  EXPECT_FALSE(at::equal(ba[0].batch.keep, bb[0].batch.keep));  // the arms do differ
  // Another seed reads other batches.
  TrialConfig other = Config();
  other.train.seed = 12;
  auto lo = Start(other, 1);
  auto bo = Take(*lo, 3);
  ASSERT_EQ(bo.size(), 3u);
  EXPECT_NE(ba[0].keys, bo[0].keys);
}

TEST_F(LoaderTest, ABlocksSamplesAreMixedAcrossItsShards) {
  const TrialConfig c = Config();
  auto l = Start(c, 1);
  const int steps = static_cast<int>(l->steps_per_epoch());
  auto batches = Take(*l, steps);
  int mixed = 0;
  for (const auto& b : batches) {
    std::set<int> shards;
    for (const auto& k : b.keys) shards.insert(ShardOfKey(k));
    mixed += shards.size() >= 2;
  }
  // Blocks of 3 shards of 23 clips: a batch of 8 drawn from the block's mixed samples comes from
  // one shard alone with probability about 3 x (1/3)^8; read shard by shard, most would.
  EXPECT_GE(mixed, steps - 1) << mixed << " of " << steps << " batches mix shards";
}

}  // namespace
}  // namespace flap::worker

namespace flap::worker {
namespace {

TEST_F(LoaderTest, SideFileAugmentedCaptionsReplaceTheShards) {
  auto shard = manifest_->ShardsOf("train")[0];
  std::map<std::string, std::vector<std::string>> side = {{"train-00000001", {"a dog barks in the rain"}}};
  FeatureOptions fo;
  fo.target_frames = 64;
  fo.augment = &side;
  auto f = LoadShardFeatures(Data(), shard, *tokenizer_, fo);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  fo.augment = nullptr;
  auto plain = LoadShardFeatures(Data(), shard, *tokenizer_, fo);
  ASSERT_TRUE(plain.ok());
  ASSERT_EQ(f->clips[1].key, "train-00000001");
  ASSERT_EQ(f->clips[1].captions_augment.size(), 1u);
  EXPECT_EQ(f->clips[1].captions_augment[0], *tokenizer_->Encode("a dog barks in the rain"));
  EXPECT_EQ(f->clips[1].captions, plain->clips[1].captions);                  // originals untouched
  EXPECT_EQ(f->clips[0].captions_augment, plain->clips[0].captions_augment);  // unlisted clip
  EXPECT_NE(f->clips[1].captions_augment, plain->clips[1].captions_augment);
}

}  // namespace
}  // namespace flap::worker
