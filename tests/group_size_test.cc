// A trial that moves between group sizes (docs/training.md, "Group size"): with
// train.global_batch the trial keeps its global batch, its data order and its schedule on any
// group whose size divides it, so a trial stopped on two ranks (2 x 4) and resumed on one
// (1 x 8) ends with the weights of an uninterrupted one-rank run (1 x 8), within float
// reduction order, and its summary and checkpoints list both group sizes. A global batch a
// group cannot split, and a checkpoint of another global batch, are refused naming both sizes.
//
// The ranks are flap-worker processes launched by torchrun-style variables over 127.0.0.1.
#include <gtest/gtest.h>
#include <signal.h>
#include <torch/serialize.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "sharding/synth.h"
#include "tests/test_util.h"
#include "tests/two_nodes.h"

namespace flap {
namespace {

using testing::TempDir;

// Every tensor of a model.pt (torch::save of a module: its parameters and buffers, and its
// submodules as archives of their own), by dotted name.
void ReadArchive(torch::serialize::InputArchive& archive, const std::string& prefix,
                 std::map<std::string, at::Tensor>* out) {
  for (const std::string& key : archive.keys()) {
    at::Tensor t;
    torch::serialize::InputArchive sub;
    if (archive.try_read(key, t)) {
      (*out)[prefix + key] = t;
    } else if (archive.try_read(key, sub)) {
      ReadArchive(sub, prefix + key + ".", out);
    }
  }
}
std::map<std::string, at::Tensor> ReadModel(const std::string& path) {
  torch::serialize::InputArchive archive;
  archive.load_from(path);
  std::map<std::string, at::Tensor> tensors;
  ReadArchive(archive, "", &tensors);
  return tensors;
}

// The largest difference between two models' tensors, relative to the tensor's largest value
// in `want`, and the tensor it is in.
std::pair<double, std::string> LargestDifference(const std::map<std::string, at::Tensor>& want,
                                                 const std::map<std::string, at::Tensor>& got) {
  std::pair<double, std::string> worst{0.0, ""};
  for (const auto& [name, w] : want) {
    const auto g = got.find(name);
    if (g == got.end() || !g->second.sizes().equals(w.sizes())) return {INFINITY, name};
    const double scale = w.abs().max().item<double>();
    const double diff = (g->second - w).abs().max().item<double>();
    const double relative = scale > 0 ? diff / scale : diff;
    if (relative > worst.first) worst = {relative, name};
  }
  return worst;
}

// Where each rank's command runs (tests/two_nodes.h: on another node), and the address ranks
// meet at; by default here, over 127.0.0.1.
struct Placement {
  std::function<std::string(int rank, const std::string& command)> on;
  std::string master = "127.0.0.1";
};

class GroupSize : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("group_size");
    // 6 training shards of 8 clips: 6 steps of 8 per epoch.
    const sharding::SynthOptions o = sharding::SmallSynth(48, 8, 1.0, 8, 64);
    ASSERT_OK(sharding::GenerateSynthetic(o, (*dir_) / "data"));
  }
  static void TearDownTestSuite() { delete dir_; }

  // flap-worker train on tiny (T = 96) for 16 steps of `batch` (a --train.* batch key and its
  // value), checkpointed every 2 steps under ckpt_<ckpt>, outputs in out_<name>.
  static std::string Command(const std::string& name, const std::string& batch, const std::string& ckpt,
                             const std::string& extra = "") {
    return std::string(FLAP_WORKER_BIN) + " train --config " + FLAP_CONFIG_DIR + "/tiny.ini --data.path " +
           (*dir_) / "data" + " --model.target_frames 96 " + batch +
           " --train.epochs 1000 --train.max_steps 16 --optim.warmup_steps 3 --mask.ratio 0.5"
           " --train.log_every 1 --train.eval_batch_size 8 --dist.timeout 60 --train.trial_id t --ckpt.every 2"
           " --ckpt.root " +
           (*dir_) / ("ckpt_" + ckpt) + " --train.output_dir " + (*dir_) / ("out_" + name) + " " + extra;
  }
  static std::string Log(const std::string& name, int rank) {
    return (*dir_) / (name + ".log." + std::to_string(rank));
  }
  // Starts `world` ranks of `command`; their pids.
  static std::vector<pid_t> Spawn(int world, const std::string& name, const std::string& command,
                                  const Placement& where = {}) {
    const int port = testing::FreePort();
    std::vector<pid_t> pids;
    for (int r = 0; r < world; ++r) {
      pids.push_back(testing::Spawn(where.on ? where.on(r, command) : command,
                                    testing::RankEnv(r, world, port, where.master, where.on != nullptr), Log(name, r)));
    }
    return pids;
  }
  // Runs `world` ranks of `command` to their end; each one's exit code.
  static std::vector<int> Run(int world, const std::string& name, const std::string& command,
                              const Placement& where = {}) {
    std::vector<int> codes;
    for (pid_t pid : Spawn(world, name, command, where)) codes.push_back(testing::WaitExit(pid, 300));
    return codes;
  }
  // Starts 2 ranks of `command`, stops them with SIGTERM to rank 0 once rank 0 has logged step
  // 5, and expects both to exit 75 after a last checkpoint. False when the training ended
  // before the signal.
  static bool StopTwoRanksMidway(const std::string& name, const std::string& command, const Placement& where = {}) {
    auto pids = Spawn(2, name, command, where);
    bool started = false;
    for (int i = 0; i < 6000 && !started; ++i) {
      started = testing::ReadFile(Log(name, 0)).find("step 5/") != std::string::npos;
      if (!started) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_TRUE(started) << testing::ReadFile(Log(name, 0));
    kill(pids[0], SIGTERM);
    int finished = 0;
    for (int r = 0; r < 2; ++r) {
      const int code = testing::WaitExit(pids[static_cast<size_t>(r)], 120);
      if (code == 0)
        ++finished;
      else
        EXPECT_EQ(code, 75) << "rank " << r << ":\n" << testing::ReadFile(Log(name, r));
    }
    return started && finished == 0;
  }

  // The trial `name` on two ranks of 4 (placed by `two`), stopped midway and resumed on one
  // rank of 8 (placed by `one`), against `ref`, an uninterrupted run on one rank of 8: the
  // same weights within float reduction order, the same schedule, and both group sizes in its
  // summary and checkpoint. False when the two ranks finished before they could be stopped.
  static bool CheckMovedToOneRank(const std::string& name, const std::string& ref, const Placement& two,
                                  const Placement& one) {
    const std::string command = Command(name, "--train.global_batch 8", name, "--resume");
    if (!StopTwoRanksMidway(name + "2", command, two)) return false;
    const std::string log2 = testing::ReadFile(Log(name + "2", 0));
    EXPECT_NE(log2.find("global batch 8 (2 rank(s) x 4 per rank of train.global_batch; 8 negatives per step)"),
              std::string::npos)
        << log2;
    const auto codes = Run(1, name + "1", command, one);
    const std::string log1 = testing::ReadFile(Log(name + "1", 0));
    EXPECT_EQ(codes[0], 0) << log1;
    EXPECT_NE(log1.find("resumed from checkpoint t/"), std::string::npos) << log1;
    EXPECT_NE(log1.find("where the trial last ran on 2 x 4: the same global batch of 8"), std::string::npos) << log1;

    // Its record: both group sizes, with the step each began at, and the same global batch.
    const auto summary = nlohmann::json::parse(testing::ReadFile((*dir_) / ("out_" + name) + "/summary.json"),
                                               nullptr, false);
    const auto ref_summary =
        nlohmann::json::parse(testing::ReadFile((*dir_) / ("out_" + ref) + "/summary.json"), nullptr, false);
    EXPECT_FALSE(summary.is_discarded() || ref_summary.is_discarded());
    if (summary.is_discarded() || ref_summary.is_discarded()) return true;
    EXPECT_EQ(summary["world_sizes"].size(), 2u) << summary["world_sizes"].dump();
    if (summary["world_sizes"].size() != 2u) return true;
    EXPECT_EQ(summary["world_sizes"][0]["world_size"], 2);
    EXPECT_EQ(summary["world_sizes"][0]["per_rank_batch"], 4);
    EXPECT_EQ(summary["world_sizes"][0]["from_step"], 0);
    EXPECT_EQ(summary["world_sizes"][1]["world_size"], 1);
    EXPECT_EQ(summary["world_sizes"][1]["per_rank_batch"], 8);
    const int64_t moved_at = summary["world_sizes"][1]["from_step"].get<int64_t>();
    EXPECT_GT(moved_at, 0);
    EXPECT_LT(moved_at, 16);
    EXPECT_EQ(summary["resumed_from_step"].get<int64_t>(), moved_at);
    EXPECT_EQ(summary["global_batch"], 8);
    EXPECT_EQ(summary["steps"], 16);
    EXPECT_EQ(summary["samples_seen"], 16 * 8);
    EXPECT_EQ(summary["config_hash"], ref_summary["config_hash"]);
    // The schedule ends where the uninterrupted run's does.
    EXPECT_EQ(summary["schedule"]["lr"], ref_summary["schedule"]["lr"]);
    // The checkpoint of the last step records them too (state.json's progress).
    const auto state = nlohmann::json::parse(
        testing::ReadFile((*dir_) / ("ckpt_" + name) + "/t/000000000016/state.json"), nullptr, false);
    EXPECT_FALSE(state.is_discarded());
    if (!state.is_discarded()) {
      EXPECT_EQ(state["progress"]["world_sizes"], summary["world_sizes"]) << state.dump();
      EXPECT_EQ(state["progress"]["global_batch"], 8) << state.dump();
    }

    // The weights: those of one rank of 8 throughout, within float reduction order (the
    // gathered loss sums in another order on two ranks; AdamW turns a gradient's last bits into
    // up to lr where the gradient is near zero: about 1e-4 of a tensor's largest value, as much
    // as two ranks of 4 uninterrupted differ from one rank of 8: the first test's controls).
    const auto want = ReadModel((*dir_) / ("out_" + ref) + "/model.pt");
    const auto got = ReadModel((*dir_) / ("out_" + name) + "/model.pt");
    EXPECT_GT(want.size(), 10u);
    EXPECT_EQ(got.size(), want.size());
    const auto [worst, where] = LargestDifference(want, got);
    std::cout << name << ": 2 x 4 resumed on 1 x 8 against 1 x 8: largest weight difference relative to the tensor's "
              << "max |w|: " << worst << " (" << where << ")" << std::endl;
    EXPECT_LE(worst, 1e-3) << where;
    return true;
  }

  static TempDir* dir_;
};
TempDir* GroupSize::dir_ = nullptr;

TEST_F(GroupSize, TrialStartedOnTwoRanksAndResumedOnOneMatchesOneRankThroughout) {
  // The reference: one rank of 8, uninterrupted.
  auto codes = Run(1, "ref", Command("ref", "--train.global_batch 8", "ref"));
  ASSERT_EQ(codes[0], 0) << testing::ReadFile(Log("ref", 0));
  if (!CheckMovedToOneRank("moved", "ref", {}, {})) GTEST_SKIP() << "training ended before the signal";
  const auto want = ReadModel((*dir_) / "out_ref/model.pt");

  // Controls: two ranks of 4 uninterrupted (the same samples: reduction order alone), and two
  // ranks of 4 per rank without train.global_batch (each rank reads its own shards: other
  // samples in each step), which the comparison must tell apart.
  ASSERT_EQ(Run(2, "two", Command("two", "--train.global_batch 8", "two")), (std::vector<int>{0, 0}))
      << testing::ReadFile(Log("two", 0));
  const auto [two, two_where] = LargestDifference(want, ReadModel((*dir_) / "out_two/model.pt"));
  ASSERT_EQ(Run(2, "own", Command("own", "--train.batch_size 4", "own")), (std::vector<int>{0, 0}))
      << testing::ReadFile(Log("own", 0));
  const auto [own, own_where] = LargestDifference(want, ReadModel((*dir_) / "out_own/model.pt"));
  std::cout << "2 x 4 uninterrupted against 1 x 8: " << two << " (" << two_where
            << "); 2 x 4 reading their own shards: " << own << " (" << own_where << ")" << std::endl;
  EXPECT_LE(two, 1e-3) << two_where;
  EXPECT_GT(own, 1e-2) << own_where;
}

// The same across two hosts (tests/two_nodes.h): rank 0 on node A and rank 1 on node B, meeting
// at A's address over the link, then one rank alone on node B.
class TwoNodesGroupSize : public GroupSize {};

TEST_F(TwoNodesGroupSize, TrialStartedAcrossTwoNodesFinishesOnOneRankOfTheOther) {
  auto nodes = testing::TwoNodes::Create();
  if (!nodes.ok()) GTEST_SKIP() << "no two-node fixture here: " << nodes.status().ToString();
  const testing::TwoNodes& n = **nodes;
  auto codes = Run(1, "nodes_ref", Command("nodes_ref", "--train.global_batch 8", "nodes_ref"));
  ASSERT_EQ(codes[0], 0) << testing::ReadFile(Log("nodes_ref", 0));
  Placement across;
  // exec: the pid the test signals is flap-worker's, not a shell's.
  across.on = [&n](int rank, const std::string& command) {
    return n.On(rank == 0 ? n.a() : n.b(), "exec " + command);
  };
  across.master = n.a().address;
  Placement alone;
  alone.on = [&n](int, const std::string& command) { return n.On(n.b(), "exec " + command); };
  if (!CheckMovedToOneRank("nodes", "nodes_ref", across, alone)) GTEST_SKIP() << "training ended before the signal";
}

// A global batch that the group cannot split is refused by every rank, naming both sizes,
// before anything trains.
TEST_F(GroupSize, GlobalBatchAGroupCannotSplitIsRefusedNamingBothSizes) {
  const auto codes = Run(3, "uneven", Command("uneven", "--train.global_batch 8", "uneven"));
  for (int r = 0; r < 3; ++r) {
    const std::string log = testing::ReadFile(Log("uneven", r));
    EXPECT_EQ(codes[static_cast<size_t>(r)], 2) << "rank " << r << ":\n" << log;
    EXPECT_NE(log.find("train.global_batch 8 cannot be split evenly over world size 3"), std::string::npos)
        << "rank " << r << ":\n"
        << log;
  }
}

// Without train.global_batch (train.batch_size per rank), a checkpoint of 2 ranks x 4 resumed
// on one rank would train with 4 negatives instead of 8: refused, naming both global batches,
// unless forced. Before the global batch was kept in checkpoints, this resume failed on the
// data cursor instead ("its data cursor (epoch 1, step 0) does not match the step at 12 steps per
// epoch", or its block differing from the shards at that point), naming no batch.
TEST_F(GroupSize, ResumeWithAnotherGlobalBatchIsRefusedNamingBoth) {
  const std::string command = Command("per_rank", "--train.batch_size 4", "per_rank", "--resume");
  if (!StopTwoRanksMidway("per_rank2", command)) GTEST_SKIP() << "training ended before the signal";
  auto codes = Run(1, "per_rank1", command);
  const std::string log = testing::ReadFile(Log("per_rank1", 0));
  EXPECT_EQ(codes[0], 1) << log;
  EXPECT_NE(log.find("was trained with global batch 8 (2 rank(s) x 4), this group's is 4 (1 rank(s) x 4)"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("set train.global_batch"), std::string::npos) << log;
}

}  // namespace
}  // namespace flap
