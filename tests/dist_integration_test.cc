// flap-worker as a worker group: the same training launched by each launcher users have
// (torchrun-style variables, Open MPI's mpirun, Slurm's srun on a one-node cluster started
// here), the global batch recorded in logs and summary, and a rank that dies or stops making
// the others exit with an error naming it, within the timeout instead of hanging.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "sharding/synth.h"
#include "tests/slurm_cluster.h"
#include "tests/test_util.h"
#include "tests/two_nodes.h"

namespace flap {
namespace {

using testing::TempDir;

class DistTrain : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("dist_train");
    // 6 training shards: every rank of 2 or 3 gets its own
    const sharding::SynthOptions o = sharding::SmallSynth(48, 8, 1.0, 8, 64);
    ASSERT_OK(sharding::GenerateSynthetic(o, (*dir_) / "data"));
  }
  static void TearDownTestSuite() { delete dir_; }

  // flap-worker train on tiny (T = 96), 4 samples per rank, `steps` steps, outputs in OUT_<name>.
  static std::string Command(const std::string& name, int steps, const std::string& extra = "") {
    return std::string(FLAP_WORKER_BIN) + " train --config " + FLAP_CONFIG_DIR + "/tiny.ini --data.path " +
           (*dir_) / "data" + " --model.target_frames 96 --train.batch_size 4 --train.epochs 1000 --train.max_steps " +
           std::to_string(steps) + " --train.log_every 1 --train.eval_batch_size 8 --train.output_dir " +
           (*dir_) / ("out_" + name) + " " + extra;
  }

  // The summary rank 0 wrote, checked for a 2-rank run of 4 per rank through `launcher`.
  static void CheckSummary(const std::string& name, const std::string& launcher, const std::string& output) {
    const std::string text = testing::ReadFile((*dir_) / ("out_" + name) + "/summary.json");
    ASSERT_FALSE(text.empty()) << "no summary.json; output:\n" << output;
    const auto s = nlohmann::json::parse(text);
    EXPECT_EQ(s["world_size"], 2);
    EXPECT_EQ(s["per_rank_batch"], 4);
    EXPECT_EQ(s["global_batch"], 8);
    EXPECT_EQ(s["negatives_per_step"], 8);
    EXPECT_EQ(s["samples_seen"], 8 * s["steps"].get<int>());
    EXPECT_EQ(s["dist"]["launcher"], launcher);
    EXPECT_EQ(s["dist"]["backend"], "gloo");
    EXPECT_GT(s["step_seconds"]["gather"].get<double>(), 0.0);
  }

  // Spawns `world` env-launched ranks of Command(name, ...); their pids.
  static std::vector<pid_t> SpawnRanks(int world, const std::string& name, int steps, const std::string& extra) {
    const int port = testing::FreePort();
    std::vector<pid_t> pids;
    for (int r = 0; r < world; ++r) {
      pids.push_back(testing::Spawn(Command(name, steps, extra), testing::RankEnv(r, world, port), Log(name, r)));
    }
    return pids;
  }
  static std::string Log(const std::string& name, int rank) {
    return (*dir_) / (name + ".log." + std::to_string(rank));
  }

  static TempDir* dir_;
};
TempDir* DistTrain::dir_ = nullptr;

TEST_F(DistTrain, EnvVariablesLaunchTwoRanksThatRecordTheGlobalBatch) {
  auto pids = SpawnRanks(2, "env", 3, "--dist.timeout 60");
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(testing::WaitExit(pids[static_cast<size_t>(r)], 300), 0) << testing::ReadFile(Log("env", r));
  }
  const std::string log0 = testing::ReadFile(Log("env", 0));
  EXPECT_NE(log0.find("global batch 8 (2 rank(s) x train.batch_size 4 per rank; 8 negatives per step)"),
            std::string::npos)
      << log0;
  EXPECT_NE(log0.find("rank 0 of 2 joined (env launcher, gloo"), std::string::npos) << log0;
  CheckSummary("env", "env", log0);
}

TEST_F(DistTrain, MpirunLaunchesTwoRanks) {
  if (testing::RunCommand("command -v mpirun").exit_code != 0) GTEST_SKIP() << "mpirun not installed (openmpi-bin)";
  auto r = testing::RunCommand("timeout -k 5 300 mpirun -np 2 --allow-run-as-root --oversubscribe --bind-to none " +
                               Command("mpi", 3, "--dist.timeout 60"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(" of 2 joined (mpi launcher"), std::string::npos) << r.output;
  CheckSummary("mpi", "mpi", r.output);
}

TEST_F(DistTrain, SrunLaunchesTwoRanksOnAOneNodeSlurmCluster) {
  if (const std::string missing = testing::SlurmCluster::MissingPrograms(); !missing.empty()) {
    GTEST_SKIP() << "Slurm not installed (missing " << missing << "; apt-get install slurm-wlm munge)";
  }
  auto cluster = testing::SlurmCluster::Start();
  ASSERT_OK(cluster);
  auto r = (*cluster)->Srun("--mpi=pmix -n 2 " + Command("srun", 3, "--dist.timeout 60"), 300);
  ASSERT_EQ(r.exit_code, 0) << r.output << (*cluster)->Logs();
  EXPECT_NE(r.output.find(" of 2 joined (slurm launcher"), std::string::npos) << r.output;
  CheckSummary("srun", "slurm", r.output);
}

TEST_F(DistTrain, StopSignalOnRankZeroStopsBothAndResumeIsBitIdentical) {
  const std::string ckpt = " --train.trial_id t --ckpt.every 2 --ckpt.root " + (*dir_) / "ckpt";
  auto ref = SpawnRanks(2, "ref", 10, "--dist.timeout 60");
  for (int r = 0; r < 2; ++r)
    ASSERT_EQ(testing::WaitExit(ref[static_cast<size_t>(r)], 300), 0) << testing::ReadFile(Log("ref", r));
  auto pids = SpawnRanks(2, "stop", 10, "--dist.timeout 60" + ckpt);
  bool started = false;
  for (int i = 0; i < 3000 && !started; ++i) {
    started = testing::ReadFile(Log("stop", 0)).find("step 3/") != std::string::npos;
    if (!started) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(started);
  kill(pids[0], SIGTERM);  // only rank 0 gets the signal: the ranks agree to stop at the same step
  int finished = 0;
  for (int r = 0; r < 2; ++r) {
    const int code = testing::WaitExit(pids[static_cast<size_t>(r)], 120);
    if (code == 0)
      ++finished;
    else
      EXPECT_EQ(code, 75) << "rank " << r << ":\n" << testing::ReadFile(Log("stop", r));
  }
  if (finished == 2) GTEST_SKIP() << "training finished before the signal arrived; nothing to check";
  ASSERT_EQ(finished, 0) << "one rank stopped and the other finished";
  auto resumed = SpawnRanks(2, "stop", 10, "--dist.timeout 60 --resume" + ckpt);
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(testing::WaitExit(resumed[static_cast<size_t>(r)], 300), 0) << testing::ReadFile(Log("stop", r));
  }
  EXPECT_NE(testing::ReadFile(Log("stop", 0)).find("resumed from checkpoint t/"), std::string::npos);
  const std::string want = testing::ReadFile((*dir_) / "out_ref/model.pt");
  ASSERT_FALSE(want.empty());
  EXPECT_TRUE(want == testing::ReadFile((*dir_) / "out_stop/model.pt"))
      << "2 ranks stopped and resumed end with other parameters than 2 uninterrupted ranks";
}

// Starts 3 ranks with a 5 s timeout, waits until rank 0 has logged step 3, sends `sig` to
// rank `victim`; the two others must exit with code 1 naming the victim within the timeout
// plus the diagnosis (3 heartbeats) and some slack, not hang.
class DistFailure : public DistTrain {
 protected:
  static void Check(const std::string& name, int victim, int sig, const std::string& expect) {
    auto pids = SpawnRanks(3, name, 2000, "--dist.timeout 5");
    bool started = false;
    for (int i = 0; i < 3000 && !started; ++i) {
      started = testing::ReadFile(Log(name, 0)).find("step 3/") != std::string::npos;
      if (!started) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(started) << testing::ReadFile(Log(name, 0));
    kill(pids[static_cast<size_t>(victim)], sig);
    const auto t = std::chrono::steady_clock::now();
    for (int r = 0; r < 3; ++r) {
      if (r == victim) continue;
      // 5 s timeout + 3 s diagnosis + an evaluation or step in flight on a loaded machine.
      const int code = testing::WaitExit(pids[static_cast<size_t>(r)], 40);
      const std::string log = testing::ReadFile(Log(name, r));
      EXPECT_EQ(code, 1) << "rank " << r << (code == -1 ? " still running after 40 s (killed)" : "") << ":\n" << log;
      EXPECT_NE(log.find(expect), std::string::npos) << "rank " << r << ":\n" << log;
    }
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    std::cout << name << ": survivors exited " << waited << " s after the signal" << std::endl;
    kill(pids[static_cast<size_t>(victim)], SIGKILL);
    testing::WaitExit(pids[static_cast<size_t>(victim)], 10);
  }
};

TEST_F(DistFailure, KilledRankIsNamedByTheOthers) {
  Check("killed", 1, SIGKILL, "rank 1 is not responding (no heartbeat");
}

TEST_F(DistFailure, StoppedRankIsNamedAfterTheTimeout) {
  // SIGSTOP: the connection stays open, so only the collective timeout can notice.
  Check("stopped", 2, SIGSTOP, "rank 2 is not responding (no heartbeat");
}

// A network partition between two hosts (tests/two_nodes.h) in the middle of an epoch: rank 0 on
// node A (which hosts the store), rank 1 on node B; the link goes down after step 3. Each rank
// names the other within the timeout plus the diagnosis and exits 1 (the group's failure code),
// none hangs; once the link is back the same command with --resume ends with the parameters of
// an uninterrupted run of the same two nodes, bit for bit.
class TwoNodesTrain : public DistTrain {
 protected:
  std::vector<pid_t> SpawnOnNodes(const testing::TwoNodes& n, const std::string& name, const std::string& extra) {
    const int port = testing::FreePort();
    std::vector<pid_t> pids;
    for (int r = 0; r < 2; ++r) {
      std::vector<std::string> env = testing::RankEnv(r, 2, port);
      for (auto& v : env) {
        if (v.rfind("MASTER_ADDR=", 0) == 0) v = "MASTER_ADDR=" + n.a().address;
        if (v.rfind("LOCAL_RANK=", 0) == 0) v = "LOCAL_RANK=0";  // one rank per node
      }
      pids.push_back(testing::Spawn(n.On(r == 0 ? n.a() : n.b(), Command(name, 40, extra)), env, Log(name, r)));
    }
    return pids;
  }
};

// Slurm across the two nodes: slurmctld and a slurmd on node A, a slurmd on node B; srun -N2
// puts one rank on each, the rendezvous address is node-a (the first host of the node list),
// which node A's own /etc/hosts puts on 127.0.1.1, and the group trains across the link.
TEST_F(TwoNodesTrain, SrunTrainsOneGroupAcrossBothNodes) {
  if (const std::string missing = testing::SlurmCluster::MissingPrograms(); !missing.empty()) {
    GTEST_SKIP() << "Slurm not installed (missing " << missing << "; apt-get install slurm-wlm munge)";
  }
  auto nodes = testing::TwoNodes::Create();
  if (!nodes.ok()) GTEST_SKIP() << "no two-node fixture here: " << nodes.status().ToString();
  testing::SlurmClusterOptions o;
  o.nodes = nodes->get();
  auto cluster = testing::SlurmCluster::Start(o);
  ASSERT_OK(cluster.status());
  auto hosts = (*cluster)->Srun("-N2 --ntasks-per-node=1 hostname", 120);
  ASSERT_EQ(hosts.exit_code, 0) << hosts.output << (*cluster)->Logs();
  EXPECT_NE(hosts.output.find("node-a"), std::string::npos) << hosts.output;
  EXPECT_NE(hosts.output.find("node-b"), std::string::npos) << hosts.output;
  auto r = (*cluster)->Srun("-N2 --ntasks-per-node=1 --mpi=pmix " + Command("srun2", 3, "--dist.timeout 60"), 300);
  ASSERT_EQ(r.exit_code, 0) << r.output << (*cluster)->Logs();
  EXPECT_NE(r.output.find(" of 2 joined (slurm launcher"), std::string::npos) << r.output;
  CheckSummary("srun2", "slurm", r.output);
}

TEST_F(TwoNodesTrain, PartitionIsNamedByBothRanksAndResumeAfterItIsExact) {
  auto nodes = testing::TwoNodes::Create();
  if (!nodes.ok()) GTEST_SKIP() << "no two-node fixture here: " << nodes.status().ToString();
  const testing::TwoNodes& n = **nodes;
  const std::string ckpt = " --train.trial_id t --ckpt.every 2 --ckpt.root " + (*dir_) / "ckpt_part";
  auto ref = SpawnOnNodes(n, "part_ref", "--dist.timeout 60");
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(testing::WaitExit(ref[static_cast<size_t>(r)], 300), 0) << testing::ReadFile(Log("part_ref", r));
  }
  auto pids = SpawnOnNodes(n, "part", "--dist.timeout 5" + ckpt);
  bool started = false;
  for (int i = 0; i < 3000 && !started; ++i) {
    started = testing::ReadFile(Log("part", 0)).find("step 3/") != std::string::npos;
    if (!started) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(started) << testing::ReadFile(Log("part", 0));
  ASSERT_OK(n.SetLink(false));
  const auto t = std::chrono::steady_clock::now();
  const char* expect[2] = {"rank 1 is not responding", "rank 0 is gone"};
  for (int r = 0; r < 2; ++r) {
    // 5 s timeout + 3 s diagnosis + a step or a save in flight on a loaded machine.
    const int code = testing::WaitExit(pids[static_cast<size_t>(r)], 60);
    const std::string log = testing::ReadFile(Log("part", r));
    EXPECT_EQ(code, 1) << "rank " << r << (code == -1 ? " still running after 60 s (killed)" : "") << ":\n" << log;
    EXPECT_NE(log.find(expect[r]), std::string::npos) << "rank " << r << ":\n" << log;
  }
  std::cout << "partition: both ranks exited "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count()
            << " s after the link went down" << std::endl;
  ASSERT_OK(n.SetLink(true));
  auto resumed = SpawnOnNodes(n, "part", "--dist.timeout 60 --resume" + ckpt);
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(testing::WaitExit(resumed[static_cast<size_t>(r)], 300), 0) << testing::ReadFile(Log("part", r));
  }
  EXPECT_NE(testing::ReadFile(Log("part", 0)).find("resumed from checkpoint t/"), std::string::npos)
      << testing::ReadFile(Log("part", 0));
  const std::string want = testing::ReadFile((*dir_) / "out_part_ref/model.pt");
  ASSERT_FALSE(want.empty());
  EXPECT_TRUE(want == testing::ReadFile((*dir_) / "out_part/model.pt"))
      << "the run cut by the partition and resumed ends with other parameters than the uninterrupted one";
}

// mpirun across the nodes: run on node-a, it starts Open MPI's daemon (orted) on node-b through
// an rsh agent that enters node-b (TwoNodes::On) where a cluster would use ssh; the daemon
// reaches mpirun back at node-a's address, and the ranks meet at MASTER_ADDR, node-a's address
// given with -x (launcher.h: mpirun alone gives no rendezvous address across nodes).
TEST_F(TwoNodesTrain, MpirunLaunchesOneRankOnEachNodeThroughAnRshAgent) {
  if (testing::RunCommand("command -v mpirun").exit_code != 0) GTEST_SKIP() << "mpirun not installed (openmpi-bin)";
  auto nodes = testing::TwoNodes::Create();
  if (!nodes.ok()) GTEST_SKIP() << "no two-node fixture here: " << nodes.status().ToString();
  const testing::TwoNodes& n = **nodes;
  // Called as `agent HOST COMMAND...`, as ssh would be; runs COMMAND on HOST.
  const std::string agent = (*dir_) / "rsh_agent.sh";
  const std::string on_host = "eval \"$FLAP_RSH_COMMAND\"";
  ASSERT_TRUE(testing::WriteFile(agent, "#!/bin/sh\nhost=$1\nshift\necho \"rsh agent: $host\" >&2\n"
                                        "export FLAP_RSH_COMMAND=\"$*\"\ncase $host in\n"
                                        "  " + n.a().host + ") exec " + n.On(n.a(), on_host) + " ;;\n"
                                        "  " + n.b().host + ") exec " + n.On(n.b(), on_host) + " ;;\n"
                                        "  *) echo \"rsh agent: no host $host\" >&2; exit 255 ;;\nesac\n"));
  ASSERT_EQ(chmod(agent.c_str(), 0755), 0);
  const auto r = testing::RunCommand(n.On(
      n.a(), "timeout -k 5 300 mpirun -np 2 --host " + n.a().host + ":1," + n.b().host +
                 ":1 --allow-run-as-root --bind-to none --mca plm_rsh_agent " + agent + " -x MASTER_ADDR=" +
                 n.a().address + " " + Command("mpi2", 3, "--dist.timeout 60") + " 2>&1"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("rsh agent: " + n.b().host), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" of 2 joined (mpi launcher, gloo, rendezvous " + n.a().address + ":"), std::string::npos)
      << r.output;
  CheckSummary("mpi2", "mpi", r.output);
}

// A slow link between the nodes: 5 ms added each way and 1% of the packets lost, what `tc qdisc
// add dev LINK root netem delay 5ms loss 1%` makes (the kernel here has no sch_netem: the nodes
// are joined by tests/link_relay.h, which does the same in user space). The group trains to its
// last step all the same, TCP resending what the link lost; the relay shows that packets were
// delayed through it and some lost. The cost in step time: docs/benchmarks.md (dist_nodes_bench).
TEST_F(TwoNodesTrain, SlowLinkWithDelayAndLossStillTrainsToTheEnd) {
  testing::TwoNodesOptions o;
  o.delay_ms = 5;
  o.loss = 0.01;
  auto nodes = testing::TwoNodes::Create(o);
  if (!nodes.ok()) GTEST_SKIP() << "no two-node fixture with a slow link here: " << nodes.status().ToString();
  auto pids = SpawnOnNodes(**nodes, "slow", "--dist.timeout 60");
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(testing::WaitExit(pids[static_cast<size_t>(r)], 300), 0) << testing::ReadFile(Log("slow", r));
  }
  const std::string log0 = testing::ReadFile(Log("slow", 0));
  CheckSummary("slow", "env", log0);
  const auto s = nlohmann::json::parse(testing::ReadFile((*dir_) / "out_slow/summary.json"));
  EXPECT_EQ(s["steps"], 40) << log0;
  const testing::LinkRelay::Stats st = (*nodes)->relay_stats();
  std::cout << "slow link: " << st.relayed << " packets relayed, " << st.lost << " lost, " << st.overflow
            << " over the queue; gather " << s["step_seconds"]["gather"] << " s a step" << std::endl;
  EXPECT_GT(st.relayed, 1000);
  EXPECT_GT(st.lost, 0) << "1% loss dropped nothing";
}

}  // namespace
}  // namespace flap
