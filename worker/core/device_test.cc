// Device selection and precision, on the CPU: spec parsing, the local-rank rule and
// CUDA_VISIBLE_DEVICES, the clear error when CUDA is asked for where none is visible, bf16
// autocast, and a checkpoint's tensors mapped onto the device that loads them. The tests that
// need a GPU are in cuda_test.cc.
#include "worker/core/device.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <ATen/Parallel.h>
#include <torch/serialize.h>
#include <torch/utils.h>

#include <map>
#include <sstream>

#include "worker/core/synthetic_batch.h"
#include "worker/core/train_step.h"
#include "common/testing/testing.h"

namespace flap::core {
namespace {

EnvLookup Env(std::map<std::string, std::string> vars) { return FixedEnvironment(std::move(vars)); }

TEST(DeviceSpec, ParsesTheFourForms) {
  EXPECT_EQ(ParseDeviceSpec("auto")->kind, DeviceSpec::Kind::kAuto);
  EXPECT_EQ(ParseDeviceSpec("cpu")->kind, DeviceSpec::Kind::kCpu);
  auto cuda = ParseDeviceSpec("cuda");
  ASSERT_OK(cuda);
  EXPECT_EQ(cuda->kind, DeviceSpec::Kind::kCuda);
  EXPECT_EQ(cuda->index, -1);
  auto three = ParseDeviceSpec("cuda:3");
  ASSERT_OK(three);
  EXPECT_EQ(three->index, 3);
  for (const char* bad : {"gpu", "cuda:", "cuda:-1", "cuda:x", "CPU", "", "cuda:1:2"}) {
    auto s = ParseDeviceSpec(bad);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), Status::Code::kInvalidArgument);
    EXPECT_NE(s.status().message().find("train.device"), std::string::npos) << s.status().message();
  }
}

TEST(LocalRank, TorchrunThenOpenMpiThenSlurm) {
  EXPECT_EQ(*LocalRankFromEnv(Env({})), 0);
  EXPECT_EQ(*LocalRankFromEnv(Env({{"SLURM_LOCALID", "3"}})), 3);
  EXPECT_EQ(*LocalRankFromEnv(Env({{"SLURM_LOCALID", "3"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "2"}})), 2);
  EXPECT_EQ(*LocalRankFromEnv(Env({{"SLURM_LOCALID", "3"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "2"}, {"LOCAL_RANK", "1"}})),
            1);
  auto bad = LocalRankFromEnv(Env({{"LOCAL_RANK", "one"}}));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("LOCAL_RANK"), std::string::npos);
}

TEST(ResolveDevice, AutoIsTheCpuWithoutGpus) {
  auto d = ResolveDevice(*ParseDeviceSpec("auto"), 0, 0, std::nullopt);
  ASSERT_OK(d);
  EXPECT_TRUE(d->is_cpu());
  EXPECT_TRUE(ResolveDevice(*ParseDeviceSpec("cpu"), 2, 8, std::nullopt)->is_cpu());
}

TEST(ResolveDevice, EachRankTakesTheGpuOfItsLocalRank) {
  for (int local = 0; local < 4; ++local) {
    auto d = ResolveDevice(*ParseDeviceSpec("auto"), local, 4, std::nullopt);
    ASSERT_OK(d);
    EXPECT_TRUE(d->is_cuda());
    EXPECT_EQ(d->index(), local);
  }
  EXPECT_EQ(ResolveDevice(*ParseDeviceSpec("cuda"), 1, 2, std::nullopt)->index(), 1);
}

TEST(ResolveDevice, OneVisibleGpuServesWhateverLocalRank) {
  // A launcher that binds one GPU per task (CUDA_VISIBLE_DEVICES=<its GPU>): always cuda:0.
  auto d = ResolveDevice(*ParseDeviceSpec("auto"), 3, 1, std::string("3"));
  ASSERT_OK(d);
  EXPECT_EQ(d->index(), 0);
}

TEST(ResolveDevice, RefusesWhatCannotBeHonoured) {
  auto none = ResolveDevice(*ParseDeviceSpec("cuda"), 0, 0, std::string(""));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(none.status().message().find("no CUDA device is visible"), std::string::npos);
  EXPECT_NE(none.status().message().find("CUDA_VISIBLE_DEVICES=''"), std::string::npos);

  auto crowded = ResolveDevice(*ParseDeviceSpec("auto"), 5, 4, std::string("0,1,2,3"));
  ASSERT_FALSE(crowded.ok());
  EXPECT_NE(crowded.status().message().find("local rank 5"), std::string::npos);

  auto index = ResolveDevice(*ParseDeviceSpec("cuda:2"), 0, 2, std::string("4,5"));
  ASSERT_FALSE(index.ok());
  EXPECT_NE(index.status().message().find("cuda:2"), std::string::npos);
  EXPECT_NE(index.status().message().find("4,5"), std::string::npos);
  EXPECT_EQ(ResolveDevice(*ParseDeviceSpec("cuda:1"), 0, 2, std::nullopt)->index(), 1);
}

TEST(SelectDevice, CudaWhereNoneIsVisibleIsAClearError) {
  if (CudaDeviceCount() > 0) GTEST_SKIP() << "a CUDA device is visible here";
  auto d = SelectDevice("cuda", Env({}));
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(d.status().message().find("no CUDA device is visible"), std::string::npos) << d.status().message();
  auto cpu = SelectDevice("auto", Env({{"LOCAL_RANK", "1"}}));
  ASSERT_OK(cpu);
  EXPECT_TRUE(cpu->is_cpu());
}

TEST(DescribeDevice, NamesTheCpuAndItsMemory) {
  DeviceInfo info = DescribeDevice(c10::Device(c10::DeviceType::CPU));
  EXPECT_EQ(info.device, "cpu");
  EXPECT_FALSE(info.name.empty());
  EXPECT_GT(info.memory_bytes, int64_t{1} << 28);
  EXPECT_GT(PeakMemoryBytes(c10::Device(c10::DeviceType::CPU)), 0);
}

TEST(Precision, ParsesFp32AndBf16) {
  EXPECT_EQ(*ParsePrecision("fp32"), Precision::kFp32);
  EXPECT_EQ(*ParsePrecision("bf16"), Precision::kBf16);
  EXPECT_STREQ(PrecisionName(Precision::kBf16), "bf16");
  auto bad = ParsePrecision("fp16");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("train.precision"), std::string::npos);
}

TEST(AutocastGuard, Bf16MatmulsInsideFp32Outside) {
  const c10::Device cpu(c10::DeviceType::CPU);
  at::Tensor a = at::randn({8, 8}), b = at::randn({8, 8});
  {
    AutocastGuard guard(cpu, Precision::kBf16);
    EXPECT_EQ(at::matmul(a, b).scalar_type(), at::kBFloat16);
    {
      AutocastGuard fp32(cpu, Precision::kFp32);  // fp32 leaves the outer state alone
      EXPECT_EQ(at::matmul(a, b).scalar_type(), at::kBFloat16);
    }
  }
  EXPECT_EQ(at::matmul(a, b).scalar_type(), at::kFloat);
}

ModelConfig Small() {
  ModelConfig c = ModelConfig::Small(64, 32, 64, 2, 2, 50);
  c.text_depth = 1;
  return c;
}

TEST(TrainStepBf16, StaysCloseToFp32AndKeepsFp32State) {
  const ModelConfig c = Small();
  MaskConfig mask;
  mask.ratio = 0.5;
  LossConfig loss;
  loss.recon_weight = 1.0;
  OptimConfig optim;
  optim.lr = 1e-3;
  optim.warmup_steps = 0;
  optim.total_steps = 100;
  auto run = [&](Precision p) {
    torch::manual_seed(7);
    FlapModel model(c);
    TrainStep step(model, loss, optim, nullptr, nullptr, p);
    std::vector<StepStats> stats;
    for (int i = 0; i < 5; ++i) {
      auto st = step.Run(SyntheticBatch(c, mask, 16, 0, 16, 100 + i), i);
      EXPECT_OK(st);
      stats.push_back(*st);
    }
    for (const auto& param : model->parameters()) {
      EXPECT_EQ(param.scalar_type(), at::kFloat);
      if (param.grad().defined()) {
        EXPECT_EQ(param.grad().scalar_type(), at::kFloat);
      }
    }
    return stats;
  };
  const auto fp32 = run(Precision::kFp32);
  const auto bf16 = run(Precision::kBf16);
  for (size_t i = 0; i < fp32.size(); ++i) {
    EXPECT_TRUE(std::isfinite(bf16[i].loss));
    // bfloat16 keeps 8 bits of mantissa: the first step's losses agree to about a percent; the
    // runs then drift apart a little as the updates differ.
    const double tolerance = i == 0 ? 0.015 : 0.06;
    EXPECT_NEAR(bf16[i].contrastive, fp32[i].contrastive, tolerance * fp32[i].contrastive) << "step " << i;
    EXPECT_NEAR(bf16[i].recon, fp32[i].recon, tolerance * fp32[i].recon) << "step " << i;
  }
  // The loss falls in both precisions.
  EXPECT_LT(bf16.back().loss, bf16.front().loss);
}

TEST(Checkpoint, TensorsLoadOntoTheDeviceOfTheLoadingModel) {
  torch::manual_seed(3);
  FlapModel saved(Small());
  std::stringstream bytes;
  torch::save(saved, bytes);
  torch::manual_seed(4);
  FlapModel loaded(Small());
  torch::load(loaded, bytes, c10::Device(c10::DeviceType::CPU));
  auto a = saved->named_parameters(), b = loaded->named_parameters();
  for (const auto& p : a) {
    EXPECT_TRUE(b[p.key()].device().is_cpu());
    EXPECT_TRUE(at::equal(p.value(), b[p.key()])) << p.key();
  }
}

}  // namespace
}  // namespace flap::core

namespace flap::core {
namespace {

TEST(ComputeThreads, ReachLibTorchAndTheBlasPool) {
  const int before = at::get_num_threads();
  SetComputeThreads(1);
  EXPECT_EQ(at::get_num_threads(), 1);
  const int blas = BlasThreads();
  if (blas == 0) {
    SetComputeThreads(before);
    GTEST_SKIP() << "this LibTorch's BLAS has no thread-count call (not OpenBLAS)";
  }
  EXPECT_EQ(blas, 1);
  SetComputeThreads(2);
  EXPECT_EQ(at::get_num_threads(), 2);
  EXPECT_EQ(BlasThreads(), 2);
  SetComputeThreads(0);  // clamped to one thread
  EXPECT_EQ(at::get_num_threads(), 1);
  SetComputeThreads(before);
}

}  // namespace
}  // namespace flap::core
