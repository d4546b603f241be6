// A client for OpenAI-compatible chat-completions endpoints (what llama.cpp's server, vLLM and
// Ollama expose): POST <url> with {"model", "messages": [{"role": "user", "content": ...}]}
// and an optional "Authorization: Bearer <key>" header; the reply's
// choices[0].message.content is the answer. Built on libcurl.
//
// One call makes one HTTP request; retrying is the caller's policy (augment.h). Every call is
// bounded by ChatOptions::timeout_s, connecting included.
//
// Thread-safety: a ChatClient holds no mutable state after construction; Complete may run
// concurrently from many threads (each call uses its own curl handle).
#pragma once

#include <string>

#include "common/status.h"

namespace flap::sharding {

struct ChatOptions {
  std::string url;          // e.g. http://127.0.0.1:8080/v1/chat/completions
  std::string model;        // the "model" field of the request
  std::string api_key;      // empty: no Authorization header
  double timeout_s = 30.0;  // whole request, connecting included
  double connect_timeout_s = 5.0;
  int max_tokens = 128;  // "max_tokens" of the request
  double temperature = 0.7;
};

// How a call ended, for the retry policy.
enum class ChatOutcome {
  kOk,           // HTTP 200 and a parsable reply with a string content
  kTimeout,      // no complete reply within timeout_s
  kTransport,    // could not connect, connection reset, ...
  kRateLimited,  // HTTP 429
  kServerError,  // HTTP 5xx
  kClientError,  // other HTTP 4xx (bad key, bad model: retrying does not help)
  kMalformed,    // HTTP 200 but the body is not the chat-completions JSON
};
const char* ChatOutcomeName(ChatOutcome outcome);

struct ChatResult {
  ChatOutcome outcome = ChatOutcome::kOk;
  std::string content;       // kOk: the reply's text
  std::string detail;        // otherwise: what went wrong (HTTP status, curl error, body excerpt)
  double retry_after_s = 0;  // from a Retry-After header (seconds form), else 0
};

class ChatClient {
 public:
  // InvalidArgument when the URL is empty or not http(s), or timeouts are not positive.
  static StatusOr<ChatClient> Create(const ChatOptions& options);
  ChatResult Complete(const std::string& prompt) const;
  const ChatOptions& options() const { return options_; }

 private:
  explicit ChatClient(ChatOptions options) : options_(std::move(options)) {}
  ChatOptions options_;
};

}  // namespace flap::sharding
