#include "worker/dataset.h"

#include <algorithm>
#include <thread>

#include "sharding/manifest.h"

namespace flap::worker {

int64_t Dataset::num_captions() const {
  int64_t n = 0;
  for (const Clip& c : clips_) n += static_cast<int64_t>(c.captions.size());
  return n;
}

StatusOr<Dataset> Dataset::Load(const std::string& dir, const std::string& split,
                                const DatasetOptions& options) {
  FLAP_ASSIGN_OR_RETURN(sharding::Manifest manifest, sharding::ReadManifest(dir));
  const std::vector<sharding::ShardInfo> shards = manifest.ShardsOf(split);
  if (shards.empty()) {
    return Status::NotFound("dataset '" + dir + "' has no shards in split '" + split + "'");
  }
  FLAP_ASSIGN_OR_RETURN(sharding::Tokenizer tok,
                        sharding::Tokenizer::Load(dir + "/" + manifest.tokenizer));
  Dataset ds(tok);
  ds.frames_ = options.target_frames;
  ds.bins_ = options.num_mel_bins;
  FeatureOptions fo;
  fo.target_frames = options.target_frames;
  fo.num_mel_bins = options.num_mel_bins;
  fo.threads = options.threads > 0 ? options.threads
                                   : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  fo.verify_checksums = options.verify_checksums;
  fo.cache_dir = options.cache_dir;
  FLAP_ASSIGN_OR_RETURN(auto augment, sharding::ReadAugmentFile(dir, manifest));
  fo.augment = &augment;
  // One shard's audio is held at a time; its features are appended.
  for (const sharding::ShardInfo& info : shards) {
    FLAP_ASSIGN_OR_RETURN(ShardFeatures f, LoadShardFeatures(dir, info, ds.tokenizer_, fo));
    ds.specs_.insert(ds.specs_.end(), f.specs.begin(), f.specs.end());
    for (Clip& c : f.clips) ds.clips_.push_back(std::move(c));
  }
  return ds;
}

}  // namespace flap::worker
