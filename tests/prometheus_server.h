// A real Prometheus server (Debian's `prometheus`) for tests: started on 127.0.0.1 with a
// given configuration and a temporary data folder, queried through its HTTP API, stopped (and
// its data removed) at destruction, also when a test fails.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/http_client.h"
#include "tests/test_util.h"

namespace flap::testing {

class PrometheusServer {
 public:
  // Writes `config_yaml` into `dir` and starts Prometheus on a free port; ok() says whether
  // it became ready within `timeout_s`.
  PrometheusServer(const std::string& dir, const std::string& config_yaml, double timeout_s = 30.0) : dir_(dir) {
    std::filesystem::create_directories(dir + "/data");
    WriteFile(dir + "/prometheus.yml", config_yaml);
    port_ = flap::testing::FreePort();
    ChildProcess::Options options;
    options.log_path = dir + "/prometheus.log";
    process_ = ChildProcess::Exec(
        {"prometheus", "--config.file=" + dir + "/prometheus.yml", "--storage.tsdb.path=" + dir + "/data",
         "--web.listen-address=127.0.0.1:" + std::to_string(port_), "--log.level=warn"},
        options);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (std::chrono::steady_clock::now() < deadline) {
      if (HttpGet(url() + "/-/ready", 1.0).status == 200) {
        ready_ = true;
        break;
      }
      if (process_.Wait(0) != -1) break;  // it exited
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  ~PrometheusServer() { process_.Kill(SIGTERM, 5); }
  bool ok() const { return ready_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string Log() const { return ReadFile(dir_ + "/prometheus.log"); }

  // An instant query; the "data"."result" array (empty on any failure, which `error`, when
  // given, then describes: Prometheus's own error, e.g. a PromQL syntax error, or the HTTP
  // status; "" on success).
  nlohmann::json Query(const std::string& promql, std::string* error = nullptr) const {
    auto r = HttpGet(url() + "/api/v1/query?query=" + UrlEncode(promql), 5.0);
    auto j = nlohmann::json::parse(r.body, nullptr, false);
    const bool ok = r.status == 200 && !j.is_discarded() && j.value("status", "") == "success";
    if (error) {
      *error =
          ok ? "" : "HTTP " + std::to_string(r.status) + ": " + (j.is_object() ? j.value("error", r.body) : r.body);
    }
    if (!ok) return nlohmann::json::array();
    return j["data"]["result"];
  }
  // Polls `promql` until it returns a series or `timeout_s` passes.
  nlohmann::json WaitFor(const std::string& promql, double timeout_s, std::string* error = nullptr) const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    for (;;) {
      auto result = Query(promql, error);
      if (!result.empty() || std::chrono::steady_clock::now() > deadline) return result;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
  }

 private:
  std::string dir_;
  int port_ = 0;
  ChildProcess process_;
  bool ready_ = false;
};

}  // namespace flap::testing
