// Tests for coordinator/sweep.h: grid and random expansion (conditions, seeds, budget, ids)
// and its reproducibility.
#include "coordinator/sweep.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "coordinator/testing/sweep_test_util.h"

namespace flap::coordinator {
namespace {

using namespace sweep_testing;  // NOLINT: the sweep tests' own helpers

// ---------------------------------------------------------------------------------------------
// Grid expansion.

TEST(SweepGrid, ConditionDropsStrategyAtRatioZero) {
  std::vector<TrialSpec> trials = Expand(Parse(kAblation));
  // (1 + 2 * 2) cells of ratio x strategy, times 2 recon weights, times 3 seeds.
  ASSERT_EQ(trials.size(), 30u);
  std::set<std::map<std::string, std::string>> cells;
  for (const TrialSpec& t : trials) cells.insert(t.factors);
  EXPECT_EQ(cells.size(), 10u);
  int ratio_zero = 0;
  for (const TrialSpec& t : trials) {
    if (t.factors.at("mask.ratio") == "0") {
      ++ratio_zero;
      EXPECT_EQ(t.factors.count("mask.strategy"), 0u);
    } else {
      EXPECT_EQ(t.factors.count("mask.strategy"), 1u);
    }
  }
  EXPECT_EQ(ratio_zero, 2 * 3);  // 2 recon weights x 3 seeds
}

TEST(SweepGrid, WithoutConditionIsTheFullProduct) {
  std::string text = kAblation;
  text.replace(text.find("when = mask.ratio != 0\n"), 23, "");
  std::vector<TrialSpec> trials = Expand(Parse(text));
  EXPECT_EQ(trials.size(), 3u * 2u * 2u * 3u);
}

TEST(SweepGrid, IdsCellsAndSeedsAreCellMajor) {
  std::vector<TrialSpec> trials = Expand(Parse(kAblation));
  ASSERT_EQ(trials.size(), 30u);
  for (size_t i = 0; i < trials.size(); ++i) {
    char want[32];
    std::snprintf(want, sizeof(want), "t%04zu", i);
    EXPECT_EQ(trials[i].id, want);
    EXPECT_EQ(trials[i].cell, static_cast<int>(i / 3));
    EXPECT_EQ(trials[i].seed, i % 3 + 1);
    EXPECT_EQ(trials[i].factors, trials[i - i % 3].factors);  // replicates share the cell
  }
  // File order, first factor slowest: ratio 0 first, with both recon weights.
  EXPECT_EQ(trials[0].factors, (std::map<std::string, std::string>{{"mask.ratio", "0"}, {"loss.recon_weight", "0"}}));
  EXPECT_EQ(trials[3].factors, (std::map<std::string, std::string>{{"mask.ratio", "0"}, {"loss.recon_weight", "0.5"}}));
  EXPECT_EQ(trials[6].factors, (std::map<std::string, std::string>{
                                   {"mask.ratio", "0.5"}, {"mask.strategy", "1d"}, {"loss.recon_weight", "0"}}));
  EXPECT_EQ(trials[29].id, "t0029");
  EXPECT_EQ(trials[29].cell, 9);
}

TEST(SweepGrid, SameSpecAlwaysExpandsIdentically) {
  std::vector<TrialSpec> a = Expand(Parse(kAblation));
  std::vector<TrialSpec> b = Expand(Parse(kAblation));
  EXPECT_EQ(a, b);
}

TEST(SweepGrid, ConditionsCompareNumbersNumerically) {
  SweepSpec s = Parse(std::string(kHeader) +
                      "[factor.mask.ratio]\nvalues = 0.0, 0.5\n"
                      "[factor.mask.strategy]\nvalues = 1d, 2d\nwhen = mask.ratio != 0\n");
  EXPECT_EQ(Expand(s).size(), 1u + 2u);
}

TEST(SweepGrid, InAndEqualityConditions) {
  SweepSpec s = Parse(std::string(kHeader) +
                      "[factor.text.augment]\nvalues = off, on, 0.5\n"
                      "[factor.optim.lr]\nvalues = 1e-3, 3e-3\nwhen = text.augment in on, 0.5\n"
                      "[factor.loss.recon_weight]\nvalues = 0.5, 1\nwhen = text.augment == off\n");
  // off -> 2 recon weights; on -> 2 lrs; 0.5 -> 2 lrs.
  std::vector<TrialSpec> trials = Expand(s);
  ASSERT_EQ(trials.size(), 6u);
  for (const TrialSpec& t : trials) {
    bool off = t.factors.at("text.augment") == "off";
    EXPECT_EQ(t.factors.count("loss.recon_weight"), off ? 1u : 0u);
    EXPECT_EQ(t.factors.count("optim.lr"), off ? 0u : 1u);
  }
}

TEST(SweepGrid, ChainedConditionsFollowTheFactorTheyName) {
  // strategy applies when ratio != 0; augment applies when strategy == 2d. The condition may
  // name a factor written later in the file.
  SweepSpec s = Parse(std::string(kHeader) +
                      "[factor.text.augment]\nvalues = off, on\nwhen = mask.strategy == 2d\n"
                      "[factor.mask.ratio]\nvalues = 0, 0.5\n"
                      "[factor.mask.strategy]\nvalues = 1d, 2d\nwhen = mask.ratio != 0\n");
  std::vector<TrialSpec> trials = Expand(s);
  // ratio 0 (nothing else applies) + ratio 0.5 x {1d, 2d x {off, on}} = 1 + 1 + 2.
  ASSERT_EQ(trials.size(), 4u);
  for (const TrialSpec& t : trials) {
    auto strategy = t.factors.find("mask.strategy");
    bool is_2d = strategy != t.factors.end() && strategy->second == "2d";
    EXPECT_EQ(t.factors.count("text.augment"), is_2d ? 1u : 0u);
  }
}

TEST(SweepGrid, BudgetCapsTheGridSize) {
  std::string text = kAblation;
  text.replace(text.find("budget = 0"), 10, "budget = 9");
  std::vector<std::string> errors = Refuse(text);
  ASSERT_EQ(errors.size(), 1u) << Joined(errors);
  EXPECT_NE(errors[0].find("[sweep] budget: the grid has 10 cells, more than the budget of 9"), std::string::npos)
      << errors[0];
  text.replace(text.find("budget = 9"), 10, "budget = 10");
  EXPECT_EQ(Expand(Parse(text)).size(), 30u);
}

TEST(SweepGrid, RefusesAGridBeyondTheTrialLimit) {
  std::string text = std::string(kHeader);
  for (const char* key :
       {"train.epochs", "train.max_steps", "train.eval_every", "optim.warmup_steps", "optim.total_steps"}) {
    text += std::string("[factor.") + key + "]\nvalues = 1,2,3,4,5,6,7,8,9,10\n";
  }
  std::vector<std::string> errors = Refuse(text);  // 10^5 cells
  ASSERT_EQ(errors.size(), 1u) << Joined(errors);
  EXPECT_NE(errors[0].find("exceeds 10000 trials"), std::string::npos) << errors[0];
}

// ---------------------------------------------------------------------------------------------
// Random search.

TEST(SweepRandom, DrawsBudgetCellsWithinRangesTimesSeeds) {
  std::vector<TrialSpec> trials = Expand(Parse(kRandom));
  ASSERT_EQ(trials.size(), 16u);
  std::set<std::map<std::string, std::string>> cells;
  for (const TrialSpec& t : trials) {
    cells.insert(t.factors);
    ASSERT_EQ(t.factors.size(), 4u);
    double lr = std::stod(t.factors.at("optim.lr"));
    EXPECT_GE(lr, 1e-4);
    EXPECT_LE(lr, 1e-2);
    double ratio = std::stod(t.factors.at("mask.ratio"));
    EXPECT_GE(ratio, 0.25);
    EXPECT_LE(ratio, 0.9);
    const std::string& strategy = t.factors.at("mask.strategy");
    EXPECT_TRUE(strategy == "1d" || strategy == "2d") << strategy;
    const std::string& batch = t.factors.at("train.batch_size");
    EXPECT_EQ(batch.find_first_not_of("0123456789"), std::string::npos) << batch;
    EXPECT_GE(std::stoi(batch), 8);
    EXPECT_LE(std::stoi(batch), 64);
  }
  EXPECT_EQ(cells.size(), 8u);
  EXPECT_EQ(trials[15].id, "t0015");
  EXPECT_EQ(trials[15].cell, 7);
  EXPECT_EQ(trials[15].seed, 2u);
}

TEST(SweepRandom, LogUniformSpreadsOverDecades) {
  std::string text = kRandom;
  text.replace(text.find("budget = 8"), 10, "budget = 400");
  std::vector<TrialSpec> trials = Expand(Parse(text));
  ASSERT_EQ(trials.size(), 800u);
  int below_1e3 = 0;
  for (size_t i = 0; i < trials.size(); i += 2) {
    if (std::stod(trials[i].factors.at("optim.lr")) < 1e-3) ++below_1e3;
  }
  // Log-uniform over [1e-4, 1e-2]: half the draws below 1e-3 (uniform would give ~9%).
  EXPECT_GT(below_1e3, 150);
  EXPECT_LT(below_1e3, 250);
}

TEST(SweepRandom, ReproducibleFromTheSearchSeed) {
  std::vector<TrialSpec> a = Expand(Parse(kRandom));
  std::vector<TrialSpec> b = Expand(Parse(kRandom));
  EXPECT_EQ(a, b);
  std::string other = kRandom;
  other.replace(other.find("search_seed = 42"), 16, "search_seed = 43");
  std::vector<TrialSpec> c = Expand(Parse(other));
  ASSERT_EQ(c.size(), a.size());
  EXPECT_NE(c[0].factors, a[0].factors);
}

TEST(SweepRandom, BudgetIsAnUpperBoundWhenTheSpaceIsSmall) {
  std::vector<TrialSpec> trials =
      Expand(Parse("[sweep]\nname = s\nsearch = random\nbudget = 5\n"
                   "[factor.mask.strategy]\nvalues = 1d, 2d\n"));
  EXPECT_EQ(trials.size(), 2u);  // only two distinct cells exist
}

TEST(SweepRandom, ConditionsApplyToDraws) {
  std::vector<TrialSpec> trials =
      Expand(Parse("[sweep]\nname = s\nsearch = random\nbudget = 5\n"
                   "[factor.mask.ratio]\nvalues = 0, 0.5\n"
                   "[factor.mask.strategy]\nvalues = 1d, 2d\nwhen = mask.ratio != 0\n"));
  ASSERT_EQ(trials.size(), 3u);  // {0}, {0.5, 1d}, {0.5, 2d}
  for (const TrialSpec& t : trials) {
    EXPECT_EQ(t.factors.count("mask.strategy"), t.factors.at("mask.ratio") == "0" ? 0u : 1u);
  }
}

}  // namespace
}  // namespace flap::coordinator
