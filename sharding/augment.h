// Caption augmentation (FLAP's third idea): each original caption of a clip is rewritten
// together with the clip's sound-event tags into a richer caption, which training may draw
// instead of the original (the `text.augment` policy).
//
// How a dataset is augmented (`flapctl data augment`):
//  1. The captions and tags of the chosen splits are read from the shards (audio is not
//     decoded). Tags come from the samples' "tags" field, or from a tags file (JSON lines
//     {"key": ..., "tags": [...]}, what `flap-worker tag` writes by zero-shot detection).
//  2. Each (caption, tags) is rewritten by an Augmenter: the offline TemplateAugmenter (the
//     default, no model needed) or a chat-completions endpoint (chat_client.h) fed a prompt
//     template (configs/augment_prompt.txt; `{caption}` and `{tags}` are replaced).
//  3. Every reply is validated (ValidateReply). Transient failures (timeouts, HTTP 429 and
//     5xx, malformed JSON, invalid replies) are retried with exponential backoff; a request
//     that still fails is recorded as failed with its reason and never becomes a caption.
//  4. Accepted captions go to a RocksDB cache keyed by (caption, tags, prompt template,
//     model), committed as each arrives, so a rerun costs nothing for what is done and a
//     killed run resumes where it stopped.
//  5. The output is a side file "text_augment.jsonl" in the dataset folder (one line per clip:
//     {"key": ..., "text_augment": [...]}, in shard order), written atomically, and an
//     "augment" section in the manifest saying how it was made (method, endpoint, model,
//     prompt hash, counts). The loader merges the side file: a listed clip's augmented
//     captions replace those in its shard. Shards are never rewritten.
//
// Thread-safety: RunAugmentation uses its own threads; Augmenter::Rewrite implementations
// must be safe to call concurrently.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"
#include "sharding/chat_client.h"
#include "sharding/manifest.h"

namespace flap::sharding {

struct ReplyBounds {
  size_t min_chars = 8;
  size_t max_chars = 400;
};

// Checks a model's reply and returns it cleaned (trimmed, surrounding quotes removed), or
// InvalidArgument saying why it is refused: empty, shorter or longer than the bounds, several
// lines, not valid UTF-8, a copy of the prompt (contains it, or the prompt contains the whole
// reply beyond the caption), or the original caption unchanged.
StatusOr<std::string> ValidateReply(const std::string& reply, const std::string& prompt, const std::string& caption,
                                    const ReplyBounds& bounds);

// `{caption}` and `{tags}` (comma-separated, underscores as spaces; "none" when empty) in
// `prompt_template` replaced.
std::string RenderPrompt(const std::string& prompt_template, const std::string& caption,
                         const std::vector<std::string>& tags);

// The outcome of one rewrite attempt.
struct RewriteResult {
  bool ok = false;
  bool retryable = false;  // worth another attempt (timeouts, 429, 5xx, bad reply)
  std::string text;        // ok: the augmented caption (already validated)
  std::string reason;      // otherwise: a short reason ("timeout", "rate_limited", "empty reply"...)
  std::string detail;
  double retry_after_s = 0;
};

class Augmenter {
 public:
  virtual ~Augmenter() = default;
  virtual RewriteResult Rewrite(const std::string& caption, const std::vector<std::string>& tags) const = 0;
  // What made the captions (recorded in the manifest and in cache keys).
  virtual nlohmann::json Describe() const = 0;
  virtual std::string CacheIdentity() const = 0;  // prompt template + model (+ method)
};

// Offline rewriting from fixed templates that weave the tags into the caption; deterministic
// in (caption, tags).
std::unique_ptr<Augmenter> MakeTemplateAugmenter();

// Rewriting through a chat-completions endpoint with `prompt_template`.
StatusOr<std::unique_ptr<Augmenter>> MakeChatAugmenter(const ChatOptions& chat, const std::string& prompt_template,
                                                       const ReplyBounds& bounds);

struct AugmentOptions {
  std::vector<std::string> splits = {"train"};  // splits whose captions are augmented
  std::string tags_file;                        // JSON lines {"key", "tags"}; empty: the samples' own tags
  std::string cache_dir;                        // RocksDB cache; empty: "<dataset>/augment-cache"
  int concurrency = 4;                          // requests in flight (>= 1)
  int max_attempts = 4;                         // per caption, the first included (>= 1)
  double backoff_s = 1.0;                       // first retry's delay; doubles each retry, capped by max_backoff_s
  double max_backoff_s = 30.0;
  bool fail_on_error = false;  // true: a caption that fails after its retries fails the run
                               // (nothing written); false: it is skipped and reported
};

struct AugmentFailure {
  std::string key, caption, reason, detail;
  int attempts = 0;
};

struct AugmentReport {
  int64_t clips = 0;                                // clips of the chosen splits
  int64_t captions = 0;                             // original captions to rewrite
  int64_t augmented = 0;                            // captions with an accepted rewrite (cached ones included)
  int64_t from_cache = 0;                           // of which already in the cache
  int64_t requests = 0;                             // rewrite attempts made in this run
  int64_t retries = 0;                              // of which retries
  std::map<std::string, int64_t> attempt_failures;  // failed attempts by reason
  std::vector<AugmentFailure> failures;             // captions left without a rewrite
  nlohmann::json ToJson() const;
};

// Augments the dataset folder `dataset_dir` as described above; writes the side file, the
// manifest's "augment" section and "augment-report.json". Errors: NotFound / Corruption for
// the dataset (naming the shard), InvalidArgument for options or a bad tags file (naming the
// line), FailedPrecondition when fail_on_error is set and captions failed (listing them), or
// when the endpoint refuses every request with a client error (a wrong key or model).
StatusOr<AugmentReport> RunAugmentation(const std::string& dataset_dir, const Augmenter& augmenter,
                                        const AugmentOptions& options);

}  // namespace flap::sharding
