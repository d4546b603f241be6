// StateStore (coordinator/state_store.h) against journals written before it: records as
// CoordinatorService stored them (a sweep with ASHA and a report target, two groups, trials
// pending, running and requeued, metrics, an epoch's lease table) decode and encode back to
// the same bytes, and a coordinator loads them; a group stored before metrics endpoints loads
// too.
#include "coordinator/state_store.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/testing/testing.h"
#include "coordinator/journal.h"
#include "coordinator/service.h"

namespace flap::coordinator {
namespace {

using KeyValues = std::vector<std::pair<std::string, std::string>>;

// Every table's records, as the coordinator wrote them.
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
    batch.PutCounters(counters);
    ASSERT_OK_AND_ASSIGN(Rows<SweepRecord> sweeps, old->Sweeps());
    ASSERT_EQ(sweeps.size(), 1u);
    EXPECT_EQ(sweeps[0].second.state, SweepState::kRunning);
    for (const auto& [id, s] : sweeps) batch.PutSweep(id, s);
    ASSERT_OK_AND_ASSIGN(Rows<Asha> ashas, old->Ashas());
    for (const auto& [id, a] : ashas) batch.PutAsha(id, a);
    ASSERT_OK_AND_ASSIGN(Rows<GroupRecord> groups, old->Groups());
    ASSERT_EQ(groups.size(), 2u);
    for (const auto& [id, g] : groups) batch.PutGroup(id, g);
    ASSERT_OK_AND_ASSIGN(Rows<TrialRow> trials, old->Trials());
    ASSERT_EQ(trials.size(), 4u);
    for (const auto& [key, t] : trials) batch.PutTrial(key, t);
    ASSERT_OK_AND_ASSIGN(Rows<MetricPoint> metrics, old->Metrics());
    ASSERT_EQ(metrics.size(), 3u);
    EXPECT_EQ(metrics[0].first, "d/t0000");
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
      std::vector<Lease> leases;
      const nlohmann::json whole = table.ToJson();
      for (const auto& l : whole.at("leases")) leases.push_back(*Lease::FromJson(l, ekey));
      batch.PutLeases(ekey, leases);
    }
  }
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<StateStore> again, StateStore::Open(dir / "new", JournalOptions()));
    ASSERT_OK(again->Wait(again->Append(std::move(batch))));
  }
  const KeyValues written = ReadJournal(dir / "new");
  ASSERT_EQ(written.size(), Golden().size());
  for (size_t i = 0; i < written.size(); ++i) {
    EXPECT_EQ(written[i].first, Golden()[i].first);
    EXPECT_EQ(written[i].second, Golden()[i].second) << written[i].first;
  }
}

TEST(StateStore, KeysAreTheTablePrefixAndTheKeyWithinTheTable) {
  EXPECT_STREQ(TablePrefix(Table::kCounters), "meta/counters");
  EXPECT_EQ(TrialKey("d", "t0001"), "d/t0001");
  EXPECT_EQ(EpochKey("d/t0001", 3), "d/t0001/000003");
  EXPECT_EQ(SplitTrialKey("d/t0001"), std::make_pair(std::string("d"), std::string("t0001")));
  StateBatch b;
  MetricPoint p;
  p.kind = "eval";
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
