#include "worker/agent.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <thread>

#include "common/file_util.h"
#include "common/path_name.h"
#include "config/trial_config.h"
#include "coordinator/client.h"
#include "metrics/metrics.h"
#include "worker/checkpointer.h"
#include "worker/core/collectives.h"
#include "worker/core/worker_group.h"
#include "worker/lease_source.h"
#include "worker/speaker.h"
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

std::string DefaultGroupId() {
  if (!Env("SLURM_ARRAY_JOB_ID").empty() && !Env("SLURM_ARRAY_TASK_ID").empty()) {
    return "slurm-" + Env("SLURM_ARRAY_JOB_ID") + "_" + Env("SLURM_ARRAY_TASK_ID");
  }
  if (!Env("SLURM_JOB_ID").empty()) return "slurm-" + Env("SLURM_JOB_ID");
  char buf[256] = {0};
  const std::string host = CleanPathNameChars(gethostname(buf, sizeof(buf) - 1) == 0 ? buf : "localhost", '-');
  return host.substr(0, 40) + "-" + std::to_string(getpid());
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

// What every rank does next, read from rank 0's GroupInstruction.
struct Instruction {
  enum class Kind { kRegistered, kTrial, kWait, kExit };
  Kind kind = Kind::kExit;
  std::string group_id;  // kRegistered
  int64_t wait_ms = 0;
  int exit_code = 0;
  coordinator::TrialAssignment assignment;  // kTrial
};

Instruction Read(const v1::GroupInstruction& g) {
  Instruction in;
  switch (g.what_case()) {
    case v1::GroupInstruction::kNext: {
      const coordinator::NextTrialResult next = coordinator::ReadNextTrial(g.next());
      if (next.assigned) {
        in.kind = Instruction::Kind::kTrial;
        in.assignment = next.assignment;
      } else if (next.all_done) {
        in.kind = Instruction::Kind::kExit;
      } else {
        in.kind = Instruction::Kind::kWait;
        in.wait_ms = std::clamp<int64_t>(next.retry_after_ms, 50, 1000);
      }
      break;
    }
    case v1::GroupInstruction::kGroupId:
      in.kind = Instruction::Kind::kRegistered;
      in.group_id = g.group_id();
      break;
    case v1::GroupInstruction::kWaitMs:
      in.kind = Instruction::Kind::kWait;
      in.wait_ms = g.wait_ms();
      break;
    case v1::GroupInstruction::kExitCode:
    case v1::GroupInstruction::WHAT_NOT_SET:
      in.exit_code = g.what_case() == v1::GroupInstruction::kExitCode ? g.exit_code() : 1;
      break;
  }
  return in;
}

v1::GroupInstruction ExitWith(int code) {
  v1::GroupInstruction g;
  g.set_exit_code(code);
  return g;
}

// Whether an error means the group itself is broken (a rank lost, its checkpoint storage
// failing: worker/checkpointer.h) rather than the trial.
bool GroupFault(const Status& s, const core::WorkerGroup& group) {
  return !group.status().ok() || s.code() == Status::Code::kDeadlineExceeded || IsCheckpointStorageFault(s);
}

// One agent process: connect, join the group, then decide (rank 0), tell every rank, run the
// trial and report its outcome, until an instruction says exit.
class Agent {
 public:
  Agent(const AgentOptions& options, std::ostream& log) : options_(options), log_(log) {}

  int Run() {
    if (std::optional<int> code = Start()) return *code;
    for (;;) {
      StatusOr<Instruction> in = Exchange(rank_ == 0 ? Decide() : v1::GroupInstruction());
      if (!in.ok()) return Fail(in.status(), 1);
      switch (in->kind) {
        case Instruction::Kind::kExit:
          if (rank_ == 0) {
            speaker_->Shutdown();
            if (in->exit_code == 0) log_ << "agent: every sweep is done (" << trials_run_ << " trial(s) run here)" << std::endl;
          }
          return in->exit_code;
        case Instruction::Kind::kWait:
          std::this_thread::sleep_for(std::chrono::milliseconds(in->wait_ms));
          break;
        case Instruction::Kind::kRegistered:  // only the first instruction (Start)
          break;
        case Instruction::Kind::kTrial:
          if (std::optional<int> code = RunTrial(in->assignment)) return *code;
          break;
      }
    }
  }

 private:
  int Fail(const Status& s, int code) {
    log_ << "flap-worker agent: " << s.ToString() << std::endl;
    return code;
  }

  // Options, the coordinator's client, the worker group, metrics and (rank 0) registration;
  // the exit code when one fails.
  std::optional<int> Start() {
    if (Status s = ParseOwnOverrides(); !s.ok()) return Fail(s, 2);
    if (std::optional<int> code = Connect()) return code;
    InstallStopSignalHandlers(local_.ckpt.stop_deadline);
    SetThreads(local_.train.threads);
    auto group = JoinWorkerGroup(local_, log_);
    if (!group.ok()) return Fail(group.status(), 1);
    group_ = std::move(*group);
    rank_ = group_->rank();
    if (!local_.metrics.listen.empty()) {
      auto m = metrics::MetricsServer::Start(local_.metrics.listen);
      if (!m.ok()) return Fail(m.status(), 1);
      metrics_server_ = std::move(*m);
      log_ << "rank " << rank_ << " serves metrics on http://" << metrics_server_->endpoint() << "/metrics" << std::endl;
    }
    auto endpoints = core::AllGatherStrings(*group_, metrics_server_ ? metrics_server_->endpoint() : "");
    if (!endpoints.ok()) return Fail(endpoints.status(), 1);
    if (!metrics_server_) endpoints->clear();
    // Rank 0 registers the group and tells the others its id (or to exit).
    v1::GroupInstruction first;
    Status registered;
    if (rank_ == 0) {
      SpeakerOptions so;
      so.group = options_.group_id.empty() ? DefaultGroupId() : options_.group_id;
      so.retry_s = options_.rpc_retry_s;
      speaker_ = std::make_unique<Speaker>(client_.get(), so, log_);
      registered = speaker_->Register(group_->world_size(), *endpoints);
      if (registered.ok()) {
        first.set_group_id(speaker_->group());
        log_ << "agent: group '" << speaker_->group() << "' of " << group_->world_size()
             << " rank(s) registered with " << client_->options().target << std::endl;
      } else {
        first = ExitWith(1);
      }
    }
    StatusOr<Instruction> in = Exchange(first);
    if (!registered.ok()) return Fail(registered, 1);
    if (!in.ok()) return Fail(in.status(), 1);
    if (in->kind != Instruction::Kind::kRegistered) return in->exit_code;
    group_id_ = in->group_id;
    return std::nullopt;
  }

  // The agent's own `--KEY VALUE` overrides: a valid config by themselves (dist.*, metrics.*),
  // never a --config file (the sweep's base config is the file).
  Status ParseOwnOverrides() {
    if (options_.overrides.size() % 2 != 0) return Status::InvalidArgument("overrides must be --KEY VALUE pairs");
    FLAP_ASSIGN_OR_RETURN(ConfigArgs args, ParseConfigArgs(options_.overrides));
    if (!args.file.empty() || args.help) {
      return Status::InvalidArgument(
          "the agent takes --KEY VALUE overrides, not --config or --help: the sweep's base config is the file");
    }
    own_ = args.flags;
    FLAP_RETURN_IF_ERROR(ApplyConfigValues(own_, &local_));
    return local_.Validate();
  }

  std::optional<int> Connect() {
    auto token = coordinator::ReadToken(options_.token_file);
    if (!token.ok()) return Fail(token.status(), 2);
    auto address = CoordinatorAddress(options_);
    if (!address.ok()) return Fail(address.status(), 1);
    coordinator::ClientOptions co;
    co.target = *address;
    co.token = *token;
    co.insecure = options_.insecure;
    if (!options_.tls_ca.empty()) {
      StatusOr<std::string> pem = ReadFileToString(options_.tls_ca);
      if (!pem.ok()) {
        return Fail(Status::NotFound("TLS CA file '" + options_.tls_ca + "' cannot be read: " + pem.status().message()),
                    2);
      }
      co.tls_ca = *std::move(pem);
    }
    auto client = coordinator::CoordinatorClient::Connect(co);
    if (!client.ok()) return Fail(client.status(), 2);
    client_ = std::move(*client);
    return std::nullopt;
  }

  // Rank 0's decision: exit on a stop signal or --max-trials, wait while records of the last
  // trial are unacknowledged, else the coordinator's answer as it came.
  v1::GroupInstruction Decide() {
    if (StopRequested() != 0) {
      log_ << "agent: stop signal " << StopRequested() << " while idle: exiting" << std::endl;
      return ExitWith(kExitStopped);
    }
    if (options_.max_trials > 0 && trials_run_ >= options_.max_trials) return ExitWith(0);
    v1::GroupInstruction g;
    if (!speaker_->Drained(std::chrono::milliseconds(500))) {
      g.set_wait_ms(50);
      return g;
    }
    StatusOr<v1::NextTrialResponse> next = speaker_->Next();
    if (!next.ok()) {
      log_ << "flap-worker agent: " << next.status().ToString() << std::endl;
      return ExitWith(1);
    }
    *g.mutable_next() = *std::move(next);
    return g;
  }

  // Rank 0 sends `mine` to every rank (the others' argument is ignored); each reads it.
  StatusOr<Instruction> Exchange(const v1::GroupInstruction& mine) {
    std::string bytes;
    if (rank_ == 0 && !mine.SerializeToString(&bytes)) return Status::Internal("cannot serialise an instruction");
    FLAP_RETURN_IF_ERROR(core::BroadcastBytes(*group_, &bytes, 0));
    v1::GroupInstruction g;
    if (!g.ParseFromString(bytes)) return Status::Corruption("the instruction from rank 0 does not parse");
    return Read(g);
  }

  // Runs one trial on every rank; an exit code when the agent must exit.
  std::optional<int> RunTrial(const coordinator::TrialAssignment& a) {
    ++trials_run_;
    const v1::TrialRef& trial = a.trial;
    if (rank_ == 0) {
      log_ << "agent: trial " << trial.sweep_id() << "/" << trial.trial_id() << " attempt " << trial.attempt();
      for (const auto& [k, v] : a.overrides) log_ << " " << k << "=" << v;
      log_ << std::endl;
      speaker_->BeginTrial(trial);
      // Should the stop watchdog end the process mid-trial, the coordinator still hears of a
      // preemption (not a lost group, counted as a node fault).
      Speaker* sp = speaker_.get();
      SetStopDeadlineHook([sp, trial](int signal) { sp->ReportPreemptionNow(trial, signal); });
    }
    StatusOr<TrialConfig> config = ConfigFor(a);
    if (!config.ok()) {
      if (rank_ == 0) {
        SetStopDeadlineHook(nullptr);
        speaker_->Fail(trial, coordinator::FailureCause::kTrialError, config.status().ToString());
        speaker_->EndTrial();
      }
      return std::nullopt;
    }
    ResumeOptions resume;
    resume.resume = !config->ckpt.root.empty();
    StatusOr<TrainOutcome> outcome = RunTraining(*config, rank_ == 0 ? log_ : null_log_, resume, HooksFor(a, *config));
    if (rank_ != 0) {
      if (outcome.ok() && outcome->stop_signal != 0) return kExitStopped;
      if (!outcome.ok() && GroupFault(outcome.status(), *group_)) return Fail(outcome.status(), 1);
      return std::nullopt;
    }
    SetStopDeadlineHook(nullptr);  // from here the agent reports the outcome itself
    return Conclude(trial, outcome);
  }

  // The trial's config: the sweep's base config, then the agent's own overrides, then the
  // trial's (which win), applied in memory; keys local to this machine (ConfigKey::local_only)
  // are never taken from the coordinator (WorkerTrialConfig, config/trial_config.h).
  // train.output_dir, when set here, gets the trial's id appended.
  StatusOr<TrialConfig> ConfigFor(const coordinator::TrialAssignment& a) const {
    std::map<std::string, std::string> own = own_;
    auto out = own.find("train.output_dir");
    if (out != own.end() && !out->second.empty()) {
      const auto& ids = a.overrides.count("train.trial_id") ? a.overrides : own;
      out->second += "/" + (ids.count("train.trial_id") ? ids.at("train.trial_id") : std::string());
    }
    return WorkerTrialConfig(
        a.base_config, "trial " + a.trial.sweep_id() + "/" + a.trial.trial_id() + "'s config (the sweep's base config)",
        own, a.overrides);
  }

  // The trainer's hooks: shards leased from the coordinator on every rank; on rank 0, records
  // through the Speaker and its word on whether the trial was taken.
  TrainingHooks HooksFor(const coordinator::TrialAssignment& a, const TrialConfig& config) {
    TrainingHooks hooks;
    hooks.group = group_.get();
    hooks.metrics_server = metrics_server_.get();
    hooks.eval_unit = a.asha_unit;
    hooks.eval_at = a.asha_rungs;
    coordinator::CoordinatorClient* c = client_.get();
    hooks.make_source = [c, group_id = group_id_, trial = a.trial, retry_s = options_.rpc_retry_s, train = config.train](
                            const std::vector<sharding::ShardInfo>& shards, int r,
                            int w) -> StatusOr<std::unique_ptr<ShardSource>> {
      FLAP_ASSIGN_OR_RETURN(const int64_t batch, PerRankBatch(train, w));
      LeaseSourceOptions lo;
      lo.group_id = group_id;
      lo.trial = trial;
      lo.rank = r;
      lo.world_size = w;
      lo.batch_size = batch;
      lo.seed = static_cast<uint64_t>(train.seed);
      lo.retry_for_s = retry_s;
      FLAP_ASSIGN_OR_RETURN(std::unique_ptr<LeaseShardSource> src, LeaseShardSource::Create(c, shards, lo));
      return std::unique_ptr<ShardSource>(std::move(src));
    };
    if (rank_ != 0) return hooks;
    Speaker* sp = speaker_.get();
    hooks.report = [sp, trial = a.trial](const std::string& kind, int64_t step, int64_t epoch, int64_t total,
                                         const std::map<std::string, double>& values) {
      // The trainer names the kind of its reports: "train", "eval" or "test".
      return sp->Report(trial, coordinator::MetricKindFromName(kind), step, epoch, total, values);
    };
    hooks.on_checkpoint = [sp, trial = a.trial](const std::string& ref, int64_t step) {
      sp->Checkpoint(trial, ref, step);
    };
    hooks.should_stop = [sp]() { return sp->Taken(nullptr); };
    return hooks;
  }

  // Rank 0: tells the coordinator how the trial ended (agent.h's table); an exit code when the
  // agent must exit.
  std::optional<int> Conclude(const v1::TrialRef& trial, const StatusOr<TrainOutcome>& outcome) {
    std::string why;
    const bool taken = speaker_->Taken(&why);
    speaker_->EndTrial();
    const std::string name = trial.sweep_id() + "/" + trial.trial_id();
    if (outcome.ok() && outcome->stop_signal != 0) {
      speaker_->Fail(trial, coordinator::FailureCause::kPreemption,
                     "stopped by signal " + std::to_string(outcome->stop_signal) + " at step " +
                         std::to_string(outcome->steps_done) + " after a last checkpoint");
      speaker_->Shutdown();
      return kExitStopped;
    }
    if (outcome.ok() && outcome->stopped) {
      log_ << "agent: trial " << trial.trial_id() << " stopped at step " << outcome->steps_done
           << (why.empty() ? "" : " (" + why + ")") << std::endl;
      return std::nullopt;
    }
    if (outcome.ok()) {
      speaker_->Finish(trial);
      log_ << "agent: trial " << name << " finished at step " << outcome->steps_done << std::endl;
      return std::nullopt;
    }
    if (taken) {
      log_ << "agent: trial " << trial.trial_id() << " ended (" << why << "): " << outcome.status().ToString()
           << std::endl;
      return std::nullopt;
    }
    const bool group_fault = GroupFault(outcome.status(), *group_);
    speaker_->Fail(trial, group_fault ? coordinator::FailureCause::kNodeFault : coordinator::FailureCause::kTrialError,
                   outcome.status().ToString());
    if (!group_fault) return std::nullopt;
    speaker_->Shutdown();
    return Fail(outcome.status(), 1);
  }

  const AgentOptions& options_;
  std::ostream& log_;
  std::ostream null_log_{nullptr};
  std::map<std::string, std::string> own_;  // the agent's own overrides, by key
  TrialConfig local_;                        // the config they make by themselves
  std::unique_ptr<coordinator::CoordinatorClient> client_;
  std::unique_ptr<core::WorkerGroup> group_;
  std::unique_ptr<metrics::MetricsServer> metrics_server_;
  std::unique_ptr<Speaker> speaker_;  // rank 0's
  std::string group_id_;              // as registered (Start)
  int rank_ = 0;
  int trials_run_ = 0;
};

}  // namespace

int RunAgent(const AgentOptions& options, std::ostream& log) { return Agent(options, log).Run(); }

}  // namespace flap::worker
