#include "worker/core/losses.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

namespace flap::core {
namespace {

at::Tensor T(std::vector<float> v, std::vector<int64_t> shape) { return at::tensor(v, at::kFloat).reshape(shape); }

TEST(ContrastiveLoss, IdentityPairsAtUnitScale) {
  LocalGather g;
  auto eye = T({1, 0, 0, 1}, {2, 2});
  auto loss = ContrastiveLoss(eye, eye, at::zeros({}), g).item<double>();
  EXPECT_NEAR(loss, std::log(1.0 + std::exp(-1.0)), 1e-6);
  auto swapped = T({0, 1, 1, 0}, {2, 2});
  loss = ContrastiveLoss(eye, swapped, at::zeros({}), g).item<double>();
  EXPECT_NEAR(loss, std::log(1.0 + std::exp(1.0)), 1e-6);
}

TEST(ContrastiveLoss, AsymmetricCaseWithScaleMatchesHandComputation) {
  LocalGather g;
  // a0=(1,0) a1=(0.6,0.8); t0=(0.8,0.6) t1=(0,1); scale 10.
  auto a = T({1, 0, 0.6f, 0.8f}, {2, 2});
  auto t = T({0.8f, 0.6f, 0, 1}, {2, 2});
  const double s = 10.0;
  // Similarities sim[i][j] = a_i . t_j.
  const double sim[2][2] = {{0.8, 0.0}, {0.96, 0.8}};
  auto ce_row = [&](double target, double other) {
    return -std::log(std::exp(s * target) / (std::exp(s * target) + std::exp(s * other)));
  };
  const double a2t = 0.5 * (ce_row(sim[0][0], sim[0][1]) + ce_row(sim[1][1], sim[1][0]));
  const double t2a = 0.5 * (ce_row(sim[0][0], sim[1][0]) + ce_row(sim[1][1], sim[0][1]));
  auto loss = ContrastiveLoss(a, t, at::full({}, std::log(s)), g).item<double>();
  EXPECT_NEAR(loss, 0.5 * (a2t + t2a), 1e-5);
}

TEST(ContrastiveLoss, LogitScaleReceivesGradient) {
  LocalGather g;
  auto scale = at::zeros({}).set_requires_grad(true);
  auto a = T({1, 0, 0.6f, 0.8f}, {2, 2});
  ContrastiveLoss(a, a, scale, g).backward();
  ASSERT_TRUE(scale.grad().defined());
  EXPECT_LT(scale.grad().item<double>(), 0.0);  // matched pairs: a larger scale lowers the loss
}

TEST(ReconstructionLoss, AveragesOverDroppedPatchesOnly) {
  // B=1, N=3 patches of P=2 values; patch 1 is kept, patches 0 and 2 dropped.
  auto pred = at::zeros({1, 3, 2});
  auto target = T({1, 1, 100, 100, 3, 3}, {1, 3, 2});
  auto keep = at::tensor(std::vector<int64_t>{1}, at::kLong).reshape({1, 1});
  // Dropped patches: mean sq 1 and 9 -> 5. The kept patch (10000) must not count.
  EXPECT_NEAR(ReconstructionLoss(pred, target, keep).item<double>(), 5.0, 1e-6);
}

TEST(ReconstructionLoss, UsesAllPatchesWhenNothingIsDropped) {
  auto pred = at::zeros({1, 2, 2});
  auto target = T({1, 1, 3, 3}, {1, 2, 2});
  EXPECT_NEAR(ReconstructionLoss(pred, target, at::Tensor()).item<double>(), 5.0, 1e-6);
  auto keep_all = at::tensor(std::vector<int64_t>{0, 1}, at::kLong).reshape({1, 2});
  EXPECT_NEAR(ReconstructionLoss(pred, target, keep_all).item<double>(), 5.0, 1e-6);
}

TEST(NormalizePatches, ZeroMeanUnitVariancePerPatch) {
  auto p = T({1, 2, 3, 4, 10, 10, 10, 10}, {1, 2, 4});
  auto n = NormalizePatches(p);
  // Patch 0: mean 2.5, unbiased var 5/3.
  const double sd = std::sqrt(5.0 / 3.0 + 1e-6);
  EXPECT_NEAR(n[0][0][0].item<double>(), -1.5 / sd, 1e-5);
  EXPECT_NEAR(n[0][0][3].item<double>(), 1.5 / sd, 1e-5);
  // A constant patch maps to zeros, not NaN.
  EXPECT_NEAR(n[0][1].abs().max().item<double>(), 0.0, 1e-6);
}

}  // namespace
}  // namespace flap::core
