// CoordinatorService over real gRPC on 127.0.0.1 with RocksDB on disk: the token, request
// validation, sweep submission. The protocol end to end is in e2e_test.cc.
#include "coordinator/service.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <set>

#include "coordinator/client.h"
#include "coordinator/journal.h"
#include "coordinator/server.h"
#include "coordinator/testing/service_test_util.h"

namespace flap::coordinator {
namespace {

using testing::MaskSweep;
using testing::TestCoordinator;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(CoordinatorAuth, MissingTokenIsRefusedWithAClearMessage) {
  TestCoordinator c("auth_missing");
  auto channel = grpc::CreateChannel(c.server()->address(), grpc::InsecureChannelCredentials());
  auto stub = v1::Coordinator::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::ListSweepsRequest req;
  v1::ListSweepsResponse resp;
  grpc::Status s = stub->ListSweeps(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Contains(s.error_message(), "missing token")) << s.error_message();
  EXPECT_TRUE(Contains(s.error_message(), "x-flap-token")) << s.error_message();
}

TEST(CoordinatorAuth, WrongTokenIsRefusedOnEveryKindOfCall) {
  TestCoordinator c("auth_wrong");
  auto bad = c.Client("not-the-token");
  auto list = bad->ListSweeps();
  ASSERT_FALSE(list.ok());
  EXPECT_EQ(list.status().code(), Status::Code::kUnauthenticated);
  EXPECT_TRUE(Contains(list.status().message(), "wrong token")) << list.status().message();
  EXPECT_EQ(bad->Register("g1", "inc", 1).status().code(), Status::Code::kUnauthenticated);
  // A refused submission stores nothing.
  EXPECT_EQ(bad->SubmitSweep(MaskSweep("s"), "s.ini", "").status().code(), Status::Code::kUnauthenticated);
  auto good = c.Client();
  auto sweeps = good->ListSweeps();
  ASSERT_OK(sweeps);
  EXPECT_EQ(sweeps->sweeps_size(), 0);
}

TEST(CoordinatorAuth, TokenFileIsCreatedWithMode0600AndReused) {
  TestCoordinator c("auth_file");
  const std::string path = c.dir() / "state/token";
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string token = c.server()->token();
  EXPECT_EQ(token.size(), 64u);
  EXPECT_EQ(flap::testing::ReadFile(path), token + "\n");
  c.Restart();
  EXPECT_EQ(c.server()->token(), token);
  EXPECT_OK(c.Client()->ListSweeps());
}

// The state folder (token, journal) is made private to its owner, not 0755.
TEST(HardeningCoordinator, StateFolderIsCreatedWithMode0700) {
  TestCoordinator c("state_mode");
  struct stat st;
  const std::string state = c.dir() / "state";
  ASSERT_EQ(::stat(state.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST(CoordinatorAuth, TokenFileReadableByOthersIsRefused) {
  flap::testing::TempDir dir("auth_mode");
  const std::string path = dir / "token";
  flap::testing::WriteFile(path, std::string(flap::testing::kTestToken) + "\n");
  ::chmod(path.c_str(), 0644);
  auto t = LoadOrCreateToken(path);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), Status::Code::kFailedPrecondition);
  EXPECT_TRUE(Contains(t.status().message(), "chmod 600")) << t.status().message();
  ::chmod(path.c_str(), 0600);
  t = LoadOrCreateToken(path);
  ASSERT_OK(t);
  EXPECT_EQ(*t, flap::testing::kTestToken);
}

TEST(CoordinatorTls, ServesTlsWithAGivenCertAndKey) {
  flap::testing::TempDir dir("tls");
  const std::string cert = dir / "cert.pem", key = dir / "key.pem";
  auto gen = flap::testing::RunCommand(
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext "
      "subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " +
      key + " -out " + cert);
  if (gen.exit_code != 0) GTEST_SKIP() << "openssl cannot make a test certificate: " << gen.output;
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.tls_cert = cert;
  o.tls_key = key;
  o.service = testing::FastServiceOptions();
  o.service.state_dir = dir / "state";
  auto server = CoordinatorServer::Start(o);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  ClientOptions co;
  co.target = (*server)->address();
  co.token = (*server)->token();
  co.tls_ca = flap::testing::ReadFile(cert);
  co.deadline_ms = 5000;
  auto client = CoordinatorClient::Connect(co);
  ASSERT_OK(client);
  auto list = (*client)->ListSweeps();
  EXPECT_OK(list);
  // A client that trusts another CA refuses the server's certificate.
  const std::string other_cert = dir / "other.pem", other_key = dir / "other-key.pem";
  ASSERT_EQ(flap::testing::RunCommand("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext "
                                      "subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " +
                                      other_key + " -out " + other_cert)
                .exit_code,
            0);
  co.tls_ca = flap::testing::ReadFile(other_cert);
  co.deadline_ms = 1000;
  auto untrusting = CoordinatorClient::Connect(co);
  ASSERT_OK(untrusting);
  EXPECT_FALSE((*untrusting)->ListSweeps().ok()) << "a client accepted a certificate its CA did not sign";
  // A plaintext client cannot talk to it.
  co.tls_ca.clear();
  auto plain = CoordinatorClient::Connect(co);
  EXPECT_FALSE((*plain)->ListSweeps().ok());
  // A cert without a key is refused before anything starts.
  o.tls_key.clear();
  auto half = CoordinatorServer::Start(o);
  ASSERT_FALSE(half.ok());
  EXPECT_TRUE(Contains(half.status().message(), "--tls-key")) << half.status().message();
}

TEST(CoordinatorSubmit, InvalidSweepIsRefusedWithEveryErrorAndNothingStored) {
  TestCoordinator c("submit_bad");
  auto client = c.Client();
  const std::string bad =
      "[sweep]\nname = bad sweep\nsearch = grid\n\n[factor.mask.ratio]\nvalues = 0.5, 1.5\n\n"
      "[factor.mask.strategy]\nvalues = 3d\n";
  auto r = client->SubmitSweep(bad, "bad.ini", "");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
  const std::string& m = r.status().message();
  EXPECT_TRUE(Contains(m, "bad.ini:2")) << m;  // the name
  EXPECT_TRUE(Contains(m, "bad.ini:6")) << m;  // ratio 1.5
  EXPECT_TRUE(Contains(m, "bad.ini:9")) << m;  // strategy 3d
  EXPECT_TRUE(Contains(m, "3 errors")) << m;
  auto list = client->ListSweeps();
  ASSERT_OK(list);
  EXPECT_EQ(list->sweeps_size(), 0);
}

TEST(CoordinatorSubmit, SameSweepAgainIsANoOpAndADifferentOneUnderTheNameIsRefused) {
  TestCoordinator c("submit_again");
  auto client = c.Client();
  auto first = client->SubmitSweep(MaskSweep("s1"), "s1.ini", "[train]\nepochs = 1\n");
  ASSERT_OK(first);
  EXPECT_EQ(first->num_trials(), 8);
  EXPECT_FALSE(first->already_submitted());
  auto again = client->SubmitSweep(MaskSweep("s1"), "s1.ini", "[train]\nepochs = 1\n");
  ASSERT_OK(again);
  EXPECT_TRUE(again->already_submitted());
  auto other = client->SubmitSweep(MaskSweep("s1", "1"), "s1.ini", "");
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), Status::Code::kAlreadyExists);
  EXPECT_TRUE(Contains(other.status().message(), "'s1' already exists"));
  auto st = client->GetSweep("s1");
  ASSERT_OK(st);
  EXPECT_EQ(st->trials_size(), 8);
}

// "All done" only once a sweep exists: before the first submission a group is told to
// wait, so an agent started ahead of it does not exit; after every sweep has ended it is.
TEST(CoordinatorNextTrial, NothingIsDoneBeforeTheFirstSweepIsSubmitted) {
  TestCoordinator c("next_before_submit");
  auto client = c.Client();
  ASSERT_OK(client->Register("g1", "inc-1", 1));
  auto before = client->NextTrial("g1");
  ASSERT_OK(before);
  EXPECT_FALSE(before->assigned);
  EXPECT_FALSE(before->all_done);
  EXPECT_GT(before->retry_after_ms, 0);
  ASSERT_OK(client->SubmitSweep(MaskSweep("s1"), "s1.ini", ""));
  auto cancelled = client->CancelSweep("s1");
  ASSERT_OK(cancelled);
  EXPECT_EQ(*cancelled, 8);
  auto after = client->NextTrial("g1");
  ASSERT_OK(after);
  EXPECT_FALSE(after->assigned);
  EXPECT_TRUE(after->all_done);
}

TEST(CoordinatorValidation, BadRequestsNameTheField) {
  TestCoordinator c("validation");
  auto client = c.Client();
  ASSERT_OK(client->SubmitSweep(MaskSweep("v"), "v.ini", ""));

  auto reg = client->Register("g1", "inc-1", 0);
  ASSERT_FALSE(reg.ok());
  EXPECT_EQ(reg.status().code(), Status::Code::kInvalidArgument);
  EXPECT_TRUE(Contains(reg.status().message(), "world_size")) << reg.status().message();
  reg = client->Register("bad id!", "inc-1", 1);
  EXPECT_TRUE(Contains(reg.status().message(), "group_id")) << reg.status().message();
  reg = client->Register("g1", "", 1);
  EXPECT_TRUE(Contains(reg.status().message(), "incarnation")) << reg.status().message();

  auto hb = client->Heartbeat("nobody");
  ASSERT_FALSE(hb.ok());
  EXPECT_EQ(hb.status().code(), Status::Code::kNotFound);
  EXPECT_TRUE(Contains(hb.status().message(), "group_id")) << hb.status().message();

  ASSERT_OK(client->Register("g1", "inc-1", 2));
  hb = client->Heartbeat("g1", {0, 2});
  ASSERT_FALSE(hb.ok());
  EXPECT_TRUE(Contains(hb.status().message(), "ranks[1]")) << hb.status().message();

  auto next = client->NextTrial("g1");
  ASSERT_TRUE(next.ok() && next->assigned);
  const v1::TrialRef ref = next->assignment.trial;

  v1::TrialRef unknown = ref;
  unknown.set_trial_id("t9999");
  auto lease = client->LeaseShard("g1", unknown, 0, 0);
  ASSERT_FALSE(lease.ok());
  EXPECT_EQ(lease.status().code(), Status::Code::kNotFound);
  EXPECT_TRUE(Contains(lease.status().message(), "trial.trial_id")) << lease.status().message();

  v1::TrialRef no_sweep = ref;
  no_sweep.set_sweep_id("nope");
  EXPECT_TRUE(Contains(client->Finish("g1", no_sweep).message(), "trial.sweep_id"));

  v1::TrialRef zero = ref;
  zero.set_attempt(0);
  auto m0 = client->ReportMetrics("g1", zero, MetricKind::kTrain, 1, 0, {{"loss", 1}});
  EXPECT_TRUE(Contains(m0.status().message(), "trial.attempt")) << m0.status().message();

  v1::TrialRef stale = ref;
  stale.set_attempt(7);
  auto ms = client->ReportMetrics("g1", stale, MetricKind::kTrain, 1, 0, {{"loss", 1}});
  EXPECT_EQ(ms.status().code(), Status::Code::kFailedPrecondition);
  EXPECT_TRUE(Contains(ms.status().message(), "stale attempt")) << ms.status().message();

  // Fields the client library always sets, sent raw.
  auto raw = [&](auto call) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-flap-token", c.server()->token());
    return FromGrpc(call(&ctx));
  };
  v1::ReportMetricsRequest no_kind;
  no_kind.set_group_id("g1");
  *no_kind.mutable_trial() = ref;
  (*no_kind.mutable_values())["loss"] = 1;
  v1::ReportMetricsResponse metrics_resp;
  Status bad_kind =
      raw([&](grpc::ClientContext* ctx) { return client->stub()->ReportMetrics(ctx, no_kind, &metrics_resp); });
  EXPECT_TRUE(Contains(bad_kind.message(), "kind")) << bad_kind.message();
  auto bad_name = client->ReportMetrics("g1", ref, MetricKind::kTrain, 1, 0, {{"Loss!", 1}});
  EXPECT_TRUE(Contains(bad_name.status().message(), "values")) << bad_name.status().message();
  auto bad_step = client->ReportMetrics("g1", ref, MetricKind::kTrain, -1, 0, {{"loss", 1}});
  EXPECT_TRUE(Contains(bad_step.status().message(), "step")) << bad_step.status().message();
  auto none = client->ReportMetrics("g1", ref, MetricKind::kTrain, 1, 0, {});
  EXPECT_TRUE(Contains(none.status().message(), "values")) << none.status().message();

  auto dup = client->BeginEpoch("g1", ref, 0, {{"a.tar", 1}, {"a.tar", 2}});
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.status().code(), Status::Code::kInvalidArgument);
  EXPECT_TRUE(Contains(dup.status().message(), "shards[1].name")) << dup.status().message();
  auto neg = client->BeginEpoch("g1", ref, 0, {{"a.tar", -1}});
  EXPECT_TRUE(Contains(neg.status().message(), "shards[0].num_samples"));
  auto empty = client->BeginEpoch("g1", ref, 0, {});
  EXPECT_TRUE(Contains(empty.status().message(), "shards"));
  auto not_begun = client->LeaseShard("g1", ref, 3, 0);
  EXPECT_EQ(not_begun.status().code(), Status::Code::kNotFound);
  EXPECT_TRUE(Contains(not_begun.status().message(), "epoch")) << not_begun.status().message();

  ASSERT_OK(client->BeginEpoch("g1", ref, 0, {{"a.tar", 1}, {"b.tar", 2}}));
  auto other_list = client->BeginEpoch("g1", ref, 0, {{"a.tar", 1}});
  EXPECT_EQ(other_list.status().code(), Status::Code::kFailedPrecondition);
  EXPECT_TRUE(Contains(other_list.status().message(), "different shard list"));
  auto bad_rank = client->LeaseShard("g1", ref, 0, 2);
  EXPECT_EQ(bad_rank.status().code(), Status::Code::kInvalidArgument);
  EXPECT_TRUE(Contains(bad_rank.status().message(), "rank")) << bad_rank.status().message();
  auto bad_slot = client->LeaseShard("g1", ref, 0, 0, 4096);
  EXPECT_EQ(bad_slot.status().code(), Status::Code::kInvalidArgument);
  EXPECT_TRUE(Contains(bad_slot.status().message(), "slot")) << bad_slot.status().message();
  // Read-ahead: each slot of a rank holds its own lease; asking again for a slot is a retry.
  auto slot0 = client->LeaseShard("g1", ref, 0, 0, 0);
  auto slot1 = client->LeaseShard("g1", ref, 0, 0, 1);
  auto slot0_again = client->LeaseShard("g1", ref, 0, 0, 0);
  ASSERT_TRUE(slot0.ok() && slot1.ok() && slot0_again.ok());
  const auto order =
      testing::ShardsInLeaseOrder(std::stoull(next->assignment.overrides.at("train.seed")), 0, {"a.tar", "b.tar"});
  EXPECT_EQ(slot0->shard_name, order[0]);
  EXPECT_EQ(slot1->shard_name, order[1]);
  EXPECT_NE(slot0->lease_id, slot1->lease_id);
  EXPECT_EQ(slot0_again->lease_id, slot0->lease_id);
  auto renew = client->Heartbeat("g1", {0});
  ASSERT_OK(renew);
  EXPECT_EQ(renew->leases_renewed(), 2);  // the heartbeat of rank 0 renews both slots' leases
  auto bad_lease = client->CompleteShard("g1", ref, 0, 42);
  EXPECT_EQ(bad_lease.status().code(), Status::Code::kNotFound);
  EXPECT_TRUE(Contains(bad_lease.status().message(), "lease_id"));

  EXPECT_TRUE(Contains(client->ReportCheckpoint("g1", ref, "", 1).message(), "ref"));
  v1::FailTrialRequest no_cause;
  no_cause.set_group_id("g1");
  *no_cause.mutable_trial() = ref;
  v1::FailTrialResponse fail_resp;
  Status bad_cause =
      raw([&](grpc::ClientContext* ctx) { return client->stub()->FailTrial(ctx, no_cause, &fail_resp); });
  EXPECT_TRUE(Contains(bad_cause.message(), "cause")) << bad_cause.message();
  auto bad_id = client->GetSweep("no such");
  EXPECT_TRUE(Contains(bad_id.status().message(), "sweep_id"));
  EXPECT_EQ(bad_id.status().code(), Status::Code::kInvalidArgument);
  auto no_sweep_id = client->GetSweep("nosuch");
  EXPECT_TRUE(Contains(no_sweep_id.status().message(), "sweep_id"));
  EXPECT_EQ(no_sweep_id.status().code(), Status::Code::kNotFound);
  EXPECT_TRUE(Contains(client->GetMetrics("v", "t9999").status().message(), "trial_id"));

  // None of the refused calls changed the trial.
  auto st = client->GetSweep("v");
  ASSERT_OK(st);
  EXPECT_EQ(st->trials(0).state(), "running");  // BeginEpoch started it
  EXPECT_EQ(st->trials(0).step(), 0);
}

// An epoch's shards go out in the order its trial's seed draws: the arms of one seed (mask.ratio
// 0.5 and 0.75, strategy 1d and 2d) lease the same order in each epoch, so their comparison is
// paired; the two seeds lease different orders, every epoch its own, each shard once.
TEST(CoordinatorLeases, ArmsOfOneSeedLeaseTheSameShardOrderAndTwoSeedsDifferent) {
  ServiceOptions so = testing::FastServiceOptions();
  so.heartbeat_timeout_ms = 60000;  // no group is lost while the test runs
  so.lease_ttl_ms = 60000;
  TestCoordinator c("lease_order", so);
  auto client = c.Client();
  ASSERT_OK(client->SubmitSweep(MaskSweep("order", "1, 2"), "order.ini", ""));
  std::vector<std::string> names;
  std::vector<std::pair<std::string, int64_t>> shards;
  for (int i = 0; i < 12; ++i) {
    names.push_back("train-" + std::to_string(i) + ".tar");
    shards.emplace_back(names.back(), 10);
  }
  // (seed, epoch) -> the order each arm of that seed leased; seed -> its arms' mask.ratio.
  std::map<std::pair<std::string, int>, std::vector<std::vector<std::string>>> orders;
  std::map<std::string, std::set<std::string>> ratios;
  for (int g = 0; g < 8; ++g) {  // 2 ratios x 2 strategies x 2 seeds
    const std::string gid = "g" + std::to_string(g);
    ASSERT_OK(client->Register(gid, gid, 1));
    auto next = client->NextTrial(gid);
    ASSERT_TRUE(next.ok() && next->assigned) << gid;
    const v1::TrialRef ref = next->assignment.trial;
    const std::string seed = next->assignment.overrides.at("train.seed");
    ratios[seed].insert(next->assignment.overrides.at("mask.ratio"));
    for (int epoch = 0; epoch < 2; ++epoch) {
      ASSERT_OK(client->BeginEpoch(gid, ref, epoch, shards));
      std::vector<std::string> leased;
      for (int i = 0; i <= 12; ++i) {
        auto lease = client->LeaseShard(gid, ref, epoch, 0);
        ASSERT_OK(lease);
        if (lease->kind != ShardLease::Kind::kGranted) {
          EXPECT_EQ(lease->kind, ShardLease::Kind::kEpochDone);
          break;
        }
        leased.push_back(lease->shard_name);
        ASSERT_OK(client->CompleteShard(gid, ref, epoch, lease->lease_id));
      }
      EXPECT_EQ(std::set<std::string>(leased.begin(), leased.end()), std::set<std::string>(names.begin(), names.end()))
          << "seed " << seed << ", epoch " << epoch << ": every shard once";
      EXPECT_EQ(leased.size(), names.size());
      EXPECT_EQ(leased, testing::ShardsInLeaseOrder(std::stoull(seed), epoch, names));
      orders[{seed, epoch}].push_back(leased);
    }
  }
  ASSERT_EQ(ratios.size(), 2u);
  for (const auto& [seed, r] : ratios) EXPECT_EQ(r.size(), 2u) << "seed " << seed << " ran both mask ratios";
  ASSERT_EQ(orders.size(), 4u);
  for (const auto& [key, arms] : orders) {
    ASSERT_EQ(arms.size(), 4u);
    for (const auto& arm : arms) EXPECT_EQ(arm, arms[0]) << "seed " << key.first << ", epoch " << key.second;
  }
  const auto& seed1 = orders[{"1", 0}][0];
  const auto& seed2 = orders[{"2", 0}][0];
  const auto& seed1_epoch1 = orders[{"1", 1}][0];
  const auto& seed2_epoch1 = orders[{"2", 1}][0];
  EXPECT_NE(seed1, seed2);
  EXPECT_NE(seed1_epoch1, seed2_epoch1);
  EXPECT_NE(seed1, seed1_epoch1);
  EXPECT_NE(seed1, names);  // not the manifest order
}

TEST(CoordinatorClientLib, EveryCallHasADeadline) {
  // Nothing listens here: a call fails within its deadline instead of waiting forever.
  ClientOptions o;
  o.target = "127.0.0.1:1";
  o.token = "t";
  o.deadline_ms = 300;
  auto c = CoordinatorClient::Connect(o);
  ASSERT_OK(c);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = (*c)->ListSweeps();
  const auto waited = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().code() == Status::Code::kUnavailable || r.status().code() == Status::Code::kDeadlineExceeded);
  EXPECT_LT(waited, std::chrono::seconds(5));
}

TEST(CoordinatorState, DamagedStateIsRefusedNamingTheKeyAndLeftAsItIs) {
  flap::testing::TempDir dir("state_damaged");
  ServerOptions so;
  so.listen = "127.0.0.1:0";
  so.service = testing::FastServiceOptions();
  so.service.state_dir = dir / "state";
  {
    auto server = CoordinatorServer::Start(so);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    ClientOptions co;
    co.target = (*server)->address();
    co.token = (*server)->token();
    auto client = CoordinatorClient::Connect(co);
    ASSERT_OK(client);
    ASSERT_OK((*client)->SubmitSweep(MaskSweep("d", "1"), "d.ini", ""));
  }  // the server stops and releases its database
  const std::string db = dir / "state/db";
  ServiceOptions o = so.service;
  {
    auto j = Journal::Open(db, JournalOptions());
    ASSERT_OK(j);
    JournalBatch b;
    b.Put("trial/d/t0001", "{\"spec\": 3}");
    ASSERT_OK((*j)->Wait((*j)->Append(std::move(b))));
  }
  o.state_dir = db;
  o.token = "t";
  auto s = CoordinatorService::Create(o);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Status::Code::kCorruption);
  EXPECT_TRUE(Contains(s.status().message(), "trial/d/t0001")) << s.status().message();
  // Nothing was changed or dropped: the other trials are still there.
  auto j = Journal::Open(db, JournalOptions());
  ASSERT_OK(j);
  EXPECT_EQ((*j)->Scan("trial/d/")->size(), 4u);
}

}  // namespace
}  // namespace flap::coordinator
