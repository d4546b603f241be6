// A chat-completions server for tests, on 127.0.0.1 (an ephemeral port), written for the
// purpose since no language model can be installed here. It answers POSTs with the
// OpenAI-compatible JSON shape and misbehaves on request, by markers in the prompt:
//
//   [slow]       waits 3 s before answering (past a client's timeout)
//   [429xN]      HTTP 429 (Retry-After: 0) for the first N requests of that prompt, then normal
//   [500xN]      HTTP 500 for the first N requests, then normal; [500] always
//   [401]        HTTP 401 (a wrong key)
//   [malformed]  HTTP 200 with a body that is not JSON
//   [empty]      an empty reply
//   [long]       a 1000-character reply
//   [echo]       the prompt itself as the reply
//   [multiline]  a two-line reply
//   otherwise    "Richer: <the prompt's "Caption:" line> with <its "Tags:" line>."
//
// set_delay_ms() delays every reply (to kill a client midway). Each connection gets a
// thread; the destructor stops accepting, wakes sleepers and joins them all.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace flap::testing {

class ChatTestServer {
 public:
  ChatTestServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd_, 64) != 0) {
      ::close(fd_);
      fd_ = -1;
      return;
    }
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }
  ~ChatTestServer() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (accept_thread_.joinable()) accept_thread_.join();
    std::vector<std::thread> threads;
    {
      std::lock_guard<std::mutex> lock(mu_);
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1/chat/completions"; }
  int requests() const { return requests_; }
  void set_delay_ms(int ms) { delay_ms_ = ms; }

 private:
  void AcceptLoop() {
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) return;
      }
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      std::lock_guard<std::mutex> lock(mu_);
      threads_.emplace_back([this, c] {
        Serve(c);
        ::close(c);
      });
    }
  }

  // false: stopping.
  bool Sleep(int ms) {
    std::unique_lock<std::mutex> lock(mu_);
    return !cv_.wait_for(lock, std::chrono::milliseconds(ms), [this] { return stop_; });
  }

  static void Send(int c, int status, const std::string& body, const std::string& extra = "") {
    const char* reason = status == 200   ? "OK"
                         : status == 429 ? "Too Many Requests"
                         : status == 401 ? "Unauthorized"
                                         : "Internal Server Error";
    std::string out = "HTTP/1.1 " + std::to_string(status) + " " + reason +
                      "\r\nContent-Type: application/json\r\nConnection: close\r\n" + extra +
                      "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    size_t sent = 0;
    while (sent < out.size()) {
      const ssize_t n = ::send(c, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += static_cast<size_t>(n);
    }
  }

  static std::string Reply(const std::string& content) {
    return nlohmann::json{
        {"id", "test"},
        {"object", "chat.completion"},
        {"choices",
         {{{"index", 0}, {"message", {{"role", "assistant"}, {"content", content}}}, {"finish_reason", "stop"}}}}}
        .dump();
  }

  static std::string Line(const std::string& prompt, const std::string& label) {
    const size_t at = prompt.find(label);
    if (at == std::string::npos) return "";
    const size_t end = prompt.find('\n', at);
    return prompt.substr(at + label.size(), end == std::string::npos ? std::string::npos : end - at - label.size());
  }

  void Serve(int c) {
    std::string data;
    char buf[4096];
    size_t header_end = std::string::npos;
    size_t length = 0;
    while (true) {
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 2000) <= 0) return;
      const ssize_t n = ::recv(c, buf, sizeof(buf), 0);
      if (n <= 0) return;
      data.append(buf, static_cast<size_t>(n));
      if (header_end == std::string::npos && (header_end = data.find("\r\n\r\n")) != std::string::npos) {
        std::smatch m;
        const std::string head = data.substr(0, header_end);
        if (std::regex_search(head, m, std::regex("[Cc]ontent-[Ll]ength: *([0-9]+)"))) length = std::stoul(m[1]);
      }
      if (header_end != std::string::npos && data.size() >= header_end + 4 + length) break;
    }
    ++requests_;
    const auto request = nlohmann::json::parse(data.substr(header_end + 4), nullptr, false);
    std::string prompt;
    if (!request.is_discarded() && request.contains("messages") && request["messages"].is_array() &&
        !request["messages"].empty()) {
      prompt = request["messages"].back().value("content", "");
    }
    if (delay_ms_ > 0 && !Sleep(delay_ms_)) return;
    int seen = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      seen = ++seen_[prompt];
    }
    std::smatch m;
    if (prompt.find("[slow]") != std::string::npos) {
      if (!Sleep(3000)) return;
    }
    if (std::regex_search(prompt, m, std::regex("\\[429x([0-9]+)\\]")) && seen <= std::stoi(m[1])) {
      return Send(c, 429, R"({"error": "rate limited"})", "Retry-After: 0\r\n");
    }
    if (prompt.find("[500]") != std::string::npos ||
        (std::regex_search(prompt, m, std::regex("\\[500x([0-9]+)\\]")) && seen <= std::stoi(m[1]))) {
      return Send(c, 500, R"({"error": "internal"})");
    }
    if (prompt.find("[401]") != std::string::npos) return Send(c, 401, R"({"error": "invalid api key"})");
    if (prompt.find("[malformed]") != std::string::npos) return Send(c, 200, "{\"choices\": [ not json");
    if (prompt.find("[empty]") != std::string::npos) return Send(c, 200, Reply(""));
    if (prompt.find("[long]") != std::string::npos) return Send(c, 200, Reply(std::string(1000, 'a')));
    if (prompt.find("[echo]") != std::string::npos) return Send(c, 200, Reply(prompt));
    if (prompt.find("[multiline]") != std::string::npos) return Send(c, 200, Reply("line one\nline two"));
    Send(c, 200, Reply("Richer: " + Line(prompt, "Caption: ") + " with " + Line(prompt, "Tags: ") + "."));
  }

  int fd_ = -1;
  int port_ = 0;
  std::atomic<int> requests_{0};
  std::atomic<int> delay_ms_{0};
  std::thread accept_thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                 // guarded by mu_
  std::vector<std::thread> threads_;  // guarded by mu_
  std::map<std::string, int> seen_;   // guarded by mu_: requests per prompt
};

}  // namespace flap::testing
