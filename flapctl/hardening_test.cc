// Regression tests of flapctl's hardening, against a stand-in coordinator that serves a hostile
// report: flapctl never runs gnuplot scripts it receives (gnuplot's `system` would run their
// commands on the user's machine) and refuses sweep names that are not folder names; and a
// hostile choice for `sweep best --export`, whose local keys and path-like values go nowhere.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <memory>
#include <string>

#include "config/trial_config.h"
#include "flapctl/testing/fake_worker.h"
#include "proto/coordinator.grpc.pb.h"
#include "tests/test_util.h"

namespace flap::flapctl {
namespace {

namespace v1 = coordinator::v1;
using flap::testing::ReadFile;
using flap::testing::RunCommand;
using flap::testing::TempDir;
using flap::testing::WriteFile;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Answers GetReport with `files` and GetBest with `best`, whatever the sweep; every other call is
// UNIMPLEMENTED.
class HostileCoordinator final : public v1::Coordinator::Service {
 public:
  explicit HostileCoordinator(std::vector<std::pair<std::string, std::string>> files,
                              v1::GetBestResponse best = v1::GetBestResponse())
      : files_(std::move(files)), best_(std::move(best)) {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    b.RegisterService(this);
    server_ = b.BuildAndStart();
  }
  ~HostileCoordinator() override { server_->Shutdown(); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  grpc::Status GetReport(grpc::ServerContext*, const v1::GetReportRequest*, v1::GetReportResponse* resp) override {
    for (const auto& [name, content] : files_) {
      v1::ReportFile* f = resp->add_files();
      f->set_name(name);
      f->set_content(content);
    }
    return grpc::Status::OK;
  }
  grpc::Status GetBest(grpc::ServerContext*, const v1::GetBestRequest*, v1::GetBestResponse* resp) override {
    *resp = best_;
    return grpc::Status::OK;
  }

 private:
  std::vector<std::pair<std::string, std::string>> files_;
  v1::GetBestResponse best_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

const char kSpeedDat[] =
    "# mask.strategy 1d\n# ratio samples_per_second time_to_target_s\n0.5 100 NaN\n0.75 150 NaN\n\n\n";

TEST(HardeningReport, ReceivedGnuplotScriptsAreNeverRun) {
  TempDir dir("hardening_report");
  const std::string marker = dir / "pwned";
  const std::string evil =
      "set terminal svg\nset output 'throughput.svg'\nsystem(\"touch " + marker + "\")\nplot 'speed.dat' using 1:2\n";
  HostileCoordinator c(
      {{"report.md", "# report\n"}, {"speed.dat", kSpeedDat}, {"throughput.gp", evil}, {"extra.gp", evil}});
  ASSERT_TRUE(flap::testing::WriteTokenFile(dir / "token"));
  const std::string out = dir / "report";
  auto r = RunCommand(std::string(FLAPCTL_BIN) + " sweep report s --out " + out + " --coordinator " + c.address() +
                      " --token-file " + (dir / "token"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(std::filesystem::exists(marker)) << "a received gnuplot script was run: " << r.output;
  EXPECT_FALSE(std::filesystem::exists(out + "/extra.gp"));
  // The scripts written are made here from the data.
  const std::string gp = ReadFile(out + "/throughput.gp");
  EXPECT_FALSE(Contains(gp, "system")) << gp;
  EXPECT_TRUE(Contains(gp, "'speed.dat' index 0 using 1:2")) << gp;
  EXPECT_TRUE(std::filesystem::exists(out + "/speed.dat"));
}

TEST(HardeningReport, SeriesNamesCannotBreakOutOfTheLocalScript) {
  TempDir dir("hardening_report_series");
  const std::string marker = dir / "pwned";
  const std::string dat = "# mask.strategy x'\nsystem(\"touch " + marker + "\")\n#'\n0.5 1 NaN\n\n\n";
  HostileCoordinator c({{"report.md", "# report\n"}, {"speed.dat", dat}});
  ASSERT_TRUE(flap::testing::WriteTokenFile(dir / "token"));
  const std::string out = dir / "report";
  auto r = RunCommand(std::string(FLAPCTL_BIN) + " sweep report s --out " + out + " --coordinator " + c.address() +
                      " --token-file " + (dir / "token"));
  EXPECT_FALSE(std::filesystem::exists(marker)) << r.output;
  EXPECT_FALSE(Contains(ReadFile(out + "/throughput.gp"), "system")) << ReadFile(out + "/throughput.gp");
}

TEST(HardeningNames, FlapctlReportRefusesSweepNamesThatAreNotFolderNames) {
  TempDir dir("hardening_report_names");
  HostileCoordinator c(std::vector<std::pair<std::string, std::string>>{{"report.md", "# report\n"}});
  ASSERT_TRUE(flap::testing::WriteTokenFile(dir / "token"));
  for (const char* bad : {"..", ".", ".hidden"}) {
    auto r = RunCommand(std::string(FLAPCTL_BIN) + " sweep report " + bad + " --out " + (dir / "r") +
                        " --coordinator " + c.address() + " --token-file " + (dir / "token"));
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.output;
    EXPECT_TRUE(Contains(r.output, "starts with a dot")) << r.output;
  }
}

// Issue 32, item 7: flapctl sent a token from a file anyone could read, a 1-byte token, and sent
// it in plaintext to any host. Each is now refused before anything is sent, with a message
// that says what to do. (Reproduced against a5e0d09's flapctl: the 0644 file and the 1-byte
// token were sent to the coordinator, and the call to 192.0.2.1 went out in plaintext.)
TEST(HardeningToken, FlapctlRefusesAReadableOrShortTokenAndPlaintextToAHostNotOnLoopback) {
  TempDir dir("hardening_token");
  const std::string status = std::string(FLAPCTL_BIN) + " sweep status --timeout-ms 2000 --coordinator ";
  const std::string readable = dir / "readable", shortened = dir / "short", good = dir / "good";
  ASSERT_TRUE(flap::testing::WriteTokenFile(readable));
  ASSERT_EQ(::chmod(readable.c_str(), 0644), 0);
  ASSERT_TRUE(flap::testing::WriteTokenFile(shortened, "x"));
  ASSERT_TRUE(flap::testing::WriteTokenFile(good));

  auto r = RunCommand(status + "127.0.0.1:1 --token-file " + readable);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, readable + " has mode 0644")) << r.output;
  EXPECT_TRUE(Contains(r.output, "chmod 600 " + readable)) << r.output;

  r = RunCommand(status + "127.0.0.1:1 --token-file " + shortened);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "has 1 characters: a token needs at least 32")) << r.output;
  r = RunCommand("FLAP_COORDINATOR_TOKEN=x " + status + "127.0.0.1:1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "$FLAP_COORDINATOR_TOKEN has 1 characters")) << r.output;

  // 192.0.2.1 (TEST-NET-1) is not loopback: refused before any connection is made.
  r = RunCommand(status + "192.0.2.1:7070 --token-file " + good);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(Contains(r.output, "refusing to send the token in plaintext to 192.0.2.1:7070")) << r.output;
  EXPECT_TRUE(Contains(r.output, "--insecure")) << r.output;
  // --insecure (or $FLAP_COORDINATOR_INSECURE=1) lets the call go out: it fails to connect.
  for (const std::string& insecure :
       {status + "192.0.2.1:1 --insecure", "FLAP_COORDINATOR_INSECURE=1 " + status + "192.0.2.1:1"}) {
    r = RunCommand(insecure + " --token-file " + good);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_FALSE(Contains(r.output, "plaintext")) << r.output;
    EXPECT_TRUE(Contains(r.output, "UNAVAILABLE") || Contains(r.output, "DEADLINE_EXCEEDED")) << r.output;
  }
}

// A coordinator's choice for `sweep best --export` whose base config and factors set keys local
// to this machine (where to read data from, where to write), with path-like values: the trial
// config handed to flap-worker export has none of them (the user's own, after --, go as given),
// and the export folder stays one folder inside --export DIR.
TEST(HardeningBest, ExportTakesNoLocalKeyOrPathFromTheCoordinator) {
  TempDir dir("hardening_best");
  const std::string ckpt = dir / "ckpt/s-t0/000000000004";
  std::filesystem::create_directories(ckpt);
  v1::GetBestResponse best;
  best.set_sweep_id("s");
  best.set_state("finished");
  best.set_metric("map10");
  best.set_higher_is_better(true);
  best.set_base_config("[model]\npreset = tiny\n[data]\npath = /etc\n[train]\noutput_dir = /tmp/flap-evil\n");
  v1::CellChoice* c = best.add_cells();
  c->set_cell(0);
  c->set_label("train.device=../../evil");
  (*c->mutable_factors())["train.device"] = "../../evil";
  c->set_candidates(1);
  c->set_trial_id("t0");
  c->set_seed(1);
  c->set_selected_step(4);
  c->set_checkpoint(ckpt);
  c->set_objective(0.5);
  (*c->mutable_validation())["map10"] = 0.5;
  HostileCoordinator coordinator({}, best);
  ASSERT_TRUE(flap::testing::WriteTokenFile(dir / "token"));
  const std::string worker = dir / "fake-worker";
  ASSERT_TRUE(flapctl::testing::WriteFakeWorker(worker, dir / "calls.txt", 0));
  const std::string out = dir / "models";
  auto r = RunCommand(std::string(FLAPCTL_BIN) + " sweep best s --export " + out + " --worker " + worker +
                      " --coordinator " + coordinator.address() + " --token-file " + (dir / "token") +
                      " -- --data.path mine");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string exported = out + "/cell0-train.device-.._.._evil";
  ASSERT_TRUE(std::filesystem::is_directory(exported)) << r.output;
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(out), std::filesystem::directory_iterator()), 1);
  const std::string config = ReadFile(exported + "/config.ini");
  for (const char* key : {"/etc", "flap-evil", "evil", "[data]", "output_dir", "device"}) {
    EXPECT_FALSE(Contains(config, key)) << key << " in\n" << config;
  }
  StatusOr<TrialConfig> loaded = LoadTrialConfigFile(exported + "/config.ini");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->train.trial_id, "s-t0");
  EXPECT_TRUE(Contains(ReadFile(exported + "/args"), " --data.path mine\n")) << ReadFile(exported + "/args");
}

}  // namespace
}  // namespace flap::flapctl
