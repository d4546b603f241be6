// Regression tests of the coordinator's network hardening: plaintext gRPC refused on an
// address that is not loopback (unless --insecure), sweep submissions bounded in size and
// validated in linear time, an oversized message refused by the transport, and the in-memory
// state of finished sweeps pruned once their report is written.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "coordinator/service_test_util.h"
#include "coordinator/sweep.h"

namespace flap::coordinator {
namespace {

using testing::FastServiceOptions;
using testing::TestCoordinator;

bool Contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(HardeningListen, LoopbackHosts) {
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackHost("127.1.2.3"));
  EXPECT_TRUE(IsLoopbackHost("localhost"));
  EXPECT_TRUE(IsLoopbackHost("[::1]"));
  EXPECT_FALSE(IsLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackHost("[::]"));
  EXPECT_FALSE(IsLoopbackHost(""));
  EXPECT_FALSE(IsLoopbackHost("*"));
  EXPECT_FALSE(IsLoopbackHost("10.1.2.3"));
}

// Plaintext on every interface would put the token on the network: refused before anything
// starts, unless insecure is set.
TEST(HardeningListen, PlaintextOnANonLoopbackAddressIsRefusedUnlessInsecure) {
  flap::testing::TempDir dir("listen_plain");
  ServerOptions o;
  o.listen = "0.0.0.0:0";
  o.service = FastServiceOptions();
  o.service.state_dir = dir / "state";
  auto refused = CoordinatorServer::Start(o);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Status::Code::kInvalidArgument);
  EXPECT_TRUE(Contains(refused.status().message(), "--insecure")) << refused.status().message();
  EXPECT_TRUE(Contains(refused.status().message(), "--tls-cert")) << refused.status().message();
  o.insecure = true;
  auto allowed = CoordinatorServer::Start(o);
  ASSERT_OK(allowed);
  allowed->reset();
  o.insecure = false;
  o.listen = "127.0.0.1:0";
  auto loopback = CoordinatorServer::Start(o);
  EXPECT_OK(loopback);
}

TEST(HardeningListen, CoordinatorExitsTwoOnPlaintextNonLoopback) {
  flap::testing::TempDir dir("listen_exit");
  auto r = flap::testing::RunCommand("timeout 20 " + std::string(FLAP_COORDINATOR_BIN) + " --state-dir " +
                                     dir / "state" + " --listen 0.0.0.0:0");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(Contains(r.output, "not a loopback address")) << r.output;
  EXPECT_TRUE(Contains(r.output, "--insecure")) << r.output;
}

// Issue 32, item 7: clients sent the token in plaintext to any host. Like the server
// (CheckListenSecurity), a client now refuses plaintext to a target that is not loopback
// unless it has a CA or is told --insecure.
TEST(HardeningClientTarget, PlaintextToATargetNotOnLoopbackIsRefusedUnlessInsecureOrTls) {
  ClientOptions o;
  o.token = flap::testing::kTestToken;
  for (const char* local : {"127.0.0.1:7070", "localhost:7070", "[::1]:7070", "::1", "unix:/tmp/flap.sock",
                            "dns:///localhost:7070", "ipv4:127.0.0.2:1"}) {
    o.target = local;
    EXPECT_OK(CheckTargetSecurity(o)) << local;
  }
  for (const char* remote : {"192.0.2.1:7070", "[2001:db8::1]:7070", "0.0.0.0:7070", "dns:///192.0.2.1:7070"}) {
    o.target = remote;
    Status refused = CheckTargetSecurity(o);
    EXPECT_EQ(refused.code(), Status::Code::kInvalidArgument) << remote;
    EXPECT_TRUE(Contains(refused.message(), "--insecure")) << refused.message();
    EXPECT_TRUE(Contains(refused.message(), "--tls-ca")) << refused.message();
    EXPECT_EQ(CoordinatorClient::Connect(o).status().code(), Status::Code::kInvalidArgument) << remote;
    o.insecure = true;
    EXPECT_OK(CheckTargetSecurity(o)) << remote;
    o.insecure = false;
    o.tls_ca = "PEM";
    EXPECT_OK(CheckTargetSecurity(o)) << remote;
    o.tls_ca.clear();
  }
}

// Issue 32, item 7: a token file others may read, and a token of fewer than 128 bits, are
// refused by the coordinator and the clients alike.
TEST(HardeningToken, ReadableOrShortTokenFilesAreRefused) {
  flap::testing::TempDir dir("token_rules");
  const std::string path = dir / "token";
  ASSERT_TRUE(flap::testing::WriteTokenFile(path, std::string(kMinTokenChars - 1, 'a')));
  for (const auto& read : {ReadTokenFile(path), LoadOrCreateToken(path)}) {
    EXPECT_EQ(read.status().code(), Status::Code::kInvalidArgument);
    EXPECT_TRUE(Contains(read.status().message(), "has 31 characters: a token needs at least 32"))
        << read.status().message();
  }
  ASSERT_TRUE(flap::testing::WriteTokenFile(path));
  ASSERT_EQ(::chmod(path.c_str(), 0640), 0);
  for (const auto& read : {ReadTokenFile(path), LoadOrCreateToken(path)}) {
    EXPECT_EQ(read.status().code(), Status::Code::kFailedPrecondition);
    EXPECT_TRUE(Contains(read.status().message(), path + " has mode 0640")) << read.status().message();
    EXPECT_TRUE(Contains(read.status().message(), "chmod 600 " + path)) << read.status().message();
  }
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  EXPECT_EQ(ReadTokenFile(path).value(), flap::testing::kTestToken);
  // The token the coordinator makes passes the rule.
  const std::string made = dir / "made";
  auto token = LoadOrCreateToken(made);
  ASSERT_OK(token);
  EXPECT_OK(ReadTokenFile(made));
  EXPECT_EQ(token->size(), 64u);
}

// Issue 32, item 7: `sweep run` made its state folder and journal 0755, and a state folder made
// 0777 beforehand was used as it was. The coordinator now makes both 0700 and tightens a wider
// one; a state folder of another user is refused. (Reproduced against a5e0d09's binaries:
// state/ and state/db 0755 under sweep run, a 0777 state/ left 0777.)
TEST(HardeningStateDir, StateFolderAndJournalArePrivateAndAWiderOneIsTightened) {
  flap::testing::TempDir dir("state_private");
  const std::string state = dir / "state";
  ASSERT_EQ(::mkdir(state.c_str(), 0777), 0);
  ASSERT_EQ(::chmod(state.c_str(), 0777), 0);  // whatever the umask
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.service = FastServiceOptions();
  o.service.state_dir = state;
  auto server = CoordinatorServer::Start(o);
  ASSERT_OK(server);
  server->reset();
  for (const std::string& folder : {state, state + "/db"}) {
    struct stat st = {};
    ASSERT_EQ(::stat(folder.c_str(), &st), 0) << folder;
    EXPECT_EQ(st.st_mode & 0777, 0700u) << folder;
  }
}

TEST(HardeningStateDir, AStateFolderOfAnotherUserIsRefused) {
  flap::testing::TempDir dir("state_foreign");
  const std::string state = dir / "state";
  ASSERT_EQ(::mkdir(state.c_str(), 0700), 0);
  if (::chown(state.c_str(), 65534, 65534) != 0) GTEST_SKIP() << "cannot give a folder to another user here (not root)";
  Status s = MakePrivateDir(state, "state folder");
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "belongs to uid 65534")) << s.message();
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.service = FastServiceOptions();
  o.service.state_dir = state;
  EXPECT_EQ(CoordinatorServer::Start(o).status().code(), Status::Code::kFailedPrecondition);
}

// 8,000 values used to take seconds of the coordinator's CPU (a quadratic repeat check) and
// were accepted; now the count is refused at once, with a message that says the limit.
TEST(HardeningSubmit, TooManyValuesAreRefusedQuicklyWithAClearMessage) {
  TestCoordinator c("submit_values");
  std::string values;
  for (int i = 0; i < 8000; ++i) values += (i ? ", " : "") + std::to_string(0.0001 + i * 1e-7);
  const std::string sweep =
      "[sweep]\nname = many\nsearch = grid\nseeds = 1\n\n[factor.optim.lr]\nvalues = " + values + "\n";
  auto client = c.Client("", 20000);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = client->SubmitSweep(sweep, "many.ini", "");
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(r.ok()) << "8000 values were accepted";
  EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument) << r.status().ToString();
  EXPECT_TRUE(Contains(r.status().message(), "8000 values")) << r.status().message();
  EXPECT_TRUE(Contains(r.status().message(), "at most 1000")) << r.status().message();
  EXPECT_LT(took, 1.0);
  // Parsing alone, without the network, is quick too.
  const auto t1 = std::chrono::steady_clock::now();
  EXPECT_FALSE(ParseSweepText(sweep, "many.ini").ok());
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count(), 0.5);
}

// At the limit, repeats are still found, numerically ("0.5" repeats "0.50"), in n log n.
TEST(HardeningSubmit, RepeatsAreFoundAtTheValueLimit) {
  std::string values;
  for (int i = 0; i < kMaxFactorValues - 1; ++i) values += std::to_string(1 + i) + "e-5, ";
  values += "1.0e-5";
  const auto t0 = std::chrono::steady_clock::now();
  auto spec =
      ParseSweepText("[sweep]\nname = rep\nseeds = 1\n\n[factor.optim.lr]\nvalues = " + values + "\n", "rep.ini");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 0.5);
  ASSERT_FALSE(spec.ok());
  EXPECT_TRUE(Contains(spec.status().message(), "value '1.0e-5' repeats '1e-5'")) << spec.status().message();
}

// A request beyond kMaxRequestBytes is refused by the transport, before the token is even
// looked at (it was read whole, up to 16 MiB, before).
TEST(HardeningSubmit, OversizedMessageIsRefused) {
  TestCoordinator c("submit_oversized");
  auto client = c.Client("not-the-token", 20000);
  v1::SubmitSweepRequest req;
  req.set_sweep_text("[sweep]\nname = big\n");
  req.set_base_config(std::string(kMaxRequestBytes + 1024, '#'));
  v1::SubmitSweepResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  const grpc::Status s = client->stub()->SubmitSweep(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_code() << " " << s.error_message();
  // A request within the limit still reaches the service (here: refused for its size there).
  auto ok_client = c.Client("", 20000);
  auto r = ok_client->SubmitSweep("[sweep]\nname = big\n", "big.ini", std::string(kMaxRequestBytes / 2, '#'));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument) << r.status().ToString();
  EXPECT_TRUE(Contains(r.status().message(), "larger than 1 MiB")) << r.status().message();
}

// Each ended sweep used to leave its lease tables (one per trial and epoch) and its report
// thread behind for the coordinator's lifetime. After many sweeps, they stay bounded; the
// sweeps and trials themselves stay (they are what GetSweep answers with).
TEST(HardeningMemory, EndedSweepsLeaveNoLeaseTablesOrReportThreads) {
  flap::testing::TempDir reports("memory_reports");
  ServiceOptions so = FastServiceOptions();
  so.heartbeat_timeout_ms = 60000;
  so.lease_ttl_ms = 60000;
  so.report_dir = reports / "r";
  so.report_plots = false;
  TestCoordinator c("memory", so);
  auto client = c.Client();
  ASSERT_OK(client->Register("g1", "inc-1", 1));
  constexpr int kSweeps = 6;
  for (int n = 0; n < kSweeps; ++n) {
    const std::string name = "s" + std::to_string(n);
    ASSERT_OK(client->SubmitSweep("[sweep]\nname = " + name + "\nseeds = 1, 2\n\n[factor.optim.lr]\nvalues = 0.001\n",
                                  name + ".ini", ""));
    for (int t = 0; t < 2; ++t) {
      auto next = client->NextTrial("g1");
      ASSERT_OK(next);
      ASSERT_TRUE(next->assigned);
      const v1::TrialRef ref = next->assignment.trial;
      for (int epoch = 0; epoch < 3; ++epoch) {
        ASSERT_OK(client->BeginEpoch("g1", ref, epoch, {{"a.tar", 1}, {"b.tar", 1}}));
        auto lease = client->LeaseShard("g1", ref, epoch, 0);
        ASSERT_OK(lease);
        ASSERT_OK(client->CompleteShard("g1", ref, epoch, lease->lease_id));
      }
      ASSERT_OK(client->Finish("g1", ref));
    }
    auto st = client->GetSweep(name);
    ASSERT_OK(st);
    EXPECT_EQ(st->state(), "finished");
    c.server()->service()->WaitForReports();
  }
  // One more, cancelled while its epoch is begun.
  ASSERT_OK(client->SubmitSweep("[sweep]\nname = cx\nseeds = 1\n\n[factor.optim.lr]\nvalues = 0.001\n", "cx.ini", ""));
  auto next = client->NextTrial("g1");
  ASSERT_TRUE(next.ok() && next->assigned);
  ASSERT_OK(client->BeginEpoch("g1", next->assignment.trial, 0, {{"a.tar", 1}}));
  ASSERT_OK(client->CancelSweep("cx"));
  c.server()->service()->WaitForReports();

  CoordinatorService::MemoryStats m = c.server()->service()->memory_stats();
  EXPECT_EQ(m.sweeps, static_cast<size_t>(kSweeps + 1));
  EXPECT_EQ(m.trials, static_cast<size_t>(2 * kSweeps + 1));
  EXPECT_EQ(m.groups, 1u);
  EXPECT_EQ(m.lease_tables, 0u) << "lease tables of ended sweeps are kept";
  EXPECT_EQ(m.epoch_trials, 0u);
  EXPECT_LE(m.report_threads, 2u) << "finished report threads are kept";
  // The journal keeps the record: after a restart the sweeps are all there, the ended trials'
  // lease tables are not loaded again.
  c.Restart();
  m = c.server()->service()->memory_stats();
  EXPECT_EQ(m.sweeps, static_cast<size_t>(kSweeps + 1));
  EXPECT_EQ(m.lease_tables, 0u);
  auto again = c.Client()->GetSweep("s0");
  ASSERT_OK(again);
  EXPECT_EQ(again->state(), "finished");
}

}  // namespace
}  // namespace flap::coordinator
