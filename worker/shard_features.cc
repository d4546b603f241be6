#include "worker/shard_features.h"

#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "sharding/shard_reader.h"
#include "worker/fbank.h"

namespace flap::worker {
namespace {

// Cache file layout: "FLAPFBC3", u64 header length, the header (JSON: shard checksum, front end,
// bins, and per clip its key, stored frames, caption strings and tags), the float32 features,
// and the XXH64 of everything before it (8 bytes, little-endian like the rest).
constexpr char kMagic[8] = {'F', 'L', 'A', 'P', 'F', 'B', 'C', '3'};

int MaxFrames(const FeatureOptions& o) { return std::max(o.target_frames, o.max_frames); }

FbankOptions FbankOf(const FeatureOptions& o) {
  FbankOptions fo;
  fo.num_mel_bins = o.num_mel_bins;
  return fo;
}

// Everything that decides the feature values, in words (hashed by FrontEndKey).
std::string FrontEndText(const FeatureOptions& o) {
  const FbankOptions f = FbankOf(o);
  char buf[384];
  std::snprintf(buf, sizeof(buf),
                "features v3; fbank sr=%d len_ms=%.17g shift_ms=%.17g bins=%d low=%.17g high=%.17g pre=%.17g dc=%d; "
                "norm mean=%.9g std=%.9g; frames target=%d max=%d",
                f.sample_rate, f.frame_length_ms, f.frame_shift_ms, f.num_mel_bins, f.low_freq, f.high_freq,
                f.preemphasis, f.remove_dc_offset ? 1 : 0, static_cast<double>(kFbankMean),
                static_cast<double>(kFbankStd), o.target_frames, MaxFrames(o));
  return buf;
}

void SetOffsets(ShardFeatures* f) {
  f->offsets.resize(f->frames.size());
  int64_t at = 0;
  for (size_t i = 0; i < f->frames.size(); ++i) {
    f->offsets[i] = at;
    at += f->frames[i];
  }
}

struct Texts {
  std::vector<std::string> keys;
  std::vector<std::vector<std::string>> text, text_augment, tags;
};

StatusOr<std::vector<std::vector<int>>> Tokenize(const sharding::TextTokenizer& tok,
                                                 const std::vector<std::string>& texts, const std::string& shard,
                                                 const std::string& key) {
  std::vector<std::vector<int>> out;
  out.reserve(texts.size());
  for (const std::string& t : texts) {
    auto ids = tok.Encode(t);
    if (!ids.ok())
      return Status::Corruption("shard '" + shard + "', sample '" + key + "': caption " + ids.status().message());
    out.push_back(std::move(*ids));
  }
  return out;
}

std::string EncodeCache(const sharding::ShardInfo& info, const FeatureOptions& options, const Texts& texts,
                        const ShardFeatures& f) {
  const std::vector<float>& specs = f.specs;
  nlohmann::json clips = nlohmann::json::array();
  for (size_t i = 0; i < texts.keys.size(); ++i) {
    clips.push_back({{"key", texts.keys[i]},
                     {"frames", f.frames[i]},
                     {"text", texts.text[i]},
                     {"text_augment", texts.text_augment[i]},
                     {"tags", texts.tags[i]}});
  }
  const nlohmann::json header = {
      {"shard_xxh64", info.xxh64}, {"front_end", FrontEndText(options)}, {"bins", f.bins}, {"clips", clips}};
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
Status DecodeCache(const std::string& bytes, const sharding::ShardInfo& info, const FeatureOptions& options,
                   Texts* texts, ShardFeatures* f) {
  if (bytes.size() < 24 || std::memcmp(bytes.data(), kMagic, 8) != 0)
    return Status::Corruption("not a feature cache file");
  uint64_t sum = 0, hlen = 0;
  std::memcpy(&sum, bytes.data() + bytes.size() - 8, 8);
  if (XXH64(bytes.data(), bytes.size() - 8, 0) != sum)
    return Status::Corruption("checksum mismatch (truncated or damaged)");
  std::memcpy(&hlen, bytes.data() + 8, 8);
  if (hlen > bytes.size() - 24) return Status::Corruption("header length out of range");
  const auto header =
      nlohmann::json::parse(bytes.begin() + 16, bytes.begin() + 16 + static_cast<std::ptrdiff_t>(hlen), nullptr, false);
  if (header.is_discarded() || !header.is_object()) return Status::Corruption("header does not parse");
  try {
    if (header.at("shard_xxh64").get<std::string>() != info.xxh64) return Status::Corruption("made for another shard");
    if (header.at("front_end").get<std::string>() != FrontEndText(options) || header.at("bins").get<int>() != f->bins) {
      return Status::Corruption("made by another front end");
    }
    const auto& clips = header.at("clips");
    for (const auto& c : clips) {
      const int frames = c.at("frames").get<int>();
      if (frames < options.target_frames || frames > MaxFrames(options))
        return Status::Corruption("clip length out of range");
      f->frames.push_back(frames);
      texts->keys.push_back(c.at("key").get<std::string>());
      texts->text.push_back(c.at("text").get<std::vector<std::string>>());
      texts->text_augment.push_back(c.at("text_augment").get<std::vector<std::string>>());
      texts->tags.push_back(c.at("tags").get<std::vector<std::string>>());
    }
  } catch (const nlohmann::json::exception& e) {
    return Status::Corruption(std::string("header field missing or mistyped: ") + e.what());
  }
  size_t total_frames = 0;
  for (int fr : f->frames) total_frames += static_cast<size_t>(fr);
  const size_t n = total_frames * static_cast<size_t>(f->bins);
  if (bytes.size() - 24 - hlen != n * sizeof(float)) return Status::Corruption("feature block has the wrong size");
  f->specs.resize(n);
  std::memcpy(f->specs.data(), bytes.data() + 16 + hlen, n * sizeof(float));
  SetOffsets(f);
  return Status::OK();
}

// Reads, decodes and computes the shard's features from its tar file.
Status ComputeFromShard(const std::string& dir, const sharding::ShardInfo& info, const FeatureOptions& options,
                        Texts* texts, ShardFeatures* f) {
  if (options.verify_checksums) FLAP_RETURN_IF_ERROR(sharding::VerifyShard(dir, info));
  FLAP_ASSIGN_OR_RETURN(std::vector<sharding::Sample> samples, sharding::ReadShard(JoinPath(dir, info.name)));
  if (static_cast<int64_t>(samples.size()) != info.num_samples) {
    return Status::Corruption("shard '" + info.name + "' holds " + std::to_string(samples.size()) +
                              " samples, the manifest says " + std::to_string(info.num_samples));
  }
  for (sharding::Sample& s : samples) {
    if (s.captions.empty()) return Status::Corruption("shard '" + info.name + "', sample '" + s.key + "': no caption");
    texts->keys.push_back(s.key);
    texts->text.push_back(std::move(s.captions));
    texts->text_augment.push_back(std::move(s.captions_augment));
    texts->tags.push_back(std::move(s.tags));
  }
  std::vector<const std::vector<float>*> audio;
  for (const sharding::Sample& s : samples) audio.push_back(&s.audio);
  ComputeClipFeatures(audio, options, f);
  return Status::OK();
}

// Reads the disk cache or computes; writes the disk cache when `write_disk`. `texts` receives
// the caption strings (for a later disk write).
StatusOr<ShardFeatures> Load(const std::string& dir, const sharding::ShardInfo& info, const FeatureOptions& options,
                             bool write_disk, Texts* texts) {
  ShardFeatures out;
  out.shard = info.name;
  out.bins = options.num_mel_bins;
  bool computed = true;
  if (!options.cache_dir.empty()) {
    const std::string path = FeatureCachePath(info, options);
    auto bytes = ReadFileToString(path);
    if (bytes.ok()) {
      Status s = DecodeCache(*bytes, info, options, texts, &out);
      if (s.ok() && static_cast<int64_t>(texts->keys.size()) == info.num_samples) {
        computed = false;
        out.from_cache = true;
      } else {
        out.cache_note = "feature cache '" + path +
                         "' ignored: " + (s.ok() ? std::string("sample count differs from the manifest") : s.message());
        *texts = Texts();
        out.specs.clear();
        out.frames.clear();
      }
    } else if (bytes.status().code() != Status::Code::kNotFound) {
      out.cache_note = "feature cache '" + path + "' unreadable: " + bytes.status().message();
    }
  }
  if (computed) {
    FLAP_RETURN_IF_ERROR(ComputeFromShard(dir, info, options, texts, &out));
    if (write_disk && !options.cache_dir.empty()) {
      Status s = MakeDirs(options.cache_dir);
      if (s.ok())
        s = WriteFileAtomic(FeatureCachePath(info, options), EncodeCache(info, options, *texts, out));
      if (!s.ok()) out.cache_note += (out.cache_note.empty() ? "" : "; ") + ("cache not written: " + s.message());
    }
  }
  return out;
}

// Tokenises the captions (augmented ones replaced from the side file) into out->clips.
Status FillClips(const sharding::ShardInfo& info, const sharding::TextTokenizer& tokenizer,
                 const FeatureOptions& options, Texts texts, ShardFeatures* out) {
  if (options.augment != nullptr) {
    for (size_t i = 0; i < texts.keys.size(); ++i) {
      auto it = options.augment->find(texts.keys[i]);
      if (it != options.augment->end()) texts.text_augment[i] = it->second;
    }
  }
  out->clips.reserve(texts.keys.size());
  for (size_t i = 0; i < texts.keys.size(); ++i) {
    Clip clip;
    clip.key = texts.keys[i];
    clip.tags = texts.tags[i];
    FLAP_ASSIGN_OR_RETURN(clip.captions, Tokenize(tokenizer, texts.text[i], info.name, clip.key));
    FLAP_ASSIGN_OR_RETURN(clip.captions_augment, Tokenize(tokenizer, texts.text_augment[i], info.name, clip.key));
    out->clips.push_back(std::move(clip));
  }
  return Status::OK();
}

}  // namespace

void ComputeClipFeatures(const std::vector<const std::vector<float>*>& audio, const FeatureOptions& options,
                         ShardFeatures* f) {
  f->bins = options.num_mel_bins;
  const Fbank fbank(FbankOf(options));
  // Each clip keeps its whole length up to max_frames, at least target_frames (padded).
  f->frames.clear();
  for (const std::vector<float>* a : audio) {
    f->frames.push_back(std::clamp(fbank.NumFrames(a->size()), options.target_frames, MaxFrames(options)));
  }
  SetOffsets(f);
  const size_t bins = static_cast<size_t>(options.num_mel_bins);
  f->specs.assign(audio.empty() ? 0 : static_cast<size_t>(f->offsets.back() + f->frames.back()) * bins, 0.0f);
  // Each clip's result lands in its own slot, so the order of threads never matters.
  const int threads = std::max(1, std::min<int>(options.threads, static_cast<int>(audio.size())));
  std::atomic<size_t> next{0};
  auto work = [&] {
    std::vector<float> buf;
    for (size_t i = next++; i < audio.size(); i = next++) {
      fbank.ComputeNormalized(audio[i]->data(), audio[i]->size(), f->frames[i], &buf);
      std::copy(buf.begin(), buf.end(),
                f->specs.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(f->offsets[i]) * bins));
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
}

std::string FrontEndKey(const FeatureOptions& options) {
  const std::string text = FrontEndText(options);
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(XXH64(text.data(), text.size(), 0)));
  return buf;
}

std::string FeatureCachePath(const sharding::ShardInfo& info, const FeatureOptions& options) {
  return JoinPath(options.cache_dir, info.xxh64 + "-" + FrontEndKey(options) + ".fbank");
}

StatusOr<ShardFeatures> LoadShardFeatures(const std::string& dir, const sharding::ShardInfo& info,
                                          const sharding::TextTokenizer& tokenizer, const FeatureOptions& options) {
  Texts texts;
  FLAP_ASSIGN_OR_RETURN(ShardFeatures out, Load(dir, info, options, /*write_disk=*/true, &texts));
  FLAP_RETURN_IF_ERROR(FillClips(info, tokenizer, options, std::move(texts), &out));
  return out;
}

// An entry is created by the first fetch of its key; later fetches wait for it to be loaded.
struct FeatureMemoryCache::Entry {
  Mutex mu;
  CondVar cv;
  bool done GUARDED_BY(mu) = false;
  Status status GUARDED_BY(mu);
  // Written under the cache's mu_ before done is set; read under it, or once done.
  std::shared_ptr<const ShardFeatures> features;
  std::string front_end;
  bool admitted = false;  // counted in the cache's bytes
};

FeatureMemoryCache& FeatureMemoryCache::Process() {
  static FeatureMemoryCache* cache = new FeatureMemoryCache();  // never destroyed: used until exit
  return *cache;
}

FeatureMemoryCache::Stats FeatureMemoryCache::stats() const {
  MutexLock lock(&mu_);
  return stats_;
}

void FeatureMemoryCache::Clear() {
  MutexLock lock(&mu_);
  for (auto it = entries_.begin(); it != entries_.end();) {
    MutexLock el(&it->second->mu);
    if (!it->second->done) {  // a fetch in flight owns it
      ++it;
      continue;
    }
    it = entries_.erase(it);
  }
  stats_ = Stats();
}

StatusOr<std::shared_ptr<const ShardFeatures>> FetchShardFeatures(const std::string& dir,
                                                                  const sharding::ShardInfo& info,
                                                                  const sharding::TextTokenizer& tokenizer,
                                                                  const FeatureOptions& options, bool* from_memory) {
  if (from_memory != nullptr) *from_memory = false;
  auto load = [&](bool write_disk, Texts* texts) -> StatusOr<ShardFeatures> {
    FLAP_ASSIGN_OR_RETURN(ShardFeatures f, Load(dir, info, options, write_disk, texts));
    FLAP_RETURN_IF_ERROR(FillClips(info, tokenizer, options, *texts, &f));
    return f;
  };
  if (options.memory_budget_bytes <= 0) {
    Texts texts;
    FLAP_ASSIGN_OR_RETURN(ShardFeatures f, load(/*write_disk=*/true, &texts));
    return std::make_shared<const ShardFeatures>(std::move(f));
  }
  FeatureMemoryCache& cache = FeatureMemoryCache::Process();
  const std::string front_end = FrontEndKey(options);
  // The captions are held as ids: the tokenizer is part of the key.
  const std::string key = dir + "\n" + info.name + "\n" + info.xxh64 + "\n" + front_end + "\n" +
                          tokenizer.identity() + (options.augment != nullptr ? "\naugment" : "");
  std::shared_ptr<FeatureMemoryCache::Entry> entry;
  bool owner = false;
  {
    MutexLock lock(&cache.mu_);
    auto& slot = cache.entries_[key];
    if (!slot) {
      slot = std::make_shared<FeatureMemoryCache::Entry>();
      slot->front_end = front_end;
      owner = true;
      ++cache.stats_.loads;
    } else {
      ++cache.stats_.hits;
    }
    entry = slot;
  }
  if (!owner) {
    MutexLock el(&entry->mu);
    while (!entry->done) entry->cv.Wait(&entry->mu);
    if (!entry->status.ok()) return entry->status;
    if (from_memory != nullptr) *from_memory = true;
    return entry->features;
  }
  // The owner loads without the cache's lock (other shards go on meanwhile).
  Texts texts;
  StatusOr<ShardFeatures> loaded = load(!options.disk_overflow_only, &texts);
  std::shared_ptr<const ShardFeatures> features;
  bool admitted = false;
  {
    MutexLock lock(&cache.mu_);
    if (loaded.ok()) {
      features = std::make_shared<const ShardFeatures>(std::move(*loaded));
      const int64_t need = features->bytes();
      // Room: unused entries of another front end go first.
      for (auto it = cache.entries_.begin();
           cache.stats_.bytes + need > options.memory_budget_bytes && it != cache.entries_.end();) {
        auto& e = it->second;
        if (e != entry && e->admitted && e->front_end != front_end && e->features.use_count() == 1) {
          cache.stats_.bytes -= e->features->bytes();
          --cache.stats_.entries;
          it = cache.entries_.erase(it);
        } else {
          ++it;
        }
      }
      admitted = cache.stats_.bytes + need <= options.memory_budget_bytes;
      entry->features = features;  // read by other fetches only under the cache's lock, or once done
      entry->admitted = admitted;
      if (admitted) {
        cache.stats_.bytes += need;
        ++cache.stats_.entries;
      } else {
        ++cache.stats_.not_admitted;
        cache.entries_.erase(key);
      }
    } else {
      cache.entries_.erase(key);  // a failure is not cached: the next fetch tries again
    }
  }
  {
    MutexLock el(&entry->mu);
    entry->done = true;
    entry->status = loaded.status();
  }
  entry->cv.SignalAll();
  if (!loaded.ok()) return loaded.status();
  if (!admitted && options.disk_overflow_only && !features->from_cache && !options.cache_dir.empty()) {
    // Beyond the memory budget: this shard is read from disk next time.
    Status s = MakeDirs(options.cache_dir);
    if (s.ok())
      s = WriteFileAtomic(FeatureCachePath(info, options), EncodeCache(info, options, texts, *features));
    if (!s.ok()) {
      auto copy = std::make_shared<ShardFeatures>(*features);
      copy->cache_note += (copy->cache_note.empty() ? "" : "; ") + ("cache not written: " + s.message());
      features = std::move(copy);
    }
  }
  return features;
}

}  // namespace flap::worker
