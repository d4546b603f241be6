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

void SynchronizeDevice(const at::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

TrainStep::TrainStep(FlapModel model, const LossConfig& loss, const OptimConfig& optim,
                     EmbeddingGather* gather, GradientSync* sync)
    : model_(std::move(model)),
      loss_(loss),
      optim_(optim),
      gather_(gather ? gather : &local_gather_),
      sync_(sync) {
  // Weight decay on matrices only; biases, norms and the logit scale are not decayed.
  std::vector<at::Tensor> decay, no_decay;
  for (const auto& p : model_->parameters()) {
    params_.push_back(p);
    (p.dim() >= 2 ? decay : no_decay).push_back(p);
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  auto options = [&](double wd) {
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(optim_.lr)
            .betas({optim_.beta1, optim_.beta2})
            .eps(optim_.eps)
            .weight_decay(wd));
  };
  groups.emplace_back(decay, options(optim_.weight_decay));
  groups.emplace_back(no_decay, options(0.0));
  optimizer_ = std::make_unique<torch::optim::AdamW>(std::move(groups),
                                                     torch::optim::AdamWOptions(optim_.lr));
  if (sync_) sync_->Attach(params_);
}

StepStats TrainStep::Run(const Batch& batch, int64_t step) {
  StepStats st;
  const at::Device device = batch.spec.device();
  st.lr = LearningRate(optim_, step);
  for (auto& group : optimizer_->param_groups()) {
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(st.lr);
  }
  const bool with_recon = loss_.recon_weight > 0.0;

  auto t0 = std::chrono::steady_clock::now();
  optimizer_->zero_grad();
  ModelOutput out = model_->forward(batch.spec, batch.keep, batch.tokens, with_recon);
  at::Tensor contrastive = ContrastiveLoss(out.audio, out.text, out.logit_scale, *gather_);
  at::Tensor loss = contrastive;
  at::Tensor recon;
  if (with_recon) {
    at::Tensor target = NormalizePatches(Patchify(batch.spec, model_->config().patch_size));
    recon = ReconstructionLoss(out.recon, target, batch.keep);
    loss = loss + loss_.recon_weight * recon;
  }
  SynchronizeDevice(device);
  auto t1 = std::chrono::steady_clock::now();

  loss.backward();
  if (sync_) sync_->Finish();
  SynchronizeDevice(device);
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
  auto t3 = std::chrono::steady_clock::now();

  st.loss = loss.item<double>();
  st.contrastive = contrastive.item<double>();
  st.recon = recon.defined() ? recon.item<double>() : 0.0;
  st.logit_scale = std::exp(model_->logit_scale().item<double>());
  st.forward_s = Seconds(t0, t1);
  st.backward_s = Seconds(t1, t2);
  st.optimizer_s = Seconds(t2, t3);
  return st;
}

}  // namespace flap::core
