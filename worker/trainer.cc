#include "worker/trainer.h"

#include <ATen/Parallel.h>
#include <torch/serialize.h>
#include <torch/utils.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <ostream>
#include <thread>

#include "worker/batcher.h"
#include "worker/dataset.h"
#include "worker/evaluator.h"
#include "worker/stop_signal.h"

namespace flap::worker {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string FormatDuration(double s) {
  char buf[32];
  const long total = static_cast<long>(s + 0.5);
  if (total >= 3600) std::snprintf(buf, sizeof(buf), "%ldh%02ldm", total / 3600, (total % 3600) / 60);
  else std::snprintf(buf, sizeof(buf), "%ldm%02lds", total / 60, total % 60);
  return buf;
}

void SetThreads(int threads) {
  const int n = threads > 0 ? threads : 1;
  at::set_num_threads(n);
}

DatasetOptions DataOptions(const TrialConfig& c) {
  DatasetOptions o;
  o.target_frames = c.model.target_frames;
  o.num_mel_bins = c.model.num_mel_bins;
  o.threads = c.data.loader_threads;
  return o;
}

core::FlapModel BuildModel(TrialConfig* config, int vocab_size) {
  config->model.vocab_size = vocab_size;
  torch::manual_seed(config->train.seed);
  return core::FlapModel(config->model, config->loss.logit_scale_init);
}

Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path + ".tmp", std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Status::IOError("cannot write '" + path + "'");
  std::error_code ec;
  std::filesystem::rename(path + ".tmp", path, ec);
  if (ec) return Status::IOError("cannot rename to '" + path + "': " + ec.message());
  return Status::OK();
}

}  // namespace

StatusOr<TrainOutcome> RunTraining(const TrialConfig& config_in, std::ostream& log,
                                   const ResumeOptions& resume) {
  TrialConfig config = config_in;
  FLAP_RETURN_IF_ERROR(config.Validate());
  if (config.data.path.empty()) return Status::InvalidArgument("data.path is not set");
  SetThreads(config.train.threads);
  const auto start = Clock::now();

  FLAP_ASSIGN_OR_RETURN(Dataset train, Dataset::Load(config.data.path, config.data.train_split, DataOptions(config)));
  FLAP_ASSIGN_OR_RETURN(Dataset eval, Dataset::Load(config.data.path, config.data.eval_split, DataOptions(config)));
  const double load_s = Since(start);
  if (train.size() < config.train.batch_size) {
    return Status::InvalidArgument("split '" + config.data.train_split + "' has " + std::to_string(train.size()) +
                                   " clips, fewer than train.batch_size = " + std::to_string(config.train.batch_size));
  }

  TrainOutcome outcome;
  outcome.model = BuildModel(&config, train.tokenizer().vocab_size());
  Batcher batcher(train, config);
  const int64_t per_epoch = batcher.steps_per_epoch();
  int64_t total_steps = per_epoch * config.train.epochs;
  if (config.train.max_steps > 0) total_steps = std::min(total_steps, config.train.max_steps);
  if (config.optim.total_steps == 0) config.optim.total_steps = total_steps;
  core::TrainStep step_runner(outcome.model, config.loss, config.optim);

  int64_t start_step = 0;
  std::unique_ptr<Checkpointer> ckpt;
  if (!config.ckpt.root.empty()) {
    FLAP_ASSIGN_OR_RETURN(ckpt, Checkpointer::Open(config.ckpt, config.TrialId(), config.Hash()));
    if (resume.resume || resume.from_step >= 0) {
      auto restored = ckpt->Restore(resume, outcome.model, step_runner.optimizer(), log);
      if (restored.ok()) {
        start_step = *restored;
      } else if (restored.status().code() == Status::Code::kNotFound && resume.from_step < 0) {
        log << "no checkpoint of trial " << config.TrialId() << " yet: starting from step 0" << std::endl;
      } else {
        return restored.status();
      }
    }
  } else if (resume.resume || resume.from_step >= 0) {
    return Status::InvalidArgument("--resume needs ckpt.root");
  }
  InstallStopSignalHandlers(config.ckpt.stop_deadline);

  const int64_t b = config.train.batch_size;
  const int kept = core::NumKept(config.mask, {config.model.freq_patches(), config.model.time_patches()});
  log << "train: " << train.size() << " clips, eval: " << eval.size() << " clips / " << eval.num_captions()
      << " captions, features in " << FormatDuration(load_s) << "; preset " << config.preset << ", mask "
      << config.mask.ratio << " " << core::MaskStrategyName(config.mask.strategy) << " (" << kept << "/"
      << config.model.num_patches() << " tokens kept), recon.weight " << config.loss.recon_weight
      << ", text.augment " << config.augment << "; " << total_steps << " steps of global batch " << b
      << " (" << b << " negatives per step), " << at::get_num_threads() << " threads" << std::endl;

  nlohmann::json history = nlohmann::json::array();
  core::StepStats last;
  double fwd_s = 0, bwd_s = 0, opt_s = 0, window_s = 0;
  int64_t window_steps = 0;
  const auto train_start = Clock::now();
  double eval_s = 0;
  auto evaluate = [&](int64_t step) {
    const auto t = Clock::now();
    outcome.final_metrics = Evaluate(outcome.model, eval, config.train.eval_batch_size);
    eval_s += Since(t);
    nlohmann::json entry = MetricsToJson(outcome.final_metrics);
    entry["step"] = step;
    history.push_back(entry);
    char buf[160];
    std::snprintf(buf, sizeof(buf), "eval  step %lld: R@1 t2a %.2f%% a2t %.2f%%, R@10 t2a %.2f%% a2t %.2f%%, mAP@10 %.2f%%",
                  static_cast<long long>(step), 100 * outcome.final_metrics.t2a_r1, 100 * outcome.final_metrics.a2t_r1,
                  100 * outcome.final_metrics.t2a_r10, 100 * outcome.final_metrics.a2t_r10, 100 * outcome.final_metrics.map10);
    log << buf << std::endl;
  };

  auto metrics_for_retention = [&]() {
    std::map<std::string, double> m;
    if (!history.empty()) {
      for (auto& [k, v] : history.back().items()) {
        if (v.is_number() && k != "step") m[k] = v.get<double>();
      }
    }
    return m;
  };
  auto save = [&](int64_t at_step) -> Status {
    if (!ckpt) return Status::OK();
    return ckpt->SaveAsync(outcome.model, step_runner.optimizer(), at_step, per_epoch, metrics_for_retention());
  };

  int64_t step = start_step;
  int64_t last_saved = start_step;
  for (int64_t epoch = start_step / per_epoch; step < total_steps; ++epoch) {
    for (int64_t i = step % per_epoch; i < per_epoch && step < total_steps; ++i, ++step) {
      if (const int sig = StopRequested()) {
        if (step != last_saved) FLAP_RETURN_IF_ERROR(save(step));
        if (ckpt) FLAP_RETURN_IF_ERROR(ckpt->Wait());
        log << "stopped by signal " << sig << " at step " << step
            << (ckpt ? ", checkpoint taken" : " (no ckpt.root: nothing saved)") << std::endl;
        outcome.stop_signal = sig;
        outcome.summary = {{"stopped_by_signal", sig}, {"step", step}, {"config_hash", config.Hash()}};
        return outcome;
      }
      const auto t = Clock::now();
      core::Batch batch = batcher.TrainBatch(epoch, i);
      FLAP_ASSIGN_OR_RETURN(last, step_runner.Run(batch, step));
      if (!std::isfinite(last.loss)) {
        return Status::Internal("loss became " + std::to_string(last.loss) + " at step " + std::to_string(step) +
                                " (lower optim.lr?)");
      }
      window_s += Since(t);
      ++window_steps;
      fwd_s += last.forward_s;
      bwd_s += last.backward_s;
      opt_s += last.optimizer_s;
      if ((step + 1) % config.train.log_every == 0 || step + 1 == total_steps) {
        const double rate = static_cast<double>(window_steps * b) / window_s;
        const double eta = static_cast<double>(total_steps - step - 1) * window_s / static_cast<double>(window_steps);
        char buf[256];
        std::snprintf(buf, sizeof(buf),
                      "step %lld/%lld epoch %.2f loss %.4f (contrastive %.4f recon %.4f) scale %.1f lr %.2e | %.1f samples/s | eta %s",
                      static_cast<long long>(step + 1), static_cast<long long>(total_steps),
                      static_cast<double>(step + 1) / static_cast<double>(per_epoch), last.loss, last.contrastive,
                      last.recon, last.logit_scale, last.lr, rate, FormatDuration(eta).c_str());
        log << buf << std::endl;
        window_s = 0;
        window_steps = 0;
      }
      if (config.train.eval_every > 0 && (step + 1) % config.train.eval_every == 0 && step + 1 < total_steps) {
        evaluate(step + 1);
      }
      if (config.ckpt.every > 0 && (step + 1) % config.ckpt.every == 0 && step + 1 < total_steps) {
        FLAP_RETURN_IF_ERROR(save(step + 1));
        last_saved = step + 1;
      }
    }
  }
  const double train_s = Since(train_start) - eval_s;
  evaluate(step);
  if (ckpt && step != last_saved) FLAP_RETURN_IF_ERROR(save(step));
  if (ckpt) FLAP_RETURN_IF_ERROR(ckpt->Wait());

  nlohmann::json& s = outcome.summary;
  s["config"] = config.ToJson();
  s["config_hash"] = config.Hash();
  s["steps"] = step;
  s["epochs"] = static_cast<double>(step) / static_cast<double>(per_epoch);
  s["samples_seen"] = step * b;
  s["resumed_from_step"] = start_step;
  s["trial_id"] = config.TrialId();
  s["world_size"] = 1;
  s["global_batch"] = b;
  s["negatives_per_step"] = b;
  s["tokens_kept"] = kept;
  s["final_loss"] = {{"total", last.loss}, {"contrastive", last.contrastive}, {"recon", last.recon},
                     {"logit_scale", last.logit_scale}};
  s["eval"] = MetricsToJson(outcome.final_metrics);
  s["eval_history"] = history;
  s["samples_per_second"] = train_s > 0 ? static_cast<double>(step * b) / train_s : 0.0;
  s["step_seconds"] = {{"forward", fwd_s / std::max<int64_t>(1, step)},
                       {"backward", bwd_s / std::max<int64_t>(1, step)},
                       {"optimizer", opt_s / std::max<int64_t>(1, step)}};
  s["wall_seconds"] = Since(start);
  s["train_seconds"] = train_s;
  s["eval_seconds"] = eval_s;

  if (!config.train.output_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(config.train.output_dir, ec);
    if (ec) return Status::IOError("cannot create train.output_dir '" + config.train.output_dir + "': " + ec.message());
    const std::string model_path = config.train.output_dir + "/model.pt";
    try {
      torch::save(outcome.model, model_path + ".tmp");
    } catch (const c10::Error& e) {
      return Status::IOError("cannot save '" + model_path + "': " + e.what_without_backtrace());
    }
    std::filesystem::rename(model_path + ".tmp", model_path, ec);
    if (ec) return Status::IOError("cannot rename to '" + model_path + "': " + ec.message());
    FLAP_RETURN_IF_ERROR(WriteText(config.train.output_dir + "/summary.json", s.dump(2) + "\n"));
  }
  return outcome;
}

StatusOr<core::RetrievalMetrics> RunEvaluation(const TrialConfig& config_in, const std::string& model_path,
                                               std::ostream& log) {
  TrialConfig config = config_in;
  FLAP_RETURN_IF_ERROR(config.Validate());
  if (config.data.path.empty()) return Status::InvalidArgument("data.path is not set");
  SetThreads(config.train.threads);
  FLAP_ASSIGN_OR_RETURN(Dataset eval, Dataset::Load(config.data.path, config.data.eval_split, DataOptions(config)));
  core::FlapModel model = BuildModel(&config, eval.tokenizer().vocab_size());
  if (!model_path.empty()) {
    if (!std::filesystem::exists(model_path)) return Status::NotFound("model file '" + model_path + "' does not exist");
    try {
      torch::load(model, model_path);
    } catch (const c10::Error& e) {
      return Status::Corruption("model file '" + model_path + "' does not match this config or is damaged: " +
                                e.what_without_backtrace());
    }
  }
  log << "evaluating " << (model_path.empty() ? "the untrained model" : "'" + model_path + "'") << " on split '"
      << config.data.eval_split << "'" << std::endl;
  return Evaluate(model, eval, config.train.eval_batch_size);
}

}  // namespace flap::worker
