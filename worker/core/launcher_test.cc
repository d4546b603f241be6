#include "worker/core/launcher.h"

#include <gtest/gtest.h>

#include <map>

namespace flap::core {
namespace {

EnvLookup Env(std::map<std::string, std::string> vars) { return FixedEnvironment(std::move(vars)); }

TEST(Launcher, NoVariablesMeansOneProcess) {
  auto r = DetectRendezvous(Env({}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->launcher, Launcher::kNone);
  EXPECT_EQ(r->world_size, 1);
  EXPECT_EQ(r->rank, 0);
}

TEST(Launcher, TorchrunVariables) {
  auto r = DetectRendezvous(Env(
      {{"RANK", "2"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "0"}, {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "29511"}}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->launcher, Launcher::kEnv);
  EXPECT_EQ(r->rank, 2);
  EXPECT_EQ(r->world_size, 4);
  EXPECT_EQ(r->master_addr, "node7");
  EXPECT_EQ(r->master_port, 29511);
}

TEST(Launcher, TorchrunWithoutMasterAddressIsRefusedNamingIt) {
  auto r = DetectRendezvous(Env({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1"}}));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("MASTER_ADDR"), std::string::npos);
}

TEST(Launcher, RankOutsideWorldIsRefused) {
  auto r = DetectRendezvous(Env({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "5"}}));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("rank 2 is outside [0, 2)"), std::string::npos) << r.status().message();
  auto bad = DetectRendezvous(Env({{"RANK", "x"}, {"WORLD_SIZE", "2"}}));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("RANK"), std::string::npos);
}

TEST(Launcher, OpenMpiOnOneNodeUsesLoopbackAndAJobDerivedPort) {
  auto r = DetectRendezvous(Env({{"OMPI_COMM_WORLD_RANK", "1"},
                                 {"OMPI_COMM_WORLD_SIZE", "2"},
                                 {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                 {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                                 {"OMPI_MCA_ess_base_jobid", "123456"}}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->launcher, Launcher::kMpi);
  EXPECT_EQ(r->rank, 1);
  EXPECT_EQ(r->local_rank, 1);
  EXPECT_EQ(r->master_addr, "127.0.0.1");
  EXPECT_EQ(r->master_port, 15000 + 123456 % 30000);
}

TEST(Launcher, OpenMpiAcrossNodesNeedsAnAddress) {
  auto env = std::map<std::string, std::string>{
      {"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}};
  EXPECT_FALSE(DetectRendezvous(Env(env)).ok());
  env["MASTER_ADDR"] = "head";
  env["MASTER_PORT"] = "4000";
  auto r = DetectRendezvous(Env(env));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->master_addr, "head");
  EXPECT_EQ(r->master_port, 4000);
}

TEST(Launcher, SlurmStepUsesTheFirstHostOfTheJob) {
  auto r = DetectRendezvous(Env({{"SLURM_PROCID", "3"},
                                 {"SLURM_NTASKS", "8"},
                                 {"SLURM_LOCALID", "1"},
                                 {"SLURM_JOB_NODELIST", "gpu[07-09,12],cpu1"},
                                 {"SLURM_JOB_ID", "4242"},
                                 {"SLURM_STEP_ID", "0"}}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->launcher, Launcher::kSlurm);
  EXPECT_EQ(r->rank, 3);
  EXPECT_EQ(r->world_size, 8);
  EXPECT_EQ(r->local_rank, 1);
  EXPECT_EQ(r->master_addr, "gpu07");
  EXPECT_EQ(r->master_port, 15000 + (4242 * 16) % 30000);
}

TEST(Launcher, SlurmBatchShellIsNotARank) {
  // sbatch's script sees SLURM_PROCID but is no srun step.
  auto r = DetectRendezvous(Env({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}, {"SLURM_JOB_NODELIST", "n1"}}));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->launcher, Launcher::kNone);
}

TEST(Launcher, TorchrunVariablesWinOverSlurm) {
  auto r = DetectRendezvous(Env({{"RANK", "1"},
                                 {"WORLD_SIZE", "2"},
                                 {"MASTER_ADDR", "a"},
                                 {"MASTER_PORT", "9"},
                                 {"SLURM_PROCID", "0"},
                                 {"SLURM_NTASKS", "1"},
                                 {"SLURM_STEP_ID", "0"}}));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->launcher, Launcher::kEnv);
  EXPECT_EQ(r->rank, 1);
}

TEST(Launcher, ForcedLauncherWithoutItsVariablesIsRefused) {
  auto r = DetectRendezvous(Env({}), Launcher::kSlurm);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("SLURM_PROCID"), std::string::npos);
}

TEST(FirstSlurmHost, ExpandsTheCompressedForm) {
  EXPECT_EQ(*FirstSlurmHost("vm"), "vm");
  EXPECT_EQ(*FirstSlurmHost("a1,a2"), "a1");
  EXPECT_EQ(*FirstSlurmHost("node[003-005]"), "node003");
  EXPECT_EQ(*FirstSlurmHost("rack[4,7]-gpu"), "rack4-gpu");
  EXPECT_FALSE(FirstSlurmHost("").ok());
  EXPECT_FALSE(FirstSlurmHost("n[x]").ok());
}

}  // namespace
}  // namespace flap::core
