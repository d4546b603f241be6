// Tests that need a CUDA device (label gpu): each skips, saying why, where none is visible or
// this LibTorch has no CUDA. bench/gpu_check.sh runs them on a GPU node.
//   - the same model gives the same forward on CUDA and on the CPU (fp32 tightly, bf16 loosely)
//   - a training step on CUDA tracks the CPU's losses
//   - a checkpoint written from CUDA tensors loads onto the CPU and back, bit for bit
//   - a one-rank NCCL group: all-reduce, broadcast and all-gather, on CUDA and staged CPU tensors
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/serialize.h>
#include <torch/utils.h>

#include <sstream>

#include "tests/test_util.h"
#include "worker/core/device.h"
#include "worker/core/model.h"
#include "worker/core/synthetic_batch.h"
#include "worker/core/train_step.h"
#include "worker/core/worker_group.h"

namespace flap::core {
namespace {

#define FLAP_REQUIRE_CUDA()                                                        \
  do {                                                                             \
    if (!CudaCompiledIn()) GTEST_SKIP() << "this LibTorch was built without CUDA"; \
    if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device is visible";       \
  } while (0)

const c10::Device kCuda(c10::DeviceType::CUDA, 0);
const c10::Device kCpu(c10::DeviceType::CPU);

ModelConfig Small() {
  ModelConfig c = ModelConfig::Small(128, 64, 128, 2, 4, 100);
  c.text_max_len = 16;
  return c;
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(kCpu).to(at::kFloat) - b.to(kCpu).to(at::kFloat)).abs().max().item<double>();
}

TEST(Cuda, ForwardAgreesWithTheCpu) {
  FLAP_REQUIRE_CUDA();
  const ModelConfig c = Small();
  torch::manual_seed(1);
  FlapModel cpu(c);
  torch::manual_seed(1);
  FlapModel gpu(c);
  gpu->to(kCuda);
  MaskConfig mask;
  mask.ratio = 0.5;
  Batch b = SyntheticBatch(c, mask, 8, 0, 8, 5);
  Batch g = ToDevice(b, kCuda);
  at::NoGradGuard no_grad;
  ModelOutput want = cpu->forward(b.spec, b.keep, b.tokens, true);
  ModelOutput fp32 = gpu->forward(g.spec, g.keep, g.tokens, true);
  EXPECT_TRUE(fp32.audio.is_cuda());
  EXPECT_LT(MaxAbsDiff(fp32.audio, want.audio), 1e-4);
  EXPECT_LT(MaxAbsDiff(fp32.text, want.text), 1e-4);
  EXPECT_LT(MaxAbsDiff(fp32.recon, want.recon), 1e-3);
  ModelOutput bf16;
  {
    AutocastGuard guard(kCuda, Precision::kBf16);
    bf16 = gpu->forward(g.spec, g.keep, g.tokens, true);
  }
  EXPECT_EQ(bf16.audio.scalar_type(), at::kFloat);  // normalised in fp32
  EXPECT_LT(MaxAbsDiff(bf16.audio, want.audio), 5e-2);
  EXPECT_LT(MaxAbsDiff(bf16.text, want.text), 5e-2);
}

TEST(Cuda, TrainStepTracksTheCpu) {
  FLAP_REQUIRE_CUDA();
  const ModelConfig c = Small();
  MaskConfig mask;
  mask.ratio = 0.75;
  LossConfig loss;
  loss.recon_weight = 1.0;
  OptimConfig optim;
  optim.lr = 5e-4;
  optim.warmup_steps = 0;
  optim.total_steps = 10;
  auto run = [&](const c10::Device& device, Precision p) {
    torch::manual_seed(2);
    FlapModel model(c);
    model->to(device);
    TrainStep step(model, loss, optim, nullptr, nullptr, p);
    std::vector<double> losses;
    for (int i = 0; i < 4; ++i) {
      auto st = step.Run(ToDevice(SyntheticBatch(c, mask, 16, 0, 16, 40 + i), device), i);
      EXPECT_OK(st);
      losses.push_back(st.ok() ? st->loss : 0.0);
    }
    return losses;
  };
  const auto cpu = run(kCpu, Precision::kFp32);
  const auto gpu = run(kCuda, Precision::kFp32);
  const auto bf16 = run(kCuda, Precision::kBf16);
  for (size_t i = 0; i < cpu.size(); ++i) {
    EXPECT_NEAR(gpu[i], cpu[i], 1e-3 * cpu[i]) << "step " << i;
    EXPECT_NEAR(bf16[i], cpu[i], 3e-2 * cpu[i]) << "step " << i;
  }
}

TEST(Cuda, CheckpointMovesToTheCpuAndBackBitExactly) {
  FLAP_REQUIRE_CUDA();
  const ModelConfig c = Small();
  torch::manual_seed(3);
  FlapModel gpu(c);
  gpu->to(kCuda);
  std::stringstream bytes;
  torch::save(gpu, bytes);
  torch::manual_seed(4);
  FlapModel cpu(c);
  torch::load(cpu, bytes, kCpu);
  auto want = gpu->named_parameters();
  for (const auto& p : cpu->named_parameters()) {
    ASSERT_TRUE(p.value().device().is_cpu()) << p.key();
    EXPECT_TRUE(at::equal(p.value(), want[p.key()].to(kCpu))) << p.key();
  }
  std::stringstream again;
  torch::save(cpu, again);
  torch::manual_seed(5);
  FlapModel back(c);
  back->to(kCuda);
  torch::load(back, again, kCuda);
  for (const auto& p : back->named_parameters()) {
    ASSERT_TRUE(p.value().is_cuda()) << p.key();
    EXPECT_TRUE(at::equal(p.value(), want[p.key()])) << p.key();
  }
}

TEST(Cuda, OneRankNcclGroup) {
  FLAP_REQUIRE_CUDA();
  if (!NcclCompiledIn()) GTEST_SKIP() << "this LibTorch has no NCCL";
  Rendezvous rdv;
  rdv.launcher = Launcher::kEnv;
  rdv.master_port = flap::testing::FreePort();
  GroupOptions o;
  o.backend = "auto";
  o.device = kCuda;
  o.timeout_s = 60;
  o.communicator_for_one = true;
  auto group = WorkerGroup::Create(rdv, o);
  ASSERT_OK(group);
  WorkerGroup& g = **group;
  EXPECT_EQ(g.backend(), "nccl");
  at::Tensor x = at::arange(6, at::TensorOptions().dtype(at::kFloat).device(kCuda));
  ASSERT_OK(g.AllReduceSum(x));
  EXPECT_TRUE(at::equal(x.to(kCpu), at::arange(6).to(at::kFloat)));
  at::Tensor host = at::full({3}, 2.5f);  // staged through the device
  ASSERT_OK(g.AllReduceSum(host));
  EXPECT_TRUE(host.device().is_cpu());
  EXPECT_FLOAT_EQ(host[1].item<float>(), 2.5f);
  at::Tensor bytes = at::arange(5, at::kByte);
  ASSERT_OK(g.Broadcast(bytes, 0));
  EXPECT_EQ(bytes[4].item<uint8_t>(), 4);
  at::Tensor all;
  ASSERT_OK(g.AllGather(at::ones({2, 3}, at::TensorOptions().device(kCuda)), &all));
  EXPECT_EQ(all.size(0), 2);
  auto pending = g.StartAllReduceSum(x);
  ASSERT_OK(pending);
  EXPECT_OK((*pending)->Wait());
  EXPECT_OK(g.Shutdown());
}

}  // namespace
}  // namespace flap::core
