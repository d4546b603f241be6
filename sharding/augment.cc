#include "sharding/augment.h"

#include <rocksdb/db.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "sharding/shard_reader.h"

namespace flap::sharding {
namespace {

std::string Trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool ValidUtf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xe ? 2 : (c >> 3) == 0x1e ? 3 : 9;
    if (n == 9 || i + n >= s.size() + (n == 0 ? 1 : 0)) return false;
    for (size_t k = 1; k <= n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    }
    i += n + 1;
  }
  return true;
}

// "the clip" -> comparable form: lower case, no trailing punctuation or spaces.
std::string Comparable(const std::string& s) {
  std::string t = Lower(Trim(s));
  while (!t.empty() &&
         (std::ispunct(static_cast<unsigned char>(t.back())) || std::isspace(static_cast<unsigned char>(t.back())))) {
    t.pop_back();
  }
  return t;
}

std::string TagList(const std::vector<std::string>& tags) {
  std::string out;
  for (const std::string& t : tags) {
    std::string x = t;
    std::replace(x.begin(), x.end(), '_', ' ');
    out += (out.empty() ? "" : ", ") + x;
  }
  return out;
}

std::string Hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

class TemplateAugmenter : public Augmenter {
 public:
  RewriteResult Rewrite(const std::string& caption, const std::vector<std::string>& tags) const override {
    std::string base = Trim(caption);
    while (!base.empty() && (base.back() == '.' || base.back() == '!')) base.pop_back();
    std::string lower = base;
    if (!lower.empty()) lower[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(lower[0])));
    const std::string key = caption + "\x1f" + TagList(tags);
    const uint64_t h = XXH64(key.data(), key.size(), 0);
    std::string out;
    if (!tags.empty()) {
      const std::string t = TagList(tags);
      switch (h % 4) {
        case 0:
          out = base + ", with " + t + " audible";
          break;
        case 1:
          out = "A recording of " + t + ": " + lower;
          break;
        case 2:
          out = base + "; the sounds are " + t;
          break;
        default:
          out = "Sounds of " + t + " as " + lower;
          break;
      }
    } else {
      switch (h % 3) {
        case 0:
          out = "A recording in which " + lower;
          break;
        case 1:
          out = "The sound of " + lower;
          break;
        default:
          out = "An audio clip where " + lower;
          break;
      }
    }
    out += ".";
    RewriteResult r;
    r.ok = true;
    r.text = out;
    return r;
  }
  nlohmann::json Describe() const override { return {{"method", "template"}}; }
  std::string CacheIdentity() const override { return "template-v1"; }
};

class ChatAugmenter : public Augmenter {
 public:
  ChatAugmenter(ChatClient client, std::string prompt, ReplyBounds bounds)
      : client_(std::move(client)), prompt_(std::move(prompt)), bounds_(bounds) {}

  RewriteResult Rewrite(const std::string& caption, const std::vector<std::string>& tags) const override {
    const std::string prompt = RenderPrompt(prompt_, caption, tags);
    ChatResult c = client_.Complete(prompt);
    RewriteResult r;
    if (c.outcome != ChatOutcome::kOk) {
      r.reason = ChatOutcomeName(c.outcome);
      r.detail = c.detail;
      r.retry_after_s = c.retry_after_s;
      r.retryable = c.outcome != ChatOutcome::kClientError;
      return r;
    }
    auto v = ValidateReply(c.content, prompt, caption, bounds_);
    if (!v.ok()) {
      r.reason = v.status().message();
      r.detail = "reply: " + (c.content.size() > 120 ? c.content.substr(0, 120) + "..." : c.content);
      r.retryable = true;
      return r;
    }
    r.ok = true;
    r.text = *v;
    return r;
  }
  nlohmann::json Describe() const override {
    return {{"method", "chat"},
            {"endpoint", client_.options().url},
            {"model", client_.options().model},
            {"prompt_xxh64", Hex64(XXH64(prompt_.data(), prompt_.size(), 0))}};
  }
  std::string CacheIdentity() const override { return "chat\x1f" + client_.options().model + "\x1f" + prompt_; }

 private:
  ChatClient client_;
  std::string prompt_;
  ReplyBounds bounds_;
};

struct ClipText {
  std::string key;
  std::vector<std::string> captions, tags;
};

StatusOr<std::map<std::string, std::vector<std::string>>> ReadTagsFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("tags file '" + path + "' cannot be opened");
  std::map<std::string, std::vector<std::string>> out;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (Trim(line).empty()) continue;
    const auto j = nlohmann::json::parse(line, nullptr, false);
    const std::string where = path + ":" + std::to_string(n);
    if (j.is_discarded() || !j.is_object() || !j.contains("key") || !j["key"].is_string() || !j.contains("tags") ||
        !j["tags"].is_array()) {
      return Status::InvalidArgument(where + ": expected {\"key\": string, \"tags\": [strings]}");
    }
    std::vector<std::string> tags;
    for (const auto& t : j["tags"]) {
      if (!t.is_string()) return Status::InvalidArgument(where + ": a tag is not a string");
      tags.push_back(t.get<std::string>());
    }
    out[j["key"].get<std::string>()] = tags;
  }
  return out;
}

}  // namespace

StatusOr<std::string> ValidateReply(const std::string& reply, const std::string& prompt, const std::string& caption,
                                    const ReplyBounds& bounds) {
  std::string t = Trim(reply);
  for (const char* q : {"\"", "'", "\xe2\x80\x9c"}) {  // "...", '...', curly quotes
    const std::string open = q, close = open == "\xe2\x80\x9c" ? "\xe2\x80\x9d" : open;
    if (t.size() >= open.size() + close.size() && t.compare(0, open.size(), open) == 0 &&
        t.compare(t.size() - close.size(), close.size(), close) == 0) {
      t = Trim(t.substr(open.size(), t.size() - open.size() - close.size()));
    }
  }
  if (t.empty()) return Status::InvalidArgument("empty reply");
  if (!ValidUtf8(t)) return Status::InvalidArgument("reply is not valid UTF-8");
  if (t.size() < bounds.min_chars)
    return Status::InvalidArgument("reply shorter than " + std::to_string(bounds.min_chars) + " characters");
  if (t.size() > bounds.max_chars)
    return Status::InvalidArgument("reply longer than " + std::to_string(bounds.max_chars) + " characters");
  const std::string p = Trim(prompt);
  if (!p.empty() && t.find(p) != std::string::npos) return Status::InvalidArgument("reply copies the prompt");
  std::string instructions = p;
  for (size_t at; !caption.empty() && (at = instructions.find(caption)) != std::string::npos;) {
    instructions.erase(at, caption.size());
  }
  if (t.size() >= 20 && instructions.find(t) != std::string::npos) {
    return Status::InvalidArgument("reply copies the prompt");
  }
  if (t.find('\n') != std::string::npos || t.find('\r') != std::string::npos) {
    return Status::InvalidArgument("reply has several lines");
  }
  if (Comparable(t) == Comparable(caption)) return Status::InvalidArgument("reply repeats the caption unchanged");
  return t;
}

std::string RenderPrompt(const std::string& prompt_template, const std::string& caption,
                         const std::vector<std::string>& tags) {
  std::string out;
  const std::string tag_text = tags.empty() ? "none" : TagList(tags);
  for (size_t i = 0; i < prompt_template.size();) {
    if (prompt_template.compare(i, 9, "{caption}") == 0) {
      out += caption;
      i += 9;
    } else if (prompt_template.compare(i, 6, "{tags}") == 0) {
      out += tag_text;
      i += 6;
    } else {
      out += prompt_template[i++];
    }
  }
  return out;
}

std::unique_ptr<Augmenter> MakeTemplateAugmenter() { return std::make_unique<TemplateAugmenter>(); }

StatusOr<std::unique_ptr<Augmenter>> MakeChatAugmenter(const ChatOptions& chat, const std::string& prompt_template,
                                                       const ReplyBounds& bounds) {
  if (prompt_template.find("{caption}") == std::string::npos) {
    return Status::InvalidArgument("the prompt template has no {caption} placeholder");
  }
  if (bounds.min_chars > bounds.max_chars) return Status::InvalidArgument("reply bounds: min above max");
  FLAP_ASSIGN_OR_RETURN(ChatClient client, ChatClient::Create(chat));
  return std::unique_ptr<Augmenter>(new ChatAugmenter(std::move(client), prompt_template, bounds));
}

nlohmann::json AugmentReport::ToJson() const {
  nlohmann::json f = nlohmann::json::array();
  for (const auto& x : failures) {
    f.push_back(
        {{"key", x.key}, {"caption", x.caption}, {"reason", x.reason}, {"detail", x.detail}, {"attempts", x.attempts}});
  }
  return {{"clips", clips},
          {"captions", captions},
          {"augmented", augmented},
          {"from_cache", from_cache},
          {"requests", requests},
          {"retries", retries},
          {"attempt_failures", attempt_failures},
          {"failed", failures.size()},
          {"failures", f}};
}

namespace {

// The captions and tags of the clips of `options.splits`, in shard order; a tags file's tags
// replace a clip's own.
StatusOr<std::vector<ClipText>> ReadClipTexts(const std::string& dataset_dir, const Manifest& manifest,
                                              const AugmentOptions& options) {
  std::map<std::string, std::vector<std::string>> tag_override;
  if (!options.tags_file.empty()) {
    FLAP_ASSIGN_OR_RETURN(tag_override, ReadTagsFile(options.tags_file));
  }
  std::vector<ClipText> clips;
  for (const std::string& split : options.splits) {
    const std::vector<ShardInfo> shards = manifest.ShardsOf(manifest.ResolveSplit(split));
    if (shards.empty()) return Status::NotFound("dataset '" + dataset_dir + "' has no shards in split '" + split + "'");
    for (const ShardInfo& info : shards) {
      FLAP_RETURN_IF_ERROR(VerifyShard(dataset_dir, info));
      FLAP_ASSIGN_OR_RETURN(auto reader, ShardReader::Open(JoinPath(dataset_dir, info.name), /*decode_audio=*/false));
      Sample s;
      for (;;) {
        FLAP_ASSIGN_OR_RETURN(bool more, reader->Next(&s));
        if (!more) break;
        ClipText c{s.key, s.captions, s.tags};
        auto it = tag_override.find(s.key);
        if (it != tag_override.end()) c.tags = it->second;
        clips.push_back(std::move(c));
      }
    }
  }
  return clips;
}

// The rewrites of every (clip, caption), from the cache or the endpoint.
struct Rewrites {
  std::vector<std::vector<std::string>> text;  // [clip][caption]
  std::vector<std::vector<bool>> done;         // a rewrite was had
};

// The augmentation cache (RocksDB): rewrites by endpoint identity, caption and tags.
class RewriteCache {
 public:
  static StatusOr<std::unique_ptr<RewriteCache>> Open(const std::string& dir, std::string identity) {
    rocksdb::Options db_options;
    db_options.create_if_missing = true;
    rocksdb::DB* raw = nullptr;
    rocksdb::Status st = rocksdb::DB::Open(db_options, dir, &raw);
    if (!st.ok()) return Status::IOError("augmentation cache '" + dir + "': " + st.ToString());
    return std::unique_ptr<RewriteCache>(new RewriteCache(dir, std::move(identity), raw));
  }
  bool Get(const ClipText& c, const std::string& caption, std::string* value) const {
    return db_->Get(rocksdb::ReadOptions(), Key(c, caption), value).ok();
  }
  Status Put(const ClipText& c, const std::string& caption, const std::string& value) {
    rocksdb::Status put = db_->Put(rocksdb::WriteOptions(), Key(c, caption), value);
    return put.ok() ? Status::OK() : Status::IOError("augmentation cache '" + dir_ + "': " + put.ToString());
  }

 private:
  RewriteCache(std::string dir, std::string identity, rocksdb::DB* db)
      : dir_(std::move(dir)), identity_(std::move(identity)), db_(db) {}
  std::string Key(const ClipText& c, const std::string& caption) const {
    std::string k = "v1\x1f" + identity_ + "\x1f" + caption + "\x1f";
    for (const std::string& t : c.tags) k += t + "\x1e";
    return k;
  }
  std::string dir_, identity_;
  std::unique_ptr<rocksdb::DB> db_;
};

// Asks the endpoint for every caption the cache lacks, `options.concurrency` at a time, with
// retries and backoff; a refused request (not retryable) or a cache write that fails ends it.
Status RewriteMissing(const std::vector<ClipText>& clips, const Augmenter& augmenter, const AugmentOptions& options,
                      RewriteCache* cache, Rewrites* out, AugmentReport* report) {
  std::vector<std::pair<size_t, size_t>> work;
  for (size_t i = 0; i < clips.size(); ++i) {
    for (size_t j = 0; j < clips[i].captions.size(); ++j) {
      if (!out->done[i][j]) work.emplace_back(i, j);
    }
  }
  std::mutex mu;
  std::atomic<size_t> next{0};
  std::atomic<bool> abort{false};
  Status fatal;  // guarded by mu
  auto worker = [&] {
    for (size_t w = next++; w < work.size() && !abort; w = next++) {
      const auto [i, j] = work[w];
      const std::string& caption = clips[i].captions[j];
      RewriteResult r;
      int attempt = 0;
      double delay = options.backoff_s;
      for (attempt = 1; attempt <= options.max_attempts && !abort; ++attempt) {
        r = augmenter.Rewrite(caption, clips[i].tags);
        {
          std::lock_guard<std::mutex> lock(mu);
          ++report->requests;
          if (attempt > 1) ++report->retries;
          if (!r.ok) ++report->attempt_failures[r.reason];
        }
        if (r.ok || !r.retryable) break;
        if (attempt < options.max_attempts) {
          const double wait = std::min(options.max_backoff_s, std::max(delay, r.retry_after_s));
          std::this_thread::sleep_for(std::chrono::duration<double>(wait));
          delay *= 2;
        }
      }
      attempt = std::min(attempt, options.max_attempts);
      if (r.ok) {
        Status put = cache->Put(clips[i], caption, r.text);
        std::lock_guard<std::mutex> lock(mu);
        if (!put.ok()) {
          fatal = put;
          abort = true;
        }
        out->text[i][j] = r.text;
        out->done[i][j] = true;
      } else {
        std::lock_guard<std::mutex> lock(mu);
        if (!r.retryable && fatal.ok()) {
          fatal = Status::FailedPrecondition("the endpoint refused a request (" + r.reason + ": " + r.detail +
                                             "); check the URL, model and key");
          abort = true;
        }
        report->failures.push_back({clips[i].key, caption, r.reason, r.detail, attempt});
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < options.concurrency; ++t) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  return fatal;
}

// The side file of the rewrites, then the manifest that names it.
Status WriteAugmentation(const std::string& dataset_dir, const Augmenter& augmenter, const AugmentOptions& options,
                         const std::vector<ClipText>& clips, const Rewrites& rewrites, Manifest manifest,
                         AugmentReport* report) {
  std::string side;
  for (size_t i = 0; i < clips.size(); ++i) {
    nlohmann::json texts = nlohmann::json::array();
    for (size_t j = 0; j < rewrites.text[i].size(); ++j) {
      if (rewrites.done[i][j]) {
        texts.push_back(rewrites.text[i][j]);
        ++report->augmented;
      }
    }
    if (!texts.empty()) side += nlohmann::json{{"key", clips[i].key}, {"text_augment", texts}}.dump() + "\n";
  }
  FLAP_RETURN_IF_ERROR(WriteFileAtomic(JoinPath(dataset_dir, kAugmentFileName), side));
  nlohmann::json made = augmenter.Describe();
  made["file"] = kAugmentFileName;
  made["splits"] = options.splits;
  made["counts"] = {{"clips", report->clips},
                    {"captions", report->captions},
                    {"augmented", report->augmented},
                    {"failed", report->failures.size()}};
  manifest.augment = made;
  return WriteManifest(dataset_dir, manifest);
}

}  // namespace

StatusOr<AugmentReport> RunAugmentation(const std::string& dataset_dir, const Augmenter& augmenter,
                                        const AugmentOptions& options) {
  if (options.concurrency < 1) return Status::InvalidArgument("concurrency must be >= 1");
  if (options.max_attempts < 1) return Status::InvalidArgument("attempts must be >= 1");
  if (!(options.backoff_s >= 0) || !(options.max_backoff_s >= 0))
    return Status::InvalidArgument("backoff must be >= 0");
  FLAP_ASSIGN_OR_RETURN(Manifest manifest, ReadManifest(dataset_dir));

  // 1. Captions and tags, in shard order.
  FLAP_ASSIGN_OR_RETURN(const std::vector<ClipText> clips, ReadClipTexts(dataset_dir, manifest, options));

  // 2. The cache: every (clip, caption) rewritten before.
  const std::string cache_dir = options.cache_dir.empty() ? JoinPath(dataset_dir, "augment-cache") : options.cache_dir;
  FLAP_ASSIGN_OR_RETURN(std::unique_ptr<RewriteCache> cache, RewriteCache::Open(cache_dir, augmenter.CacheIdentity()));
  AugmentReport report;
  report.clips = static_cast<int64_t>(clips.size());
  Rewrites rewrites;
  rewrites.text.resize(clips.size());
  rewrites.done.resize(clips.size());
  for (size_t i = 0; i < clips.size(); ++i) {
    rewrites.text[i].resize(clips[i].captions.size());
    rewrites.done[i].assign(clips[i].captions.size(), false);
    for (size_t j = 0; j < clips[i].captions.size(); ++j) {
      ++report.captions;
      std::string value;
      if (cache->Get(clips[i], clips[i].captions[j], &value)) {
        rewrites.text[i][j] = value;
        rewrites.done[i][j] = true;
        ++report.from_cache;
      }
    }
  }

  // 3. The rest from the endpoint.
  FLAP_RETURN_IF_ERROR(RewriteMissing(clips, augmenter, options, cache.get(), &rewrites, &report));
  std::sort(report.failures.begin(), report.failures.end(), [](const AugmentFailure& a, const AugmentFailure& b) {
    return std::tie(a.key, a.caption) < std::tie(b.key, b.caption);
  });
  FLAP_RETURN_IF_ERROR(WriteFileAtomic(JoinPath(dataset_dir, "augment-report.json"), report.ToJson().dump(2) + "\n"));
  if (options.fail_on_error && !report.failures.empty()) {
    std::string list;
    for (size_t k = 0; k < report.failures.size() && k < 5; ++k) {
      list += "\n  " + report.failures[k].key + " '" + report.failures[k].caption + "': " + report.failures[k].reason;
    }
    return Status::FailedPrecondition(
        std::to_string(report.failures.size()) +
        " captions failed after their retries (nothing written; see augment-report.json):" + list);
  }

  // 4. Output: the side file, then the manifest that names it.
  FLAP_RETURN_IF_ERROR(WriteAugmentation(dataset_dir, augmenter, options, clips, rewrites, manifest, &report));
  FLAP_RETURN_IF_ERROR(WriteFileAtomic(JoinPath(dataset_dir, "augment-report.json"), report.ToJson().dump(2) + "\n"));
  return report;
}

}  // namespace flap::sharding
