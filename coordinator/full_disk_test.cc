// flap-coordinator on a full disk, as a real process with its state on a small tmpfs: a journal
// write that fails for want of space ends it with exit 74 (its supervisor's cue to restart it
// from the journal), starting or stopping it on a full disk never aborts, and once space is
// back it starts from the journal with every sweep it had acknowledged.
//
// Against commit a5e0d09 (RocksDB's own file logger, the failed journal closed) each of the three
// died by SIGABRT (exit 134: RocksDB's "Assertion `sync_without_flush_called_' failed", its
// logger writing again after a failed write), and this test failed at every step.
#include <gtest/gtest.h>
#include <signal.h>

#include <string>

#include "coordinator/client.h"
#include "coordinator/testing/service_test_util.h"
#include "tests/test_util.h"
#include "tests/tmpfs.h"

namespace flap::coordinator {
namespace {

class FullDisk : public ::testing::Test {
 protected:
  // Starts flap-coordinator on `state`; its port, 0 when it did not come up (it may have exited).
  int Start(const std::string& state, const std::string& log) {
    flap::testing::ChildProcess::Options o;
    o.pipe_stdout = true;
    o.log_path = dir_ / log;
    proc_ =
        flap::testing::ChildProcess::Exec({FLAP_COORDINATOR_BIN, "--state-dir", state, "--listen", "127.0.0.1:0"}, o);
    return testing::ListeningPort(proc_, 30);
  }
  std::unique_ptr<CoordinatorClient> Connect(const std::string& state, int port) {
    ClientOptions co;
    co.target = "127.0.0.1:" + std::to_string(port);
    co.deadline_ms = 10000;
    auto token = ReadToken(state + "/token");
    EXPECT_OK(token);
    if (!token.ok()) return nullptr;
    co.token = *token;
    auto c = CoordinatorClient::Connect(co);
    EXPECT_OK(c);
    return c.ok() ? std::move(*c) : nullptr;
  }

  flap::testing::TempDir dir_{"full_disk"};
  flap::testing::ChildProcess proc_;
};

TEST_F(FullDisk, AFailedJournalWriteExits74AndTheJournalStaysIntact) {
  flap::testing::TmpfsMount disk(dir_ / "disk", 8 << 20);
  if (!disk.mounted()) GTEST_SKIP() << disk.why();
  const std::string state = disk.path() + "/state";

  int port = Start(state, "first.log");
  ASSERT_GT(port, 0) << flap::testing::ReadFile(dir_ / "first.log");
  auto c = Connect(state, port);
  ASSERT_TRUE(c);
  ASSERT_OK(c->SubmitSweep(testing::MaskSweep("before"), "before.ini", ""));

  // The disk fills; the next submission's journal write fails and the coordinator exits 74.
  disk.Fill("filler", 0);
  bool refused = false;
  for (int i = 0; i < 20 && !refused; ++i) {
    refused = !c->SubmitSweep(testing::MaskSweep("full" + std::to_string(i)), "full.ini", "").ok();
  }
  EXPECT_TRUE(refused);
  EXPECT_EQ(proc_.Wait(30), 74) << flap::testing::ReadFile(dir_ / "first.log");
  const std::string first = flap::testing::ReadFile(dir_ / "first.log");
  EXPECT_NE(first.find("No space left on device"), std::string::npos) << first;
  EXPECT_EQ(first.find("Assertion"), std::string::npos) << first;

  // Started on the full disk it refuses to run or runs; either way it never aborts, and a
  // SIGTERM ends it cleanly.
  port = Start(state, "full.log");
  const int code = port > 0 ? proc_.Kill(SIGTERM, 30) : proc_.Wait(30);
  const std::string full = flap::testing::ReadFile(dir_ / "full.log");
  EXPECT_TRUE(code == 0 || code == 1 || code == 74) << "exit " << code << ": " << full;
  EXPECT_EQ(full.find("Assertion"), std::string::npos) << full;

  // Space back: every acknowledged sweep is there.
  ASSERT_EQ(::unlink((disk.path() + "/filler").c_str()), 0);
  port = Start(state, "again.log");
  ASSERT_GT(port, 0) << flap::testing::ReadFile(dir_ / "again.log");
  c = Connect(state, port);
  ASSERT_TRUE(c);
  auto before = c->GetSweep("before");
  ASSERT_OK(before);
  EXPECT_EQ(before->trials_size(), 8);

  // Running, the disk fills again and SIGTERM arrives: a clean exit, not an abort.
  disk.Fill("filler", 0);
  EXPECT_EQ(proc_.Kill(SIGTERM, 30), 0) << flap::testing::ReadFile(dir_ / "again.log");
}

}  // namespace
}  // namespace flap::coordinator
