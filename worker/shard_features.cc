#include "worker/shard_features.h"

#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include <nlohmann/json.hpp>

#include "sharding/file_util.h"
#include "sharding/shard_reader.h"
#include "worker/fbank.h"

namespace flap::worker {
namespace {

// Cache file layout: "FLAPFBC1", u64 header length, the header (JSON: shard checksum, frames,
// bins, and per clip its key and caption strings), the float32 features, and the XXH64 of
// everything before it (8 bytes, little-endian like the rest).
constexpr char kMagic[8] = {'F', 'L', 'A', 'P', 'F', 'B', 'C', '1'};

struct Texts {
  std::vector<std::string> keys;
  std::vector<std::vector<std::string>> text, text_augment;
};

StatusOr<std::vector<std::vector<int>>> Tokenize(const sharding::Tokenizer& tok,
                                                 const std::vector<std::string>& texts,
                                                 const std::string& shard, const std::string& key) {
  std::vector<std::vector<int>> out;
  out.reserve(texts.size());
  for (const std::string& t : texts) {
    std::vector<int> ids = tok.Encode(t);
    if (ids.empty()) {
      return Status::Corruption("shard '" + shard + "', sample '" + key + "': caption '" + t + "' has no tokens");
    }
    out.push_back(std::move(ids));
  }
  return out;
}

std::string EncodeCache(const sharding::ShardInfo& info, const Texts& texts, const std::vector<float>& specs,
                        int frames, int bins) {
  nlohmann::json clips = nlohmann::json::array();
  for (size_t i = 0; i < texts.keys.size(); ++i) {
    clips.push_back({{"key", texts.keys[i]}, {"text", texts.text[i]}, {"text_augment", texts.text_augment[i]}});
  }
  const nlohmann::json header = {{"shard_xxh64", info.xxh64}, {"frames", frames}, {"bins", bins}, {"clips", clips}};
  const std::string h = header.dump();
  std::string out;
  const uint64_t hlen = h.size();
  out.reserve(8 + 8 + h.size() + specs.size() * sizeof(float) + 8);
  out.append(kMagic, 8);
  out.append(reinterpret_cast<const char*>(&hlen), 8);
  out.append(h);
  out.append(reinterpret_cast<const char*>(specs.data()), specs.size() * sizeof(float));
  const uint64_t sum = XXH64(out.data(), out.size(), 0);
  out.append(reinterpret_cast<const char*>(&sum), 8);
  return out;
}

// Parses a cache file; an error explains why it cannot be used.
Status DecodeCache(const std::string& bytes, const sharding::ShardInfo& info, int frames, int bins, Texts* texts,
                   std::vector<float>* specs) {
  if (bytes.size() < 24 || std::memcmp(bytes.data(), kMagic, 8) != 0) return Status::Corruption("not a feature cache file");
  uint64_t sum = 0, hlen = 0;
  std::memcpy(&sum, bytes.data() + bytes.size() - 8, 8);
  if (XXH64(bytes.data(), bytes.size() - 8, 0) != sum) return Status::Corruption("checksum mismatch (truncated or damaged)");
  std::memcpy(&hlen, bytes.data() + 8, 8);
  if (hlen > bytes.size() - 24) return Status::Corruption("header length out of range");
  const auto header = nlohmann::json::parse(bytes.begin() + 16, bytes.begin() + 16 + static_cast<std::ptrdiff_t>(hlen),
                                            nullptr, false);
  if (header.is_discarded() || !header.is_object()) return Status::Corruption("header does not parse");
  try {
    if (header.at("shard_xxh64").get<std::string>() != info.xxh64 || header.at("frames").get<int>() != frames ||
        header.at("bins").get<int>() != bins) {
      return Status::Corruption("made for another shard or feature shape");
    }
    const auto& clips = header.at("clips");
    for (const auto& c : clips) {
      texts->keys.push_back(c.at("key").get<std::string>());
      texts->text.push_back(c.at("text").get<std::vector<std::string>>());
      texts->text_augment.push_back(c.at("text_augment").get<std::vector<std::string>>());
    }
  } catch (const nlohmann::json::exception& e) {
    return Status::Corruption(std::string("header field missing or mistyped: ") + e.what());
  }
  const size_t n = texts->keys.size() * static_cast<size_t>(frames) * static_cast<size_t>(bins);
  if (bytes.size() - 24 - hlen != n * sizeof(float)) return Status::Corruption("feature block has the wrong size");
  specs->resize(n);
  std::memcpy(specs->data(), bytes.data() + 16 + hlen, n * sizeof(float));
  return Status::OK();
}

// Reads, decodes and computes the shard's features from its tar file.
Status ComputeFromShard(const std::string& dir, const sharding::ShardInfo& info, const FeatureOptions& options,
                        Texts* texts, std::vector<float>* specs) {
  if (options.verify_checksums) FLAP_RETURN_IF_ERROR(sharding::VerifyShard(dir, info));
  FLAP_ASSIGN_OR_RETURN(std::vector<sharding::Sample> samples, sharding::ReadShard(sharding::JoinPath(dir, info.name)));
  if (static_cast<int64_t>(samples.size()) != info.num_samples) {
    return Status::Corruption("shard '" + info.name + "' holds " + std::to_string(samples.size()) +
                              " samples, the manifest says " + std::to_string(info.num_samples));
  }
  for (sharding::Sample& s : samples) {
    if (s.captions.empty()) return Status::Corruption("shard '" + info.name + "', sample '" + s.key + "': no caption");
    texts->keys.push_back(s.key);
    texts->text.push_back(std::move(s.captions));
    texts->text_augment.push_back(std::move(s.captions_augment));
  }
  FbankOptions fo;
  fo.num_mel_bins = options.num_mel_bins;
  const Fbank fbank(fo);
  const size_t per_clip = static_cast<size_t>(options.target_frames) * static_cast<size_t>(options.num_mel_bins);
  specs->assign(per_clip * samples.size(), 0.0f);
  // Each clip's result lands in its own slot, so the order of threads never matters.
  const int threads = std::max(1, std::min<int>(options.threads, static_cast<int>(samples.size())));
  std::atomic<size_t> next{0};
  auto work = [&] {
    std::vector<float> buf;
    for (size_t i = next++; i < samples.size(); i = next++) {
      fbank.ComputeNormalized(samples[i].audio.data(), samples[i].audio.size(), options.target_frames, &buf);
      std::copy(buf.begin(), buf.end(), specs->begin() + static_cast<std::ptrdiff_t>(i * per_clip));
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  return Status::OK();
}

}  // namespace

std::string FeatureCachePath(const sharding::ShardInfo& info, const FeatureOptions& options) {
  return sharding::JoinPath(options.cache_dir, info.xxh64 + "-T" + std::to_string(options.target_frames) + "-M" +
                                                   std::to_string(options.num_mel_bins) + ".fbank");
}

StatusOr<ShardFeatures> LoadShardFeatures(const std::string& dir, const sharding::ShardInfo& info,
                                          const sharding::Tokenizer& tokenizer, const FeatureOptions& options) {
  ShardFeatures out;
  out.shard = info.name;
  out.frames = options.target_frames;
  out.bins = options.num_mel_bins;
  Texts texts;
  bool computed = true;
  if (!options.cache_dir.empty()) {
    const std::string path = FeatureCachePath(info, options);
    auto bytes = sharding::ReadFileToString(path);
    if (bytes.ok()) {
      Status s = DecodeCache(*bytes, info, out.frames, out.bins, &texts, &out.specs);
      if (s.ok() && static_cast<int64_t>(texts.keys.size()) == info.num_samples) {
        computed = false;
        out.from_cache = true;
      } else {
        out.cache_note = "feature cache '" + path + "' ignored: " +
                         (s.ok() ? std::string("sample count differs from the manifest") : s.message());
        texts = Texts();
        out.specs.clear();
      }
    } else if (bytes.status().code() != Status::Code::kNotFound) {
      out.cache_note = "feature cache '" + path + "' unreadable: " + bytes.status().message();
    }
  }
  if (computed) {
    FLAP_RETURN_IF_ERROR(ComputeFromShard(dir, info, options, &texts, &out.specs));
    if (!options.cache_dir.empty()) {
      Status s = sharding::MakeDirs(options.cache_dir);
      if (s.ok()) s = sharding::WriteFileAtomic(FeatureCachePath(info, options),
                                                EncodeCache(info, texts, out.specs, out.frames, out.bins));
      if (!s.ok()) out.cache_note += (out.cache_note.empty() ? "" : "; ") + ("cache not written: " + s.message());
    }
  }
  if (options.augment != nullptr) {
    for (size_t i = 0; i < texts.keys.size(); ++i) {
      auto it = options.augment->find(texts.keys[i]);
      if (it != options.augment->end()) texts.text_augment[i] = it->second;
    }
  }
  out.clips.reserve(texts.keys.size());
  for (size_t i = 0; i < texts.keys.size(); ++i) {
    Clip clip;
    clip.key = texts.keys[i];
    FLAP_ASSIGN_OR_RETURN(clip.captions, Tokenize(tokenizer, texts.text[i], info.name, clip.key));
    FLAP_ASSIGN_OR_RETURN(clip.captions_augment, Tokenize(tokenizer, texts.text_augment[i], info.name, clip.key));
    out.clips.push_back(std::move(clip));
  }
  return out;
}

}  // namespace flap::worker
