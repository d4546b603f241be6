// The coordinator end to end over real gRPC on 127.0.0.1, RocksDB on disk, and simulated worker
// groups (sim_group.h) using the client library: a whole sweep, lost groups, retry budgets,
// shard leases, ASHA, cancel, status and the report.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <set>
#include <sstream>
#include <thread>

#include "coordinator/client.h"
#include "coordinator/testing/service_test_util.h"
#include "coordinator/testing/sim_group.h"

namespace flap::coordinator {
namespace {

using testing::FastServiceOptions;
using testing::MaskSweep;
using testing::TestCoordinator;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Rows of a CSV without quoted commas (the report quotes only where needed).
std::vector<std::map<std::string, std::string>> ParseCsv(const std::string& text) {
  std::vector<std::map<std::string, std::string>> rows;
  std::istringstream in(text);
  std::string line;
  std::vector<std::string> header;
  auto split = [](const std::string& l) {
    std::vector<std::string> out(1);
    bool quoted = false;
    for (size_t i = 0; i < l.size(); ++i) {
      const char ch = l[i];
      if (quoted && ch == '"' && i + 1 < l.size() && l[i + 1] == '"') {
        out.back() += '"';
        ++i;
      } else if (ch == '"') {
        quoted = !quoted;
      } else if (ch == ',' && !quoted) {
        out.emplace_back();
      } else {
        out.back() += ch;
      }
    }
    return out;
  };
  while (std::getline(in, line)) {
    if (header.empty()) {
      header = split(line);
      continue;
    }
    auto cells = split(line);
    std::map<std::string, std::string> row;
    for (size_t i = 0; i < header.size() && i < cells.size(); ++i) row[header[i]] = cells[i];
    rows.push_back(row);
  }
  return rows;
}

std::string FileNamed(const std::vector<v1::ReportFile>& files, const std::string& name) {
  for (const auto& f : files) {
    if (f.name() == name) return f.content();
  }
  return "";
}

template <typename Pred>
bool WaitFor(Pred pred, int timeout_ms = 5000) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

TEST(CoordinatorE2E, GroupsRunAWholeSweepAndTheReportMatchesWhatWasReported) {
  ServiceOptions so = FastServiceOptions();
  so.heartbeat_timeout_ms = 5000;
  so.lease_ttl_ms = 5000;
  TestCoordinator c("e2e_sweep", so);
  auto user = c.Client();
  auto sub = user->SubmitSweep(MaskSweep("mask", "1, 2"), "mask.ini", "[model]\npreset = tiny\n");
  ASSERT_OK(sub);
  ASSERT_EQ(sub->num_trials(), 8);

  sim::SimOptions o;
  o.steps = 20;
  o.epochs = 2;
  o.shards = 5;
  std::vector<std::unique_ptr<sim::SimGroup>> groups;
  for (int g = 0; g < 3; ++g) {
    groups.push_back(std::make_unique<sim::SimGroup>(c.Client(), "g" + std::to_string(g), o));
  }
  std::vector<std::thread> threads;
  std::vector<Status> results(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    threads.emplace_back([&, g] { results[g] = groups[g]->Run(); });
  }
  for (auto& t : threads) t.join();
  for (const auto& r : results) ASSERT_TRUE(r.ok()) << r.ToString();

  auto st = user->GetSweep("mask");
  ASSERT_OK(st);
  EXPECT_EQ(st->state(), "finished");
  std::set<std::string> finished;
  int64_t shards = 0;
  for (const auto& g : groups) {
    for (const auto& [tid, attempt] : g->log().finished) EXPECT_TRUE(finished.insert(tid).second) << tid;
    shards += g->log().shards_completed;
  }
  EXPECT_EQ(finished.size(), 8u);
  // Each shard once per epoch: 8 trials x 2 epochs x 5 shards.
  EXPECT_EQ(shards, 8 * 2 * 5);
  for (const auto& t : st->trials()) {
    EXPECT_EQ(t.state(), "completed") << t.trial_id();
    EXPECT_EQ(t.step(), 20);
    EXPECT_EQ(t.total_steps(), 20);
    EXPECT_EQ(t.checkpoint(), "ckpt/" + t.trial_id() + "/20");
    EXPECT_EQ(t.latest_eval().count("map10"), 1u);
    EXPECT_EQ(t.attempt(), 1);
  }

  // The metric history holds exactly what was acknowledged.
  auto history = user->GetMetrics("mask");
  ASSERT_OK(history);
  size_t acked = 0;
  for (const auto& g : groups) acked += g->log().acked.size();
  EXPECT_EQ(history->size(), acked);
  for (const auto& r : *history) {
    bool found = false;
    for (const auto& g : groups) {
      auto it = g->log().acked.find({r.trial_id(), r.kind(), r.step()});
      if (it == g->log().acked.end()) continue;
      found = true;
      for (const auto& [k, v] : it->second) EXPECT_DOUBLE_EQ(r.values().at(k), v);
    }
    EXPECT_TRUE(found) << r.trial_id() << " " << r.kind() << " " << r.step();
  }

  // The report: per-trial numbers equal what the trial reported at its last evaluation.
  auto report = user->GetReport("mask");
  ASSERT_OK(report);
  const auto rows = ParseCsv(FileNamed(*report, "trials.csv"));
  ASSERT_EQ(rows.size(), 8u);
  std::map<std::string, std::map<std::string, std::string>> overrides_of;
  for (const auto& t : st->trials()) {
    std::map<std::string, std::string> ov(t.factors().begin(), t.factors().end());
    ov["train.seed"] = std::to_string(t.seed());
    overrides_of[t.trial_id()] = ov;
  }
  for (const auto& row : rows) {
    const auto& ov = overrides_of.at(row.at("trial"));
    EXPECT_EQ(row.at("state"), "completed");
    EXPECT_EQ(row.at("mask.ratio"), ov.at("mask.ratio"));
    for (const auto& m : sim::SimEvalMetrics()) {
      EXPECT_NEAR(std::stod(row.at(m)), sim::SimMetric(ov, m, 20, 20), 1e-5) << row.at("trial") << " " << m;
    }
    EXPECT_NEAR(std::stod(row.at("samples_per_second")), sim::SimMetric(ov, "samples_per_second", 1, 20), 1e-3);
  }
  // Cells: mean over the two seeds (seed 1 and 2 differ by 0.001 in map10).
  const auto cells = ParseCsv(FileNamed(*report, "cells.csv"));
  ASSERT_EQ(cells.size(), 4u);
  for (const auto& cell : cells) {
    EXPECT_EQ(cell.at("n"), "2");
    EXPECT_NEAR(std::stod(cell.at("map10_sd")), 0.001 / std::sqrt(2.0), 1e-5);
  }
  // Main effects: mask.ratio 0.75 is better by 0.3 * 0.25 = 0.075 than 0.5.
  const auto effects = ParseCsv(FileNamed(*report, "effects.csv"));
  double e50 = 0, e75 = 0;
  for (const auto& e : effects) {
    if (e.at("factor") == "mask.ratio" && e.at("level") == "0.5") e50 = std::stod(e.at("effect"));
    if (e.at("factor") == "mask.ratio" && e.at("level") == "0.75") e75 = std::stod(e.at("effect"));
    EXPECT_EQ(e.at("n"), "4");
    EXPECT_LE(std::stod(e.at("ci95_low")), std::stod(e.at("mean")));
  }
  EXPECT_NEAR(e75 - e50, 0.075, 1e-5);
  const std::string md = FileNamed(*report, "report.md");
  EXPECT_TRUE(Contains(md, "## Main effects on map10")) << md;
  EXPECT_TRUE(Contains(md, "8 completed")) << md;
  EXPECT_FALSE(FileNamed(*report, "throughput.gp").empty());
  // Speed: a trial reaches the target (80% of the best final map10) when its final map10 does.
  const auto speed = ParseCsv(FileNamed(*report, "speed.csv"));
  ASSERT_EQ(speed.size(), 4u);
  double best = 0;
  for (const auto& [tid, ov] : overrides_of) best = std::max(best, sim::SimMetric(ov, "map10", 20, 20));
  for (const auto& s : speed) {
    int reached = 0;
    for (const auto& [tid, ov] : overrides_of) {
      if (ov.at("mask.ratio") == s.at("mask.ratio") && ov.at("mask.strategy") == s.at("mask.strategy") &&
          sim::SimMetric(ov, "map10", 20, 20) >= 0.8 * best) {
        ++reached;
      }
    }
    EXPECT_EQ(s.at("reached"), std::to_string(reached)) << s.at("mask.strategy") << s.at("mask.ratio");
    EXPECT_NEAR(std::stod(s.at("samples_per_second")), 100.0 / (1.0 - std::stod(s.at("mask.ratio"))) + 1.5, 1e-3);
  }
}

TEST(CoordinatorE2E, ReportIsWrittenWithPlotsWhenTheSweepEnds) {
  ServiceOptions so = FastServiceOptions();
  so.heartbeat_timeout_ms = 5000;
  flap::testing::TempDir reports("e2e_reports");
  so.report_dir = reports.path();
  TestCoordinator c("e2e_report", so);
  ASSERT_OK(c.Client()->SubmitSweep(MaskSweep("auto", "1"), "auto.ini", ""));
  sim::SimOptions o;
  o.steps = 4;
  o.epochs = 1;
  o.shards = 2;
  sim::SimGroup g(c.Client(), "g0", o);
  ASSERT_OK(g.Run());
  c.server()->service()->WaitForReports();
  const std::string dir = reports / "auto";
  for (const char* f : {"report.md", "trials.csv", "cells.csv", "effects.csv", "speed.csv"}) {
    EXPECT_TRUE(std::filesystem::exists(dir + "/" + f)) << f;
  }
  if (flap::testing::RunCommand("command -v gnuplot").exit_code != 0) {
    GTEST_SKIP() << "gnuplot is not installed (scripts/setup.sh installs gnuplot-nox): no plots to check";
  }
  EXPECT_TRUE(Contains(flap::testing::ReadFile(dir + "/throughput.svg"), "<svg"));
  EXPECT_TRUE(Contains(flap::testing::ReadFile(dir + "/time_to_target.svg"), "<svg"));
}

TEST(CoordinatorE2E, SilentGroupLosesItsTrialWhichResumesElsewhereFromItsCheckpoint) {
  ServiceOptions so = FastServiceOptions();
  so.heartbeat_timeout_ms = 1000;  // a margin for a loaded machine between a's calls
  TestCoordinator c("e2e_lost", so);
  auto user = c.Client();
  ASSERT_OK(user->SubmitSweep(MaskSweep("lost", "1"), "lost.ini", ""));
  auto a = c.Client();
  ASSERT_OK(a->Register("a", "a-1", 1));
  auto next = a->NextTrial("a");
  ASSERT_TRUE(next.ok() && next->assigned);
  const v1::TrialRef ref = next->assignment.trial;
  EXPECT_EQ(ref.attempt(), 1);
  EXPECT_EQ(next->assignment.resume_checkpoint, "");
  ASSERT_OK(a->BeginEpoch("a", ref, 0, {{"s0", 10}, {"s1", 10}}));
  auto lease = a->LeaseShard("a", ref, 0, 0);
  ASSERT_TRUE(lease.ok() && lease->kind == ShardLease::Kind::kGranted);
  EXPECT_EQ(lease->shard_name, testing::ShardsInLeaseOrder(1, 0, {"s0", "s1"})[0]);
  ASSERT_OK(a->ReportMetrics("a", ref, MetricKind::kTrain, 100, 0, {{"loss", 2.5}}));
  ASSERT_OK(a->ReportCheckpoint("a", ref, "ckpts/t0000/100", 100));
  // Group a goes silent.
  ASSERT_TRUE(WaitFor([&] {
    auto st = user->GetSweep("lost");
    return st.ok() && st->trials(0).state() == "pending";
  }));
  auto st = user->GetSweep("lost");
  EXPECT_EQ(st->trials(0).node_faults(), 1);
  EXPECT_TRUE(Contains(st->trials(0).last_error(), "missed heartbeats")) << st->trials(0).last_error();

  auto b = c.Client();
  ASSERT_OK(b->Register("b", "b-1", 1));
  auto again = b->NextTrial("b");
  ASSERT_TRUE(again.ok() && again->assigned);
  EXPECT_EQ(again->assignment.trial.trial_id(), ref.trial_id());
  EXPECT_EQ(again->assignment.trial.attempt(), 2);
  EXPECT_EQ(again->assignment.resume_checkpoint, "ckpts/t0000/100");
  EXPECT_EQ(again->assignment.resume_step, 100);
  // The shard a held went back to the pool: b gets it first.
  auto b_lease = b->LeaseShard("b", again->assignment.trial, 0, 0);
  ASSERT_OK(b_lease);
  EXPECT_EQ(b_lease->shard_name, lease->shard_name);

  // Group a comes back: everything it says for its old attempt is refused, and its heartbeat
  // tells it to stop.
  auto late = a->CompleteShard("a", ref, 0, lease->lease_id);
  EXPECT_EQ(late.status().code(), Status::Code::kFailedPrecondition);
  EXPECT_TRUE(Contains(late.status().message(), "stale attempt")) << late.status().message();
  EXPECT_FALSE(a->Finish("a", ref).ok());
  auto hb = a->Heartbeat("a");
  ASSERT_OK(hb);
  EXPECT_EQ(hb->action(), v1::STOP);
  EXPECT_TRUE(Contains(hb->reason(), "missed heartbeats")) << hb->reason();
  // The history of the first attempt is kept.
  auto history = user->GetMetrics("lost", ref.trial_id());
  ASSERT_OK(history);
  ASSERT_EQ(history->size(), 1u);
  EXPECT_EQ(history->at(0).step(), 100);
  EXPECT_EQ(history->at(0).attempt(), 1);
}

// A trial fixes its global batch (train.global_batch), not its group: first run by a 2-rank
// group that goes silent, it is finished by a 1-rank group, from the 2-rank group's checkpoint.
// A 3-rank group cannot split a global batch of 8: NextTrial passes the trial over and says why,
// naming both sizes, as long as it asks (the trial is not failed, and keeps its retry
// budgets), and a group that fits takes it. Before groups were matched to global batches the
// 3-rank group was given the trial.
TEST(CoordinatorE2E, TrialKeepsItsGlobalBatchAndWaitsForAGroupThatCanSplitIt) {
  ServiceOptions so = FastServiceOptions();
  so.heartbeat_timeout_ms = 1000;  // a margin for a loaded machine between a group's calls
  TestCoordinator c("e2e_global_batch", so);
  auto user = c.Client();
  ASSERT_OK(user->SubmitSweep("[sweep]\nname = gb\nseeds = 1\n[factor.mask.ratio]\nvalues = 0.5\n", "gb.ini",
                              "[train]\nglobal_batch = 8\n"));

  // A 3-rank group: passed over, told why, again and again.
  auto three = c.Client();
  ASSERT_OK(three->Register("three", "three-1", 3));
  for (int ask = 0; ask < 3; ++ask) {
    auto next = three->NextTrial("three");
    ASSERT_OK(next);
    EXPECT_FALSE(next->assigned);
    EXPECT_FALSE(next->all_done);
    EXPECT_GT(next->retry_after_ms, 0);
    EXPECT_TRUE(
        Contains(next->waiting, "trial gb/t0000: train.global_batch 8 cannot be split evenly over world size 3"))
        << next->waiting;
  }

  // A 2-rank group takes it, checkpoints, and goes silent.
  auto two = c.Client();
  ASSERT_OK(two->Register("two", "two-1", 2));
  auto first = two->NextTrial("two");
  ASSERT_TRUE(first.ok() && first->assigned);
  EXPECT_TRUE(first->waiting.empty());
  const v1::TrialRef ref = first->assignment.trial;
  EXPECT_EQ(first->assignment.base_config, "[train]\nglobal_batch = 8\n");
  ASSERT_OK(two->ReportMetrics("two", ref, MetricKind::kTrain, 4, 0,
                               {{"loss", 2.5}, {"global_batch", 8}, {"world_size", 2}, {"per_rank_batch", 4}}));
  ASSERT_OK(two->ReportCheckpoint("two", ref, "ckpt/gb-t0000/4", 4));
  ASSERT_TRUE(WaitFor([&] {
    auto st = user->GetSweep("gb");
    return st.ok() && st->trials(0).state() == "pending";
  }));

  // Requeued, the trial still waits for a group that can split it: not the 3-rank one.
  auto still = three->NextTrial("three");
  ASSERT_OK(still);
  EXPECT_FALSE(still->assigned);
  EXPECT_TRUE(Contains(still->waiting, "world size 3")) << still->waiting;

  // A 1-rank group resumes it from the 2-rank group's checkpoint and finishes it.
  auto one = c.Client();
  ASSERT_OK(one->Register("one", "one-1", 1));
  auto second = one->NextTrial("one");
  ASSERT_TRUE(second.ok() && second->assigned);
  EXPECT_EQ(second->assignment.trial.trial_id(), ref.trial_id());
  EXPECT_EQ(second->assignment.trial.attempt(), 2);
  EXPECT_EQ(second->assignment.resume_checkpoint, "ckpt/gb-t0000/4");
  EXPECT_EQ(second->assignment.resume_step, 4);
  const v1::TrialRef ref2 = second->assignment.trial;
  ASSERT_OK(one->ReportMetrics("one", ref2, MetricKind::kTrain, 8, 0,
                               {{"loss", 2.0}, {"global_batch", 8}, {"world_size", 1}, {"per_rank_batch", 8}}));
  ASSERT_OK(one->Finish("one", ref2));
  auto st = user->GetSweep("gb");
  ASSERT_OK(st);
  EXPECT_EQ(st->trials(0).state(), "completed");
  EXPECT_EQ(st->trials(0).node_faults(), 1);  // the silent 2-rank group; nothing for the 3-rank one
  EXPECT_EQ(st->trials(0).trial_errors(), 0);

  // Its records show both group sizes at one global batch.
  auto history = user->GetMetrics("gb", ref.trial_id());
  ASSERT_OK(history);
  ASSERT_EQ(history->size(), 2u);
  EXPECT_EQ(history->at(0).values().at("world_size"), 2);
  EXPECT_EQ(history->at(1).values().at("world_size"), 1);
  for (const auto& r : *history) EXPECT_EQ(r.values().at("global_batch"), 8);

  // With nothing left, the 3-rank group hears that every sweep is done.
  auto done = three->NextTrial("three");
  ASSERT_OK(done);
  EXPECT_TRUE(done->all_done);
  EXPECT_TRUE(done->waiting.empty()) << done->waiting;
}

TEST(CoordinatorE2E, AGroupThatRestartsLosesItsTrialAndARetriedRegisterChangesNothing) {
  ServiceOptions so = FastServiceOptions();
  so.heartbeat_timeout_ms = 10000;
  TestCoordinator c("e2e_reregister", so);
  auto user = c.Client();
  ASSERT_OK(user->SubmitSweep(MaskSweep("rereg", "1"), "r.ini", ""));
  auto g = c.Client();
  ASSERT_OK(g->Register("g", "first", 1));
  auto next = g->NextTrial("g");
  ASSERT_TRUE(next.ok() && next->assigned);
  ASSERT_OK(g->ReportCheckpoint("g", next->assignment.trial, "ck/5", 5));
  ASSERT_OK(g->Register("g", "first", 1));  // a retry: the trial stays
  auto hb = g->Heartbeat("g");
  ASSERT_OK(hb);
  EXPECT_EQ(hb->action(), v1::CONTINUE);
  ASSERT_OK(g->Register("g", "second", 1));  // the group's processes restarted
  auto st = user->GetSweep("rereg");
  ASSERT_OK(st);
  EXPECT_EQ(st->trials(0).state(), "pending");
  EXPECT_EQ(st->trials(0).node_faults(), 1);
  EXPECT_TRUE(Contains(st->trials(0).last_error(), "restarted")) << st->trials(0).last_error();
  auto again = g->NextTrial("g");
  ASSERT_TRUE(again.ok() && again->assigned);
  EXPECT_EQ(again->assignment.trial.trial_id(), "t0000");
  EXPECT_EQ(again->assignment.trial.attempt(), 2);
  EXPECT_EQ(again->assignment.resume_checkpoint, "ck/5");
}

TEST(CoordinatorE2E, LeasesExpireUnlessHeartbeatsRenewThemAndCountEachShardOnce) {
  ServiceOptions so = FastServiceOptions();
  so.lease_ttl_ms = 1000;
  so.heartbeat_timeout_ms = 10000;
  TestCoordinator c("e2e_leases", so);
  auto user = c.Client();
  ASSERT_OK(user->SubmitSweep(MaskSweep("leases", "1"), "l.ini", ""));
  auto g = c.Client();
  ASSERT_OK(g->Register("g", "g-1", 3));
  auto next = g->NextTrial("g");
  ASSERT_TRUE(next.ok() && next->assigned);
  const v1::TrialRef ref = next->assignment.trial;
  ASSERT_OK(g->BeginEpoch("g", ref, 0, {{"s0", 10}, {"s1", 20}}));
  auto l0 = g->LeaseShard("g", ref, 0, 0);  // rank 0 keeps renewing
  auto l1 = g->LeaseShard("g", ref, 0, 1);  // rank 1 stalls
  ASSERT_TRUE(l0.ok() && l1.ok());
  auto same = g->LeaseShard("g", ref, 0, 1);  // asking again (a retry) returns its lease
  ASSERT_OK(same);
  EXPECT_EQ(same->lease_id, l1->lease_id);
  auto wait = g->LeaseShard("g", ref, 0, 2);  // rank 2: every shard is leased
  ASSERT_OK(wait);
  EXPECT_EQ(wait->kind, ShardLease::Kind::kWait);
  EXPECT_GT(wait->retry_after_ms, 0);
  for (int i = 0; i < 20; ++i) {  // 2 s of heartbeats renewing rank 0 only
    auto hb = g->Heartbeat("g", {0});
    ASSERT_OK(hb);
    EXPECT_EQ(hb->action(), v1::CONTINUE);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // Rank 1's lease expired: its completion does not count; the shard is leased again.
  auto late = g->CompleteShard("g", ref, 0, l1->lease_id);
  EXPECT_EQ(late.status().code(), Status::Code::kAborted);
  EXPECT_TRUE(Contains(late.status().message(), "expired")) << late.status().message();
  auto done0 = g->CompleteShard("g", ref, 0, l0->lease_id);
  ASSERT_OK(done0);
  EXPECT_EQ(done0->done_shards(), 1);
  auto retry0 = g->CompleteShard("g", ref, 0, l0->lease_id);  // a retry counts nothing
  ASSERT_OK(retry0);
  EXPECT_EQ(retry0->done_shards(), 1);
  auto again = g->LeaseShard("g", ref, 0, 0);
  ASSERT_OK(again);
  ASSERT_EQ(again->kind, ShardLease::Kind::kGranted);
  EXPECT_EQ(again->shard_name, l1->shard_name);
  EXPECT_EQ(again->num_samples, 20);
  auto done1 = g->CompleteShard("g", ref, 0, again->lease_id);
  ASSERT_OK(done1);
  EXPECT_TRUE(done1->epoch_done());
  auto end = g->LeaseShard("g", ref, 0, 1);
  ASSERT_OK(end);
  EXPECT_EQ(end->kind, ShardLease::Kind::kEpochDone);
  auto begun = g->BeginEpoch("g", ref, 0, {{"s0", 10}, {"s1", 20}});  // idempotent
  ASSERT_OK(begun);
  EXPECT_EQ(begun->done_samples(), 30);
  EXPECT_EQ(begun->total_samples(), 30);
}

TEST(CoordinatorE2E, RetryBudgetsAreKeptApartByCause) {
  ServiceOptions so = FastServiceOptions();
  so.heartbeat_timeout_ms = 10000;
  so.budgets.preemption = 2;
  so.budgets.node_fault = 1;
  so.budgets.trial_error = 1;
  TestCoordinator c("e2e_budgets", so);
  auto user = c.Client();
  ASSERT_OK(user->SubmitSweep(MaskSweep("budgets", "1"), "b.ini", ""));
  auto g = c.Client();
  ASSERT_OK(g->Register("g", "g-1", 1));
  auto fail = [&](FailureCause cause, const std::string& error) -> std::string {
    auto next = g->NextTrial("g");
    EXPECT_TRUE(next.ok() && next->assigned);
    EXPECT_EQ(next->assignment.trial.trial_id(), "t0000");  // requeued trials go first
    auto state = g->Fail("g", next->assignment.trial, cause, error);
    EXPECT_OK(state);
    return state.ok() ? TrialStateName(*state) : "";
  };
  EXPECT_EQ(fail(FailureCause::kPreemption, "slurm preempted"), "pending");
  EXPECT_EQ(fail(FailureCause::kPreemption, "slurm preempted"), "pending");
  EXPECT_EQ(fail(FailureCause::kNodeFault, "gpu fell off the bus"), "pending");
  EXPECT_EQ(fail(FailureCause::kTrialError, "loss is NaN at step 40"), "pending");
  // The second trial error exceeds its own budget of 1: failed with that error, whatever the
  // other causes have used.
  EXPECT_EQ(fail(FailureCause::kTrialError, "loss is NaN at step 40"), "failed");
  auto st = user->GetSweep("budgets");
  ASSERT_OK(st);
  const auto& t = st->trials(0);
  EXPECT_EQ(t.state(), "failed");
  EXPECT_EQ(t.preemptions(), 2);
  EXPECT_EQ(t.node_faults(), 1);
  EXPECT_EQ(t.trial_errors(), 2);
  EXPECT_TRUE(Contains(t.last_error(), "loss is NaN at step 40")) << t.last_error();
  EXPECT_TRUE(Contains(t.last_error(), "trial_error budget")) << t.last_error();
  // The sweep goes on: the next trial is handed out.
  auto next = g->NextTrial("g");
  ASSERT_TRUE(next.ok() && next->assigned);
  EXPECT_EQ(next->assignment.trial.trial_id(), "t0001");
  EXPECT_EQ(st->state(), "running");
}

// Groups g0 .. g<n-1> of coordinator `c`, each registered (one rank) and holding the trial it was
// given, in that order.
struct Groups {
  std::vector<std::unique_ptr<CoordinatorClient>> clients;
  std::vector<TrialAssignment> assigned;
  std::vector<v1::TrialRef> refs;
};
void TakeTrials(TestCoordinator& c, int n, Groups* g) {
  for (int i = 0; i < n; ++i) {
    g->clients.push_back(c.Client());
    const std::string gid = "g" + std::to_string(i);
    ASSERT_OK(g->clients[i]->Register(gid, gid, 1));
    auto next = g->clients[i]->NextTrial(gid);
    ASSERT_TRUE(next.ok() && next->assigned) << gid;
    g->assigned.push_back(next->assignment);
    g->refs.push_back(next->assignment.trial);
  }
}

TEST(CoordinatorE2E, AshaStopsAPoorTrialWhichKeepsItsCheckpointAndResults) {
  ServiceOptions so = FastServiceOptions();
  so.heartbeat_timeout_ms = 10000;
  TestCoordinator c("e2e_asha", so);
  auto user = c.Client();
  const std::string sweep =
      "[sweep]\nname = asha\nseeds = 1\n\n[factor.mask.ratio]\nvalues = 0.25, 0.5, 0.75\n\n"
      "[asha]\nmetric = map10\nmode = max\nrungs = 10, 20\nreduction = 2\n";
  ASSERT_OK(user->SubmitSweep(sweep, "asha.ini", ""));
  Groups g;
  ASSERT_NO_FATAL_FAILURE(TakeTrials(c, 3, &g));
  auto& clients = g.clients;
  auto& refs = g.refs;
  for (const TrialAssignment& a : g.assigned) {
    EXPECT_EQ(a.asha_metric, "map10");
    EXPECT_EQ(a.asha_rungs, (std::vector<double>{10, 20}));
    EXPECT_EQ(a.asha_unit, "steps");
  }
  // t0 reaches rung 10 first (alone: continues), then t2 (better: n = 2, top 1 continues),
  // then t1, worse than t2: rank 1 of 3, floor(3/2) = 1 continue: stopped.
  auto report = [&](int i, double map10) {
    const std::string gid = "g" + std::to_string(i);
    EXPECT_OK(clients[i]->ReportCheckpoint(gid, refs[i], "ck/" + std::to_string(i), 10));
    std::string reason;
    auto a = clients[i]->ReportMetrics(gid, refs[i], MetricKind::kEval, 10, 0, {{"map10", map10}}, 30, &reason);
    EXPECT_OK(a);
    return std::make_pair(a.ok() ? *a : v1::ACTION_UNSPECIFIED, reason);
  };
  EXPECT_EQ(report(0, 0.30).first, v1::CONTINUE);
  EXPECT_EQ(report(2, 0.50).first, v1::CONTINUE);
  auto [action, reason] = report(1, 0.10);
  EXPECT_EQ(action, v1::STOP);
  EXPECT_TRUE(Contains(reason, "ASHA")) << reason;
  auto hb = clients[1]->Heartbeat("g1");
  ASSERT_OK(hb);
  EXPECT_EQ(hb->action(), v1::STOP);
  auto st = user->GetSweep("asha");
  ASSERT_OK(st);
  EXPECT_EQ(st->trials(1).state(), "stopped");
  EXPECT_EQ(st->trials(1).checkpoint(), "ck/1");
  EXPECT_DOUBLE_EQ(st->trials(1).latest_eval().at("map10"), 0.10);
  EXPECT_EQ(st->trials(0).state(), "running");
  // Its group is free for other work; a stopped trial's later reports are refused.
  auto late = clients[1]->ReportMetrics("g1", refs[1], MetricKind::kTrain, 11, 0, {{"loss", 1}});
  EXPECT_EQ(late.status().code(), Status::Code::kFailedPrecondition);
  EXPECT_TRUE(Contains(late.status().message(), "stopped")) << late.status().message();
  auto history = user->GetMetrics("asha", refs[1].trial_id());
  ASSERT_OK(history);
  EXPECT_EQ(history->size(), 1u);
  // The report lists it as stopped, out of the means.
  auto files = user->GetReport("asha");
  ASSERT_OK(files);
  EXPECT_TRUE(Contains(FileNamed(*files, "trials.csv"), "t0001,1,1,0.5,stopped")) << FileNamed(*files, "trials.csv");
}

// A FLOPs-budgeted sweep counts its rungs in FLOPs, and each trial's value at a rung is
// interpolated between its evaluations around it. Ratio 0 (t0) evaluates at 0.6 and 1.4 TFLOP
// (map10 0.20 and 0.60: 0.40 at the 1 TFLOP rung); ratio 0.75 (t1), whose steps cost a third,
// at 0.9 and 1.05 TFLOP (0.35 and 0.45: about 0.433 at the rung). Compared at the same FLOPs,
// t1 is better and t0 stops; compared on their first evaluations past the rung (0.60 against
// 0.45), t1 would have stopped.
TEST(CoordinatorE2E, AshaRungsInFlopsCompareArmsAtTheSameFlops) {
  ServiceOptions so = FastServiceOptions();
  so.heartbeat_timeout_ms = 10000;
  TestCoordinator c("e2e_asha_flops", so);
  auto user = c.Client();
  const std::string sweep =
      "[sweep]\nname = asha-flops\nseeds = 1\n\n[factor.mask.ratio]\nvalues = 0, 0.75\n\n"
      "[asha]\nmetric = map10\nmode = max\nrungs = 1e12\nreduction = 2\n";
  ASSERT_OK(user->SubmitSweep(sweep, "asha.ini", "[train]\nmax_flops = 5e12\n"));
  Groups g;
  ASSERT_NO_FATAL_FAILURE(TakeTrials(c, 2, &g));
  auto& clients = g.clients;
  auto& refs = g.refs;
  for (const TrialAssignment& a : g.assigned) {
    EXPECT_EQ(a.asha_unit, "flops");  // from the base config's FLOPs budget
    EXPECT_EQ(a.asha_rungs, (std::vector<double>{1e12}));
  }
  auto eval = [&](int i, int64_t step, double flops, double map10) {
    const std::string gid = "g" + std::to_string(i);
    auto a = clients[i]->ReportMetrics(gid, refs[i], MetricKind::kEval, step, 0, {{"map10", map10}, {"flops", flops}});
    EXPECT_OK(a);
    return a.ok() ? *a : v1::ACTION_UNSPECIFIED;
  };
  EXPECT_EQ(eval(0, 10, 0.6e12, 0.20), v1::CONTINUE);  // before the rung: no decision
  EXPECT_EQ(eval(1, 30, 0.9e12, 0.35), v1::CONTINUE);
  EXPECT_EQ(eval(1, 35, 1.05e12, 0.45), v1::CONTINUE);  // alone at the rung: continues
  EXPECT_EQ(eval(0, 20, 1.4e12, 0.60), v1::STOP);       // 0.40 at the rung against 0.433
  auto st = user->GetSweep("asha-flops");
  ASSERT_OK(st);
  EXPECT_EQ(st->trials(0).state(), "stopped");
  EXPECT_EQ(st->trials(1).state(), "running");
}

// Only validation decides. Before each EVAL record every trial sends a TEST record at the same
// step whose map10 inverts the ranking (the sort of a test split a leak would reward): were ASHA
// to read it, t1's rung would be decided on its test figure (0.9, the best: continue) and its
// evaluation would not be decided again. The decisions, the status and the history after a
// restart are exactly those of the run without TEST records above.
TEST(CoordinatorE2E, TestRecordsAreStoredButNeverDecide) {
  ServiceOptions so = FastServiceOptions();
  so.heartbeat_timeout_ms = 10000;
  TestCoordinator c("e2e_test_records", so);
  auto user = c.Client();
  const std::string sweep =
      "[sweep]\nname = asha\nseeds = 1\n\n[factor.mask.ratio]\nvalues = 0.25, 0.5, 0.75\n\n"
      "[asha]\nmetric = map10\nmode = max\nrungs = 10, 20\nreduction = 2\n";
  ASSERT_OK(user->SubmitSweep(sweep, "asha.ini", ""));
  Groups g;
  ASSERT_NO_FATAL_FAILURE(TakeTrials(c, 3, &g));
  auto& clients = g.clients;
  auto& refs = g.refs;
  auto report = [&](int i, MetricKind kind, double map10) {
    const std::string gid = "g" + std::to_string(i);
    std::string reason;
    auto a = clients[i]->ReportMetrics(gid, refs[i], kind, 10, 0, {{"map10", map10}, {"selected_step", 10}}, 30,
                                       &reason);
    EXPECT_OK(a);
    return a.ok() ? *a : v1::ACTION_UNSPECIFIED;
  };
  const double val[3] = {0.30, 0.10, 0.50};
  for (int i : {0, 2, 1}) {
    EXPECT_EQ(report(i, MetricKind::kTest, 1.0 - val[i]), v1::CONTINUE) << "t" << i << " test";
    const v1::Action decided = report(i, MetricKind::kEval, val[i]);
    EXPECT_EQ(decided, i == 1 ? v1::STOP : v1::CONTINUE) << "t" << i << " eval";
  }
  auto check = [&](const char* when) {
    auto st = user->GetSweep("asha");
    ASSERT_OK(st);
    EXPECT_EQ(st->trials(1).state(), "stopped") << when;
    EXPECT_EQ(st->trials(0).state(), "running") << when;
    EXPECT_EQ(st->trials(2).state(), "running") << when;
    for (int i = 0; i < 3; ++i) {
      EXPECT_DOUBLE_EQ(st->trials(i).latest_eval().at("map10"), val[i]) << when << ": t" << i;
    }
    auto history = user->GetMetrics("asha", refs[1].trial_id());
    ASSERT_OK(history);
    std::set<std::string> kinds;
    for (const auto& r : *history) kinds.insert(r.kind());
    EXPECT_EQ(kinds, (std::set<std::string>{"eval", "test"})) << when;
  };
  check("served");
  c.Restart();
  user = c.Client();
  check("after a restart");
}

TEST(CoordinatorE2E, CancelStopsRunningGroupsAndEndsTheSweep) {
  ServiceOptions so = FastServiceOptions();
  so.heartbeat_timeout_ms = 10000;
  TestCoordinator c("e2e_cancel", so);
  auto user = c.Client();
  ASSERT_OK(user->SubmitSweep(MaskSweep("cancel", "1"), "c.ini", ""));
  auto g = c.Client();
  ASSERT_OK(g->Register("g", "g-1", 1));
  auto next = g->NextTrial("g");
  ASSERT_TRUE(next.ok() && next->assigned);
  ASSERT_OK(g->ReportMetrics("g", next->assignment.trial, MetricKind::kTrain, 3, 0, {{"loss", 3}}));
  auto n = user->CancelSweep("cancel");
  ASSERT_OK(n);
  EXPECT_EQ(*n, 4);
  auto hb = g->Heartbeat("g");
  ASSERT_OK(hb);
  EXPECT_EQ(hb->action(), v1::STOP);
  EXPECT_TRUE(Contains(hb->reason(), "cancelled")) << hb->reason();
  EXPECT_FALSE(g->Finish("g", next->assignment.trial).ok());
  auto after = g->NextTrial("g");
  ASSERT_OK(after);
  EXPECT_FALSE(after->assigned);
  EXPECT_TRUE(after->all_done);
  auto st = user->GetSweep("cancel");
  ASSERT_OK(st);
  EXPECT_EQ(st->state(), "cancelled");
  for (const auto& t : st->trials()) EXPECT_EQ(t.state(), "cancelled");
  EXPECT_EQ(st->trials(0).step(), 3);
}

TEST(CoordinatorE2E, QueueFollowsSweepPriorityAndStatusShowsProgress) {
  ServiceOptions so = FastServiceOptions();
  so.heartbeat_timeout_ms = 10000;
  TestCoordinator c("e2e_priority", so);
  auto user = c.Client();
  ASSERT_OK(user->SubmitSweep(MaskSweep("low", "1"), "low.ini", ""));
  const std::string high = "[sweep]\nname = high\npriority = 5\n\n[factor.loss.recon_weight]\nvalues = 0, 1\n";
  ASSERT_OK(user->SubmitSweep(high, "high.ini", ""));
  auto g = c.Client();
  ASSERT_OK(g->Register("g", "g-1", 1));
  auto next = g->NextTrial("g");
  ASSERT_TRUE(next.ok() && next->assigned);
  EXPECT_EQ(next->assignment.trial.sweep_id(), "high");
  EXPECT_EQ(next->assignment.overrides.at("loss.recon_weight"), "0");
  EXPECT_EQ(next->assignment.overrides.at("train.seed"), "1");
  const auto ref = next->assignment.trial;
  // A second NextTrial is a retry: the same assignment, not a second trial.
  auto same = g->NextTrial("g");
  ASSERT_OK(same);
  EXPECT_EQ(same->assignment.trial.trial_id(), ref.trial_id());
  EXPECT_EQ(same->assignment.trial.attempt(), ref.attempt());
  ASSERT_OK(g->ReportMetrics("g", ref, MetricKind::kTrain, 10, 0, {{"loss", 3}}, 100));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_OK(g->ReportMetrics("g", ref, MetricKind::kTrain, 20, 0, {{"loss", 2}}, 100));
  auto st = user->GetSweep("high");
  ASSERT_OK(st);
  const auto& t = st->trials(0);
  EXPECT_EQ(t.state(), "running");
  EXPECT_EQ(t.step(), 20);
  EXPECT_EQ(t.total_steps(), 100);
  EXPECT_DOUBLE_EQ(t.latest_train().at("loss"), 2);
  // 10 steps in ~0.2 s: 80 steps to go take ~1.6 s.
  EXPECT_GT(t.eta_seconds(), 0.5);
  EXPECT_LT(t.eta_seconds(), 10);
}

TEST(CoordinatorE2E, TrialsGroupsLeasesAndHistorySurviveARestart) {
  ServiceOptions so = FastServiceOptions();
  so.heartbeat_timeout_ms = 10000;
  so.lease_ttl_ms = 10000;
  TestCoordinator c("e2e_restart", so);
  ASSERT_OK(c.Client()->SubmitSweep(MaskSweep("restart", "1"), "r.ini", ""));
  auto g = c.Client();
  ASSERT_OK(g->Register("g", "g-1", 2));
  auto next = g->NextTrial("g");
  ASSERT_TRUE(next.ok() && next->assigned);
  const v1::TrialRef ref = next->assignment.trial;
  ASSERT_OK(g->BeginEpoch("g", ref, 0, {{"s0", 1}, {"s1", 2}, {"s2", 3}}));
  auto l0 = g->LeaseShard("g", ref, 0, 0);
  ASSERT_OK(l0);
  ASSERT_OK(g->CompleteShard("g", ref, 0, l0->lease_id));
  auto l1 = g->LeaseShard("g", ref, 0, 1);
  ASSERT_OK(l1);
  ASSERT_OK(g->ReportMetrics("g", ref, MetricKind::kTrain, 7, 0, {{"loss", 0.5}}, 70));
  ASSERT_OK(g->ReportCheckpoint("g", ref, "ck/7", 7));

  c.Restart();
  auto g2 = c.Client();
  auto hb = g2->Heartbeat("g", {1});
  ASSERT_OK(hb);
  EXPECT_EQ(hb->action(), v1::CONTINUE);
  EXPECT_EQ(hb->trial().trial_id(), ref.trial_id());
  EXPECT_EQ(hb->leases_renewed(), 1);
  auto done1 = g2->CompleteShard("g", ref, 0, l1->lease_id);  // the lease from before
  ASSERT_OK(done1);
  EXPECT_EQ(done1->done_shards(), 2);
  auto l2 = g2->LeaseShard("g", ref, 0, 0);
  ASSERT_OK(l2);
  EXPECT_EQ(l2->shard_name, testing::ShardsInLeaseOrder(1, 0, {"s0", "s1", "s2"})[2]);  // the epoch's third
  EXPECT_GT(l2->lease_id, l1->lease_id);  // lease ids are never reused
  auto st = g2->GetSweep("restart");
  ASSERT_OK(st);
  EXPECT_EQ(st->trials(0).state(), "running");
  EXPECT_EQ(st->trials(0).step(), 7);
  EXPECT_EQ(st->trials(0).checkpoint(), "ck/7");
  EXPECT_DOUBLE_EQ(st->trials(0).latest_train().at("loss"), 0.5);
  auto history = g2->GetMetrics("restart");
  ASSERT_OK(history);
  EXPECT_EQ(history->size(), 1u);
}

}  // namespace
}  // namespace flap::coordinator
