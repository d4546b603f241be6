#include "worker/core/train_step.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/cuda.h>
#include <torch/nn/utils/clip_grad.h>

#include <chrono>

namespace flap::core {
namespace {

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

bool IsEmbeddingParameter(const std::string& name) {
  return name == "token_embed.weight" || name == "text_pos" ||
         (name.rfind("roberta.embeddings.", 0) == 0 && name.find("_embeddings.weight") != std::string::npos);
}
bool IsDecoderParameter(const std::string& name) { return name.rfind("decoder_", 0) == 0; }

void SynchronizeDevice(const at::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

Batch ToDevice(const Batch& batch, const c10::Device& device) {
  if (device.is_cpu()) return batch;
  auto move = [&](const at::Tensor& t) -> at::Tensor {
    if (!t.defined() || t.device() == device) return t;
    const at::Tensor host = t.is_pinned() ? t : t.pin_memory();
    return host.to(device, /*non_blocking=*/true);
  };
  return Batch{move(batch.spec), move(batch.tokens), move(batch.keep)};
}

TrainStep::TrainStep(FlapModel model, const LossConfig& loss, const OptimConfig& optim, EmbeddingGather* gather,
                     GradientSync* sync, Precision precision)
    : model_(std::move(model)),
      loss_(loss),
      optim_(optim),
      gather_(gather ? gather : &local_gather_),
      sync_(sync),
      precision_(precision) {
  // Weight decay on weight matrices only: biases, norms, the logit scale and the text
  // embeddings (IsEmbeddingParameter) are not decayed.
  std::vector<at::Tensor> decay, no_decay, synced;
  const bool with_recon = loss_.recon_weight > 0.0;
  for (const auto& item : model_->named_parameters()) {
    const std::string& name = item.key();
    const at::Tensor& p = item.value();
    params_.push_back(p);
    (p.dim() >= 2 && !IsEmbeddingParameter(name) ? decay : no_decay).push_back(p);
    // Without reconstruction the decoder never gets a gradient: it stays out of the gradient
    // buckets, where it would hold back the overlapped all-reduces until backward ends.
    if (with_recon || !IsDecoderParameter(name)) synced.push_back(p);
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  auto options = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(optim_.lr).betas({optim_.beta1, optim_.beta2}).eps(optim_.eps).weight_decay(wd));
  };
  groups.emplace_back(decay, options(optim_.weight_decay));
  groups.emplace_back(no_decay, options(0.0));
  optimizer_ = std::make_unique<torch::optim::AdamW>(std::move(groups), torch::optim::AdamWOptions(optim_.lr));
  if (sync_) sync_->Attach(synced);
}

StatusOr<StepStats> TrainStep::ComputeGradients(const Batch& batch) {
  StepStats st;
  const at::Device device = batch.spec.device();
  const bool with_recon = loss_.recon_weight > 0.0;
  const int64_t b = batch.tokens.size(0), views = batch.views();
  if (batch.keep.defined() && batch.keep.size(0) != views * b) {
    return Status::InvalidArgument("training batch: " + std::to_string(batch.keep.size(0)) +
                                   " rows of kept patches for " + std::to_string(b) + " samples (want a multiple)");
  }
  const double gather0 = gather_->seconds();
  auto t0 = std::chrono::steady_clock::now();
  optimizer_->zero_grad();
  at::Tensor loss, contrastive, recon;
  try {
    // V views: the audio encoder sees each clip V times (rows view-major), the text once.
    const at::Tensor spec = views > 1 ? batch.spec.repeat({views, 1, 1}) : batch.spec;
    ModelOutput out;
    {
      AutocastGuard autocast(device, precision_);
      out = model_->forward(spec, batch.keep, batch.tokens, with_recon);
    }
    // Losses in fp32 whatever the forward's precision (no-ops for fp32), averaged over views.
    const at::Tensor audio = out.audio.to(at::kFloat), text = out.text.to(at::kFloat);
    contrastive = ContrastiveLoss(audio.narrow(0, 0, b), text, out.logit_scale, *gather_);
    for (int64_t v = 1; v < views; ++v) {
      contrastive = contrastive + ContrastiveLoss(audio.narrow(0, v * b, b), text, out.logit_scale, *gather_);
    }
    if (views > 1) contrastive = contrastive / static_cast<double>(views);
    loss = contrastive;
    if (with_recon) {
      // Every view drops as many patches, so the mean over all dropped patches is the mean of
      // the views' reconstruction losses.
      at::Tensor target = NormalizePatches(Patchify(spec, model_->config().patch_size));
      recon = ReconstructionLoss(out.recon.to(at::kFloat), target, batch.keep);
      loss = loss + loss_.recon_weight * recon;
    }
    SynchronizeDevice(device);
    st.forward_s = Seconds(t0, std::chrono::steady_clock::now());
    loss.backward();
  } catch (const CollectiveError& e) {
    return e.status();
  } catch (const c10::Error& e) {
    return Status::Internal(std::string("training step: ") + e.what_without_backtrace());
  }
  auto t2 = std::chrono::steady_clock::now();
  if (sync_) FLAP_RETURN_IF_ERROR(sync_->Finish());
  SynchronizeDevice(device);
  auto t3 = std::chrono::steady_clock::now();
  st.sync_s = Seconds(t2, t3);
  st.backward_s = Seconds(t0, t3) - st.forward_s;
  st.gather_s = gather_->seconds() - gather0;
  st.loss = loss.item<double>();
  st.contrastive = contrastive.item<double>();
  st.recon = recon.defined() ? recon.item<double>() : 0.0;
  return st;
}

double StepFlops(const ModelConfig& c, const Batch& batch, bool with_decoder) {
  const int64_t kept = batch.keep.defined() ? batch.keep.size(1) : c.num_patches();
  return TrainStepFlops(c, batch.tokens.size(0), kept, batch.tokens.size(1), with_decoder,
                        static_cast<int>(batch.views()));
}

StatusOr<StepStats> TrainStep::Run(const Batch& batch, int64_t step, std::optional<double> scheduled_lr) {
  const double lr = scheduled_lr ? *scheduled_lr : LearningRate(optim_, step);
  for (auto& group : optimizer_->param_groups()) {
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  }
  FLAP_ASSIGN_OR_RETURN(StepStats st, ComputeGradients(batch));
  st.lr = lr;
  const at::Device device = batch.spec.device();
  auto t2 = std::chrono::steady_clock::now();
  if (optim_.grad_clip > 0) {
    st.grad_norm = torch::nn::utils::clip_grad_norm_(params_, optim_.grad_clip);
  } else {
    double sq = 0;
    for (const auto& p : params_) {
      if (p.grad().defined()) sq += p.grad().pow(2).sum().item<double>();
    }
    st.grad_norm = std::sqrt(sq);
  }
  optimizer_->step();
  {
    at::NoGradGuard no_grad;
    model_->logit_scale().clamp_(0.0, loss_.logit_scale_max);
  }
  SynchronizeDevice(device);
  st.optimizer_s = Seconds(t2, std::chrono::steady_clock::now());
  st.logit_scale = std::exp(model_->logit_scale().item<double>());
  return st;
}

}  // namespace flap::core
