// Regression tests of the coordinator's hardening: names that become paths refused everywhere
// (sweep, trial and group ids: ".", "..", leading dots, '/', empty); sweep factors that would
// override a worker's local folders, endpoints or device; a journal that cannot be written ends
// flap-coordinator (non-zero) instead of leaving it up and answering UNAVAILABLE forever.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "common/path_name.h"
#include "config/trial_config.h"
#include "coordinator/client.h"
#include "coordinator/testing/service_test_util.h"
#include "coordinator/sweep.h"

namespace flap::coordinator {
namespace {

using testing::MaskSweep;
using testing::TestCoordinator;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

const std::vector<std::string>& BadNames() {
  static const std::vector<std::string> names = {"..", ".", ".hidden", "a/b", "/abs", ""};
  return names;
}

TEST(HardeningNames, PathNameRule) {
  for (const std::string& bad : BadNames()) EXPECT_FALSE(IsPathName(bad)) << "'" << bad << "'";
  for (const char* good : {"mask-ablation", "s1", "a.b", "a..b", "t0001", "g_1"}) {
    EXPECT_TRUE(IsPathName(good)) << good;
  }
  EXPECT_FALSE(IsPathName(std::string(65, 'a')));
}

TEST(HardeningNames, SweepFileRefusesNamesThatAreNotFolderNames) {
  for (const std::string& bad : {std::string(".."), std::string("."), std::string(".x")}) {
    auto spec = ParseSweepText(MaskSweep(bad), "s.ini");
    ASSERT_FALSE(spec.ok()) << "'" << bad << "' accepted";
    EXPECT_TRUE(Contains(spec.status().message(), "[sweep] name")) << spec.status().message();
  }
  EXPECT_OK(ParseSweepText(MaskSweep("ok.name"), "s.ini"));
}

TEST(HardeningNames, CoordinatorRefusesDotNamesInEveryRequest) {
  TestCoordinator c("hardening_names");
  auto client = c.Client();
  auto submitted = client->SubmitSweep(MaskSweep(".."), "s.ini", "");
  ASSERT_FALSE(submitted.ok());
  EXPECT_EQ(submitted.status().code(), Status::Code::kInvalidArgument);
  for (const std::string& bad : BadNames()) {
    if (bad.empty()) continue;  // "" asks the coordinator to choose a group id
    auto reg = client->Register(bad, "inc1", 1);
    EXPECT_FALSE(reg.ok()) << "group '" << bad << "' registered";
    EXPECT_EQ(reg.status().code(), Status::Code::kInvalidArgument) << bad;
  }
  auto st = client->GetSweep("..");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.status().code(), Status::Code::kInvalidArgument);
  EXPECT_TRUE(Contains(st.status().message(), "starts with a dot")) << st.status().message();
  auto list = client->ListSweeps();
  ASSERT_OK(list);
  EXPECT_EQ(list->sweeps_size(), 0);
  // A good name still registers.
  EXPECT_OK(client->Register("g.1", "inc1", 1));
}

std::string LocalKeySweep(const std::string& key) {
  return "[sweep]\nname = local\n\n[factor.mask.ratio]\nvalues = 0.5\n\n[factor." + key +
         "]\nvalues = /tmp/a, /tmp/b\n";
}

TEST(HardeningLocalKeys, SweepRefusesFactorsThatAreLocalToTheWorkerNamingThem) {
  for (const char* key : {"ckpt.root", "data.path", "train.output_dir", "metrics.listen", "metrics.sd_dir",
                          "data.fbank_cache", "train.device"}) {
    auto spec = ParseSweepText(LocalKeySweep(key), "s.ini");
    ASSERT_FALSE(spec.ok()) << key << " accepted as a factor";
    EXPECT_TRUE(Contains(spec.status().message(), "[factor." + std::string(key) + "]")) << spec.status().message();
    EXPECT_TRUE(Contains(spec.status().message(), "local to each worker")) << spec.status().message();
  }
  // Other trainer keys stay factors (the worker validates their values).
  EXPECT_OK(ParseSweepText(LocalKeySweep("data.train_split"), "s.ini"));
  EXPECT_FALSE(IsLocalOnlyKey("optim.lr"));
  EXPECT_FALSE(IsLocalOnlyKey("train.trial_id"));
}

TEST(HardeningLocalKeys, CoordinatorRefusesTheSubmission) {
  TestCoordinator c("hardening_local_keys");
  auto client = c.Client();
  auto r = client->SubmitSweep(LocalKeySweep("ckpt.root"), "s.ini", "");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
  EXPECT_TRUE(Contains(r.status().message(), "ckpt.root")) << r.status().message();
  auto list = client->ListSweeps();
  ASSERT_OK(list);
  EXPECT_EQ(list->sweeps_size(), 0);
}

// flap-coordinator with a file size limit (RLIMIT_FSIZE, SIGXFSZ ignored: writes past it fail
// with EFBIG) that its RocksDB write-ahead log soon exceeds: a real write failure of the journal.
TEST(HardeningJournal, WriteFailureEndsTheCoordinatorWithANonZeroExit) {
  flap::testing::TempDir dir("hardening_journal");
  const std::string state = dir / "state";
  const std::string err_path = dir / "stderr";
  flap::testing::ChildProcess::Options options;
  options.pipe_stdout = true;
  options.log_path = err_path;
  options.in_child = [] {
    signal(SIGXFSZ, SIG_IGN);
    rlimit limit{48 * 1024, 48 * 1024};
    setrlimit(RLIMIT_FSIZE, &limit);
  };
  auto coordinator = flap::testing::ChildProcess::Exec(
      {FLAP_COORDINATOR_BIN, "--state-dir", state, "--listen", "127.0.0.1:0"}, options);
  const int port = testing::ListeningPort(coordinator);
  ASSERT_GT(port, 0) << coordinator.ReadStdoutUntil("\n", 0) << flap::testing::ReadFile(err_path);
  const std::string target = "127.0.0.1:" + std::to_string(port);

  ClientOptions o;
  o.target = target;
  o.token = flap::testing::ReadFile(state + "/token");
  while (!o.token.empty() && (o.token.back() == '\n' || o.token.back() == ' ')) o.token.pop_back();
  auto client = CoordinatorClient::Connect(o);
  ASSERT_OK(client);
  // 500 trials: far more than the limit lets the write-ahead log hold.
  const std::string big =
      "[sweep]\nname = big\nseeds = 1, 2, 3, 4, 5\n\n[factor.mask.ratio]\nvalues = 0, 0.1, 0.2, "
      "0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9\n\n[factor.optim.lr]\nvalues = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10\n";
  auto r = (*client)->SubmitSweep(big, "big.ini", "");
  EXPECT_FALSE(r.ok());

  const int code = coordinator.Wait(30);
  if (code == -1) {
    FAIL() << "flap-coordinator still runs 30 s after its journal failed: " << flap::testing::ReadFile(err_path);
  }
  EXPECT_EQ(code, 74);
  const std::string err = flap::testing::ReadFile(err_path);
  EXPECT_TRUE(Contains(err, "journal write")) << err;
  EXPECT_TRUE(Contains(err, "restarted from the committed state")) << err;
}

}  // namespace
}  // namespace flap::coordinator
