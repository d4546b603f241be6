// flap-worker: one rank of a FLAP trial. Subcommands:
//   train  run a trial standalone from a config file plus --key value overrides
//   eval   retrieval metrics of a saved model (or of the untrained one) on a split
//   tag    zero-shot sound-event tags of a split's clips with a trained model (tagger.h)
//   export, embed, search, zeroshot: a trained model after training (export.h, inference.h)
// Progress and tables go to stderr; the JSON result goes to stdout.
// Exit codes: 0 success, 1 the run failed, 2 bad command line or config, 75 stopped by
// SIGTERM / SIGUSR1 / SIGUSR2 / SIGINT after a last checkpoint (resume with --resume).
#include <iostream>
#include <string>
#include <utility>
#include <vector>
#include <nlohmann/json.hpp>

#include "worker/agent.h"
#include "worker/evaluator.h"
#include "worker/inference.h"
#include "worker/stop_signal.h"
#include "worker/tagger.h"
#include "worker/thread_budget.h"
#include "worker/trainer.h"

namespace {

constexpr const char* kUsage =
    "usage: flap-worker train [--config FILE] [--resume | --resume-from STEP] [--force] [--KEY VALUE ...]\n"
    "       flap-worker eval  [--config FILE] [--model model.pt] [--KEY VALUE ...]\n"
    "       flap-worker tag   --model model.pt --out tags.jsonl [--labels FILE] [--split train]\n"
    "                         [--threshold 0.1] [--top-k 3] [--config FILE] [--KEY VALUE ...]\n"
    "       flap-worker export   --model model.pt --out DIR [--card-extra FILE.json] [--force] [--config FILE] [--KEY VALUE ...]\n"
    "       flap-worker embed    --model DIR|model.pt (--audio DIR|LIST|FILE | --split NAME | --captions FILE | --text TEXT)\n"
    "                            --out PREFIX [--format npy|safetensors] [--batch-size N] [--KEY VALUE ...]\n"
    "       flap-worker search   --model DIR|model.pt --index PREFIX.npy (--text TEXT | --audio FILE) [--top-k 10]\n"
    "       flap-worker zeroshot --model DIR|model.pt --labels labels.csv --audio DIR [--prompt \"the sound of {}\"]\n"
    "                            [--out DIR]\n"
    "       flap-worker agent (--coordinator HOST:PORT | --coordinator-file FILE) [--token-file FILE]\n"
    "                         [--tls-ca FILE | --insecure] [--group ID] [--rpc-retry SECONDS] [--max-trials N] [--KEY "
    "VALUE ...]\n"
    "                         runs the trials a flap-coordinator assigns (worker/agent.h); exit 0 when every\n"
    "                         sweep is done, 75 after a stop signal (the trial is requeued as preempted)\n"
    "       flap-worker COMMAND --help   lists every configuration key\n";

int Fail(const flap::Status& s, int code) {
  std::cerr << "flap-worker: " << s.ToString() << std::endl;
  return code;
}

// `flap-worker agent ...`: its own flags, the rest are trial config overrides.
int RunAgentCommand(const std::vector<std::string>& args) {
  flap::worker::AgentOptions agent;
  for (size_t i = 0; i < args.size();) {
    const std::string& a = args[i];
    const bool flag = a == "--coordinator" || a == "--coordinator-file" || a == "--token-file" || a == "--tls-ca" ||
                      a == "--group" || a == "--rpc-retry" || a == "--max-trials";
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (a == "--insecure") {  // plaintext to a coordinator that is not on loopback
      agent.insecure = true;
      ++i;
      continue;
    }
    if (!flag) {
      agent.overrides.push_back(a);
      ++i;
      continue;
    }
    if (i + 1 >= args.size()) return Fail(flap::Status::InvalidArgument(a + " needs a value"), 2);
    const std::string& v = args[i + 1];
    try {
      if (a == "--coordinator")
        agent.coordinator = v;
      else if (a == "--coordinator-file")
        agent.coordinator_file = v;
      else if (a == "--token-file")
        agent.token_file = v;
      else if (a == "--tls-ca")
        agent.tls_ca = v;
      else if (a == "--group")
        agent.group_id = v;
      else if (a == "--rpc-retry")
        agent.rpc_retry_s = std::stod(v);
      else
        agent.max_trials = std::stoi(v);
    } catch (const std::exception&) {
      return Fail(flap::Status::InvalidArgument(a + ": expected a number, got '" + v + "'"), 2);
    }
    i += 2;
  }
  return flap::worker::RunAgent(agent, std::cerr);
}

// The flags of train, eval and tag that are not configuration keys.
struct OwnFlags {
  std::string model_path, out_path, split = "train", labels_path = std::string(FLAP_CONFIG_DIR) + "/sound_events.txt";
  flap::worker::TagOptions tag_options;
  flap::worker::ResumeOptions resume;
};

// Takes the command's own flags out of `args` (the rest are configuration keys).
flap::Status TakeOwnFlags(const std::string& command, std::vector<std::string>* args_ptr, OwnFlags* f) {
  std::vector<std::string>& args = *args_ptr;
  const bool tag = command == "tag";
  for (size_t i = 0; i < args.size();) {
    const bool has_value = i + 1 < args.size();
    if ((command == "eval" || tag) && args[i] == "--model" && has_value) {
      f->model_path = args[i + 1];
    } else if (tag && args[i] == "--out" && has_value) {
      f->out_path = args[i + 1];
    } else if (tag && args[i] == "--split" && has_value) {
      f->split = args[i + 1];
    } else if (tag && args[i] == "--labels" && has_value) {
      f->labels_path = args[i + 1];
    } else if (tag && (args[i] == "--threshold" || args[i] == "--top-k") && has_value) {
      try {
        if (args[i] == "--threshold")
          f->tag_options.threshold = std::stod(args[i + 1]);
        else
          f->tag_options.top_k = std::stoi(args[i + 1]);
      } catch (const std::exception&) {
        return flap::Status::InvalidArgument(args[i] + ": expected a number, got '" + args[i + 1] + "'");
      }
    } else if (command == "train" && args[i] == "--resume-from" && has_value) {
      try {
        f->resume.from_step = std::stoll(args[i + 1]);
      } catch (const std::exception&) {
        return flap::Status::InvalidArgument("--resume-from: expected a step, got '" + args[i + 1] + "'");
      }
    } else if (command == "train" && (args[i] == "--resume" || args[i] == "--force")) {
      (args[i] == "--resume" ? f->resume.resume : f->resume.force) = true;
      args.erase(args.begin() + static_cast<long>(i));
      continue;
    } else {
      ++i;
      continue;
    }
    args.erase(args.begin() + static_cast<long>(i), args.begin() + static_cast<long>(i) + 2);
  }
  return flap::Status::OK();
}

// Exit 2 for bad input, 1 for any other failure.
int FailWith(const flap::Status& s) { return Fail(s, s.code() == flap::Status::Code::kInvalidArgument ? 2 : 1); }

// `flap-worker train|eval|tag [--config FILE] [key=value ...]`.
int RunConfigCommand(const std::string& command, std::vector<std::string> args) {
  OwnFlags f;
  if (flap::Status s = TakeOwnFlags(command, &args, &f); !s.ok()) return Fail(s, 2);
  flap::TrialConfig config;
  bool help = false;
  std::string help_text;
  flap::Status s = flap::ParseTrialConfig(args, &config, &help, &help_text);
  if (!s.ok()) return Fail(s, 2);
  if (help) {
    std::cout << kUsage << help_text;
    return 0;
  }
  if (command == "train") {
    // The stop deadline holds from here, through loading the data.
    flap::worker::InstallStopSignalHandlers(config.ckpt.stop_deadline);
    auto outcome = flap::worker::RunTraining(config, std::cerr, f.resume);
    // A run cut short by a stop request is a stop (resume me), whatever broke on the way.
    if (!outcome.ok() && flap::worker::StopRequested() != 0) return Fail(outcome.status(), flap::worker::kExitStopped);
    if (!outcome.ok()) return FailWith(outcome.status());
    if (outcome->stop_signal != 0) {
      std::cout << outcome->summary.dump(2) << std::endl;
      return flap::worker::kExitStopped;
    }
    std::cerr << flap::worker::FormatMetricsTable(outcome->final_metrics);
    std::cout << outcome->summary.dump(2) << std::endl;
    return 0;
  }
  if (command == "tag") {
    auto summary =
        flap::worker::RunTagging(config, f.model_path, f.split, f.labels_path, f.tag_options, f.out_path, std::cerr);
    if (!summary.ok()) return FailWith(summary.status());
    std::cout << summary->dump(2) << std::endl;
    return 0;
  }
  auto metrics = flap::worker::RunEvaluation(config, f.model_path, std::cerr);
  if (!metrics.ok()) return FailWith(metrics.status());
  std::cerr << flap::worker::FormatMetricsTable(*metrics);
  std::cout << flap::worker::MetricsToJson(*metrics).dump(2) << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  flap::worker::IdleThreadsSleep(argv);  // may run the program again (thread_budget.h)
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  const std::string command = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "--help" || command == "-h") {
    std::cout << kUsage;
    return 0;
  }
  // A stop signal is a stop from the start (stop_signal.h): never a crash while the config is
  // read or the data loaded. (eval and tag keep the default actions: Ctrl-C ends them.)
  if (command == "agent" || command == "train") flap::worker::CatchStopSignals();
  if (command == "agent") return RunAgentCommand(args);
  if (command == "export" || command == "embed" || command == "search" || command == "zeroshot") {
    for (const std::string& a : args) {
      if (a == "--help" || a == "-h") {
        std::cout << kUsage;
        return 0;
      }
    }
    return flap::worker::RunInferenceCommand(command, args, std::cout, std::cerr);
  }
  if (command != "train" && command != "eval" && command != "tag") {
    std::cerr << "flap-worker: unknown command '" << command << "'\n" << kUsage;
    return 2;
  }
  return RunConfigCommand(command, std::move(args));
}
