#include "flapctl/run_folder.h"

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/file_util.h"

namespace flap::flapctl {
namespace fs = std::filesystem;

std::string RunFolder::Path(const std::string& rel) const { return (fs::path(dir_) / rel).string(); }

StatusOr<RunFileInfo> ReadRunFile(const RunFolder& run) {
  const std::string path = run.run_file();
  std::error_code ec;
  if (!fs::exists(path, ec)) return Status::NotFound(path + " does not exist");
  FLAP_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::InvalidArgument(path + " is not a run file of flapctl sweep run (not a JSON object)");
  }
  RunFileInfo info;
  auto text_at = [&](const nlohmann::json& o, const char* key, std::string* out) -> Status {
    if (!o.is_object() || !o.contains(key) || o[key].is_null()) return Status::OK();
    if (!o[key].is_string()) {
      return Status::InvalidArgument(path + ": \"" + key + "\" is not a string");
    }
    *out = o[key].get<std::string>();
    return Status::OK();
  };
  if (j.contains("coordinator")) FLAP_RETURN_IF_ERROR(text_at(j["coordinator"], "address", &info.coordinator_address));
  FLAP_RETURN_IF_ERROR(text_at(j, "sweep", &info.sweep));
  FLAP_RETURN_IF_ERROR(text_at(j, "data", &info.data));
  return info;
}

StatusOr<std::unique_ptr<coordinator::CoordinatorClient>> ConnectRunCoordinator(const RunFolder& run,
                                                                                const std::string& address,
                                                                                int64_t deadline_ms) {
  coordinator::ClientOptions co;
  co.target = address;
  co.deadline_ms = deadline_ms;
  FLAP_ASSIGN_OR_RETURN(co.token, coordinator::ReadToken(run.token_file()));
  FLAP_ASSIGN_OR_RETURN(auto client, coordinator::CoordinatorClient::Connect(co));
  auto answer = client->ListSweeps();
  if (!answer.ok()) return answer.status();
  return client;
}

Status LocalCoordinator::Start(const RunFolder& run, const Options& o) {
  client_.reset();
  address_ = "127.0.0.1:" + std::to_string(o.port);
  std::vector<std::string> argv = {o.bin, "--state-dir", run.state_dir(), "--listen", address_};
  argv.insert(argv.end(), o.extra_args.begin(), o.extra_args.end());
  FLAP_ASSIGN_OR_RETURN(process_, Process::Start(argv, {}, o.log));
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.start_timeout_s);
  Status last = Status::IOError("no token yet in " + run.token_file());
  while (std::chrono::steady_clock::now() < until) {
    if (process_.Poll()) {
      const std::string tail = LogTail(o.log, 5);
      const std::string ended = "flap-coordinator exited with " + std::to_string(process_.exit_code()) +
                                " at start; the end of its log (" + o.log + "):\n" + tail;
      if (tail.find("lock") != std::string::npos) {
        return Status::FailedPrecondition("the coordinator state " + run.state_dir() +
                                          " is held by another process (its lock): " + ended);
      }
      return Status::Internal(ended);
    }
    std::error_code ec;
    if (fs::exists(run.token_file(), ec)) {
      auto c = ConnectRunCoordinator(run, address_, o.call_deadline_ms);
      if (c.ok()) {
        client_ = std::move(*c);
        return Status::OK();
      }
      last = c.status();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  process_.Stop(5);
  return Status::DeadlineExceeded("flap-coordinator did not answer within " +
                                  std::to_string(static_cast<int>(o.start_timeout_s)) + " s: " + last.message());
}

void LocalCoordinator::Stop(double grace_s) { process_.Stop(grace_s); }

}  // namespace flap::flapctl
