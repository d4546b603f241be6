#include "worker/speaker.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/path_name.h"
#include "worker/lease_source.h"

namespace flap::worker {
namespace {

namespace v1 = coordinator::v1;
using Clock = std::chrono::steady_clock;

std::string RandomIncarnation() {
  std::random_device rd;
  std::ostringstream o;
  o << std::hex << rd() << rd();
  return o.str();
}

std::string HostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

bool SameAttempt(const v1::TrialRef& a, const v1::TrialRef& b) {
  return a.sweep_id() == b.sweep_id() && a.trial_id() == b.trial_id() && a.attempt() == b.attempt();
}

// An outbox record: the record's fields, its type and its trial's attempt, as JSON.
std::string Record(const std::string& type, const v1::TrialRef& trial, nlohmann::json fields) {
  fields["type"] = type;
  fields["sweep"] = trial.sweep_id();
  fields["trial"] = trial.trial_id();
  fields["attempt"] = trial.attempt();
  return fields.dump();
}

}  // namespace

Speaker::Speaker(coordinator::CoordinatorClient* client, SpeakerOptions options, std::ostream& log)
    : client_(client),
      options_(std::move(options)),
      log_(log),
      group_(options_.group),
      next_drain_word_(Clock::now() + std::chrono::seconds(30)) {}

Speaker::~Speaker() { Shutdown(); }

Status Speaker::Register(int world, const std::vector<std::string>& endpoints) {
  const std::string incarnation = RandomIncarnation();
  v1::RegisterGroupResponse resp;
  FLAP_RETURN_IF_ERROR(RetryTransient(options_.retry_s, [&]() -> Status {
                         auto r = client_->Register(group_, incarnation, world, HostName(), endpoints);
                         if (!r.ok()) return r.status();
                         resp = *r;
                         return Status::OK();
                       }).WithContext("registering group '" + group_ + "' with the coordinator at " +
                                      client_->options().target));
  group_ = resp.group_id();
  interval_ms_ = std::max<int64_t>(100, resp.heartbeat_interval_ms());
  ranks_.clear();
  for (int r = 0; r < world; ++r) ranks_.push_back(r);
  FLAP_RETURN_IF_ERROR(
      OpenOutbox(resp.coordinator_id().empty() ? client_->options().target : resp.coordinator_id()));
  heartbeat_ = std::thread([this] { HeartbeatLoop(); });
  sender_ = std::thread([this] { SendLoop(); });
  return Status::OK();
}

void Speaker::StopHeartbeat() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  cv_.SignalAll();
  if (heartbeat_.joinable()) heartbeat_.join();
}

void Speaker::Shutdown() {
  StopHeartbeat();
  if (outbox_ && outbox_->size() > 0) outbox_->WaitAcknowledged(outbox_->last(), RetryWindow());
  {
    MutexLock lock(&mu_);
    stop_sender_ = true;
  }
  cv_.SignalAll();
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

bool Speaker::Drained(std::chrono::milliseconds wait) {
  if (outbox_->WaitAcknowledged(outbox_->last(), wait)) return true;
  if (Clock::now() > next_drain_word_) {
    log_ << "agent: waiting for the coordinator to acknowledge " << outbox_->size() << " record(s)" << std::endl;
    next_drain_word_ = Clock::now() + std::chrono::seconds(30);
  }
  return false;
}

StatusOr<v1::NextTrialResponse> Speaker::Next() {
  coordinator::NextTrialResult next;
  FLAP_RETURN_IF_ERROR(RetryTransient(options_.retry_s, [&]() -> Status {
                         auto r = client_->NextTrial(group_);
                         if (!r.ok()) return r.status();
                         next = *std::move(r);
                         return Status::OK();
                       }).WithContext("asking the coordinator for a trial"));
  // A trial this group's size cannot split: said once, not at every ask.
  if (!next.assigned && !next.waiting.empty() && next.waiting != waiting_) log_ << "agent: " << next.waiting << std::endl;
  waiting_ = next.waiting;
  return next.message;
}

void Speaker::BeginTrial(const v1::TrialRef& trial) {
  MutexLock lock(&mu_);
  trial_ = trial;
  running_ = true;
  taken_ = false;
  ++generation_;
}

void Speaker::EndTrial() {
  MutexLock lock(&mu_);
  running_ = false;
  ++generation_;
}

bool Speaker::Taken(std::string* why) {
  MutexLock lock(&mu_);
  if (taken_ && why != nullptr) *why = taken_reason_;
  return taken_;
}

bool Speaker::Report(const v1::TrialRef& trial, coordinator::MetricKind kind, int64_t step, int64_t epoch,
                     int64_t total, const std::map<std::string, double>& values) {
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

void Speaker::Checkpoint(const v1::TrialRef& trial, const std::string& ref, int64_t step) {
  Enqueue(Record("checkpoint", trial, {{"ref", ref}, {"step", step}}));
}

void Speaker::Finish(const v1::TrialRef& trial) { Enqueue(Record("finish", trial, nlohmann::json::object())); }

void Speaker::Fail(const v1::TrialRef& trial, coordinator::FailureCause cause, const std::string& error) {
  Enqueue(Record("fail", trial, {{"cause", static_cast<int>(cause)}, {"error", error.substr(0, 4000)}}));
}

void Speaker::ReportPreemptionNow(const v1::TrialRef& trial, int signal) {
  auto r = client_->Fail(
      group_, trial, coordinator::FailureCause::kPreemption,
      "stopped by signal " + std::to_string(signal) + "; the stop deadline passed before a last checkpoint");
  if (!r.ok()) log_ << "agent: reporting the preemption failed: " << r.status().ToString() << std::endl;
}

std::chrono::milliseconds Speaker::RetryWindow() const {
  return std::chrono::milliseconds(static_cast<int64_t>(options_.retry_s * 1000));
}

Status Speaker::OpenOutbox(const std::string& coordinator_id) {
  std::string root = options_.outbox_root;
  if (root.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    root = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/flap-outbox-" + std::to_string(getuid());
  }
  OutboxOptions o;
  o.dir = root + "/" + CleanPathNameChars(coordinator_id + "-" + group_);
  auto box = Outbox::Open(o);
  if (!box.ok() && box.status().code() == Status::Code::kFailedPrecondition) {
    // Another live process holds the folder (a group of the same name): a folder of its own.
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

uint64_t Speaker::Enqueue(const std::string& record) {
  Status spill;
  const uint64_t seq = outbox_->Push(record, &spill);
  if (!spill.ok()) log_ << "agent: " << spill.ToString() << " (the record is kept in memory)" << std::endl;
  return seq;
}

void Speaker::MarkTaken(const v1::TrialRef& trial, const std::string& why) {
  MutexLock lock(&mu_);
  if (running_ && SameAttempt(trial, trial_) && !taken_) {
    taken_ = true;
    taken_reason_ = why;
  }
}

void Speaker::SendLoop() {
  auto backoff = std::chrono::milliseconds(100);
  for (;;) {
    {
      MutexLock lock(&mu_);
      if (stop_sender_) return;
    }
    uint64_t seq = 0;
    std::string bytes;
    if (!outbox_->Front(&seq, &bytes, std::chrono::milliseconds(200))) continue;
    const Status s = Deliver(bytes);
    if (coordinator::IsTransient(s)) {
      {
        MutexLock lock(&mu_);
        const auto until = Clock::now() + backoff;
        while (!stop_sender_ && !cv_.WaitUntil(&mu_, until)) {
        }
      }
      backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
      continue;
    }
    backoff = std::chrono::milliseconds(100);
    const Status popped = outbox_->Pop();
    if (!popped.ok()) log_ << "agent: " << popped.ToString() << std::endl;
  }
}

Status Speaker::Deliver(const std::string& bytes) {
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
    if (type == "metrics") return DeliverMetrics(trial, bytes);
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

Status Speaker::DeliverMetrics(const v1::TrialRef& trial, const std::string& bytes) {
  const nlohmann::json r = nlohmann::json::parse(bytes);
  const std::string kind_name = r.at("kind").get<std::string>();
  const auto kind = coordinator::MetricKindFromName(kind_name);
  const int64_t step = r.at("step").get<int64_t>();
  std::map<std::string, double> values;
  for (const auto& [name, v] : r.at("values").items()) values[name] = v.is_null() ? std::nan("") : v.get<double>();
  std::string reason;
  auto a = client_->ReportMetrics(group_, trial, kind, step, static_cast<int>(r.at("epoch").get<int64_t>()), values,
                                  r.at("total").get<int64_t>(), &reason);
  if (a.ok() && *a == v1::STOP) {
    log_ << "agent: the coordinator stopped the trial at step " << step << (reason.empty() ? "" : ": " + reason)
         << std::endl;
    MarkTaken(trial, reason);
  }
  if (a.ok()) return Status::OK();
  return Answered(a.status(),
                  "reporting " + kind_name + " metrics of " + trial.sweep_id() + "/" + trial.trial_id() +
                      " at step " + std::to_string(step),
                  trial);
}

Status Speaker::Answered(const Status& s, const std::string& what, const v1::TrialRef& trial) {
  if (s.ok() || coordinator::IsTransient(s)) return s;
  log_ << "agent: " << what << " failed: " << s.ToString() << std::endl;
  // A stale attempt: the trial is no longer this group's.
  if (s.code() == Status::Code::kFailedPrecondition) MarkTaken(trial, s.message());
  return s;
}

void Speaker::HeartbeatLoop() {
  for (;;) {
    uint64_t generation = 0;
    bool running = false;
    v1::TrialRef trial;
    {
      MutexLock lock(&mu_);
      if (stop_) return;
      generation = generation_;
      running = running_;
      trial = trial_;
    }
    auto r = client_->Heartbeat(group_, ranks_);
    MutexLock lock(&mu_);
    if (r.ok() && running && generation == generation_) {
      const bool stop = r->action() == v1::STOP && SameAttempt(r->trial(), trial);
      if ((stop || r->action() == v1::IDLE) && !taken_) {
        taken_ = true;
        taken_reason_ = stop ? r->reason() : "the coordinator no longer counts this group as running it";
      }
    } else if (!r.ok() && !coordinator::IsTransient(r.status())) {
      log_ << "agent: heartbeat: " << r.status().ToString() << std::endl;
    }
    const auto until = Clock::now() + std::chrono::milliseconds(interval_ms_);
    while (!stop_ && !cv_.WaitUntil(&mu_, until)) {
    }
  }
}

}  // namespace flap::worker
