// Compute budgets of a trial (train.max_steps, train.max_seconds, train.max_samples,
// train.max_flops): the first budget reached ends the trial, evaluation time is not training
// time, the counters carry over a resume, every rank of a group stops at the same step, and
// evaluation runs once per group; the learning-rate schedule is fitted to the budget that binds.
// The time budget runs on a clock the test drives (TrainingHooks::clock): 10 s per training
// step, 1000 s per evaluation, so that nothing here depends on how fast the machine is.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "sharding/synth.h"
#include "tests/test_util.h"
#include "config/trial_config.h"
#include "worker/core/launcher.h"
#include "worker/core/masking.h"
#include "worker/core/model.h"
#include "worker/core/worker_group.h"
#include "worker/trainer.h"
#include "worker/testing/trainer_test_util.h"

namespace flap::worker {
namespace {

class Budget : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new flap::testing::TempDir("budget");
    // 4 shards: 2 per rank in a group of 2
    const sharding::SynthOptions synth = sharding::SmallSynth(32, 4, 0.5, 8);
    ASSERT_TRUE(sharding::GenerateSynthetic(synth, (*dir_) / "data").ok());
  }
  static void TearDownTestSuite() { delete dir_; }

  // A small model on 4 samples per rank; 8 steps per epoch on one rank, many epochs, a
  // progress record every step (the test clock advances there).
  static TrialConfig Config() {
    TrialConfig c = SmallTrialConfig((*dir_) / "data");
    c.mask.ratio = 0.5;
    return c;
  }

  // The test clock: 10 s per training record, 1000 s per evaluation record.
  struct FakeClock {
    double now = 0;
    void Attach(TrainingHooks* h) {
      h->clock = [this] { return now; };
      h->report = [this](const std::string& kind, int64_t, int64_t, int64_t, const std::map<std::string, double>&) {
        now += kind == "train" ? 10.0 : 1000.0;
        return false;
      };
    }
  };

  static StatusOr<TrainOutcome> Train(const TrialConfig& c, const ResumeOptions& resume = {},
                                      TrainingHooks hooks = {}) {
    FakeClock clock;
    if (!hooks.clock) clock.Attach(&hooks);
    std::ostringstream log;
    auto out = RunTraining(c, log, resume, hooks);
    if (!out.ok()) ADD_FAILURE() << out.status().ToString() << "\n" << log.str();
    return out;
  }

  static std::vector<double> History(const TrainOutcome& o, const std::string& key) {
    std::vector<double> v;
    for (const auto& e : o.summary["eval_history"]) v.push_back(e.at(key).get<double>());
    return v;
  }

  // Every training record's values by step (log_every 1: one per step), on the test clock.
  struct Recorder {
    double now = 0;
    std::map<int64_t, std::map<std::string, double>> train;
    TrainingHooks Hooks() {
      TrainingHooks h;
      h.clock = [this] { return now; };
      h.report = [this](const std::string& kind, int64_t step, int64_t, int64_t,
                        const std::map<std::string, double>& v) {
        now += kind == "train" ? 10.0 : 1000.0;
        if (kind == "train") train[step] = v;
        return false;
      };
      return h;
    }
    std::vector<double> Series(const std::string& key) const {
      std::vector<double> out;
      for (const auto& [step, v] : train) out.push_back(v.at(key));
      return out;
    }
  };

  static flap::testing::TempDir* dir_;
};
flap::testing::TempDir* Budget::dir_ = nullptr;

TEST_F(Budget, ConfigKeysValidateAndKeepEarlierHashesAtTheirDefaults) {
  TrialConfig c = Config();
  const std::string before = c.Hash();
  bool help = false;
  std::string text;
  TrialConfig parsed;
  ASSERT_TRUE(ParseTrialConfig({"--train.max_seconds", "0", "--train.max_samples", "0"}, &parsed, &help, &text).ok());
  TrialConfig plain;
  EXPECT_EQ(parsed.Hash(), plain.Hash());  // at 0 (no budget) the hash is the one from before the keys
  c.train.max_seconds = 60;
  EXPECT_NE(c.Hash(), before);
  c.train.max_seconds = 0;
  c.train.max_samples = 1000;
  EXPECT_NE(c.Hash(), before);
  TrialConfig bad;
  Status s = ParseTrialConfig({"--train.max_seconds", "-1"}, &bad, &help, &text);
  EXPECT_NE(s.message().find("train.max_seconds"), std::string::npos) << s.ToString();
  TrialConfig bad2;
  s = ParseTrialConfig({"--train.max_samples", "-5"}, &bad2, &help, &text);
  EXPECT_NE(s.message().find("train.max_samples"), std::string::npos) << s.ToString();
  ASSERT_TRUE(ParseTrialConfig({"--help"}, &bad, &help, &text).ok());
  EXPECT_NE(text.find("train.max_seconds"), std::string::npos);
  EXPECT_NE(text.find("train.max_samples"), std::string::npos);
}

TEST_F(Budget, TrialStopsAtTheFirstBudgetReached) {
  // Steps alone.
  TrialConfig c = Config();
  c.train.max_steps = 3;
  auto steps = Train(c);
  ASSERT_TRUE(steps.ok());
  EXPECT_EQ(steps->steps_done, 3);
  EXPECT_EQ(steps->budget_reached, "steps");
  EXPECT_EQ(steps->samples_seen, 12);

  // Seconds alone: 10 s a step, budget 35 s: the step that starts at 30 s runs, the one at
  // 40 s does not. The evaluation at step 2 takes 1000 s of the clock, which is not training.
  c = Config();
  c.train.max_seconds = 35;
  c.train.eval_every = 2;
  auto seconds = Train(c);
  ASSERT_TRUE(seconds.ok());
  EXPECT_EQ(seconds->steps_done, 4);
  EXPECT_EQ(seconds->budget_reached, "seconds");
  EXPECT_DOUBLE_EQ(seconds->train_seconds, 40.0);
  EXPECT_EQ(seconds->summary["budget"]["reached"], "seconds");
  // Evaluations at steps 2 and 4 (the last one is not repeated at the end), each recording the
  // training seconds and samples it was made at, and its own time apart.
  EXPECT_EQ(History(*seconds, "step"), (std::vector<double>{2, 4}));
  EXPECT_EQ(History(*seconds, "train_seconds"), (std::vector<double>{20, 40}));
  EXPECT_EQ(History(*seconds, "samples"), (std::vector<double>{8, 16}));
  EXPECT_EQ(History(*seconds, "eval_seconds"), (std::vector<double>{0, 0}));  // the clock stands still in Evaluate

  // Samples alone: 10 samples at 4 a step need 3 steps.
  c = Config();
  c.train.max_samples = 10;
  auto samples = Train(c);
  ASSERT_TRUE(samples.ok());
  EXPECT_EQ(samples->steps_done, 3);
  EXPECT_EQ(samples->budget_reached, "samples");
  EXPECT_EQ(samples->samples_seen, 12);

  // All three: whichever comes first.
  c = Config();
  c.train.max_steps = 5;
  c.train.max_seconds = 35;
  c.train.max_samples = 10;
  auto all = Train(c);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->steps_done, 3);
  EXPECT_EQ(all->budget_reached, "samples");
  c.train.max_samples = 100;
  auto time_first = Train(c);
  ASSERT_TRUE(time_first.ok());
  EXPECT_EQ(time_first->steps_done, 4);
  EXPECT_EQ(time_first->budget_reached, "seconds");
  c.train.max_steps = 2;
  auto steps_first = Train(c);
  ASSERT_TRUE(steps_first.ok());
  EXPECT_EQ(steps_first->steps_done, 2);
  EXPECT_EQ(steps_first->budget_reached, "steps");
}

TEST_F(Budget, ResumedTrialContinuesItsSecondsAndSamples) {
  TrialConfig c = Config();
  c.train.max_seconds = 35;
  auto whole = Train(c);
  ASSERT_TRUE(whole.ok());
  ASSERT_EQ(whole->steps_done, 4);

  // The same trial with checkpoints, stopped after 2 steps (20 s trained).
  flap::testing::TempDir ckpt("budget_ckpt");
  c.ckpt.root = ckpt.path();
  c.ckpt.every = 1;
  c.ckpt.keep_last = 10;
  FakeClock first;
  TrainingHooks hooks;
  first.Attach(&hooks);
  hooks.should_stop = [&first] { return first.now >= 20; };
  auto stopped = Train(c, {}, hooks);
  ASSERT_TRUE(stopped.ok());
  ASSERT_TRUE(stopped->stopped);
  ASSERT_EQ(stopped->steps_done, 2);

  // Resumed on a fresh clock: 20 s are already spent, so two more steps end it at step 4, as
  // the uninterrupted run ended (a resume that forgot them would train to step 6).
  ResumeOptions resume;
  resume.resume = true;
  auto resumed = Train(c, resume);
  ASSERT_TRUE(resumed.ok());
  EXPECT_EQ(resumed->summary["resumed_from_step"], 2);
  EXPECT_EQ(resumed->steps_done, 4);
  EXPECT_EQ(resumed->budget_reached, "seconds");
  EXPECT_DOUBLE_EQ(resumed->train_seconds, 40.0);
  EXPECT_EQ(resumed->samples_seen, 16);
  EXPECT_EQ(History(*resumed, "train_seconds"), (std::vector<double>{40}));
  EXPECT_EQ(History(*resumed, "samples"), (std::vector<double>{16}));
  // And it ends where the uninterrupted run did.
  auto a = whole->model->named_parameters();
  auto b = resumed->model->named_parameters();
  for (const auto& p : a) EXPECT_TRUE(torch::equal(p.value(), b[p.key()])) << p.key();
}

// Two ranks of one group, each a thread of this process. Only rank 0's clock moves: a rank that
// decided by its own clock would never stop (and the group would hang or fail at the next
// collective), so both stopping at step 4 shows the group follows rank 0's decision. Rank 0
// evaluates; rank 1 computes no evaluation and receives rank 0's metrics.
TEST_F(Budget, GroupStopsTogetherOnRankZerosClockAndEvaluatesOnce) {
  TrialConfig c = Config();
  c.train.max_seconds = 35;
  c.train.eval_every = 2;
  c.dist.timeout = 60;
  const int port = flap::testing::FreePort();
  std::vector<StatusOr<TrainOutcome>> outcomes(2, Status::Internal("not run"));
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      core::Rendezvous rv;
      rv.launcher = core::Launcher::kEnv;
      rv.rank = r;
      rv.world_size = 2;
      rv.master_port = port;
      core::GroupOptions go;
      go.timeout_s = 60;
      auto group = core::WorkerGroup::Create(rv, go);
      if (!group.ok()) {
        outcomes[r] = group.status();
        return;
      }
      TrainingHooks hooks;
      hooks.group = group->get();
      FakeClock clock;
      if (r == 0) {
        clock.Attach(&hooks);
      } else {
        hooks.clock = [] { return 0.0; };  // stands still
      }
      std::ostringstream log;
      outcomes[r] = RunTraining(c, log, {}, hooks);
      EXPECT_OK((*group)->Shutdown());
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) ASSERT_TRUE(outcomes[r].ok()) << "rank " << r << ": " << outcomes[r].status().ToString();
  const TrainOutcome& r0 = *outcomes[0];
  const TrainOutcome& r1 = *outcomes[1];
  EXPECT_EQ(r0.steps_done, 4);
  EXPECT_EQ(r1.steps_done, 4);
  EXPECT_EQ(r0.budget_reached, "seconds");
  EXPECT_EQ(r1.budget_reached, "seconds");
  EXPECT_EQ(r0.samples_seen, 32);  // 4 steps of 2 ranks x 4
  EXPECT_EQ(r1.samples_seen, 32);
  // Evaluation ran once per evaluation point, on rank 0, and rank 1 has its results.
  EXPECT_EQ(r0.evaluations_computed, 2);
  EXPECT_EQ(r1.evaluations_computed, 0);
  EXPECT_EQ(r1.final_metrics.num_clips, 4);
  EXPECT_EQ(r1.final_metrics.num_captions, r0.final_metrics.num_captions);
  EXPECT_EQ(r1.final_metrics.t2a_r1, r0.final_metrics.t2a_r1);
  EXPECT_EQ(r1.final_metrics.a2t_r10, r0.final_metrics.a2t_r10);
  EXPECT_EQ(r1.final_metrics.map10, r0.final_metrics.map10);
  EXPECT_EQ(History(r0, "train_seconds"), (std::vector<double>{20, 40}));
  EXPECT_EQ(History(r1, "step"), (std::vector<double>{2, 4}));
}

// FLOPs are counted per step from what it computed (the kept tokens, the caption width of its
// batch) and the FLOPs budget ends the trial at the first step boundary at or past it.
TEST_F(Budget, FlopsBudgetCountsWhatEachStepComputedAndEndsAtTheFirstStepPastIt) {
  TrialConfig c = Config();
  c.train.max_steps = 4;
  Recorder rec;
  auto four = Train(c, {}, rec.Hooks());
  ASSERT_TRUE(four.ok());
  const std::vector<double> flops = rec.Series("flops");  // after steps 1..4
  ASSERT_EQ(flops.size(), 4u);
  const int kept = core::NumKept(c.mask, {c.model.freq_patches(), c.model.time_patches()});
  double before = 0;
  for (size_t i = 0; i < flops.size(); ++i) {
    // Each step's FLOPs are the hand formula's for its batch's caption width (1..8 tokens).
    bool matches = false;
    for (int width = 1; width <= c.model.text_max_len; ++width) {
      matches = matches || flops[i] - before == core::TrainStepFlops(c.model, 4, kept, width, false);
    }
    EXPECT_TRUE(matches) << "step " << i + 1 << ": " << flops[i] - before << " FLOPs";
    before = flops[i];
  }
  EXPECT_EQ(four->summary["budget"]["flops"].get<double>(), flops[3]);

  // A budget between the FLOPs after steps 2 and 3: step 3 runs, step 4 does not.
  c.train.max_steps = 0;
  c.train.max_flops = 0.5 * (flops[1] + flops[2]);
  auto budget = Train(c);
  ASSERT_TRUE(budget.ok());
  EXPECT_EQ(budget->steps_done, 3);
  EXPECT_EQ(budget->budget_reached, "flops");
  EXPECT_EQ(budget->summary["budget"]["flops"].get<double>(), flops[2]);

  // At equal FLOPs an arm that drops more tokens runs more steps.
  TrialConfig masked = c;
  masked.mask.ratio = 0.75;
  masked.train.max_flops = flops[3];
  TrialConfig unmasked = c;
  unmasked.mask.ratio = 0;
  unmasked.train.max_flops = flops[3];
  auto m = Train(masked);
  auto u = Train(unmasked);
  ASSERT_TRUE(m.ok() && u.ok());
  EXPECT_GT(m->steps_done, u->steps_done);
  EXPECT_EQ(m->budget_reached, "flops");
  EXPECT_EQ(u->budget_reached, "flops");
}

// Unless optim.total_steps is set, the cosine reaches optim.min_lr exactly when the budget that
// binds is spent: steps, samples, FLOPs or seconds (steps fitted from the measured rate).
TEST_F(Budget, ScheduleReachesItsFloorExactlyAtTheBudgetOfEachKind) {
  TrialConfig base = Config();
  base.optim.lr = 1e-3;
  base.optim.min_lr = 1e-4;
  base.optim.warmup_steps = 2;
  // The FLOPs of 20 steps, from a run without a budget but steps.
  TrialConfig probe = base;
  probe.train.max_steps = 20;
  Recorder probe_rec;
  ASSERT_TRUE(Train(probe, {}, probe_rec.Hooks()).ok());
  const double flops20 = probe_rec.Series("flops").back();

  struct Case {
    std::string budget;
    std::function<void(TrialConfig*)> set;
  };
  const std::vector<Case> cases = {
      {"steps", [](TrialConfig* c) { c->train.max_steps = 20; }},
      {"samples", [](TrialConfig* c) { c->train.max_samples = 78; }},  // 20 steps of 4
      {"flops", [&](TrialConfig* c) { c->train.max_flops = flops20 * (1 - 1e-9); }},
      // 10 s a step on the test clock: the rate measured over steps 1-11 fits 20 steps to 200 s.
      {"seconds", [](TrialConfig* c) { c->train.max_seconds = 200; }},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.budget);
    TrialConfig c = base;
    k.set(&c);
    Recorder rec;
    auto out = Train(c, {}, rec.Hooks());
    ASSERT_TRUE(out.ok());
    EXPECT_EQ(out->steps_done, 20);
    EXPECT_EQ(out->budget_reached, k.budget);
    const nlohmann::json& schedule = out->summary["schedule"];
    EXPECT_EQ(schedule["progress"].get<double>(), 1.0);
    EXPECT_EQ(schedule["lr"].get<double>(), c.optim.min_lr);
    if (k.budget == "seconds") {
      EXPECT_EQ(schedule["fitted_steps"].get<int64_t>(), 20);
    }
    // Warm-up, then a cosine that only goes down and has not reached the floor before the end.
    const std::vector<double> lr = rec.Series("lr");
    ASSERT_EQ(lr.size(), 20u);
    EXPECT_DOUBLE_EQ(lr[0], 0.5e-3);
    EXPECT_DOUBLE_EQ(lr[1], 1e-3);
    for (size_t i = 2; i < lr.size(); ++i) EXPECT_LE(lr[i], lr[i - 1]) << "step " << i;
    EXPECT_GT(lr.back(), c.optim.min_lr);
    EXPECT_LT(lr.back(), 2e-4);  // one step before the floor
  }
}

// A FLOPs-budgeted trial stopped and resumed ends at the same step with the same weights, and a
// time-budgeted one keeps the step count it fitted before the stop.
TEST_F(Budget, ResumedTrialKeepsItsFlopsAndItsFittedSchedule) {
  TrialConfig c = Config();
  Recorder probe_rec;
  TrialConfig probe = c;
  probe.train.max_steps = 6;
  ASSERT_TRUE(Train(probe, {}, probe_rec.Hooks()).ok());
  c.train.max_flops = probe_rec.Series("flops")[5] * (1 - 1e-9);  // 6 steps
  for (const std::string budget : {"flops", "seconds"}) {
    SCOPED_TRACE(budget);
    TrialConfig t = c;
    if (budget == "seconds") {
      t.train.max_flops = 0;
      t.train.max_seconds = 200;  // 20 steps fitted at step 11
    }
    auto whole = Train(t);
    ASSERT_TRUE(whole.ok());
    const int64_t steps = budget == "flops" ? 6 : 20;
    ASSERT_EQ(whole->steps_done, steps);

    flap::testing::TempDir ckpt("budget_flops_ckpt");
    t.ckpt.root = ckpt.path();
    t.ckpt.every = 1;
    t.ckpt.keep_last = 30;
    const int64_t stop_at = budget == "flops" ? 3 : 14;
    Recorder first;
    TrainingHooks hooks = first.Hooks();
    hooks.should_stop = [&first, stop_at] { return first.train.count(stop_at) > 0; };
    auto stopped = Train(t, {}, hooks);
    ASSERT_TRUE(stopped.ok());
    ASSERT_EQ(stopped->steps_done, stop_at);

    ResumeOptions resume;
    resume.resume = true;
    auto resumed = Train(t, resume);  // on a fresh clock
    ASSERT_TRUE(resumed.ok());
    EXPECT_EQ(resumed->summary["resumed_from_step"], stop_at);
    EXPECT_EQ(resumed->steps_done, steps);
    EXPECT_EQ(resumed->budget_reached, budget);
    EXPECT_EQ(resumed->summary["budget"]["flops"], whole->summary["budget"]["flops"]);
    EXPECT_EQ(resumed->summary["schedule"], whole->summary["schedule"]);
    auto a = whole->model->named_parameters();
    auto b = resumed->model->named_parameters();
    for (const auto& p : a) EXPECT_TRUE(torch::equal(p.value(), b[p.key()])) << p.key();
  }
}

// Extra evaluations (ASHA's rungs) counted in FLOPs land at the first step boundary at or past
// each point.
TEST_F(Budget, RungsInFlopsEvaluateAtTheFirstStepPastEachPoint) {
  TrialConfig c = Config();
  c.train.max_steps = 5;
  Recorder probe;
  ASSERT_TRUE(Train(c, {}, probe.Hooks()).ok());
  const std::vector<double> flops = probe.Series("flops");
  TrainingHooks hooks;
  hooks.eval_unit = "flops";
  hooks.eval_at = {0.5 * (flops[0] + flops[1]), flops[3]};  // inside step 2; exactly after step 4
  auto out = Train(c, {}, hooks);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(History(*out, "step"), (std::vector<double>{2, 4, 5}));
  EXPECT_EQ(History(*out, "flops"), (std::vector<double>{flops[1], flops[3], flops[4]}));
}

}  // namespace
}  // namespace flap::worker
