#include "worker/agent.h"

#include "common/file_util.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <random>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "config/trial_config.h"
#include "coordinator/client.h"
#include "metrics/metrics.h"
#include "worker/core/collectives.h"
#include "worker/core/worker_group.h"
#include "worker/checkpointer.h"
#include "worker/lease_source.h"
#include "worker/outbox.h"
#include "worker/stop_signal.h"
#include "worker/trainer.h"

namespace flap::worker {
namespace {

namespace v1 = coordinator::v1;
using Clock = std::chrono::steady_clock;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

std::string HostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

std::string DefaultGroupId() {
  if (!Env("SLURM_ARRAY_JOB_ID").empty() && !Env("SLURM_ARRAY_TASK_ID").empty()) {
    return "slurm-" + Env("SLURM_ARRAY_JOB_ID") + "_" + Env("SLURM_ARRAY_TASK_ID");
  }
  if (!Env("SLURM_JOB_ID").empty()) return "slurm-" + Env("SLURM_JOB_ID");
  std::string host = HostName();
  for (char& c : host) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '-';
  }
  return host.substr(0, 40) + "-" + std::to_string(getpid());
}

std::string RandomIncarnation() {
  std::random_device rd;
  std::ostringstream o;
  o << std::hex << rd() << rd();
  return o.str();
}

// host:port from the options: given, or read from the coordinator file once it exists.
StatusOr<std::string> CoordinatorAddress(const AgentOptions& o) {
  if (!o.coordinator.empty()) return o.coordinator;
  if (o.coordinator_file.empty())
    return Status::InvalidArgument("give --coordinator HOST:PORT or --coordinator-file FILE");
  const auto until = Clock::now() + std::chrono::duration<double>(o.rpc_retry_s);
  for (;;) {
    std::ifstream in(o.coordinator_file);
    std::string address;
    if (in >> address && !address.empty()) return address;
    if (Clock::now() > until) {
      return Status::DeadlineExceeded("coordinator file '" + o.coordinator_file +
                                      "' did not appear (or stayed empty) within " +
                                      std::to_string(static_cast<int>(o.rpc_retry_s)) + " s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

// "--key value" pairs into a map (ParseTrialConfig checked them already).
std::map<std::string, std::string> PairsToMap(const std::vector<std::string>& args) {
  std::map<std::string, std::string> m;
  for (size_t i = 0; i + 1 < args.size(); i += 2) m[args[i].substr(args[i].rfind('-', 1) + 1)] = args[i + 1];
  return m;
}

// What rank 0 tells the others next.
struct Instruction {
  std::string kind;  // trial | wait | exit
  int64_t wait_ms = 0;
  int exit_code = 0;
  std::string group;
  v1::TrialRef trial;
  std::string base_config;
  std::map<std::string, std::string> overrides;
  std::string rung_unit = "steps";
  std::vector<double> rungs;  // ASHA's rungs, in rung_unit

  std::string Encode() const {
    nlohmann::json j = {{"kind", kind},
                        {"wait_ms", wait_ms},
                        {"exit_code", exit_code},
                        {"group", group},
                        {"sweep", trial.sweep_id()},
                        {"trial", trial.trial_id()},
                        {"attempt", trial.attempt()},
                        {"base_config", base_config},
                        {"overrides", overrides},
                        {"rung_unit", rung_unit},
                        {"rungs", rungs}};
    return j.dump();
  }
  static StatusOr<Instruction> Decode(const std::string& bytes) {
    Instruction in;
    try {
      const nlohmann::json j = nlohmann::json::parse(bytes);
      in.kind = j.at("kind").get<std::string>();
      in.wait_ms = j.at("wait_ms").get<int64_t>();
      in.exit_code = j.at("exit_code").get<int>();
      in.group = j.at("group").get<std::string>();
      in.trial.set_sweep_id(j.at("sweep").get<std::string>());
      in.trial.set_trial_id(j.at("trial").get<std::string>());
      in.trial.set_attempt(j.at("attempt").get<int>());
      in.base_config = j.at("base_config").get<std::string>();
      in.overrides = j.at("overrides").get<std::map<std::string, std::string>>();
      in.rung_unit = j.at("rung_unit").get<std::string>();
      in.rungs = j.at("rungs").get<std::vector<double>>();
    } catch (const nlohmann::json::exception& e) {
      return Status::Corruption(std::string("instruction from rank 0 is malformed: ") + e.what());
    }
    return in;
  }
};

// The trial's config: base config, then the agent's overrides, then the trial's (which win),
// applied in memory; keys local to this machine (ConfigKey::local_only) are never taken from
// the coordinator (WorkerTrialConfig, config/trial_config.h).
StatusOr<TrialConfig> TrialConfigFor(const Instruction& in, const std::vector<std::string>& local) {
  std::map<std::string, std::string> own = PairsToMap(local);
  auto out = own.find("train.output_dir");
  if (out != own.end() && !out->second.empty()) {
    // The trial's id, as the trial's overrides (which win) or else this agent's set it.
    const auto& ids = in.overrides.count("train.trial_id") ? in.overrides : own;
    out->second += "/" + (ids.count("train.trial_id") ? ids.at("train.trial_id") : std::string());
  }
  return WorkerTrialConfig(
      in.base_config,
      "trial " + in.trial.sweep_id() + "/" + in.trial.trial_id() + "'s config (the sweep's base config)", own,
      in.overrides);
}

bool SameAttempt(const v1::TrialRef& a, const v1::TrialRef& b) {
  return a.sweep_id() == b.sweep_id() && a.trial_id() == b.trial_id() && a.attempt() == b.attempt();
}

// Rank 0's side: the group's voice to the coordinator and its heartbeat thread.
class Speaker {
 public:
  Speaker(coordinator::CoordinatorClient* client, std::string group, double retry_s, std::ostream& log)
      : client_(client), group_(std::move(group)), retry_s_(retry_s), log_(log) {}
  ~Speaker() { Shutdown(); }

  Status Register(int world, const std::vector<std::string>& endpoints) {
    const std::string incarnation = RandomIncarnation();
    v1::RegisterGroupResponse resp;
    FLAP_RETURN_IF_ERROR(
        RetryUnavailable(retry_s_, [&]() -> Status {
          auto r = client_->Register(group_, incarnation, world, HostName(), endpoints);
          if (!r.ok()) return r.status();
          resp = *r;
          return Status::OK();
        }).WithContext("registering group '" + group_ + "' with the coordinator at " + client_->options().target));
    group_ = resp.group_id();
    interval_ms_ = std::max<int64_t>(100, resp.heartbeat_interval_ms());
    ranks_.clear();
    for (int r = 0; r < world; ++r) ranks_.push_back(r);
    FLAP_RETURN_IF_ERROR(OpenOutbox());
    heartbeat_ = std::thread([this] { HeartbeatLoop(); });
    sender_ = std::thread([this] { SendLoop(); });
    return Status::OK();
  }

  const std::string& group() const { return group_; }

  void StopHeartbeat() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (heartbeat_.joinable()) heartbeat_.join();
  }

  // Before the process exits: waits up to rpc_retry_s for the outbox to be acknowledged, stops
  // the threads and leaves what is left in the outbox's folder for the next agent of the group.
  void Shutdown() {
    StopHeartbeat();
    if (outbox_ && outbox_->size() > 0) outbox_->WaitAcknowledged(outbox_->last(), RetryWindow());
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_sender_ = true;
    }
    cv_.notify_all();
    if (sender_.joinable()) sender_.join();
    if (outbox_) {
      const size_t left = outbox_->size();
      const Status s = outbox_->Close();
      if (left > 0) {
        log_ << "agent: " << left << " record(s) not acknowledged by the coordinator "
             << (s.ok() ? "are kept in " + outbox_dir_ + " for the group's next start" : "are lost: " + s.ToString())
             << std::endl;
      }
      outbox_.reset();
      std::error_code ec;
      if (left == 0 && s.ok()) std::filesystem::remove_all(outbox_dir_, ec);  // nothing to hand over
    }
  }

  // Whether the coordinator has acknowledged every record sent so far, waiting up to `wait`.
  // The end of a trial must reach it before the group asks for the next trial, however long it
  // is away; the caller keeps the other ranks waiting meanwhile.
  bool Drained(std::chrono::milliseconds wait) {
    if (outbox_->WaitAcknowledged(outbox_->last(), wait)) return true;
    if (Clock::now() > next_drain_word_) {
      log_ << "agent: waiting for the coordinator to acknowledge " << outbox_->size() << " record(s)" << std::endl;
      next_drain_word_ = Clock::now() + std::chrono::seconds(30);
    }
    return false;
  }

  // The next instruction for the group.
  StatusOr<Instruction> Next() {
    Instruction in;
    in.group = group_;
    coordinator::NextTrialResult next;
    FLAP_RETURN_IF_ERROR(RetryUnavailable(retry_s_, [&]() -> Status {
                           auto r = client_->NextTrial(group_);
                           if (!r.ok()) return r.status();
                           next = *r;
                           return Status::OK();
                         }).WithContext("asking the coordinator for a trial"));
    if (next.assigned) {
      in.kind = "trial";
      in.trial = next.assignment.trial;
      in.base_config = next.assignment.base_config;
      in.overrides = next.assignment.overrides;
      if (!next.assignment.asha_metric.empty()) {
        in.rung_unit = next.assignment.asha_unit;
        in.rungs = next.assignment.asha_rungs;
      }
    } else if (next.all_done) {
      in.kind = "exit";
      in.exit_code = 0;
    } else {
      in.kind = "wait";
      in.wait_ms = std::clamp<int64_t>(next.retry_after_ms, 50, 1000);
      // A trial this group's size cannot split: said once, not at every ask.
      if (!next.waiting.empty() && next.waiting != waiting_) log_ << "agent: " << next.waiting << std::endl;
    }
    waiting_ = next.waiting;
    return in;
  }

  void BeginTrial(const v1::TrialRef& trial) {
    std::lock_guard<std::mutex> lock(mu_);
    trial_ = trial;
    running_ = true;
    taken_ = false;
    ++generation_;
  }
  void EndTrial() {
    std::lock_guard<std::mutex> lock(mu_);
    running_ = false;
    ++generation_;
  }
  // The coordinator took the trial (STOP or IDLE in a heartbeat); why.
  bool Taken(std::string* why) {
    std::lock_guard<std::mutex> lock(mu_);
    if (taken_ && why != nullptr) *why = taken_reason_;
    return taken_;
  }

  // Hooks of the running trial: records through the outbox (SendLoop delivers them). An
  // evaluation's answer is waited for (up to rpc_retry_s) since it may meet an ASHA rung, so
  // that a stop lands at the rung's step; the rest do not hold up training.
  bool Report(const v1::TrialRef& trial, coordinator::MetricKind kind, int64_t step, int64_t epoch, int64_t total,
              const std::map<std::string, double>& values) {
    nlohmann::json vs = nlohmann::json::object();
    for (const auto& [name, value] : values) vs[name] = std::isnan(value) ? nlohmann::json() : nlohmann::json(value);
    const uint64_t seq = Enqueue(Record("metrics", trial,
                                        {{"kind", coordinator::MetricKindName(kind)},
                                         {"step", step},
                                         {"epoch", epoch},
                                         {"total", total},
                                         {"values", vs}}));
    if (kind == coordinator::MetricKind::kEval) outbox_->WaitAcknowledged(seq, RetryWindow());
    return Taken(nullptr);
  }
  void Checkpoint(const v1::TrialRef& trial, const std::string& ref, int64_t step) {
    Enqueue(Record("checkpoint", trial, {{"ref", ref}, {"step", step}}));
  }
  void Finish(const v1::TrialRef& trial) { Enqueue(Record("finish", trial, nlohmann::json::object())); }
  // From the stop watchdog, about to exit (stop_signal.h): one call, no retries.
  void ReportPreemptionNow(const v1::TrialRef& trial, int signal) {
    auto r = client_->Fail(
        group_, trial, coordinator::FailureCause::kPreemption,
        "stopped by signal " + std::to_string(signal) + "; the stop deadline passed before a last checkpoint");
    if (!r.ok()) log_ << "agent: reporting the preemption failed: " << r.status().ToString() << std::endl;
  }
  void Fail(const v1::TrialRef& trial, coordinator::FailureCause cause, const std::string& error) {
    Enqueue(Record("fail", trial, {{"cause", static_cast<int>(cause)}, {"error", error.substr(0, 4000)}}));
  }

 private:
  std::chrono::milliseconds RetryWindow() const {
    return std::chrono::milliseconds(static_cast<int64_t>(retry_s_ * 1000));
  }

  // The group's outbox: $TMPDIR/flap-outbox-<uid>/<coordinator>-<group> (another process's
  // group of the same name and coordinator gets a folder of its own).
  Status OpenOutbox() {
    const char* tmp = std::getenv("TMPDIR");
    std::string name = client_->options().target + "-" + group_;
    for (char& c : name) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
    }
    OutboxOptions o;
    o.dir = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/flap-outbox-" + std::to_string(getuid()) +
            "/" + name;
    auto box = Outbox::Open(o);
    if (!box.ok() && box.status().code() == Status::Code::kFailedPrecondition) {
      o.dir += "-" + std::to_string(getpid());
      box = Outbox::Open(o);
    }
    if (!box.ok()) return box.status().WithContext("the agent's outbox");
    outbox_ = std::move(*box);
    outbox_dir_ = o.dir;
    if (outbox_->size() > 0) {
      log_ << "agent: resending " << outbox_->size() << " record(s) an earlier agent of the group left in " << o.dir
           << std::endl;
    }
    return Status::OK();
  }

  nlohmann::json Record(const std::string& type, const v1::TrialRef& trial, nlohmann::json fields) const {
    fields["type"] = type;
    fields["sweep"] = trial.sweep_id();
    fields["trial"] = trial.trial_id();
    fields["attempt"] = trial.attempt();
    return fields;
  }

  uint64_t Enqueue(const nlohmann::json& record) {
    Status spill;
    const uint64_t seq = outbox_->Push(record.dump(), &spill);
    if (!spill.ok()) log_ << "agent: " << spill.ToString() << " (the record is kept in memory)" << std::endl;
    return seq;
  }

  // The coordinator took the trial of `trial`'s attempt (a STOP, or its report refused as stale).
  void MarkTaken(const v1::TrialRef& trial, const std::string& why) {
    std::lock_guard<std::mutex> lock(mu_);
    if (running_ && SameAttempt(trial, trial_) && !taken_) {
      taken_ = true;
      taken_reason_ = why;
    }
  }

  // Sends the outbox's records in order, each until the coordinator answers it: a transient
  // failure (UNAVAILABLE, DEADLINE_EXCEEDED: the coordinator away or restarting) is retried with
  // backoff for as long as it lasts; any answer, refusals included, acknowledges the record.
  void SendLoop() {
    auto backoff = std::chrono::milliseconds(100);
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_sender_) return;
      }
      uint64_t seq = 0;
      std::string bytes;
      if (!outbox_->Front(&seq, &bytes, std::chrono::milliseconds(200))) continue;
      const Status s = Deliver(bytes);
      if (s.code() == Status::Code::kUnavailable || s.code() == Status::Code::kDeadlineExceeded) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, backoff, [this] { return stop_sender_; });
        backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
        continue;
      }
      backoff = std::chrono::milliseconds(100);
      const Status popped = outbox_->Pop();
      if (!popped.ok()) log_ << "agent: " << popped.ToString() << std::endl;
    }
  }

  // One call for one record; logs the coordinator's answer where it matters.
  Status Deliver(const std::string& bytes) {
    nlohmann::json r;
    v1::TrialRef trial;
    std::string type;
    try {
      r = nlohmann::json::parse(bytes);
      type = r.at("type").get<std::string>();
      trial.set_sweep_id(r.at("sweep").get<std::string>());
      trial.set_trial_id(r.at("trial").get<std::string>());
      trial.set_attempt(r.at("attempt").get<int>());
    } catch (const nlohmann::json::exception& e) {
      log_ << "agent: dropping a malformed outbox record: " << e.what() << std::endl;
      return Status::OK();
    }
    const std::string what = trial.sweep_id() + "/" + trial.trial_id();
    try {
      if (type == "metrics") {
        const std::string kind_name = r.at("kind").get<std::string>();
        const auto kind = coordinator::MetricKindFromName(kind_name);
        const int64_t step = r.at("step").get<int64_t>();
        std::map<std::string, double> values;
        for (const auto& [name, v] : r.at("values").items()) {
          values[name] = v.is_null() ? std::nan("") : v.get<double>();
        }
        std::string reason;
        auto a = client_->ReportMetrics(group_, trial, kind, step, static_cast<int>(r.at("epoch").get<int64_t>()),
                                        values, r.at("total").get<int64_t>(), &reason);
        if (a.ok() && *a == v1::STOP) {
          log_ << "agent: the coordinator stopped the trial at step " << step << (reason.empty() ? "" : ": " + reason)
               << std::endl;
          MarkTaken(trial, reason);
        }
        if (!a.ok())
          return Answered(a.status(),
                          "reporting " + kind_name + " metrics of " + what + " at step " + std::to_string(step), trial);
        return Status::OK();
      }
      if (type == "checkpoint") {
        const int64_t step = r.at("step").get<int64_t>();
        return Answered(client_->ReportCheckpoint(group_, trial, r.at("ref").get<std::string>(), step),
                        "reporting the checkpoint of " + what + " at step " + std::to_string(step), trial);
      }
      if (type == "finish") return Answered(client_->Finish(group_, trial), "finishing trial " + what, trial);
      if (type == "fail") {
        const auto cause = static_cast<coordinator::FailureCause>(r.at("cause").get<int>());
        auto state = client_->Fail(group_, trial, cause, r.at("error").get<std::string>());
        if (state.ok()) {
          log_ << "agent: trial " << what << " failed (" << coordinator::FailureCauseName(cause) << "), now "
               << coordinator::TrialStateName(*state) << std::endl;
          return Status::OK();
        }
        return Answered(state.status(), "reporting the failure of trial " + what, trial);
      }
    } catch (const nlohmann::json::exception& e) {
      log_ << "agent: dropping a malformed outbox record: " << e.what() << std::endl;
      return Status::OK();
    }
    log_ << "agent: dropping an outbox record of unknown type '" << type << "'" << std::endl;
    return Status::OK();
  }

  // A call's status, logged when the coordinator refused it (transient failures are retried).
  Status Answered(const Status& s, const std::string& what, const v1::TrialRef& trial) {
    if (s.ok() || s.code() == Status::Code::kUnavailable || s.code() == Status::Code::kDeadlineExceeded) return s;
    log_ << "agent: " << what << " failed: " << s.ToString() << std::endl;
    // A stale attempt: the trial is no longer this group's.
    if (s.code() == Status::Code::kFailedPrecondition) MarkTaken(trial, s.message());
    return s;
  }

  void HeartbeatLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      const uint64_t generation = generation_;
      const bool running = running_;
      const v1::TrialRef trial = trial_;
      lock.unlock();
      auto r = client_->Heartbeat(group_, ranks_);
      lock.lock();
      if (r.ok() && running && generation == generation_) {
        const bool stop = r->action() == v1::STOP && SameAttempt(r->trial(), trial);
        if ((stop || r->action() == v1::IDLE) && !taken_) {
          taken_ = true;
          taken_reason_ = stop ? r->reason() : "the coordinator no longer counts this group as running it";
        }
      } else if (!r.ok() && r.status().code() != Status::Code::kUnavailable) {
        log_ << "agent: heartbeat: " << r.status().ToString() << std::endl;
      }
      cv_.wait_for(lock, std::chrono::milliseconds(interval_ms_), [this] { return stop_; });
    }
  }

  coordinator::CoordinatorClient* client_;
  std::string group_;
  const double retry_s_;
  std::ostream& log_;
  std::string waiting_;  // the coordinator's last reason for passing a trial over (Next)
  int64_t interval_ms_ = 1000;
  std::vector<int> ranks_;
  std::thread heartbeat_;
  std::unique_ptr<Outbox> outbox_;
  std::string outbox_dir_;
  Clock::time_point next_drain_word_ = Clock::now() + std::chrono::seconds(30);
  std::thread sender_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool stop_sender_ = false;
  bool running_ = false;
  bool taken_ = false;
  std::string taken_reason_;
  uint64_t generation_ = 0;
  v1::TrialRef trial_;
};

// Whether an error means the group itself is broken (a rank lost, its checkpoint storage
// failing: worker/checkpointer.h) rather than the trial.
bool GroupFault(const Status& s, const core::WorkerGroup& group) {
  return !group.status().ok() || s.code() == Status::Code::kDeadlineExceeded || IsCheckpointStorageFault(s);
}

}  // namespace

int RunAgent(const AgentOptions& options, std::ostream& log) {
  auto fail = [&](const Status& s, int code) {
    log << "flap-worker agent: " << s.ToString() << std::endl;
    return code;
  };
  // The agent's own overrides must make a valid config by themselves (dist.*, metrics.*).
  TrialConfig local;
  {
    bool help = false;
    std::string text;
    Status s = ParseTrialConfig(options.overrides, &local, &help, &text);
    if (!s.ok()) return fail(s, 2);
    if (options.overrides.size() % 2 != 0)
      return fail(Status::InvalidArgument("overrides must be --KEY VALUE pairs"), 2);
    for (size_t i = 0; i < options.overrides.size(); i += 2) {
      if (options.overrides[i] == "--config" || options.overrides[i] == "-c") {
        return fail(Status::InvalidArgument(
                        "the agent takes --KEY VALUE overrides, not --config: the sweep's base config is the file"),
                    2);
      }
    }
  }
  auto token = coordinator::ReadToken(options.token_file);
  if (!token.ok()) return fail(token.status(), 2);
  auto address = CoordinatorAddress(options);
  if (!address.ok()) return fail(address.status(), 1);
  coordinator::ClientOptions co;
  co.target = *address;
  co.token = *token;
  co.insecure = options.insecure;
  if (!options.tls_ca.empty()) {
    StatusOr<std::string> pem = ReadFileToString(options.tls_ca);
    if (!pem.ok()) {
      return fail(Status::NotFound("TLS CA file '" + options.tls_ca + "' cannot be read: " + pem.status().message()), 2);
    }
    co.tls_ca = *std::move(pem);
  }
  auto client = coordinator::CoordinatorClient::Connect(co);
  if (!client.ok()) return fail(client.status(), 2);

  InstallStopSignalHandlers(local.ckpt.stop_deadline);
  SetThreads(local.train.threads);
  auto group_or = JoinWorkerGroup(local, log);
  if (!group_or.ok()) return fail(group_or.status(), 1);
  std::unique_ptr<core::WorkerGroup> group = std::move(*group_or);
  const int rank = group->rank(), world = group->world_size();

  std::unique_ptr<metrics::MetricsServer> metrics_server;
  if (!local.metrics.listen.empty()) {
    auto m = metrics::MetricsServer::Start(local.metrics.listen);
    if (!m.ok()) return fail(m.status(), 1);
    metrics_server = std::move(*m);
    log << "rank " << rank << " serves metrics on http://" << metrics_server->endpoint() << "/metrics" << std::endl;
  }
  auto endpoints = core::AllGatherStrings(*group, metrics_server ? metrics_server->endpoint() : "");
  if (!endpoints.ok()) return fail(endpoints.status(), 1);
  if (!metrics_server) endpoints->clear();

  std::unique_ptr<Speaker> speaker;
  if (rank == 0) {
    speaker = std::make_unique<Speaker>(client->get(), options.group_id.empty() ? DefaultGroupId() : options.group_id,
                                        options.rpc_retry_s, log);
    Status s = speaker->Register(world, *endpoints);
    if (!s.ok()) {
      Instruction goodbye;
      goodbye.kind = "exit";
      goodbye.exit_code = 1;
      std::string bye = goodbye.Encode();
      (void)core::BroadcastBytes(*group, &bye, 0);
      return fail(s, 1);
    }
    log << "agent: group '" << speaker->group() << "' of " << world << " rank(s) registered with " << co.target
        << std::endl;
  }

  std::ostream null_log(nullptr);
  int trials_run = 0;
  for (;;) {
    // Rank 0 decides; the others follow.
    std::string bytes;
    if (rank == 0) {
      Instruction in;
      if (StopRequested() != 0) {
        in.kind = "exit";
        in.exit_code = kExitStopped;
        log << "agent: stop signal " << StopRequested() << " while idle: exiting" << std::endl;
      } else if (options.max_trials > 0 && trials_run >= options.max_trials) {
        in.kind = "exit";
      } else if (!speaker->Drained(std::chrono::milliseconds(500))) {
        in.kind = "wait";
        in.wait_ms = 50;
      } else {
        auto next = speaker->Next();
        if (!next.ok()) {
          log << "flap-worker agent: " << next.status().ToString() << std::endl;
          in.kind = "exit";
          in.exit_code = 1;
        } else {
          in = *next;
        }
      }
      bytes = in.Encode();
    }
    Status s = core::BroadcastBytes(*group, &bytes, 0);
    if (!s.ok()) return fail(s, 1);
    auto decoded = Instruction::Decode(bytes);
    if (!decoded.ok()) return fail(decoded.status(), 1);
    const Instruction in = std::move(*decoded);
    if (in.kind == "exit") {
      if (rank == 0) speaker->Shutdown();
      if (in.exit_code == 0 && rank == 0)
        log << "agent: every sweep is done (" << trials_run << " trial(s) run here)" << std::endl;
      return in.exit_code;
    }
    if (in.kind == "wait") {
      std::this_thread::sleep_for(std::chrono::milliseconds(in.wait_ms));
      continue;
    }

    // A trial.
    ++trials_run;
    const v1::TrialRef trial = in.trial;
    if (rank == 0) {
      log << "agent: trial " << trial.sweep_id() << "/" << trial.trial_id() << " attempt " << trial.attempt();
      for (const auto& [k, v] : in.overrides) log << " " << k << "=" << v;
      log << std::endl;
      speaker->BeginTrial(trial);
      // Should the stop watchdog end the process mid-trial, the coordinator still hears of a
      // preemption (not a lost group, counted as a node fault).
      Speaker* sp = speaker.get();
      SetStopDeadlineHook([sp, trial](int signal) { sp->ReportPreemptionNow(trial, signal); });
    }
    auto config = TrialConfigFor(in, options.overrides);
    if (!config.ok()) {
      if (rank == 0) {
        SetStopDeadlineHook(nullptr);
        speaker->Fail(trial, coordinator::FailureCause::kTrialError, config.status().ToString());
        speaker->EndTrial();
      }
      continue;
    }
    coordinator::CoordinatorClient* c = client->get();
    TrainingHooks hooks;
    hooks.group = group.get();
    hooks.exact_resume = false;
    hooks.metrics_server = metrics_server.get();
    hooks.eval_unit = in.rung_unit;
    hooks.eval_at = in.rungs;
    const std::string group_id = in.group;
    const double retry_s = options.rpc_retry_s;
    hooks.make_source = [c, group_id, trial, retry_s, train = config->train](
                            const std::vector<sharding::ShardInfo>& shards, int r,
                            int w) -> StatusOr<std::unique_ptr<ShardSource>> {
      FLAP_ASSIGN_OR_RETURN(const int64_t batch, PerRankBatch(train, w));
      LeaseSourceOptions lo;
      lo.group_id = group_id;
      lo.trial = trial;
      lo.rank = r;
      lo.world_size = w;
      lo.batch_size = batch;
      lo.retry_for_s = retry_s;
      FLAP_ASSIGN_OR_RETURN(std::unique_ptr<LeaseShardSource> src, LeaseShardSource::Create(c, shards, lo));
      return std::unique_ptr<ShardSource>(std::move(src));
    };
    if (rank == 0) {
      Speaker* sp = speaker.get();
      hooks.report = [sp, trial](const std::string& kind, int64_t step, int64_t epoch, int64_t total,
                                 const std::map<std::string, double>& values) {
        // The trainer names the kind of its reports: "train", "eval" or "test".
        const auto metric_kind = coordinator::MetricKindFromName(kind);
        return sp->Report(trial, metric_kind, step, epoch, total, values);
      };
      hooks.on_checkpoint = [sp, trial](const std::string& ref, int64_t step) { sp->Checkpoint(trial, ref, step); };
      hooks.should_stop = [sp]() { return sp->Taken(nullptr); };
    }
    ResumeOptions resume;
    resume.resume = !config->ckpt.root.empty();
    auto outcome = RunTraining(*config, rank == 0 ? log : null_log, resume, hooks);
    if (rank != 0) {
      if (outcome.ok() && outcome->stop_signal != 0) return kExitStopped;
      if (!outcome.ok() && GroupFault(outcome.status(), *group)) return fail(outcome.status(), 1);
      continue;
    }
    SetStopDeadlineHook(nullptr);  // from here this loop reports the outcome itself
    std::string why;
    const bool taken = speaker->Taken(&why);
    speaker->EndTrial();
    if (outcome.ok() && outcome->stop_signal != 0) {
      speaker->Fail(trial, coordinator::FailureCause::kPreemption,
                    "stopped by signal " + std::to_string(outcome->stop_signal) + " at step " +
                        std::to_string(outcome->steps_done) + " after a last checkpoint");
      speaker->Shutdown();
      return kExitStopped;
    }
    if (outcome.ok() && outcome->stopped) {
      log << "agent: trial " << trial.trial_id() << " stopped at step " << outcome->steps_done
          << (why.empty() ? "" : " (" + why + ")") << std::endl;
      continue;
    }
    if (outcome.ok()) {
      speaker->Finish(trial);
      log << "agent: trial " << trial.sweep_id() << "/" << trial.trial_id() << " finished at step "
          << outcome->steps_done << std::endl;
      continue;
    }
    if (taken) {
      log << "agent: trial " << trial.trial_id() << " ended (" << why << "): " << outcome.status().ToString()
          << std::endl;
      continue;
    }
    const bool group_fault = GroupFault(outcome.status(), *group);
    speaker->Fail(trial, group_fault ? coordinator::FailureCause::kNodeFault : coordinator::FailureCause::kTrialError,
                  outcome.status().ToString());
    if (group_fault) {
      speaker->Shutdown();
      return fail(outcome.status(), 1);
    }
  }
}

}  // namespace flap::worker
