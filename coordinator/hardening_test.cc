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

#include "common/local_keys.h"
#include "common/path_name.h"
#include "coordinator/client.h"
#include "coordinator/service_test_util.h"
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
  EXPECT_TRUE(ParseSweepText(MaskSweep("ok.name"), "s.ini").ok());
}

TEST(HardeningNames, CoordinatorRefusesDotNamesInEveryRequest) {
  TestCoordinator c("hardening_names");
  auto client = c.Client();
  auto submitted = client->SubmitSweep(MaskSweep(".."), "s.ini", "");
  ASSERT_FALSE(submitted.ok());
  EXPECT_EQ(LastGrpcCode(), grpc::StatusCode::INVALID_ARGUMENT);
  for (const std::string& bad : BadNames()) {
    if (bad.empty()) continue;  // "" asks the coordinator to choose a group id
    auto reg = client->Register(bad, "inc1", 1);
    EXPECT_FALSE(reg.ok()) << "group '" << bad << "' registered";
    EXPECT_EQ(LastGrpcCode(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
  }
  auto st = client->GetSweep("..");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(LastGrpcCode(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(st.status().message(), "starts with a dot")) << st.status().message();
  auto list = client->ListSweeps();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->sweeps_size(), 0);
  // A good name still registers.
  EXPECT_TRUE(client->Register("g.1", "inc1", 1).ok());
}

std::string LocalKeySweep(const std::string& key) {
  return "[sweep]\nname = local\n\n[factor.mask.ratio]\nvalues = 0.5\n\n[factor." + key +
         "]\nvalues = /tmp/a, /tmp/b\n";
}

TEST(HardeningLocalKeys, SweepRefusesFactorsThatAreLocalToTheWorkerNamingThem) {
  for (const char* key : {"ckpt.root", "data.path", "train.output_dir", "metrics.listen",
                          "metrics.sd_dir", "data.fbank_cache", "train.device"}) {
    auto spec = ParseSweepText(LocalKeySweep(key), "s.ini");
    ASSERT_FALSE(spec.ok()) << key << " accepted as a factor";
    EXPECT_TRUE(Contains(spec.status().message(), "[factor." + std::string(key) + "]"))
        << spec.status().message();
    EXPECT_TRUE(Contains(spec.status().message(), "local to each worker")) << spec.status().message();
  }
  // Other trainer keys stay factors (the worker validates their values).
  EXPECT_TRUE(ParseSweepText(LocalKeySweep("data.train_split"), "s.ini").ok());
  EXPECT_FALSE(IsLocalOnlyKey("optim.lr"));
  EXPECT_FALSE(IsLocalOnlyKey("train.trial_id"));
}

TEST(HardeningLocalKeys, CoordinatorRefusesTheSubmission) {
  TestCoordinator c("hardening_local_keys");
  auto client = c.Client();
  auto r = client->SubmitSweep(LocalKeySweep("ckpt.root"), "s.ini", "");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(LastGrpcCode(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(Contains(r.status().message(), "ckpt.root")) << r.status().message();
  auto list = client->ListSweeps();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->sweeps_size(), 0);
}

// flap-coordinator with a file size limit (RLIMIT_FSIZE, SIGXFSZ ignored: writes past it fail
// with EFBIG) that its RocksDB write-ahead log soon exceeds: a real write failure of the journal.
TEST(HardeningJournal, WriteFailureEndsTheCoordinatorWithANonZeroExit) {
  flap::testing::TempDir dir("hardening_journal");
  const std::string state = dir / "state";
  const std::string err_path = dir / "stderr";
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(err, 2);
    signal(SIGXFSZ, SIG_IGN);
    rlimit limit{48 * 1024, 48 * 1024};
    setrlimit(RLIMIT_FSIZE, &limit);
    execl(FLAP_COORDINATOR_BIN, FLAP_COORDINATOR_BIN, "--state-dir", state.c_str(), "--listen",
          "127.0.0.1:0", (char*)nullptr);
    _exit(127);
  }
  close(fds[1]);
  std::string out;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (out.find('\n') == std::string::npos && std::chrono::steady_clock::now() < until) {
    pollfd p{fds[0], POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      char buf[256];
      const ssize_t n = read(fds[0], buf, sizeof(buf));
      if (n <= 0) break;
      out.append(buf, n);
    }
  }
  close(fds[0]);
  const size_t colon = out.rfind(':');
  ASSERT_NE(out.find("listening on"), std::string::npos) << out << flap::testing::ReadFile(err_path);
  const std::string target = "127.0.0.1:" + std::to_string(std::stoi(out.substr(colon + 1)));

  ClientOptions o;
  o.target = target;
  o.token = flap::testing::ReadFile(state + "/token");
  while (!o.token.empty() && (o.token.back() == '\n' || o.token.back() == ' ')) o.token.pop_back();
  auto client = CoordinatorClient::Connect(o);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  // 500 trials: far more than the limit lets the write-ahead log hold.
  const std::string big =
      "[sweep]\nname = big\nseeds = 1, 2, 3, 4, 5\n\n[factor.mask.ratio]\nvalues = 0, 0.1, 0.2, "
      "0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9\n\n[factor.optim.lr]\nvalues = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10\n";
  auto r = (*client)->SubmitSweep(big, "big.ini", "");
  EXPECT_FALSE(r.ok());

  const auto start = std::chrono::steady_clock::now();
  int status = 0;
  pid_t done = 0;
  while ((done = waitpid(pid, &status, WNOHANG)) == 0 &&
         std::chrono::steady_clock::now() - start < std::chrono::seconds(30)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (done == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    FAIL() << "flap-coordinator still runs 30 s after its journal failed: "
           << flap::testing::ReadFile(err_path);
  }
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 74);
  const std::string err = flap::testing::ReadFile(err_path);
  EXPECT_TRUE(Contains(err, "journal write")) << err;
  EXPECT_TRUE(Contains(err, "restarted from the committed state")) << err;
}

}  // namespace
}  // namespace flap::coordinator
