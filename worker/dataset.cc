// Implementation of worker/dataset.h.
#include "worker/dataset.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <thread>

#include "common/mutex.h"
#include "sharding/manifest.h"

namespace flap::worker {
namespace {

Mutex observer_mu;
std::shared_ptr<const SplitLoadObserver> observer GUARDED_BY(observer_mu);  // null: none

void NotifySplitLoad(const std::string& dir, const std::string& split) {
  std::shared_ptr<const SplitLoadObserver> o;
  {
    MutexLock lock(&observer_mu);
    o = observer;
  }
  if (o) (*o)(dir, split);  // outside the lock: the observer may load or install observers
}

std::string JoinSplits(const std::vector<std::string>& splits) {
  std::string out;
  for (const std::string& s : splits) out += (out.empty() ? "" : ", ") + s;
  return out.empty() ? "none" : out;
}

}  // namespace


EvalSetIdentity EvalSetIdentity::Of(std::string split, std::string read_as, const std::vector<std::string>& keys,
                                    const std::vector<int64_t>& captions_per_clip) {
  EvalSetIdentity id;
  id.split = std::move(split);
  id.read_as = std::move(read_as);
  id.clips = static_cast<int64_t>(keys.size());
  for (int64_t m : captions_per_clip) id.captions += m;
  std::vector<std::string> sorted = keys;
  std::sort(sorted.begin(), sorted.end());
  std::string text;
  for (const std::string& k : sorted) text += k + "\n";
  id.key_hash = XXH64(text.data(), text.size(), 0) & ((uint64_t{1} << 48) - 1);
  id.chance_t2a_r1 = core::ChanceT2aRecall(id.clips, 1);
  id.chance_t2a_r5 = core::ChanceT2aRecall(id.clips, 5);
  id.chance_t2a_r10 = core::ChanceT2aRecall(id.clips, 10);
  id.chance_a2t_r1 = core::ChanceA2tRecall(captions_per_clip, 1);
  id.chance_a2t_r5 = core::ChanceA2tRecall(captions_per_clip, 5);
  id.chance_a2t_r10 = core::ChanceA2tRecall(captions_per_clip, 10);
  return id;
}

std::string EvalSetIdentity::HashHex() const {
  char buf[13];
  std::snprintf(buf, sizeof(buf), "%012llx", static_cast<unsigned long long>(key_hash));
  return buf;
}

std::string EvalSetIdentity::Describe() const {
  std::string out = "split '" + split + "'";
  if (read_as != split) {
    out += " (read from '" + read_as + "': the dataset was made before the val and test splits)";
  }
  return out + ": " + std::to_string(clips) + " clips, " + std::to_string(captions) + " captions, set " + HashHex();
}

std::map<std::string, double> EvalSetIdentity::ToRecord() const {
  return {{"set_clips", static_cast<double>(clips)},
          {"set_captions", static_cast<double>(captions)},
          {"set_hash", static_cast<double>(key_hash)},
          {"chance_t2a_r1", chance_t2a_r1},
          {"chance_t2a_r5", chance_t2a_r5},
          {"chance_t2a_r10", chance_t2a_r10},
          {"chance_a2t_r1", chance_a2t_r1},
          {"chance_a2t_r5", chance_a2t_r5},
          {"chance_a2t_r10", chance_a2t_r10}};
}

SplitLoadObserver SetSplitLoadObserver(SplitLoadObserver o) {
  std::shared_ptr<const SplitLoadObserver> next = o ? std::make_shared<const SplitLoadObserver>(std::move(o)) : nullptr;
  MutexLock lock(&observer_mu);
  std::shared_ptr<const SplitLoadObserver> previous = std::move(observer);
  observer = std::move(next);
  return previous ? *previous : SplitLoadObserver();
}

int64_t Dataset::num_captions() const {
  int64_t n = 0;
  for (const auto& shard : shards_) {
    for (const Clip& c : shard->clips) n += static_cast<int64_t>(c.captions.size());
  }
  return n;
}

Dataset Dataset::FromFeatures(sharding::TextTokenizer tokenizer, ShardFeatures features, int target_frames,
                              const std::string& name) {
  Dataset ds(std::move(tokenizer));
  ds.frames_ = target_frames;
  ds.bins_ = features.bins;
  for (size_t j = 0; j < features.clips.size(); ++j) ds.index_.emplace_back(0, j);
  ds.shards_.push_back(std::make_shared<const ShardFeatures>(std::move(features)));
  std::vector<std::string> keys;
  std::vector<int64_t> captions;
  for (int64_t i = 0; i < ds.size(); ++i) {
    keys.push_back(ds.clip(i).key);
    captions.push_back(static_cast<int64_t>(ds.clip(i).captions.size()));
  }
  ds.identity_ = EvalSetIdentity::Of(name, name, keys, captions);
  return ds;
}

StatusOr<Dataset> Dataset::Load(const std::string& dir, const std::string& split, const FeatureOptions& options) {
  FLAP_ASSIGN_OR_RETURN(sharding::Manifest manifest, sharding::ReadManifest(dir));
  const std::string read_as = manifest.ResolveSplit(split);
  if (read_as.empty()) {
    std::string why;
    if (split == sharding::kTestSplit && manifest.ResolveSplit(sharding::kValSplit) == sharding::kLegacyEvalSplit) {
      why = "; it was made before the val and test splits: its held-out split 'eval' is read as 'val'";
    }
    return Status::NotFound("dataset '" + dir + "' has no split '" + split + "'" + why +
                            " (its splits: " + JoinSplits(manifest.Splits()) + ")");
  }
  const std::vector<sharding::ShardInfo> shards = manifest.ShardsOf(read_as);
  NotifySplitLoad(dir, read_as);
  FLAP_ASSIGN_OR_RETURN(sharding::TextTokenizer tok,
                        sharding::TextTokenizer::ForDataset(dir, manifest, options.text_tokenizer));
  Dataset ds(tok);
  ds.frames_ = options.target_frames;
  ds.bins_ = options.num_mel_bins;
  FeatureOptions fo = options;
  fo.threads =
      options.threads > 0 ? options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  FLAP_ASSIGN_OR_RETURN(auto augment, sharding::ReadAugmentFile(dir, manifest));
  fo.augment = &augment;
  // One shard's audio is held at a time.
  for (const sharding::ShardInfo& info : shards) {
    FLAP_ASSIGN_OR_RETURN(auto f, FetchShardFeatures(dir, info, ds.tokenizer_, fo));
    for (size_t j = 0; j < f->clips.size(); ++j) ds.index_.emplace_back(ds.shards_.size(), j);
    ds.shards_.push_back(std::move(f));
  }
  std::vector<std::string> keys;
  std::vector<int64_t> captions;
  keys.reserve(ds.index_.size());
  captions.reserve(ds.index_.size());
  for (int64_t i = 0; i < ds.size(); ++i) {
    keys.push_back(ds.clip(i).key);
    captions.push_back(static_cast<int64_t>(ds.clip(i).captions.size()));
  }
  ds.identity_ = EvalSetIdentity::Of(split, read_as, keys, captions);
  return ds;
}

}  // namespace flap::worker
