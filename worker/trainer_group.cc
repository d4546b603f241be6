// The group agreements, host readings and metrics endpoint of a training run
// (trainer_internal.h).
#include <ATen/Parallel.h>
#include <sys/resource.h>
#include <torch/serialize.h>

#include <cmath>
#include <filesystem>
#include <sstream>
#include <vector>

#include "metrics/metrics.h"
#include "metrics/worker_metrics.h"
#include "worker/trainer_internal.h"

namespace flap::worker::internal {

HostUsage ReadHostUsage() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  HostUsage u;
  u.user_s = static_cast<double>(ru.ru_utime.tv_sec) + 1e-6 * static_cast<double>(ru.ru_utime.tv_usec);
  u.system_s = static_cast<double>(ru.ru_stime.tv_sec) + 1e-6 * static_cast<double>(ru.ru_stime.tv_usec);
  u.minor_faults = ru.ru_minflt;
  return u;
}

StatusOr<LoaderCursor> CursorForStep(const nlohmann::json& saved, int64_t step, int64_t per_epoch) {
  if (saved.is_null()) return LoaderCursor{step / per_epoch, -1, 0, step % per_epoch, {}};
  FLAP_ASSIGN_OR_RETURN(LoaderCursor c, LoaderCursor::FromJson(saved, "checkpoint at step " + std::to_string(step)));
  if (c.epoch * per_epoch + c.step_in_epoch != step) {
    return Status::Corruption("checkpoint at step " + std::to_string(step) + ": its data cursor (epoch " +
                              std::to_string(c.epoch) + ", step " + std::to_string(c.step_in_epoch) +
                              ") does not match the step at " + std::to_string(per_epoch) + " steps per epoch");
  }
  return c;
}

nlohmann::json RunProgress::ToJson() const {
  nlohmann::json j = {{"train_seconds", train_seconds}, {"samples", samples}, {"flops", flops}};
  if (warmup_end >= 0) j["warmup_end"] = warmup_end;
  if (fitted_steps > 0) j["fitted_steps"] = fitted_steps;
  if (!selected.is_null()) j["selected"] = selected;
  if (global_batch > 0) j["global_batch"] = global_batch;
  if (world_sizes.is_array() && !world_sizes.empty()) j["world_sizes"] = world_sizes;
  return j;
}

RunProgress RunProgress::FromJson(const nlohmann::json& j, int64_t step, int64_t global_batch) {
  RunProgress p;
  p.step = step;
  p.samples = step * global_batch;
  if (!j.is_object()) return p;
  p.train_seconds = j.value("train_seconds", 0.0);
  p.samples = j.value("samples", p.samples);
  p.flops = j.value("flops", 0.0);
  p.warmup_end = j.value("warmup_end", -1.0);
  p.fitted_steps = j.value("fitted_steps", int64_t{0});
  if (j.contains("selected")) p.selected = j["selected"];
  p.global_batch = j.value("global_batch", int64_t{0});
  if (j.contains("world_sizes") && j["world_sizes"].is_array()) p.world_sizes = j["world_sizes"];
  return p;
}

StatusOr<double> SumOverRanks(core::WorkerGroup& g, double local) {
  if (g.world_size() == 1) return local;
  at::Tensor t = at::tensor({local}, at::kDouble);
  FLAP_RETURN_IF_ERROR(g.AllReduceSum(t));
  return t.item<double>();
}

StatusOr<int64_t> BroadcastFromRankZero(core::WorkerGroup& g, int64_t value) {
  if (g.world_size() == 1) return value;
  at::Tensor t = at::tensor({value}, at::kLong);
  FLAP_RETURN_IF_ERROR(g.Broadcast(t, 0));
  return t.item<int64_t>();
}

Status ShareRestoredState(core::WorkerGroup& g, core::FlapModel& model, torch::optim::Optimizer& optimizer,
                          RunProgress* p) {
  at::Tensor counts = at::tensor({p->step, p->samples, p->fitted_steps}, at::kLong);
  FLAP_RETURN_IF_ERROR(g.Broadcast(counts, 0));
  p->step = counts[0].item<int64_t>();
  p->samples = counts[1].item<int64_t>();
  p->fitted_steps = counts[2].item<int64_t>();
  at::Tensor reals = at::tensor({p->train_seconds, p->flops, p->warmup_end}, at::kDouble);
  FLAP_RETURN_IF_ERROR(g.Broadcast(reals, 0));
  p->train_seconds = reals[0].item<double>();
  p->flops = reals[1].item<double>();
  p->warmup_end = reals[2].item<double>();
  if (p->step == 0) return Status::OK();
  {
    at::NoGradGuard no_grad;
    for (auto& p : model->parameters()) {
      at::Tensor d = p.detach();
      FLAP_RETURN_IF_ERROR(g.Broadcast(d, 0));
    }
    for (auto& b : model->buffers()) FLAP_RETURN_IF_ERROR(g.Broadcast(b, 0));
  }
  std::string bytes;
  if (g.rank() == 0) {
    std::ostringstream out;
    torch::save(optimizer, out);
    bytes = out.str();
  }
  FLAP_RETURN_IF_ERROR(core::BroadcastBytes(g, &bytes, 0));
  if (g.rank() != 0) {
    std::istringstream in(bytes);
    try {
      torch::load(optimizer, in, model->parameters().front().device());
    } catch (const c10::Error& e) {
      return Status::Corruption(std::string("optimizer state received from rank 0: ") + e.what_without_backtrace());
    }
  }
  return Status::OK();
}

StatusOr<StopDecision> AgreeOnStop(core::WorkerGroup& g, int local_signal, bool local_asked, int budget) {
  if (g.world_size() == 1) return StopDecision{local_signal, local_asked, budget};
  at::Tensor flag = at::tensor(
      {local_signal != 0 ? 1.0f : 0.0f, local_asked ? 1.0f : 0.0f, g.rank() == 0 ? static_cast<float>(budget) : 0.0f},
      at::kFloat);
  FLAP_RETURN_IF_ERROR(g.AllReduceSum(flag));
  StopDecision d;
  if (flag[0].item<float>() != 0.0f) d.signal = local_signal != 0 ? local_signal : 15;
  d.asked = flag[1].item<float>() != 0.0f;
  d.budget = static_cast<int>(std::lround(flag[2].item<float>()));
  return d;
}

const char* BudgetName(int code) {
  return code == kBudgetSeconds ? "seconds" : code == kBudgetSamples ? "samples" : code == kBudgetFlops ? "flops" : "";
}

int SpentBudget(const TrainConfig& t, double trained_s, int64_t samples, double flops) {
  if (t.max_samples > 0 && samples >= t.max_samples) return kBudgetSamples;
  if (t.max_flops > 0 && flops >= t.max_flops) return kBudgetFlops;
  if (t.max_seconds > 0 && trained_s >= t.max_seconds) return kBudgetSeconds;
  return kBudgetNone;
}

Status ShareMetrics(core::WorkerGroup& g, core::RetrievalMetrics* m) {
  if (g.world_size() == 1) return Status::OK();
  // Every double of RetrievalMetrics (the counts travel as doubles: exact below 2^53).
  double num_clips = static_cast<double>(m->num_clips), num_captions = static_cast<double>(m->num_captions);
  double* const fields[] = {&m->t2a_r1,         &m->t2a_r5,         &m->t2a_r10,        &m->a2t_r1,
                            &m->a2t_r5,         &m->a2t_r10,        &m->t2a_map10,      &m->a2t_map10,
                            &m->map10,          &num_clips,         &num_captions,      &m->t2a_r1_lo,
                            &m->t2a_r1_hi,      &m->t2a_r5_lo,      &m->t2a_r5_hi,      &m->t2a_r10_lo,
                            &m->t2a_r10_hi,     &m->a2t_r1_lo,      &m->a2t_r1_hi,      &m->a2t_r5_lo,
                            &m->a2t_r5_hi,      &m->a2t_r10_lo,     &m->a2t_r10_hi,     &m->map10_lo,
                            &m->map10_hi,       &m->chance_t2a_r1,  &m->chance_t2a_r5,  &m->chance_t2a_r10,
                            &m->chance_a2t_r1,  &m->chance_a2t_r5,  &m->chance_a2t_r10};
  constexpr int64_t kFields = static_cast<int64_t>(sizeof(fields) / sizeof(fields[0]));
  static_assert(sizeof(core::RetrievalMetrics) == (kFields - 2) * sizeof(double) + 2 * sizeof(int64_t),
                "ShareMetrics must carry every field of RetrievalMetrics");
  std::vector<double> values;
  for (double* f : fields) values.push_back(*f);
  at::Tensor t = at::tensor(values, at::kDouble);
  FLAP_RETURN_IF_ERROR(g.Broadcast(t, 0));
  t = t.contiguous();
  const double* v = t.data_ptr<double>();
  for (int64_t i = 0; i < kFields; ++i) *fields[i] = v[i];
  m->num_clips = static_cast<int64_t>(std::llround(num_clips));
  m->num_captions = static_cast<int64_t>(std::llround(num_captions));
  return Status::OK();
}

Status MeanLosses(core::WorkerGroup& g, core::StepStats* st) {
  if (g.world_size() == 1) return Status::OK();
  at::Tensor l = at::tensor({st->loss, st->contrastive, st->recon}, at::kDouble);
  FLAP_RETURN_IF_ERROR(g.AllReduceSum(l));
  l.div_(g.world_size());
  st->loss = l[0].item<double>();
  st->contrastive = l[1].item<double>();
  st->recon = l[2].item<double>();
  return Status::OK();
}

RankMetrics::~RankMetrics() {
  if (!sd_file.empty()) {
    std::error_code ec;
    std::filesystem::remove(sd_file, ec);
  }
}

StatusOr<std::unique_ptr<RankMetrics>> StartRankMetrics(const TrialConfig& c, int rank, std::ostream& log,
                                                        metrics::MetricsServer* shared) {
  auto m = std::make_unique<RankMetrics>();
  if (shared != nullptr) {
    m->worker = std::make_unique<metrics::WorkerMetrics>(shared->registry(), c.TrialId(), rank);
    return m;
  }
  if (c.metrics.listen.empty()) return m;
  FLAP_ASSIGN_OR_RETURN(m->server, metrics::MetricsServer::Start(c.metrics.listen));
  m->worker = std::make_unique<metrics::WorkerMetrics>(m->server->registry(), c.TrialId(), rank);
  log << "rank " << rank << " serves metrics on http://" << m->server->endpoint() << "/metrics" << std::endl;
  if (!c.metrics.sd_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(c.metrics.sd_dir, ec);
    const std::string path = c.metrics.sd_dir + "/" + c.TrialId() + "-rank" + std::to_string(rank) + ".json";
    FLAP_RETURN_IF_ERROR(metrics::WriteFileSd(
        path, {{m->server->endpoint(), {{"trial", c.TrialId()}, {"rank", std::to_string(rank)}}}}));
    m->sd_file = path;
  }
  return m;
}

}  // namespace flap::worker::internal
