// The evaluation's metrics as the worker sends them: their JSON (with the bootstrap bounds and
// chance levels) and their broadcast from rank 0 to the group's other ranks.
#include "worker/evaluator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "tests/test_util.h"
#include "worker/core/launcher.h"
#include "worker/core/retrieval.h"
#include "worker/core/worker_group.h"
#include "worker/trainer_internal.h"

namespace flap::worker {
namespace {

// A small ranking with every field of the metrics set (bounds and chance included).
core::RetrievalMetrics Sample() {
  core::RetrievalRanks r;
  for (int64_t i = 0; i < 60; ++i) r.t2a.push_back((i * 7) % 19);
  r.a2t.resize(20);
  for (int64_t i = 0; i < 60; ++i) r.a2t[static_cast<size_t>(i % 20)].push_back((i * 5) % 13);
  for (auto& a : r.a2t) std::sort(a.begin(), a.end());
  return core::MetricsFromRanks(r);
}

TEST(MetricsJson, CarriesTheBoundsAndChanceLevels) {
  const core::RetrievalMetrics m = Sample();
  const nlohmann::json j = MetricsToJson(m);
  for (const char* metric : {"t2a_r1", "t2a_r5", "t2a_r10", "a2t_r1", "a2t_r5", "a2t_r10", "map10"}) {
    SCOPED_TRACE(metric);
    ASSERT_TRUE(j.contains(std::string(metric) + "_lo"));
    ASSERT_TRUE(j.contains(std::string(metric) + "_hi"));
    const double lo = j.at(std::string(metric) + "_lo"), v = j.at(metric), hi = j.at(std::string(metric) + "_hi");
    EXPECT_LE(0.0, lo);
    EXPECT_LE(lo, v);
    EXPECT_LE(v, hi);
    EXPECT_LE(hi, 1.0);
    EXPECT_TRUE(j.at(std::string(metric) + "_lo").is_number_float());  // the trainer sends the floats
  }
  EXPECT_DOUBLE_EQ(j.at("t2a_r1_lo").get<double>(), m.t2a_r1_lo);
  EXPECT_DOUBLE_EQ(j.at("map10_hi").get<double>(), m.map10_hi);
  EXPECT_DOUBLE_EQ(j.at("chance_t2a_r1").get<double>(), 1.0 / 20);
  EXPECT_DOUBLE_EQ(j.at("chance_a2t_r10").get<double>(), m.chance_a2t_r10);
  EXPECT_GT(m.chance_a2t_r1, 0.0);
  EXPECT_EQ(j.at("num_clips").get<int64_t>(), 20);
  EXPECT_EQ(j.at("num_captions").get<int64_t>(), 60);
}

TEST(ShareMetrics, EveryRankReceivesRankZerosMetricsWithTheirBounds) {
  const core::RetrievalMetrics sent = Sample();
  const int port = flap::testing::FreePort();
  std::vector<core::RetrievalMetrics> got(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      core::Rendezvous rv;
      rv.launcher = core::Launcher::kEnv;
      rv.rank = r;
      rv.world_size = 2;
      rv.master_port = port;
      core::GroupOptions go;
      go.timeout_s = 30;
      auto group = core::WorkerGroup::Create(rv, go);
      ASSERT_TRUE(group.ok()) << group.status().ToString();
      core::RetrievalMetrics m;  // rank 1 starts from zeros
      if (r == 0) m = sent;
      ASSERT_TRUE(internal::ShareMetrics(**group, &m).ok());
      got[r] = m;
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    // Every field: the JSON holds each one.
    EXPECT_EQ(MetricsToJson(got[r]), MetricsToJson(sent));
  }
}

}  // namespace
}  // namespace flap::worker
