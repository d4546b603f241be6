// The three roles of a dataset's splits in a training run (config/trial_config.h, DataConfig):
// validation drives every evaluation during training and chooses the weights; the test split is
// read once, at the end, and evaluated on the weights validation chose, also when the choice was
// made before a resume. A process-wide observer of Dataset::Load (SetSplitLoadObserver) sees
// every read of a split, so any code path that read the test split earlier fails here.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "config/trial_config.h"
#include "sharding/synth.h"
#include "tests/test_util.h"
#include "worker/checkpointer.h"
#include "worker/dataset.h"
#include "worker/evaluator.h"
#include "worker/trainer.h"
#include "worker/testing/trainer_test_util.h"

namespace flap::worker {
namespace {

class SplitRoles : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new flap::testing::TempDir("split_roles");
    ASSERT_TRUE(sharding::GenerateSynthetic(sharding::SmallSynth(32, 8, 0.5, 8), (*dir_) / "data").ok());
  }
  static void TearDownTestSuite() { delete dir_; }

  static TrialConfig Config() {
    TrialConfig c = SmallTrialConfig((*dir_) / "data");
    c.train.max_steps = 12;
    c.train.eval_every = 2;
    c.optim.lr = 3e-3;
    return c;
  }

  // What the run reported and when each split was read, in one sequence of events.
  struct Watch {
    std::vector<std::string> events;  // "load:<split>", "train", "eval", "test"
    std::map<std::string, double> test;
    SplitLoadObserver previous;
    Watch() {
      previous = SetSplitLoadObserver(
          [this](const std::string&, const std::string& split) { events.push_back("load:" + split); });
    }
    ~Watch() { SetSplitLoadObserver(previous); }
    TrainingHooks Hooks() {
      TrainingHooks h;
      h.report = [this](const std::string& kind, int64_t, int64_t, int64_t, const std::map<std::string, double>& v) {
        events.push_back(kind);
        if (kind == "test") test = v;
        return false;
      };
      return h;
    }
    int Count(const std::string& e) const { return static_cast<int>(std::count(events.begin(), events.end(), e)); }
    size_t First(const std::string& e) const {
      return static_cast<size_t>(std::find(events.begin(), events.end(), e) - events.begin());
    }
    size_t Last(const std::string& e) const {
      for (size_t i = events.size(); i-- > 0;) {
        if (events[i] == e) return i;
      }
      return events.size();
    }
  };

  // The step of the best validation evaluation by mAP@10 (the first of equals).
  static int64_t ValidationChoice(const nlohmann::json& history) {
    int64_t step = -1;
    double best = -1;
    for (const auto& e : history) {
      if (e["map10"].get<double>() > best) {
        best = e["map10"].get<double>();
        step = e["step"].get<int64_t>();
      }
    }
    return step;
  }

  static flap::testing::TempDir* dir_;
};
flap::testing::TempDir* SplitRoles::dir_ = nullptr;

TEST_F(SplitRoles, TestIsReadOnceAfterTrainingAndEvaluatedOnValidationsChoice) {
  flap::testing::TempDir ckpt("split_roles_every");
  TrialConfig config = Config();
  config.ckpt.root = ckpt.path();
  config.ckpt.every = 2;  // every evaluated step
  config.ckpt.keep_last = 20;
  Watch watch;
  std::ostringstream log;
  auto out = RunTraining(config, log, {}, watch.Hooks());
  ASSERT_TRUE(out.ok()) << out.status().ToString() << "\n" << log.str();
  // Validation is read before training, the test split exactly once, after every training
  // step and every validation evaluation were reported.
  ASSERT_EQ(watch.Count("load:val"), 1);
  EXPECT_LT(watch.Last("load:val"), watch.First("train"));
  ASSERT_EQ(watch.Count("load:test"), 1) << log.str();
  EXPECT_GT(watch.Last("load:test"), watch.Last("train"));
  EXPECT_GT(watch.Last("load:test"), watch.Last("eval"));
  ASSERT_EQ(watch.Count("test"), 1);
  EXPECT_EQ(watch.Last("test"), watch.events.size() - 1);
  // Evaluated on the weights of validation's best evaluation, and reported as such.
  const nlohmann::json& summary = out->summary;
  const int64_t chosen = ValidationChoice(summary["eval_history"]);
  ASSERT_GT(chosen, 0);
  EXPECT_EQ(summary["test"]["selected_step"].get<int64_t>(), chosen);
  EXPECT_EQ(watch.test.at("selected_step"), static_cast<double>(chosen));
  // The two sets are different sets, and say so.
  EXPECT_EQ(summary["test"]["split"], "test");
  EXPECT_EQ(watch.test.at("set_clips"), 8);
  EXPECT_NE(watch.test.at("set_hash"), summary["eval_history"][0].value("set_hash", -1.0));
  // The test figures are those of the chosen weights: its checkpoint evaluated on the test
  // split gives them.
  auto store = Checkpointer::Open(config.ckpt, summary["trial_id"].get<std::string>(),
                                  summary["config_hash"].get<std::string>());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto test = Dataset::Load(config.data.path, "test", DataOptions(config));
  ASSERT_TRUE(test.ok()) << test.status().ToString();
  TrialConfig model_config = config;
  auto model = LoadModel(&model_config, test->tokenizer(), "");
  ASSERT_TRUE(model.ok());
  const Status loaded = (*store)->LoadModelAt(chosen, *model);
  ASSERT_TRUE(loaded.ok()) << loaded.ToString();
  auto crop = ParseEvalCrop(config.eval.crop);
  ASSERT_TRUE(crop.ok());
  const core::RetrievalMetrics direct =
      Evaluate(*model, *test, config.train.eval_batch_size, core::Precision::kFp32, *crop);
  EXPECT_EQ(direct.t2a_r1, watch.test.at("t2a_r1"));
  EXPECT_EQ(direct.a2t_r10, watch.test.at("a2t_r10"));
  EXPECT_EQ(direct.map10, watch.test.at("map10"));
}

TEST_F(SplitRoles, ValidationsChoiceMadeBeforeAResumeIsTheOneTested) {
  TrialConfig c = Config();
  Watch whole_watch;
  std::ostringstream log;
  auto whole = RunTraining(c, log, {}, whole_watch.Hooks());
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();

  flap::testing::TempDir ckpt("split_roles_ckpt");
  c.ckpt.root = ckpt.path();
  c.ckpt.every = 3;
  c.ckpt.keep_last = 1;
  c.ckpt.keep_best = 1;
  // Stopped after step 9, then resumed: whatever validation chose up to step 8 must be
  // tested from its checkpoint (saved when it was chosen, kept as the best).
  TrainingHooks first;
  int trains = 0;
  first.report = [&trains](const std::string& kind, int64_t, int64_t, int64_t, const std::map<std::string, double>&) {
    if (kind == "train") ++trains;
    return false;
  };
  first.should_stop = [&trains] { return trains >= 9; };
  std::ostringstream log1;
  auto stopped = RunTraining(c, log1, {}, first);
  ASSERT_TRUE(stopped.ok()) << stopped.status().ToString();
  ASSERT_TRUE(stopped->stopped);
  Watch resumed_watch;
  ResumeOptions resume;
  resume.resume = true;
  std::ostringstream log2;
  auto resumed = RunTraining(c, log2, resume, resumed_watch.Hooks());
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString() << "\n" << log2.str();
  // The choice was made before the stop (the weights then come from its checkpoint).
  EXPECT_LE(whole->summary["test"]["selected_step"].get<int64_t>(), 9);
  EXPECT_EQ(resumed->summary["test"]["selected_step"], whole->summary["test"]["selected_step"]) << log2.str();
  EXPECT_EQ(resumed_watch.test.at("map10"), whole_watch.test.at("map10"));
  EXPECT_EQ(resumed_watch.test.at("t2a_r1"), whole_watch.test.at("t2a_r1"));
  EXPECT_EQ(resumed->summary["test"].value("note", ""), "");
}

TEST_F(SplitRoles, ADatasetWithoutATestSplitTrainsAndSaysTestWasNotEvaluated) {
  flap::testing::TempDir old("split_roles_old");
  sharding::SynthOptions o = sharding::SmallSynth(32, 8, 0.5, 8);
  o.num_test = 0;
  ASSERT_TRUE(sharding::GenerateSynthetic(o, old / "data").ok());
  TrialConfig c = Config();
  c.data.path = old / "data";
  c.train.max_steps = 2;
  Watch watch;
  std::ostringstream log;
  auto out = RunTraining(c, log, {}, watch.Hooks());
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(watch.Count("test"), 0);
  EXPECT_EQ(out->summary["test"]["evaluated"], false);
  EXPECT_NE(out->summary["test"]["reason"].get<std::string>().find("test"), std::string::npos);
  EXPECT_NE(log.str().find("test: not evaluated"), std::string::npos) << log.str();
}

}  // namespace
}  // namespace flap::worker
