// The worker group and its collectives with real Gloo over 127.0.0.1, each rank a thread of
// this process (the multi-process equivalence and failure tests are in tests/).
#include "worker/core/worker_group.h"

#include <ATen/ATen.h>
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <thread>
#include <vector>

#include "worker/core/collectives.h"

#include "tests/test_util.h"

namespace flap::core {
namespace {

using flap::testing::FreePort;

Rendezvous Local(int rank, int world, int port) {
  Rendezvous r;
  r.launcher = Launcher::kEnv;
  r.rank = rank;
  r.world_size = world;
  r.master_port = port;
  return r;
}

// Runs fn(rank, group) on `world` threads, each joined to one group.
void RunRanks(int world, const std::function<void(int, WorkerGroup&)>& fn, GroupOptions options = {}) {
  if (options.timeout_s == 300.0) options.timeout_s = 20.0;
  const int port = FreePort();
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      auto group = WorkerGroup::Create(Local(r, world, port), options);
      ASSERT_OK(group);
      fn(r, **group);
    });
  }
  for (auto& t : threads) t.join();
}

TEST(WorkerGroup, AllGatherIsRankMajorAndAllReduceSums) {
  RunRanks(3, [](int rank, WorkerGroup& g) {
    EXPECT_EQ(g.backend(), "gloo");
    at::Tensor local = at::full({2, 3}, static_cast<float>(rank));
    at::Tensor all;
    ASSERT_OK(g.AllGather(local, &all));
    ASSERT_EQ(all.size(0), 6);
    for (int r = 0; r < 3; ++r) EXPECT_EQ(all[2 * r][0].item<float>(), static_cast<float>(r));
    at::Tensor x = at::full({4}, static_cast<float>(rank + 1));
    ASSERT_OK(g.AllReduceSum(x));
    EXPECT_EQ(x[0].item<float>(), 6.0f);
    at::Tensor b = at::full({2}, static_cast<float>(rank));
    ASSERT_OK(g.Broadcast(b, 2));
    EXPECT_EQ(b[1].item<float>(), 2.0f);
    EXPECT_OK(g.Shutdown());
  });
}

TEST(WorkerGroup, GatherBackwardSumsEachRanksSliceAcrossRanks) {
  // Rank r's loss is sum(gathered * w_r); d/dx_r of the sum of all losses is sum_s w_s[rows of r].
  const int world = 2, rows = 3, dim = 4;
  auto weight = [&](int s) {
    return at::arange(world * rows * dim, at::kFloat).reshape({world * rows, dim}) * (s + 1);
  };
  RunRanks(world, [&](int rank, WorkerGroup& g) {
    GroupGather gather(&g);
    at::Tensor x = at::randn({rows, dim}).requires_grad_(true);
    at::Tensor all = gather.AllGather(x);
    (all * weight(rank)).sum().backward();
    at::Tensor expected = (weight(0) + weight(1)).narrow(0, rank * rows, rows);
    EXPECT_TRUE(at::allclose(x.grad(), expected)) << x.grad() << expected;
    EXPECT_GT(gather.seconds(), 0.0);
  });
}

void CheckAveraging(const GradSyncOptions& options) {
  RunRanks(2, [&](int rank, WorkerGroup& g) {
    at::Tensor w1 = at::ones({64, 32}).requires_grad_(true);
    at::Tensor w2 = at::ones({32}).requires_grad_(true);
    at::Tensor unused = at::ones({5}).requires_grad_(true);
    GroupGradientSync sync(&g, options);
    sync.Attach({w1, w2, unused});
    for (int step = 0; step < 2; ++step) {
      if (w1.grad().defined()) {
        w1.mutable_grad().zero_();
        w2.mutable_grad().zero_();
      }
      const float k = static_cast<float>(rank + 1 + step);
      ((w1 * k).sum() + (w2 * 2 * k).sum()).backward();
      ASSERT_OK(sync.Finish());
      // mean over ranks of (rank + 1 + step): 1.5 + step
      EXPECT_FLOAT_EQ(w1.grad()[3][4].item<float>(), 1.5f + step);
      EXPECT_FLOAT_EQ(w2.grad()[7].item<float>(), 3.0f + 2 * step);
      EXPECT_FALSE(unused.grad().defined());
    }
  });
}

TEST(GroupGradientSync, OverlappedBucketsAverage) {
  GradSyncOptions o;
  o.bucket_mb = 0.004;  // several buckets
  CheckAveraging(o);
}

TEST(GroupGradientSync, PlainPathAverages) {
  GradSyncOptions o;
  o.overlap = false;
  o.bucket_mb = 0;  // one all-reduce per parameter
  CheckAveraging(o);
}

TEST(WorkerGroup, RankThatNeverJoinsIsNamed) {
  GroupOptions o;
  o.timeout_s = 1.0;
  const auto t = std::chrono::steady_clock::now();
  auto g = WorkerGroup::Create(Local(0, 2, FreePort()), o);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), Status::Code::kDeadlineExceeded);
  EXPECT_NE(g.status().message().find("rank(s) 1 did not join"), std::string::npos) << g.status().message();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count(), 10.0);
}

TEST(WorkerGroup, RankThatDoesNotReachACollectiveIsNamed) {
  GroupOptions o;
  o.timeout_s = 3.0;  // above the store client's 1 s connect retry
  o.heartbeat_s = 0.2;
  RunRanks(
      2,
      [&](int rank, WorkerGroup& g) {
        at::Tensor x = at::ones({8});
        if (rank == 0) {
          Status s = g.AllReduceSum(x);
          ASSERT_FALSE(s.ok());
          EXPECT_EQ(s.code(), Status::Code::kDeadlineExceeded);
          EXPECT_NE(s.message().find("rank 1 is alive but has not reached collective #1"), std::string::npos)
              << s.message();
          // Broken: later calls fail at once with the same error.
          EXPECT_EQ(g.AllReduceSum(x).message(), s.message());
        } else {
          // Busy elsewhere until rank 0 has given up and diagnosed.
          std::this_thread::sleep_for(std::chrono::milliseconds(8000));
        }
      },
      o);
}

}  // namespace
}  // namespace flap::core
