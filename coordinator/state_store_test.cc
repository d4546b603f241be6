// StateStore (coordinator/state_store.h) against journals written before it: records as
// CoordinatorService stored them in format 1 (a sweep with ASHA and a report target, two
// groups, trials pending, running and requeued, metrics, an epoch's lease table) are migrated,
// decode, and encode back to the same bytes, and a coordinator loads them; a group stored
// before metrics endpoints loads too. (journal_format_test.cc: a whole journal of format 1.)
#include "coordinator/state_store.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "common/testing/testing.h"
#include "coordinator/journal.h"
#include "coordinator/service.h"
#include "coordinator/testing/sweep_test_util.h"

namespace flap::coordinator {
namespace {

using KeyValues = std::vector<std::pair<std::string, std::string>>;

// Every table's records, as the coordinator wrote them in format 1.
const KeyValues& Golden() {
  static const KeyValues kRows = {
      {"asha/d",
       "{\"config\":{\"metric\":\"map10\",\"mode\":\"max\",\"reduction\":3,\"rungs\":[10,20]},\"rungs\":[[{"
       "\"decision\":{\"action\":\"continue\",\"num_promoted\":0,\"num_results\":1,\"rank\":0,\"rung\":0},\"trial\":"
       "\"t0000\",\"value\":0.5},{\"decision\":{\"action\":\"continue\",\"num_promoted\":0,\"num_results\":2,\"rank\":"
       "1,\"rung\":0},\"trial\":\"t0001\",\"value\":0.25}],[]]}"},
      {"epoch/d/t0000/000000",
       "{\"shards\":[{\"name\":\"a.tar\",\"num_samples\":10},{\"name\":\"b.tar\",\"num_samples\":12}],\"ttl_ms\":"
       "60000}"},
      {"group/g0", "{\"host\":\"\",\"incarnation\":\"inc2\",\"metrics_endpoints\":[],\"world_size\":1}"},
      {"group/g1",
       "{\"host\":\"h1\",\"incarnation\":\"inc1\",\"metrics_endpoints\":[\"h1:9000\",\"h1:9001\"],\"world_size\":2}"},
      {"lease/d/t0000/000000/000000000001",
       "{\"deadline_ms\":1796440911496,\"granted_ms\":1796440851496,\"id\":1,\"rank\":\"g1/"
       "1#0\",\"shard\":0,\"shard_name\":\"a.tar\",\"state\":\"completed\"}"},
      {"lease/d/t0000/000000/000000000002",
       "{\"deadline_ms\":1796440911504,\"granted_ms\":1796440851504,\"id\":2,\"rank\":\"g1/"
       "0#0\",\"shard\":1,\"shard_name\":\"b.tar\",\"state\":\"active\"}"},
      {"meta/counters", "{\"next_group\":1,\"next_order\":1}"},
      {"metric/d/t0000/eval/000000000010",
       "{\"attempt\":1,\"epoch\":0,\"kind\":\"eval\",\"step\":10,\"time_ms\":1796440851516,\"trial_id\":\"t0000\","
       "\"values\":{\"map10\":0.5,\"t2a_r1\":0.125,\"train_seconds\":3.5}}"},
      {"metric/d/t0000/train/000000000003",
       "{\"attempt\":1,\"epoch\":0,\"kind\":\"train\",\"step\":3,\"time_ms\":1796440851511,\"trial_id\":\"t0000\","
       "\"values\":{\"loss\":1.5,\"samples_per_second\":2.25}}"},
      {"metric/d/t0001/eval/000000000010",
       "{\"attempt\":2,\"epoch\":0,\"kind\":\"eval\",\"step\":10,\"time_ms\":1796440851523,\"trial_id\":\"t0001\","
       "\"values\":{\"map10\":0.25}}"},
      {"sweep/d",
       "{\"base_config\":\"[train]\\nsteps = 5\\n\\n[mask]\\nratio = "
       "0.1\\n\",\"order\":0,\"source\":\"d.ini\",\"spec\":{\"asha\":{\"metric\":\"map10\",\"mode\":\"max\","
       "\"reduction\":3,\"rungs\":[10,20]},\"base_config\":\"\",\"budget\":0,\"factors\":[{\"name\":\"mask.ratio\","
       "\"values\":[\"0.5\",\"0.75\"]},{\"name\":\"mask.strategy\",\"values\":[\"1d\",\"2d\"]}],\"name\":\"d\","
       "\"priority\":0,\"report_target\":\"t2a_r1:0.3\",\"search\":\"grid\",\"search_seed\":0,\"seeds\":[1]},\"state\":"
       "\"running\",\"text\":\"[sweep]\\nname = d\\nsearch = grid\\nseeds = 1\\n\\n[factor.mask.ratio]\\nvalues = 0.5, "
       "0.75\\n\\n[factor.mask.strategy]\\nvalues = 1d, 2d\\n\\n[asha]\\nmetric = map10\\nrungs = 10, "
       "20\\n\\n[report]\\ntarget = t2a_r1:30%\\n\",\"trial_ids\":[\"t0000\",\"t0001\",\"t0002\",\"t0003\"]}"},
      {"trial/d/t0000",
       "{\"record\":{\"attempt\":1,\"budgets\":{\"node_fault\":3,\"preemption\":20,\"trial_error\":2},\"checkpoint\":"
       "\"ckpt/d-t0000/"
       "10\",\"checkpoint_step\":10,\"failures\":{\"node_fault\":0,\"preemption\":0,\"trial_error\":0},\"group\":"
       "\"g1\",\"id\":\"t0000\",\"last_error\":\"\",\"state\":\"running\",\"step\":10},\"spec\":{\"cell\":0,"
       "\"factors\":{\"mask.ratio\":\"0.5\",\"mask.strategy\":\"1d\"},\"id\":\"t0000\",\"seed\":1},\"total_steps\":"
       "100}"},
      {"trial/d/t0001",
       "{\"record\":{\"attempt\":2,\"budgets\":{\"node_fault\":3,\"preemption\":20,\"trial_error\":2},\"checkpoint\":"
       "\"\",\"checkpoint_step\":0,\"failures\":{\"node_fault\":0,\"preemption\":1,\"trial_error\":0},\"group\":\"g0\","
       "\"id\":\"t0001\",\"last_error\":\"spot\",\"state\":\"running\",\"step\":10},\"spec\":{\"cell\":1,\"factors\":{"
       "\"mask.ratio\":\"0.5\",\"mask.strategy\":\"2d\"},\"id\":\"t0001\",\"seed\":1},\"total_steps\":100}"},
      {"trial/d/t0002",
       "{\"record\":{\"attempt\":0,\"budgets\":{\"node_fault\":3,\"preemption\":20,\"trial_error\":2},\"checkpoint\":"
       "\"\",\"checkpoint_step\":0,\"failures\":{\"node_fault\":0,\"preemption\":0,\"trial_error\":0},\"group\":\"\","
       "\"id\":\"t0002\",\"last_error\":\"\",\"state\":\"pending\",\"step\":0},\"spec\":{\"cell\":2,\"factors\":{"
       "\"mask.ratio\":\"0.75\",\"mask.strategy\":\"1d\"},\"id\":\"t0002\",\"seed\":1},\"total_steps\":0}"},
      {"trial/d/t0003",
       "{\"record\":{\"attempt\":0,\"budgets\":{\"node_fault\":3,\"preemption\":20,\"trial_error\":2},\"checkpoint\":"
       "\"\",\"checkpoint_step\":0,\"failures\":{\"node_fault\":0,\"preemption\":0,\"trial_error\":0},\"group\":\"\","
       "\"id\":\"t0003\",\"last_error\":\"\",\"state\":\"pending\",\"step\":0},\"spec\":{\"cell\":3,\"factors\":{"
       "\"mask.ratio\":\"0.75\",\"mask.strategy\":\"2d\"},\"id\":\"t0003\",\"seed\":1},\"total_steps\":0}"},
  };
  return kRows;
}

// A group record from before metrics endpoints were kept.
const std::pair<std::string, std::string> kLegacyGroup = {"group/g2",
                                                          "{\"host\":\"\",\"incarnation\":\"inc3\",\"world_size\":1}"};

void WriteJournal(const std::string& dir, const KeyValues& rows) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Journal> j, Journal::Open(dir, JournalOptions()));
  JournalBatch b;
  for (const auto& [key, value] : rows) b.Put(key, value);
  ASSERT_OK(j->Wait(j->Append(std::move(b))));
}

KeyValues ReadJournal(const std::string& dir) {
  auto j = Journal::Open(dir, JournalOptions());
  EXPECT_OK(j);
  if (!j.ok()) return {};
  auto rows = (*j)->Scan("");
  EXPECT_OK(rows);
  return rows.ok() ? *rows : KeyValues();
}

TEST(StateStore, RecordsOfEveryTableEncodeBackToTheBytesTheyWereReadFrom) {
  flap::testing::TempDir dir("state_store_golden");
  WriteJournal(dir / "old", Golden());
  StateBatch batch;
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<StateStore> old, StateStore::Open(dir / "old", JournalOptions()));
    ASSERT_OK_AND_ASSIGN(Counters counters, old->ReadCounters());
    EXPECT_EQ(counters.next_group, 1);
    batch.PutCounters(counters);
    ASSERT_OK_AND_ASSIGN(Rows<SweepRecord> sweeps, old->Sweeps());
    ASSERT_EQ(sweeps.size(), 1u);
    EXPECT_EQ(sweeps[0].second.state, SweepState::kRunning);
    ASSERT_TRUE(sweeps[0].second.spec.report_target.has_value());
    EXPECT_EQ(sweeps[0].second.spec.report_target->ToString(), "t2a_r1:0.3");
    for (const auto& [id, s] : sweeps) batch.PutSweep(id, s);
    ASSERT_OK_AND_ASSIGN(Rows<Asha> ashas, old->Ashas());
    ASSERT_EQ(ashas.size(), 1u);
    EXPECT_EQ(ashas[0].second.NumResults(0), 2);
    for (const auto& [id, a] : ashas) batch.PutAsha(id, a);
    ASSERT_OK_AND_ASSIGN(Rows<GroupRecord> groups, old->Groups());
    ASSERT_EQ(groups.size(), 2u);
    EXPECT_EQ(groups[1].second.metrics_endpoints, (std::vector<std::string>{"h1:9000", "h1:9001"}));
    for (const auto& [id, g] : groups) batch.PutGroup(id, g);
    ASSERT_OK_AND_ASSIGN(Rows<TrialRow> trials, old->Trials());
    ASSERT_EQ(trials.size(), 4u);
    EXPECT_EQ(trials[1].second.record.last_error, "spot");
    for (const auto& [key, t] : trials) batch.PutTrial(key, t);
    ASSERT_OK_AND_ASSIGN(Rows<MetricPoint> metrics, old->Metrics());
    ASSERT_EQ(metrics.size(), 3u);
    EXPECT_EQ(metrics[0].first, "d/t0000");
    EXPECT_EQ(metrics[0].second.values.at("train_seconds"), 3.5);
    for (const auto& [key, p] : metrics) batch.PutMetric(key, p);
    ASSERT_OK_AND_ASSIGN(Rows<MetricPoint> one, old->Metrics("d", "t0001"));
    EXPECT_EQ(one.size(), 1u);
    ASSERT_OK_AND_ASSIGN(Rows<LeaseTable> tables, old->LeaseTables());
    ASSERT_EQ(tables.size(), 1u);
    EXPECT_EQ(tables[0].first, "d/t0000/000000");
    EXPECT_EQ(tables[0].second.done_shards(), 1);
    EXPECT_EQ(tables[0].second.active_leases(), 1);
    for (const auto& [ekey, table] : tables) {
      batch.PutEpoch(ekey, table);
      batch.PutLeases(ekey, table.leases());
    }
  }
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<StateStore> again, StateStore::Open(dir / "new", JournalOptions()));
    ASSERT_OK(again->Wait(again->Append(std::move(batch))));
  }
  // The migrated journal and the one written from what was read hold the same bytes.
  const KeyValues migrated = ReadJournal(dir / "old");
  const KeyValues written = ReadJournal(dir / "new");
  ASSERT_EQ(migrated.size(), Golden().size() + 1);  // and meta/format_version
  ASSERT_EQ(written.size(), migrated.size());
  for (size_t i = 0; i < written.size(); ++i) {
    EXPECT_EQ(written[i].first, migrated[i].first);
    EXPECT_EQ(written[i].second, migrated[i].second) << written[i].first;
  }
}

// The stored value of `key` in Golden(), with `from` replaced by `to`.
std::string GoldenWith(const std::string& key, const std::string& from, const std::string& to) {
  for (const auto& [k, v] : Golden()) {
    if (k != key) continue;
    const size_t at = v.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return at == std::string::npos ? v : v.substr(0, at) + to + v.substr(at + from.size());
  }
  ADD_FAILURE() << "no " << key;
  return "";
}

TEST(StateStore, ARecordThatDoesNotReadIsCorruptionNamingItsKeyAndWhy) {
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {"trial/d/t0002", GoldenWith("trial/d/t0002", "\"state\":\"pending\"", "\"state\":\"paused\""),
       "unknown trial state 'paused'"},
      {"trial/d/t0002", GoldenWith("trial/d/t0002", "\"group\":\"\"", "\"group\":\"g1\""), "inconsistent"},
      {"asha/d", GoldenWith("asha/d", "\"rung\":0},\"trial\":\"t0001\"", "\"rung\":1},\"trial\":\"t0001\""),
       "misplaced trial 't0001'"},
      {"asha/d", GoldenWith("asha/d", "\"action\":\"continue\"", "\"action\":\"maybe\""),
       "action must be continue or stop"},
      {"sweep/d", GoldenWith("sweep/d", "\"search\":\"grid\"", "\"search\":\"spiral\""),
       "'search' must be grid or random"},
      {"sweep/d", GoldenWith("sweep/d", "\"values\":[\"0.5\",\"0.75\"]", "\"values\":[\"0.5\",\"2\"]"), "got '2'"},
      {"metric/d/t0001/eval/000000000010",
       GoldenWith("metric/d/t0001/eval/000000000010", "\"kind\":\"eval\"", "\"kind\":\"loss\""),
       "not train, eval or test"},
      {"group/g0", GoldenWith("group/g0", "\"world_size\":1", "\"world_size\":\"one\""), "is not a Group record"},
      {"lease/d/t0000/000000/000000000001",
       GoldenWith("lease/d/t0000/000000/000000000001", "\"completed\"", "\"lost\""), "unknown lease state 'lost'"},
      {"meta/other", "{}", "unknown key meta/other"},
  };
  for (const auto& [key, value, why] : cases) {
    flap::testing::TempDir dir("state_store_bad");
    KeyValues rows = Golden();
    bool replaced = false;
    for (auto& [k, v] : rows) {
      if (k == key) {
        v = value;
        replaced = true;
      }
    }
    if (!replaced) rows.push_back({key, value});
    WriteJournal(dir / "db", rows);
    auto store = StateStore::Open(dir / "db", JournalOptions());
    ASSERT_FALSE(store.ok()) << key << ": " << why;
    EXPECT_EQ(store.status().code(), Status::Code::kCorruption) << store.status().ToString();
    EXPECT_NE(store.status().message().find(key), std::string::npos) << store.status().message();
    EXPECT_NE(store.status().message().find(why), std::string::npos) << store.status().message();
  }
  // A lease table whose leases break its invariants reads as Corruption naming its epoch.
  flap::testing::TempDir dir("state_store_bad_leases");
  KeyValues rows = Golden();
  rows.push_back(
      {"lease/d/t0000/000000/000000000003", GoldenWith("lease/d/t0000/000000/000000000001", "\"id\":1", "\"id\":3")});
  WriteJournal(dir / "db", rows);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<StateStore> store, StateStore::Open(dir / "db", JournalOptions()));
  auto tables = store->LeaseTables();
  ASSERT_FALSE(tables.ok());
  EXPECT_EQ(tables.status().code(), Status::Code::kCorruption);
  EXPECT_NE(tables.status().message().find("epoch/d/t0000/000000"), std::string::npos) << tables.status().message();
  EXPECT_NE(tables.status().message().find("completed twice"), std::string::npos) << tables.status().message();
}

TEST(StateStore, ATestSplitRecordWithNaNReadsBack) {
  flap::testing::TempDir dir("state_store_test_kind");
  KeyValues rows = Golden();
  std::string test_record = GoldenWith("metric/d/t0001/eval/000000000010", "\"kind\":\"eval\"", "\"kind\":\"test\"");
  test_record = test_record.substr(0, test_record.find("\"values\"")) + "\"values\":{\"map10\":null,\"t2a_r1\":0.5}}";
  rows.push_back({"metric/d/t0001/test/000000000010", test_record});
  WriteJournal(dir / "db", rows);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<StateStore> store, StateStore::Open(dir / "db", JournalOptions()));
  ASSERT_OK_AND_ASSIGN(Rows<MetricPoint> metrics, store->Metrics("d", "t0001"));
  ASSERT_EQ(metrics.size(), 2u);
  const MetricPoint& test = metrics[1].second;
  EXPECT_EQ(test.kind, MetricKind::kTest);
  EXPECT_TRUE(std::isnan(test.values.at("map10")));
  EXPECT_EQ(test.values.at("t2a_r1"), 0.5);
  EXPECT_EQ(test.step, 10);
  EXPECT_EQ(test.attempt, 2);
}

TEST(StateStore, ARandomSearchSweepReadsBackWithItsRanges) {
  flap::testing::TempDir dir("state_store_random");
  SweepRecord sweep;
  auto spec = ParseSweepText(sweep_testing::kRandom, "lr-search.ini");
  ASSERT_OK(spec);
  sweep.spec = *spec;
  sweep.trial_ids = {"t0000"};
  StateBatch batch;
  batch.PutSweep("r", sweep);
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<StateStore> store, StateStore::Open(dir / "a", JournalOptions()));
    ASSERT_OK(store->Wait(store->Append(std::move(batch))));
    ASSERT_OK_AND_ASSIGN(Rows<SweepRecord> sweeps, store->Sweeps());
    ASSERT_EQ(sweeps.size(), 1u);
    const SweepSpec& back = sweeps[0].second.spec;
    EXPECT_EQ(back.search, SearchKind::kRandom);
    EXPECT_EQ(back.budget, 8);
    EXPECT_EQ(back.search_seed, 42u);
    EXPECT_EQ(back.seeds, (std::vector<uint64_t>{1, 2}));
    ASSERT_EQ(back.factors.size(), 4u);
    EXPECT_TRUE(back.factors[0].has_range);
    EXPECT_EQ(back.factors[0].lo, 1e-4);
    EXPECT_EQ(back.factors[0].hi, 1e-2);
    EXPECT_TRUE(back.factors[0].log);
    EXPECT_FALSE(back.factors[1].log);
    EXPECT_EQ(back.factors[2].values, (std::vector<std::string>{"1d", "2d"}));
    EXPECT_FALSE(back.factors[2].has_range);
    EXPECT_TRUE(back.factors[3].integer);
    EXPECT_EQ(ExpandSweep(back)->size(), ExpandSweep(*spec)->size());
    EXPECT_EQ(*ExpandSweep(back), *ExpandSweep(*spec));
  }
}

// A sweep submitted before a key was renamed to its struct path (config/trial_config.h,
// ConfigKey::alias) names the factor by its earlier name: it still reads back, though a new
// sweep file may not use that name (SweepAliases in sweep_test.cc).
TEST(StateStore, ASweepStoredUnderAKeysEarlierNameReadsBack) {
  flap::testing::TempDir dir("state_store_alias");
  KeyValues rows = Golden();
  for (auto& [key, value] : rows) {
    if (key == "sweep/d") {
      value = GoldenWith("sweep/d", "{\"name\":\"mask.ratio\",\"values\":[\"0.5\",\"0.75\"]}",
                         "{\"name\":\"recon.weight\",\"values\":[\"0\",\"0.5\"]}");
    }
  }
  WriteJournal(dir / "db", rows);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<StateStore> store, StateStore::Open(dir / "db", JournalOptions()));
  ASSERT_OK_AND_ASSIGN(Rows<SweepRecord> sweeps, store->Sweeps());
  ASSERT_EQ(sweeps.size(), 1u);
  EXPECT_EQ(sweeps[0].second.spec.factors[0].name, "recon.weight");
  EXPECT_EQ(sweeps[0].second.spec.factors[0].values, (std::vector<std::string>{"0", "0.5"}));
}

TEST(StateStore, KeysAreTheTablePrefixAndTheKeyWithinTheTable) {
  EXPECT_STREQ(TablePrefix(Table::kCounters), "meta/counters");
  EXPECT_EQ(TrialKey("d", "t0001"), "d/t0001");
  EXPECT_EQ(EpochKey("d/t0001", 3), "d/t0001/000003");
  EXPECT_EQ(SplitTrialKey("d/t0001"), std::make_pair(std::string("d"), std::string("t0001")));
  StateBatch b;
  MetricPoint p;
  p.kind = MetricKind::kEval;
  p.step = 42;
  b.PutMetric("d/t0001", p);
  Lease l;
  l.id = 7;
  b.PutLeases("d/t0001/000003", {l});
  EXPECT_FALSE(b.empty());
}

TEST(StateStore, ACoordinatorLoadsJournalsWrittenBeforeIt) {
  flap::testing::TempDir dir("state_store_load");
  KeyValues rows = Golden();
  rows.push_back(kLegacyGroup);
  WriteJournal(dir / "db", rows);
  ServiceOptions o;
  o.state_dir = dir / "db";
  o.token = "t";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<CoordinatorService> service, CoordinatorService::Create(o));
  const CoordinatorService::MemoryStats m = service->memory_stats();
  EXPECT_EQ(m.sweeps, 1u);
  EXPECT_EQ(m.trials, 4u);
  EXPECT_EQ(m.groups, 3u);
  EXPECT_EQ(m.lease_tables, 1u);
  const metrics::CoordinatorSnapshot snap = service->MetricsSnapshot();
  ASSERT_EQ(snap.sweeps.size(), 1u);
  const auto& trials = snap.sweeps[0].trials;
  ASSERT_EQ(trials.size(), 4u);
  EXPECT_EQ(trials[0].state, "running");
  EXPECT_EQ(trials[0].step, 10);
  EXPECT_EQ(trials[0].eval.at("map10"), 0.5);
  EXPECT_EQ(trials[1].failures.at("preemption"), 1);
  EXPECT_EQ(trials[2].state, "pending");
  EXPECT_EQ(snap.groups_busy, 2);
  EXPECT_EQ(snap.leases_active, 1);
}

}  // namespace
}  // namespace flap::coordinator
