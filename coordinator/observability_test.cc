// The coordinator's Prometheus metrics (scraped over HTTP after known RPCs) and its file_sd
// file (groups listed while they live), over real gRPC on 127.0.0.1. Dashboards against a real
// Prometheus are tested in tests/dashboards_test.cc.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

#include "coordinator/client.h"
#include "coordinator/server.h"
#include "coordinator/state_store.h"
#include "coordinator/testing/service_test_util.h"
#include "tests/exposition.h"
#include "tests/http_client.h"

namespace flap::coordinator {
namespace {

using flap::testing::Describe;
using flap::testing::FindSamples;
using flap::testing::ParseExposition;
using flap::testing::Sample;
using testing::MaskSweep;
using testing::TestCoordinator;
using Labels = std::map<std::string, std::string>;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::vector<Sample> Scrape(TestCoordinator& c) {
  auto r = flap::testing::HttpGet("http://" + c.server()->metrics_endpoint() + "/metrics");
  EXPECT_EQ(r.status, 200);
  return ParseExposition(r.body);
}

// The value of the one series `name` with `labels` (among others); NaN, and a failure, when
// there is not exactly one.
double One(const std::vector<Sample>& samples, const std::string& name, const Labels& labels) {
  auto found = FindSamples(samples, name, labels);
  EXPECT_EQ(found.size(), 1u) << Describe(name, labels);
  return found.size() == 1 ? found[0].value : std::nan("");
}

// Polls `done` every 20 ms for up to `timeout_s`; whether it came true.
template <typename Fn>
bool Eventually(Fn done, double timeout_s = 5.0) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

TEST(CoordinatorMetrics, AScrapeShowsTrialsRpcsAndLeasesAfterKnownCalls) {
  ServiceOptions o = testing::FastServiceOptions();
  o.lease_ttl_ms = 300;
  o.heartbeat_timeout_ms = 20000;  // the group stays live while its lease expires
  TestCoordinator c("obs_metrics", o, "127.0.0.1:0");
  ASSERT_FALSE(c.server()->metrics_endpoint().empty());
  auto client = c.Client();
  // loss.recon_weight and text.augment are not factors: their labels come from the base config,
  // which may name a key by its earlier name (recon.weight).
  ASSERT_OK(client->SubmitSweep(MaskSweep("abl", "1"), "abl.ini", "[recon]\nweight = 0.5\n\n[text]\naugment = on\n"));
  EXPECT_FALSE(client->Register("g1", "inc-1", 0).ok());  // INVALID_ARGUMENT
  ASSERT_OK(client->Register("g1", "inc-1", 2, "h", {"127.0.0.1:9101", "127.0.0.1:9102"}));
  auto next = client->NextTrial("g1");
  ASSERT_TRUE(next.ok() && next->assigned);
  const v1::TrialRef ref = next->assignment.trial;
  ASSERT_EQ(ref.trial_id(), "t0000");
  ASSERT_OK(client->BeginEpoch("g1", ref, 0, {{"a.tar", 10}, {"b.tar", 10}}));
  auto lease = client->LeaseShard("g1", ref, 0, 0);
  ASSERT_TRUE(lease.ok() && lease->kind == ShardLease::Kind::kGranted);
  const std::map<std::string, double> train = {{"loss", 3},          {"contrastive", 2.5},        {"recon", 0.5},
                                               {"logit_scale", 14},  {"samples_per_second", 120}, {"lr", 1e-3},
                                               {"global_batch", 64}, {"negatives_per_step", 128}, {"epoch", 0.25}};
  ASSERT_OK(client->ReportMetrics("g1", ref, MetricKind::kTrain, 5, 0, train, 20));
  ASSERT_OK(client->ReportMetrics("g1", ref, MetricKind::kEval, 5, 0, {{"t2a_r1", 0.125}, {"map10", 0.25}}, 20));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_OK(client->ReportMetrics("g1", ref, MetricKind::kTrain, 10, 0, train, 20));

  const auto m = Scrape(c);
  const Labels t0 = {{"sweep", "abl"},        {"trial", "t0000"},     {"mask_ratio", "0.5"}, {"mask_strategy", "1d"},
                     {"recon_weight", "0.5"}, {"text_augment", "on"}, {"seed", "1"}};
  auto with = [&](const std::string& k, const std::string& v) {
    Labels l = t0;
    l[k] = v;
    return l;
  };
  // RPCs by method and code, and their latency.
  EXPECT_EQ(One(m, "flap_coordinator_rpcs_total", {{"method", "RegisterGroup"}, {"code", "OK"}}), 1);
  EXPECT_EQ(One(m, "flap_coordinator_rpcs_total", {{"method", "RegisterGroup"}, {"code", "INVALID_ARGUMENT"}}), 1);
  EXPECT_EQ(One(m, "flap_coordinator_rpcs_total", {{"method", "ReportMetrics"}, {"code", "OK"}}), 3);
  EXPECT_EQ(One(m, "flap_coordinator_rpc_duration_seconds_count", {{"method", "ReportMetrics"}}), 3);
  EXPECT_GT(One(m, "flap_coordinator_rpc_duration_seconds_sum", {{"method", "ReportMetrics"}}), 0);
  EXPECT_EQ(One(m, "flap_coordinator_rpc_duration_seconds_bucket", {{"method", "ReportMetrics"}, {"le", "+Inf"}}), 3);
  // The running trial, labelled with its factors, from its latest records.
  EXPECT_EQ(One(m, "flap_trial_state", with("state", "running")), 1);
  EXPECT_EQ(FindSamples(m, "flap_trial_state", {{"trial", "t0000"}}).size(), 1u);
  EXPECT_EQ(One(m, "flap_trial_step", t0), 10);
  EXPECT_EQ(One(m, "flap_trial_planned_steps", t0), 20);
  EXPECT_EQ(One(m, "flap_trial_progress_ratio", t0), 0.5);
  EXPECT_EQ(One(m, "flap_trial_epoch", t0), 0.25);
  EXPECT_EQ(One(m, "flap_trial_loss", with("kind", "total")), 3);
  EXPECT_EQ(One(m, "flap_trial_loss", with("kind", "contrastive")), 2.5);
  EXPECT_EQ(One(m, "flap_trial_loss", with("kind", "recon")), 0.5);
  EXPECT_EQ(One(m, "flap_trial_logit_scale", t0), 14);
  EXPECT_EQ(One(m, "flap_trial_learning_rate", t0), 1e-3);
  EXPECT_EQ(One(m, "flap_trial_samples_per_second", t0), 120);
  EXPECT_EQ(One(m, "flap_trial_global_batch", t0), 64);
  EXPECT_EQ(One(m, "flap_trial_negatives_per_step", t0), 128);
  EXPECT_EQ(One(m, "flap_trial_eval", with("metric", "t2a_r1")), 0.125);
  EXPECT_EQ(One(m, "flap_trial_eval", with("metric", "map10")), 0.25);
  EXPECT_EQ(One(m, "flap_trial_attempts_total", t0), 1);
  EXPECT_EQ(One(m, "flap_trial_failures_total", with("class", "preemption")), 0);
  EXPECT_GT(One(m, "flap_trial_eta_seconds", t0), 0);  // 10 steps left at the measured rate
  // A pending trial: its own factors, no records yet.
  EXPECT_EQ(One(m, "flap_trial_state",
                {{"trial", "t0003"}, {"mask_ratio", "0.75"}, {"mask_strategy", "2d"}, {"state", "pending"}}),
            1);
  EXPECT_TRUE(FindSamples(m, "flap_trial_loss", {{"trial", "t0003"}}).empty());
  // The sweep and the coordinator.
  EXPECT_EQ(One(m, "flap_sweep_trials", {{"sweep", "abl"}, {"state", "pending"}}), 3);
  EXPECT_EQ(One(m, "flap_sweep_trials", {{"sweep", "abl"}, {"state", "running"}}), 1);
  EXPECT_EQ(One(m, "flap_sweep_trials", {{"sweep", "abl"}, {"state", "completed"}}), 0);
  EXPECT_EQ(One(m, "flap_sweep_planned_trials", {{"sweep", "abl"}}), 4);
  EXPECT_EQ(One(m, "flap_sweep_state", {{"sweep", "abl"}, {"state", "running"}}), 1);
  EXPECT_GT(One(m, "flap_sweep_eta_seconds", {{"sweep", "abl"}}), 0);
  EXPECT_EQ(One(m, "flap_coordinator_groups_live", {}), 1);
  EXPECT_EQ(One(m, "flap_coordinator_groups_busy", {}), 1);
  EXPECT_EQ(One(m, "flap_coordinator_leases_active", {}), 1);
  EXPECT_EQ(One(m, "flap_coordinator_leases_expired_total", {}), 0);

  // The lease is not renewed (the heartbeats list no rank): it expires and is counted.
  EXPECT_TRUE(Eventually([&] {
    EXPECT_OK(client->Heartbeat("g1"));
    return FindSamples(Scrape(c), "flap_coordinator_leases_expired_total", {})[0].value == 1;
  })) << "the lease never counted as expired";
  EXPECT_EQ(One(Scrape(c), "flap_coordinator_leases_active", {}), 0);

  // A preempted attempt counts in its class, for the trial and for the sweep.
  auto state = client->Fail("g1", ref, FailureCause::kPreemption, "spot instance reclaimed");
  ASSERT_OK(state);
  const auto after = Scrape(c);
  EXPECT_EQ(One(after, "flap_trial_failures_total", with("class", "preemption")), 1);
  EXPECT_EQ(One(after, "flap_trial_failures_total", with("class", "node_fault")), 0);
  EXPECT_EQ(One(after, "flap_sweep_failures_total", {{"sweep", "abl"}, {"class", "preemption"}}), 1);
  EXPECT_EQ(One(after, "flap_trial_state", with("state", "pending")), 1);
  EXPECT_EQ(One(after, "flap_coordinator_rpcs_total", {{"method", "FailTrial"}, {"code", "OK"}}), 1);
}

TEST(CoordinatorMetrics, OnlyTheMostRecentEndedSweepsKeepTheirSeries) {
  ServiceOptions o = testing::FastServiceOptions();
  o.metrics_ended_sweeps = 1;
  TestCoordinator c("obs_bound", o);
  auto client = c.Client();
  for (const char* name : {"old", "newer", "live"}) ASSERT_OK(client->SubmitSweep(MaskSweep(name, "1"), name, ""));
  ASSERT_OK(client->CancelSweep("old"));
  ASSERT_OK(client->CancelSweep("newer"));
  const metrics::CoordinatorSnapshot snap = c.server()->service()->MetricsSnapshot();
  std::vector<std::string> shown;
  for (const auto& s : snap.sweeps) shown.push_back(s.sweep);
  EXPECT_EQ(shown, (std::vector<std::string>{"live", "newer"}));
  EXPECT_EQ(snap.sweeps_by_state.at("cancelled"), 2);
  EXPECT_EQ(snap.sweeps_by_state.at("running"), 1);
  for (const auto& s : snap.sweeps) {
    EXPECT_EQ(s.trials.size(), 4u);
    EXPECT_EQ(s.trials_by_state.size(), 7u) << "every trial state, 0 included";
  }
  EXPECT_EQ(snap.sweeps[1].eta_seconds, 0) << "an ended sweep has nothing left";
  EXPECT_EQ(snap.sweeps[0].eta_seconds, -1) << "no trial has a rate yet";
  // Factors the sweep does not set and the base config does not either stay out of config
  // (the label shows "-").
  EXPECT_EQ(snap.sweeps[0].trials[0].config.count("loss.recon_weight"), 0u);
  EXPECT_EQ(snap.sweeps[0].trials[0].config.at("mask.ratio"), "0.5");
}

// A sweep submitted before loss.recon_weight was named by its struct path stores its factor
// as recon.weight (StateStore.ASweepStoredUnderAKeysEarlierNameReadsBack): restored, its trials
// still show their recon_weight label. Before the factor's alias was resolved here, the label
// read "-" (the snapshot looked the factor up by loss.recon_weight only).
TEST(CoordinatorMetrics, AFactorStoredUnderAKeysEarlierNameStillHasItsLabel) {
  TestCoordinator c("obs_alias", testing::FastServiceOptions(), "127.0.0.1:0");
  ASSERT_OK(c.Client()->SubmitSweep("[sweep]\nname = old\nseeds = 1\n\n[factor.loss.recon_weight]\nvalues = 0, 0.5\n",
                                    "old.ini", ""));
  c.Stop();
  {  // the rows as a release before the rename wrote them
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<StateStore> store,
                         StateStore::Open(c.options().service.state_dir + "/db", JournalOptions()));
    ASSERT_OK_AND_ASSIGN(Rows<SweepRecord> sweeps, store->Sweeps());
    ASSERT_OK_AND_ASSIGN(Rows<TrialRow> trials, store->Trials());
    ASSERT_EQ(sweeps.size(), 1u);
    ASSERT_EQ(trials.size(), 2u);
    StateBatch b;
    SweepRecord& sweep = sweeps[0].second;
    ASSERT_EQ(sweep.spec.factors.at(0).name, "loss.recon_weight");
    sweep.spec.factors[0].name = "recon.weight";
    b.PutSweep(sweeps[0].first, sweep);
    for (auto& [key, t] : trials) {
      t.spec.factors = {{"recon.weight", t.spec.factors.at("loss.recon_weight")}};
      b.PutTrial(key, t);
    }
    ASSERT_OK(store->Wait(store->Append(std::move(b))));
  }
  c.Start();
  const auto m = Scrape(c);
  EXPECT_EQ(One(m, "flap_trial_state", {{"trial", "t0000"}, {"recon_weight", "0"}}), 1);
  EXPECT_EQ(One(m, "flap_trial_state", {{"trial", "t0001"}, {"recon_weight", "0.5"}}), 1);
}

// The file_sd file: [{"targets": [host:port], "labels": {...}}, ...], read back.
std::vector<std::pair<std::string, Labels>> ReadSd(const std::string& path) {
  std::vector<std::pair<std::string, Labels>> out;
  auto j = nlohmann::json::parse(flap::testing::ReadFile(path), nullptr, false);
  if (!j.is_array()) return out;
  for (const auto& g : j) {
    for (const auto& t : g["targets"]) out.push_back({t.get<std::string>(), g["labels"].get<Labels>()});
  }
  return out;
}

// The entries of group `group` in the file.
std::vector<std::pair<std::string, Labels>> GroupEntries(const std::string& path, const std::string& group) {
  std::vector<std::pair<std::string, Labels>> out;
  for (auto& e : ReadSd(path)) {
    auto it = e.second.find("group");
    if (it != e.second.end() && it->second == group) out.push_back(e);
  }
  return out;
}

TEST(CoordinatorSdFile, ListsEveryRankOfLiveGroupsAndDropsLostOrReRegisteredOnes) {
  flap::testing::TempDir sd("obs_sd");
  const std::string path = sd / "targets/flap.json";
  ServiceOptions o = testing::FastServiceOptions();
  o.heartbeat_timeout_ms = 1500;
  o.sd_file = path;
  TestCoordinator c("obs_sd_coord", o, "127.0.0.1:0");
  // The coordinator lists itself from the start.
  auto entries = ReadSd(path);
  ASSERT_EQ(entries.size(), 1u) << flap::testing::ReadFile(path);
  EXPECT_EQ(entries[0].first, c.server()->metrics_endpoint());
  EXPECT_EQ(entries[0].second, (Labels{{"job", "flap-coordinator"}}));

  auto client = c.Client();
  ASSERT_OK(client->Register("g1", "inc-1", 2, "node1", {"node1:9101", "node1:9102"}));
  ASSERT_OK(client->Register("g2", "inc-2", 1, "node2"));  // no endpoints: not listed
  ASSERT_TRUE(Eventually([&] { return GroupEntries(path, "g1").size() == 2; })) << flap::testing::ReadFile(path);
  auto g1 = GroupEntries(path, "g1");
  EXPECT_EQ(g1[0].first, "node1:9101");
  EXPECT_EQ(g1[0].second, (Labels{{"group", "g1"}, {"rank", "0"}}));
  EXPECT_EQ(g1[1].first, "node1:9102");
  EXPECT_EQ(g1[1].second, (Labels{{"group", "g1"}, {"rank", "1"}}));
  EXPECT_TRUE(GroupEntries(path, "g2").empty());

  // Holding a trial adds its sweep and trial.
  ASSERT_OK(client->SubmitSweep(MaskSweep("sd", "1"), "sd.ini", ""));
  ASSERT_OK(client->NextTrial("g1"));
  ASSERT_TRUE(Eventually([&] {
    auto e = GroupEntries(path, "g1");
    return e.size() == 2 && e[1].second.count("trial") && e[1].second.at("trial") == "t0000";
  })) << flap::testing::ReadFile(path);
  EXPECT_EQ(GroupEntries(path, "g1")[0].second,
            (Labels{{"group", "g1"}, {"rank", "0"}, {"sweep", "sd"}, {"trial", "t0000"}}));

  // The endpoints are journaled: a restarted coordinator lists them again.
  c.Restart();
  EXPECT_EQ(GroupEntries(path, "g1").size(), 2u) << flap::testing::ReadFile(path);
  EXPECT_EQ(ReadSd(path)[0].first, c.server()->metrics_endpoint()) << "the coordinator's new endpoint";
  client = c.Client();

  // A group that stops heartbeating is lost: its entries go, the coordinator's stay.
  ASSERT_TRUE(Eventually([&] { return GroupEntries(path, "g1").empty(); }, 10)) << flap::testing::ReadFile(path);
  EXPECT_EQ(ReadSd(path).size(), 1u);

  // Registering again (a restarted group) lists the new endpoints only.
  ASSERT_OK(client->Register("g1", "inc-3", 1, "node3", {"node3:9200"}));
  ASSERT_TRUE(Eventually([&] { return GroupEntries(path, "g1").size() == 1; })) << flap::testing::ReadFile(path);
  EXPECT_EQ(GroupEntries(path, "g1")[0].first, "node3:9200");
}

TEST(CoordinatorSdFile, BadMetricsEndpointsAreRefusedNamingTheField) {
  TestCoordinator c("obs_sd_bad");
  auto client = c.Client();
  auto refused = [&](const std::vector<std::string>& endpoints, int world, const std::string& expect) {
    auto r = client->Register("g9", "inc-9", world, "h", endpoints);
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
    EXPECT_TRUE(Contains(r.status().message(), expect)) << r.status().message();
  };
  refused({"h:1"}, 2, "metrics_endpoints: has 1 entries; give none or one per rank (2)");
  refused({"h:1", "not an address"}, 2, "metrics_endpoints[1]");
  refused({"h:1", "h:0"}, 2, "metrics_endpoints[1]: 'h:0' is not an address to scrape");
  refused({"*:9100"}, 1, "metrics_endpoints[0]");
  refused({std::string(260, 'a') + ":9100"}, 1, "metrics_endpoints[0]: is longer than 256 bytes");
  EXPECT_OK(client->Register("g9", "inc-9", 2, "h", {"h:1", "[::1]:2"}));
}

}  // namespace
}  // namespace flap::coordinator
