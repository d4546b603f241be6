#include "sharding/chat_client.h"

#include <curl/curl.h>

#include <cstdlib>
#include <mutex>

#include <nlohmann/json.hpp>

namespace flap::sharding {
namespace {

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

size_t Append(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

size_t Header(char* data, size_t size, size_t n, void* out) {
  std::string line(data, size * n);
  const std::string name = "retry-after:";
  if (line.size() > name.size()) {
    std::string head = line.substr(0, name.size());
    for (char& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (head == name) *static_cast<double*>(out) = std::atof(line.c_str() + name.size());
  }
  return size * n;
}

std::string Excerpt(const std::string& s) { return s.size() > 200 ? s.substr(0, 200) + "..." : s; }

}  // namespace

const char* ChatOutcomeName(ChatOutcome outcome) {
  switch (outcome) {
    case ChatOutcome::kOk:
      return "ok";
    case ChatOutcome::kTimeout:
      return "timeout";
    case ChatOutcome::kTransport:
      return "transport";
    case ChatOutcome::kRateLimited:
      return "rate_limited";
    case ChatOutcome::kServerError:
      return "server_error";
    case ChatOutcome::kClientError:
      return "client_error";
    case ChatOutcome::kMalformed:
      return "malformed_reply";
  }
  return "unknown";
}

StatusOr<ChatClient> ChatClient::Create(const ChatOptions& options) {
  if (options.url.rfind("http://", 0) != 0 && options.url.rfind("https://", 0) != 0) {
    return Status::InvalidArgument("endpoint URL '" + options.url + "' must start with http:// or https://");
  }
  if (!(options.timeout_s > 0) || !(options.connect_timeout_s > 0)) {
    return Status::InvalidArgument("timeouts must be positive");
  }
  if (options.model.empty()) return Status::InvalidArgument("the model name is empty");
  GlobalInit();
  return ChatClient(options);
}

ChatResult ChatClient::Complete(const std::string& prompt) const {
  ChatResult r;
  const nlohmann::json request = {{"model", options_.model},
                                  {"messages", {{{"role", "user"}, {"content", prompt}}}},
                                  {"max_tokens", options_.max_tokens},
                                  {"temperature", options_.temperature}};
  const std::string body = request.dump();
  std::string response;
  CURL* curl = curl_easy_init();
  if (curl == nullptr) {
    r.outcome = ChatOutcome::kTransport;
    r.detail = "curl_easy_init failed";
    return r;
  }
  struct curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  if (!options_.api_key.empty())
    headers = curl_slist_append(headers, ("Authorization: Bearer " + options_.api_key).c_str());
  curl_easy_setopt(curl, CURLOPT_URL, options_.url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Append);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, Header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &r.retry_after_s);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.timeout_s * 1000));
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options_.connect_timeout_s * 1000));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);  // threads: no SIGALRM-based timeouts
  const CURLcode code = curl_easy_perform(curl);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);

  if (code == CURLE_OPERATION_TIMEDOUT) {
    r.outcome = ChatOutcome::kTimeout;
    r.detail = "no reply within " + std::to_string(options_.timeout_s) + " s";
    return r;
  }
  if (code != CURLE_OK) {
    r.outcome = ChatOutcome::kTransport;
    r.detail = curl_easy_strerror(code);
    return r;
  }
  if (status == 429) {
    r.outcome = ChatOutcome::kRateLimited;
    r.detail = "HTTP 429: " + Excerpt(response);
    return r;
  }
  if (status >= 500) {
    r.outcome = ChatOutcome::kServerError;
    r.detail = "HTTP " + std::to_string(status) + ": " + Excerpt(response);
    return r;
  }
  if (status != 200) {
    r.outcome = ChatOutcome::kClientError;
    r.detail = "HTTP " + std::to_string(status) + ": " + Excerpt(response);
    return r;
  }
  const auto j = nlohmann::json::parse(response, nullptr, false);
  const nlohmann::json* content = nullptr;
  if (!j.is_discarded() && j.is_object() && j.contains("choices") && j["choices"].is_array() && !j["choices"].empty()) {
    const auto& c0 = j["choices"][0];
    if (c0.is_object() && c0.contains("message") && c0["message"].is_object() && c0["message"].contains("content")) {
      content = &c0["message"]["content"];
    }
  }
  if (content == nullptr || !content->is_string()) {
    r.outcome = ChatOutcome::kMalformed;
    r.detail = "reply is not chat-completions JSON with choices[0].message.content: " + Excerpt(response);
    return r;
  }
  r.content = content->get<std::string>();
  return r;
}

}  // namespace flap::sharding
