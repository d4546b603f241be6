#include "worker/dataset.h"

#include <algorithm>
#include <atomic>
#include <thread>

#include "sharding/manifest.h"
#include "sharding/shard_reader.h"
#include "worker/fbank.h"

namespace flap::worker {
namespace {

StatusOr<std::vector<std::vector<int>>> Tokenize(const sharding::Tokenizer& tok,
                                                 const std::vector<std::string>& texts,
                                                 const std::string& key) {
  std::vector<std::vector<int>> out;
  for (const std::string& t : texts) {
    std::vector<int> ids = tok.Encode(t);
    if (ids.empty()) return Status::Corruption("sample '" + key + "': caption '" + t + "' has no tokens");
    out.push_back(std::move(ids));
  }
  return out;
}

}  // namespace

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

  FbankOptions fo;
  fo.num_mel_bins = ds.bins_;
  const Fbank fbank(fo);
  const size_t per_clip = static_cast<size_t>(ds.frames_) * ds.bins_;
  const int max_threads = options.threads > 0
                              ? options.threads
                              : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (const sharding::ShardInfo& info : shards) {
    if (options.verify_checksums) FLAP_RETURN_IF_ERROR(sharding::VerifyShard(dir, info));
    FLAP_ASSIGN_OR_RETURN(std::vector<sharding::Sample> samples,
                          sharding::ReadShard(dir + "/" + info.name));
    if (static_cast<int64_t>(samples.size()) != info.num_samples) {
      return Status::Corruption("shard '" + info.name + "' holds " + std::to_string(samples.size()) +
                                " samples, the manifest says " + std::to_string(info.num_samples));
    }
    const size_t first = ds.clips_.size();
    for (sharding::Sample& s : samples) {
      Clip clip;
      clip.key = s.key;
      FLAP_ASSIGN_OR_RETURN(clip.captions, Tokenize(tok, s.captions, s.key));
      FLAP_ASSIGN_OR_RETURN(clip.captions_augment, Tokenize(tok, s.captions_augment, s.key));
      if (clip.captions.empty()) {
        return Status::Corruption("shard '" + info.name + "', sample '" + s.key + "': no caption");
      }
      ds.clips_.push_back(std::move(clip));
    }
    // Features of this shard in parallel (only one shard's audio is held at a time); each
    // clip's result lands in its own slot, so the order of threads never matters.
    ds.specs_.resize(per_clip * ds.clips_.size());
    const int threads = std::min<int>(max_threads, static_cast<int>(samples.size()));
    std::atomic<size_t> next{0};
    auto work = [&] {
      std::vector<float> buf;
      for (size_t i = next++; i < samples.size(); i = next++) {
        fbank.ComputeNormalized(samples[i].audio.data(), samples[i].audio.size(), ds.frames_, &buf);
        std::copy(buf.begin(), buf.end(), ds.specs_.begin() + static_cast<std::ptrdiff_t>((first + i) * per_clip));
      }
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
  }
  return ds;
}

}  // namespace flap::worker
