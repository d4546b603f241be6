// The coordinator's address file: the advertised host for wildcard and named listen hosts,
// atomic replacement, and flap-coordinator --address-file as a real process (written once it
// listens, usable by a client, removed at shutdown).
#include "coordinator/address_file.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "coordinator/client.h"
#include "tests/test_util.h"

namespace flap::coordinator {
namespace {

std::string HostName() {
  char name[256] = {0};
  gethostname(name, sizeof(name) - 1);
  return name;
}

TEST(AddressFile, WildcardListenHostsAdvertiseTheHostName) {
  for (const char* listen : {"0.0.0.0:0", "[::]:7070", ":7070"}) {
    EXPECT_EQ(AdvertisedAddress(listen, 4321), HostName() + ":4321") << listen;
  }
  EXPECT_EQ(AdvertisedAddress("127.0.0.1:0", 4321), "127.0.0.1:4321");
  EXPECT_EQ(AdvertisedAddress("node7.cluster:7070", 7070), "node7.cluster:7070");
  EXPECT_EQ(AdvertisedAddress("[fe80::1]:0", 9), "[fe80::1]:9");
}

TEST(AddressFile, IsReplacedWholeAndRemovedOnlyWhenItStillHoldsTheAddress) {
  flap::testing::TempDir dir("address-file");
  const std::string path = dir / "run/sub/coordinator.address";
  ASSERT_OK(WriteAddressFile(path, "a:1"));
  EXPECT_EQ(flap::testing::ReadFile(path), "a:1\n");
  ASSERT_OK(WriteAddressFile(path, "b:2"));
  EXPECT_EQ(flap::testing::ReadFile(path), "b:2\n");
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir / "run/sub")) entries += e.is_regular_file();
  EXPECT_EQ(entries, 1) << "a temporary file was left behind";
  RemoveAddressFile(path, "a:1");  // replaced since: kept
  EXPECT_TRUE(std::filesystem::exists(path));
  RemoveAddressFile(path, "b:2");
  EXPECT_FALSE(std::filesystem::exists(path));

  flap::testing::WriteFile(dir / "plain", "x");
  const Status s = WriteAddressFile(dir / "plain/coordinator.address", "a:1");
  EXPECT_EQ(s.code(), Status::Code::kIOError);
  EXPECT_NE(s.message().find(dir / "plain/coordinator.address"), std::string::npos) << s.ToString();
}

TEST(AddressFile, CoordinatorWritesItOnceListeningAndRemovesItAtShutdown) {
  flap::testing::TempDir dir("address-file-proc");
  const std::string path = dir / "run/coordinator.address";
  const pid_t pid = flap::testing::Spawn(std::string(FLAP_COORDINATOR_BIN) + " --state-dir " + dir / "state" +
                                             " --listen 0.0.0.0:0 --insecure --address-file " + path,
                                         {}, dir / "coordinator.log");
  ASSERT_GT(pid, 0);
  std::string address;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (address.empty() && std::chrono::steady_clock::now() < until) {
    address = flap::testing::ReadFile(path);
    if (address.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(address.empty()) << "no address file after 30 s:\n" << flap::testing::ReadFile(dir / "coordinator.log");
  ASSERT_EQ(address.back(), '\n');
  address.pop_back();
  ASSERT_EQ(address.rfind(HostName() + ":", 0), 0u) << address;
  EXPECT_GT(std::stoi(address.substr(address.rfind(':') + 1)), 0) << address;

  // A client reaches the coordinator at the advertised address.
  ClientOptions o;
  o.target = address;
  auto token = ReadToken(dir / "state/token");
  ASSERT_OK(token);
  o.token = *token;
  o.deadline_ms = 5000;
  auto client = CoordinatorClient::Connect(o);
  ASSERT_OK(client);
  auto sweeps = (*client)->ListSweeps();
  EXPECT_OK(sweeps);

  kill(pid, SIGTERM);
  EXPECT_EQ(flap::testing::WaitExit(pid, 30), 0) << flap::testing::ReadFile(dir / "coordinator.log");
  EXPECT_FALSE(std::filesystem::exists(path)) << "the address file outlived the coordinator";
}

TEST(AddressFile, CoordinatorRefusesToStartWhenItCannotWriteIt) {
  flap::testing::TempDir dir("address-file-bad");
  flap::testing::WriteFile(dir / "plain", "x");
  const flap::testing::RunResult r =
      flap::testing::RunCommand(std::string(FLAP_COORDINATOR_BIN) + " --state-dir " + dir / "state" +
                                " --listen 127.0.0.1:0 --address-file " + dir / "plain/coordinator.address");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--address-file"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(dir / "plain/coordinator.address"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace flap::coordinator
