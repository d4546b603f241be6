// Tests for coordinator/sweep.h: a valid file read field by field, conditions, specs built in
// code, report targets, trial ids and config values. Expansion is tested in
// sweep_expand_test.cc, refused files in sweep_errors_test.cc, stored specs in
// state_store_test.cc.
#include "coordinator/sweep.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "common/testing/testing.h"
#include "coordinator/testing/sweep_test_util.h"

namespace flap::coordinator {
namespace {

using namespace sweep_testing;  // NOLINT: the sweep tests' own helpers

// ---------------------------------------------------------------------------------------------
// Parsing a valid file.

TEST(SweepParse, ReadsEveryField) {
  SweepSpec s = Parse(kAblation);
  EXPECT_EQ(s.name, "mask-ablation");
  EXPECT_EQ(s.search, SearchKind::kGrid);
  EXPECT_EQ(s.budget, 0);
  EXPECT_EQ(s.seeds, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(s.priority, 5);
  EXPECT_EQ(s.base_config, "configs/tiny.ini");
  ASSERT_EQ(s.factors.size(), 3u);
  EXPECT_EQ(s.factors[0].name, "mask.ratio");
  EXPECT_EQ(s.factors[0].values, (std::vector<std::string>{"0", "0.5", "0.75"}));
  ASSERT_TRUE(s.factors[1].when.has_value());
  EXPECT_EQ(s.factors[1].when->factor, "mask.ratio");
  EXPECT_EQ(s.factors[1].when->op, Condition::Op::kNe);
  EXPECT_EQ(s.factors[1].when->ToString(), "mask.ratio != 0");
  ASSERT_TRUE(s.asha.has_value());
  EXPECT_EQ(s.asha->metric, "map10");
  EXPECT_EQ(s.asha->rungs, (std::vector<double>{100, 200, 400}));
  EXPECT_EQ(s.asha->reduction, 3);
}

TEST(SweepParse, AshaRungsInTheSweepsBudgetUnit) {
  const std::string asha = "[asha]\nmetric = map10\nrungs = 2.5e12, 5e12\n";
  SweepSpec s = Parse(std::string(kHeader) + "[factor.mask.ratio]\nvalues = 0, 0.75\n" + asha);
  EXPECT_EQ(s.asha->rungs, (std::vector<double>{2.5e12, 5e12}));
  EXPECT_EQ(s.asha->unit, "");  // not said: filled in at submission from the budget
  // A base config with a FLOPs budget counts rungs in FLOPs...
  SweepSpec flops = s;
  ResolveAshaUnit(&flops, "[train]\nmax_flops = 1e13\n");
  EXPECT_EQ(flops.asha->unit, "flops");
  // ... as does a sweep that varies the FLOPs budget; other sweeps count steps.
  SweepSpec varied = Parse(std::string(kHeader) + "[factor.train.max_flops]\nvalues = 1e13, 2e13\n" + asha);
  ResolveAshaUnit(&varied, "");
  EXPECT_EQ(varied.asha->unit, "flops");
  SweepSpec steps = Parse(std::string(kHeader) + "[factor.mask.ratio]\nvalues = 0\n[asha]\nmetric = map10\nrungs = 20\n");
  ResolveAshaUnit(&steps, "[train]\nmax_seconds = 60\n");
  EXPECT_EQ(steps.asha->unit, "steps");
  // A unit the file names stays.
  SweepSpec named = Parse(std::string(kHeader) + "[factor.mask.ratio]\nvalues = 0\n[asha]\nmetric = map10\nunit = "
                          "seconds\nrungs = 30, 60\n");
  ResolveAshaUnit(&named, "[train]\nmax_flops = 1e13\n");
  EXPECT_EQ(named.asha->unit, "seconds");
  EXPECT_EQ(named.asha->rungs, (std::vector<double>{30, 60}));
}

TEST(SweepParse, DefaultsApplyWhenKeysAreAbsent) {
  SweepSpec s = Parse(std::string(kHeader) + "[factor.mask.ratio]\nvalues = 0.5\n");
  EXPECT_EQ(s.search, SearchKind::kGrid);
  EXPECT_EQ(s.seeds, (std::vector<uint64_t>{1}));
  EXPECT_EQ(s.priority, 0);
  EXPECT_FALSE(s.asha.has_value());
}

TEST(SweepParse, AcceptsUnknownTrainerFieldsAsText) {
  SweepSpec s = Parse(std::string(kHeader) +
                      "[factor.train.batch_size]\nvalues = 16, 32\n"
                      "[factor.text.augment]\nvalues = off, on, 0.5\n"
                      "[factor.model.preset]\nvalues = tiny, base\n");
  EXPECT_EQ(Expand(s).size(), 2u * 3u * 2u);
}

TEST(SweepFile, ReadsAFileAndNamesMissingOnes) {
  const std::string path = ::testing::TempDir() + "/flap_sweep_test.ini";
  {
    std::ofstream out(path);
    out << kAblation;
  }
  auto s = ParseSweepFile(path);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->name, "mask-ablation");
  std::remove(path.c_str());
  auto missing = ParseSweepFile(path);
  EXPECT_EQ(missing.status().code(), Status::Code::kNotFound);
  EXPECT_NE(missing.status().message().find(path), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Conditions, specs built in code, JSON.

TEST(Condition, ParsesTheThreeForms) {
  auto eq = ParseCondition("  mask.strategy == 2d ");
  ASSERT_TRUE(eq.ok());
  EXPECT_EQ(eq->op, Condition::Op::kEq);
  EXPECT_EQ(eq->factor, "mask.strategy");
  EXPECT_EQ(eq->values, (std::vector<std::string>{"2d"}));
  auto ne = ParseCondition("mask.ratio!=0");
  ASSERT_TRUE(ne.ok());
  EXPECT_EQ(ne->op, Condition::Op::kNe);
  auto in = ParseCondition("text.augment in on, 0.5");
  ASSERT_TRUE(in.ok());
  EXPECT_EQ(in->op, Condition::Op::kIn);
  EXPECT_EQ(in->values, (std::vector<std::string>{"on", "0.5"}));
  EXPECT_EQ(in->ToString(), "text.augment in on, 0.5");
  EXPECT_TRUE(in->HoldsFor("0.50"));
  EXPECT_FALSE(in->HoldsFor("off"));
  EXPECT_FALSE(in->Holds({{"mask.ratio", "0.5"}}));  // text.augment absent: false
  EXPECT_FALSE(ne->Holds({}));                       // even for !=
}

TEST(SweepSpecCode, ValidateAndExpandASpecBuiltInCode) {
  SweepSpec s;
  s.name = "coded";
  s.seeds = {7};
  FactorSpec ratio;
  ratio.name = "mask.ratio";
  ratio.values = {"0", "0.5"};
  s.factors.push_back(ratio);
  EXPECT_TRUE(ValidateSweep(s, "coded").ok());
  std::vector<TrialSpec> trials = Expand(s);
  ASSERT_EQ(trials.size(), 2u);
  EXPECT_EQ(trials[1].seed, 7u);
  ratio.values = {"0.75"};
  s.factors.push_back(ratio);
  Status bad = ValidateSweep(s, "coded");
  EXPECT_NE(bad.message().find("coded: [factor.mask.ratio]: the factor appears twice"), std::string::npos)
      << bad.message();
  EXPECT_EQ(ExpandSweep(s).status().code(), Status::Code::kInvalidArgument);
}

TEST(SweepReport, TargetIsAMetricAndAFractionOrPercentage) {
  SweepSpec s = Parse(std::string(kAblation) + "\n[report]\ntarget = t2a_r1:0.30\n");
  ASSERT_TRUE(s.report_target.has_value());
  EXPECT_EQ(s.report_target->metric, "t2a_r1");
  EXPECT_DOUBLE_EQ(s.report_target->value, 0.30);
  SweepSpec pct = Parse(std::string(kAblation) + "\n[report]\ntarget = map10 : 12.5%\n");
  ASSERT_TRUE(pct.report_target.has_value());
  EXPECT_EQ(pct.report_target->metric, "map10");
  EXPECT_DOUBLE_EQ(pct.report_target->value, 0.125);
  EXPECT_FALSE(Parse(kAblation).report_target.has_value());

  EXPECT_EQ(s.report_target->ToString(), "t2a_r1:0.3");  // as the journal keeps it

  for (const char* bad : {"t2a_r1", "t2a_r1:30", "t2a_r1:0", "T2A:0.3", "t2a_r1:x", "t2a_r1:150%"}) {
    std::vector<std::string> errors = Refuse(std::string(kAblation) + "\n[report]\ntarget = " + bad + "\n");
    ASSERT_EQ(errors.size(), 1u) << bad << ": " << Joined(errors);
    EXPECT_NE(errors[0].find("[report] target: "), std::string::npos) << errors[0];
  }
  std::vector<std::string> unknown = Refuse(std::string(kAblation) + "\n[report]\nmetric = map10\n");
  ASSERT_EQ(unknown.size(), 1u) << Joined(unknown);
  EXPECT_NE(unknown[0].find("unknown key 'metric' ([report] takes target)"), std::string::npos) << unknown[0];
}

TEST(TrialId, IsZeroPaddedAndGrowsPast9999) {
  EXPECT_EQ(TrialId(7), "t0007");
  EXPECT_EQ(TrialId(9999), "t9999");
  EXPECT_EQ(TrialId(10000), "t10000");
}

TEST(ConfigValues, ReadsEveryKeyOfATrialConfigWithTheConfigParser) {
  const auto v = ConfigValues(
      "# a trial config\n[model]\npreset = tiny\n\n[mask]\nratio = 0.75   # comment\nstrategy = 2d\n"
      "[text]\naugment = on\n");
  EXPECT_EQ(v, (std::map<std::string, std::string>{
                   {"model.preset", "tiny"}, {"mask.ratio", "0.75"}, {"mask.strategy", "2d"}, {"text.augment", "on"}}));
  EXPECT_TRUE(ConfigValues("").empty());
  EXPECT_TRUE(ConfigValues("[mask]\nratoi = 0.5\n").empty());  // does not parse
}

// A key renamed to its struct path (config/trial_config.h, ConfigKey::alias): its earlier name
// is refused in a new sweep file, naming the current key, but a sweep stored before the rename
// reads back, and its trials reach workers under the current name.
TEST(SweepAliases, EarlierKeyNamesAreRefusedInNewSweepsAndReadInStoredOnes) {
  std::vector<std::string> errors = Refuse(std::string(kHeader) + "[factor.recon.weight]\nvalues = 0, 0.5\n");
  ASSERT_EQ(errors.size(), 1u) << Joined(errors);
  EXPECT_EQ(errors[0],
            "bad.ini:3: [factor.recon.weight]: recon.weight is the earlier name of loss.recon_weight, still read in "
            "trial configs but not in a new sweep: write [factor.loss.recon_weight]");
  EXPECT_EQ(ValidateSweep(Parse(std::string(kHeader) + "[factor.model.recon_source]\nvalues = pooled\n"), "s").code(),
            Status::Code::kOk);

  // A sweep stored before the rename (StateStore.ASweepStoredUnderAKeysEarlierNameReadsBack)
  // names the factor recon.weight: its trials go out under the current name.
  TrialSpec trial;
  trial.id = "t0001";
  trial.factors = {{"recon.weight", "0.5"}};
  trial.seed = 1;
  const std::map<std::string, std::string> overrides = TrialOverrides("s", trial);
  EXPECT_EQ(overrides.at("loss.recon_weight"), "0.5");
  EXPECT_EQ(overrides.count("recon.weight"), 0u);
  // Over a base config that sets the key under either name, the trial's value wins.
  for (const char* base : {"[loss]\nrecon_weight = 1\n", "[recon]\nweight = 1\n"}) {
    ASSERT_OK_AND_ASSIGN(auto values, TrialConfigValues(base, "base", "s", trial));
    EXPECT_EQ(values.at("loss.recon_weight"), "0.5") << base;
    EXPECT_EQ(values.count("recon.weight"), 0u) << base;
  }
  // Its value for a key (the metrics' factor labels): by the current name, the factor first.
  const std::map<std::string, std::string> base = ConfigValues("[recon]\nweight = 1\n[text]\naugment = on\n");
  EXPECT_EQ(TrialSweepValue(base, trial, "loss.recon_weight"), std::optional<std::string>("0.5"));
  EXPECT_EQ(TrialSweepValue(base, trial, "text.augment"), std::optional<std::string>("on"));
  EXPECT_EQ(TrialSweepValue(base, trial, "recon.weight"), std::nullopt);
  EXPECT_EQ(TrialSweepValue(base, trial, "mask.ratio"), std::nullopt);
}

TEST(CheckTrialConfigs, NamesTheFirstTrialOfEachProblem) {
  const SweepSpec spec = Parse("[sweep]\nname = s\nseeds = 1, 2\n\n[factor.mask.ratio]\nvalues = 0, 0.5\n");
  const std::vector<TrialSpec> trials = Expand(spec);
  EXPECT_OK(CheckTrialConfigs(spec, trials, "", "s.ini"));
  EXPECT_OK(CheckTrialConfigs(spec, trials, "[model]\npreset = base\n", "s.ini"));
  Status views = CheckTrialConfigs(spec, trials, "[mask]\nviews = 2\n", "s.ini");
  EXPECT_EQ(views.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(
      views.message().find("s.ini: 1 error in the sweep:\n  s.ini: trial t0000 (mask.ratio=0, seed 1) on the base "
                           "config: mask.views 2 needs mask.ratio > 0"),
      std::string::npos)
      << views.message();
  EXPECT_NE(views.message().find("(and 1 more trials)"), std::string::npos) << views.message();
  Status unknown = CheckTrialConfigs(spec, trials, "[optim]\nrl = 1\n", "s.ini");
  EXPECT_NE(unknown.message().find("unknown key 'optim.rl'; did you mean optim.lr?"), std::string::npos)
      << unknown.message();
}

}  // namespace
}  // namespace flap::coordinator
