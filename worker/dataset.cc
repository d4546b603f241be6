#include "worker/dataset.h"

#include <algorithm>
#include <thread>

#include "sharding/manifest.h"

namespace flap::worker {

int64_t Dataset::num_captions() const {
  int64_t n = 0;
  for (const auto& shard : shards_) {
    for (const Clip& c : shard->clips) n += static_cast<int64_t>(c.captions.size());
  }
  return n;
}

StatusOr<Dataset> Dataset::Load(const std::string& dir, const std::string& split, const FeatureOptions& options) {
  FLAP_ASSIGN_OR_RETURN(sharding::Manifest manifest, sharding::ReadManifest(dir));
  const std::vector<sharding::ShardInfo> shards = manifest.ShardsOf(split);
  if (shards.empty()) {
    return Status::NotFound("dataset '" + dir + "' has no shards in split '" + split + "'");
  }
  FLAP_ASSIGN_OR_RETURN(sharding::Tokenizer tok, sharding::Tokenizer::Load(dir + "/" + manifest.tokenizer));
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
  return ds;
}

}  // namespace flap::worker
