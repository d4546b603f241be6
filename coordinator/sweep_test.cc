// Tests for coordinator/sweep.h: grid and random expansion (conditions, seeds, budget, ids),
// reproducibility, and malformed sweep files refused with every error listed and located.
#include "coordinator/sweep.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <vector>

namespace flap::coordinator {
namespace {

// The ablation of the README: ratio x strategy (meaningless at ratio 0) x reconstruction.
constexpr char kAblation[] = R"(# mask ablation
[sweep]
name = mask-ablation
search = grid            # grid | random
budget = 0
seeds = 1,2,3            ; replicate seeds
priority = 5
base_config = configs/tiny.ini

[factor.mask.ratio]
values = 0, 0.5, 0.75

[factor.mask.strategy]
values = 1d, 2d
when = mask.ratio != 0

[factor.recon.weight]
values = 0, 0.5

[asha]
metric = map10
mode = max
rungs = 100, 200, 400
reduction = 3
)";

SweepSpec Parse(const std::string& text) {
  auto s = ParseSweepText(text, "test.ini");
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(s).value() : SweepSpec{};
}

std::vector<TrialSpec> Expand(const SweepSpec& spec) {
  auto t = ExpandSweep(spec);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? std::move(t).value() : std::vector<TrialSpec>{};
}

// The error lines of a refused sweep (the summary line dropped).
std::vector<std::string> ErrorLines(const Status& s) {
  std::vector<std::string> lines;
  size_t start = s.message().find('\n');
  while (start != std::string::npos) {
    size_t end = s.message().find('\n', start + 1);
    lines.push_back(s.message().substr(start + 3, end == std::string::npos
                                                      ? std::string::npos
                                                      : end - start - 3));
    start = end;
  }
  return lines;
}

// Refuses `text` and returns its error lines; each must name the file.
std::vector<std::string> Refuse(const std::string& text) {
  auto s = ParseSweepText(text, "bad.ini");
  EXPECT_FALSE(s.ok());
  if (s.ok()) return {};
  EXPECT_EQ(s.status().code(), Status::Code::kInvalidArgument);
  std::vector<std::string> lines = ErrorLines(s.status());
  for (const std::string& l : lines) EXPECT_EQ(l.rfind("bad.ini", 0), 0u) << l;
  return lines;
}

bool AnyContains(const std::vector<std::string>& lines, const std::string& needle) {
  for (const std::string& l : lines) {
    if (l.find(needle) != std::string::npos) return true;
  }
  return false;
}

std::string Joined(const std::vector<std::string>& lines) {
  std::string all;
  for (const std::string& l : lines) all += l + "\n";
  return all;
}

constexpr char kHeader[] = "[sweep]\nname = s\n";

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
  EXPECT_EQ(s.asha->rungs, (std::vector<int64_t>{100, 200, 400}));
  EXPECT_EQ(s.asha->reduction, 3);
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
  EXPECT_EQ(trials[0].factors, (std::map<std::string, std::string>{{"mask.ratio", "0"},
                                                                    {"recon.weight", "0"}}));
  EXPECT_EQ(trials[3].factors, (std::map<std::string, std::string>{{"mask.ratio", "0"},
                                                                    {"recon.weight", "0.5"}}));
  EXPECT_EQ(trials[6].factors,
            (std::map<std::string, std::string>{
                {"mask.ratio", "0.5"}, {"mask.strategy", "1d"}, {"recon.weight", "0"}}));
  EXPECT_EQ(trials[29].id, "t0029");
  EXPECT_EQ(trials[29].cell, 9);
}

TEST(SweepGrid, SameSpecAlwaysExpandsIdentically) {
  std::vector<TrialSpec> a = Expand(Parse(kAblation));
  std::vector<TrialSpec> b = Expand(Parse(kAblation));
  EXPECT_EQ(a, b);
  // Also through the spec's JSON (how the coordinator stores it).
  auto restored = SweepSpec::FromJson(nlohmann::json::parse(Parse(kAblation).ToJson().dump()),
                                      "sweeps/mask-ablation");
  ASSERT_TRUE(restored.ok()) << restored.status().ToString();
  EXPECT_EQ(Expand(*restored), a);
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
                      "[factor.recon.weight]\nvalues = 0.5, 1\nwhen = text.augment == off\n");
  // off -> 2 recon weights; on -> 2 lrs; 0.5 -> 2 lrs.
  std::vector<TrialSpec> trials = Expand(s);
  ASSERT_EQ(trials.size(), 6u);
  for (const TrialSpec& t : trials) {
    bool off = t.factors.at("text.augment") == "off";
    EXPECT_EQ(t.factors.count("recon.weight"), off ? 1u : 0u);
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
  EXPECT_NE(errors[0].find("[sweep] budget: the grid has 10 cells, more than the budget of 9"),
            std::string::npos)
      << errors[0];
  text.replace(text.find("budget = 9"), 10, "budget = 10");
  EXPECT_EQ(Expand(Parse(text)).size(), 30u);
}

TEST(SweepGrid, RefusesAGridBeyondTheTrialLimit) {
  std::string text = std::string(kHeader);
  for (int f = 0; f < 5; ++f) {
    text += "[factor.train.f" + std::to_string(f) + "]\nvalues = 1,2,3,4,5,6,7,8,9,10\n";
  }
  std::vector<std::string> errors = Refuse(text);  // 10^5 cells
  ASSERT_EQ(errors.size(), 1u) << Joined(errors);
  EXPECT_NE(errors[0].find("exceeds 10000 trials"), std::string::npos) << errors[0];
}

// ---------------------------------------------------------------------------------------------
// Random search.

constexpr char kRandom[] = R"([sweep]
name = lr-search
search = random
budget = 8
seeds = 1, 2
search_seed = 42
[factor.optim.lr]
range = 1e-4, 1e-2
log = true
[factor.mask.ratio]
range = 0.25, 0.9
[factor.mask.strategy]
values = 1d, 2d
[factor.train.batch_size]
range = 8, 64
integer = true
)";

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

// ---------------------------------------------------------------------------------------------
// Malformed sweep files: refused with every error, each naming file, line, section and key.

TEST(SweepErrors, EmptyFile) {
  for (const char* text : {"", "\n\n", "# only a comment\n  ; another\n"}) {
    std::vector<std::string> errors = Refuse(text);
    ASSERT_EQ(errors.size(), 1u) << Joined(errors);
    EXPECT_NE(errors[0].find("the file is empty"), std::string::npos) << errors[0];
  }
}

TEST(SweepErrors, UnknownSection) {
  std::vector<std::string> errors =
      Refuse(std::string(kHeader) + "[factor.mask.ratio]\nvalues = 0.5\n[shedule]\nx = 1\n");
  ASSERT_EQ(errors.size(), 1u) << Joined(errors);
  EXPECT_EQ(errors[0],
            "bad.ini:5: [shedule]: unknown section; expected [sweep], [asha], [report] or "
            "[factor.<section>.<key>]");
}

TEST(SweepErrors, FactorWithoutValues) {
  std::vector<std::string> errors = Refuse(std::string(kHeader) +
                                           "[factor.mask.ratio]\n"
                                           "[factor.recon.weight]\nvalues =\n");
  ASSERT_EQ(errors.size(), 2u) << Joined(errors);
  EXPECT_EQ(errors[0],
            "bad.ini:3: [factor.mask.ratio] values: the factor has no values: give values = "
            "v1, v2, ...");
  EXPECT_EQ(errors[1], "bad.ini:5: [factor.recon.weight] values: the key has no value");
}

TEST(SweepErrors, ValueOutOfRange) {
  std::vector<std::string> errors =
      Refuse(std::string(kHeader) + "[factor.mask.ratio]\nvalues = 0, 1.0, -0.1\n");
  ASSERT_EQ(errors.size(), 2u) << Joined(errors);
  EXPECT_EQ(errors[0],
            "bad.ini:4: [factor.mask.ratio] values: expected a number in [0, 1), got '1.0'");
  EXPECT_NE(errors[1].find("got '-0.1'"), std::string::npos);
}

TEST(SweepErrors, UnknownStrategy) {
  std::vector<std::string> errors =
      Refuse(std::string(kHeader) + "[factor.mask.strategy]\nvalues = 2d, 3d\n");
  ASSERT_EQ(errors.size(), 1u) << Joined(errors);
  EXPECT_EQ(errors[0], "bad.ini:4: [factor.mask.strategy] values: expected 1d or 2d, got '3d'");
}

TEST(SweepErrors, ConditionOnAMissingFactor) {
  std::vector<std::string> errors = Refuse(std::string(kHeader) +
                                           "[factor.mask.strategy]\nvalues = 1d, 2d\n"
                                           "when = mask.ratio != 0\n");
  ASSERT_EQ(errors.size(), 1u) << Joined(errors);
  EXPECT_EQ(errors[0],
            "bad.ini:5: [factor.mask.strategy] when: the condition 'mask.ratio != 0' refers to "
            "'mask.ratio', which is not a factor of this sweep");
}

TEST(SweepErrors, EveryErrorOfAFileIsListed) {
  const std::string text = R"([sweep]
name = bad sweep!
search = sideways
seeds = 1, 1
[factor.mask.ratio]
values = 0, 1.5
[factor.mask.strategy]
values = 1d, 3d
when = mask.rate != 0
[factor.recon.weight]
[factor.lr]
values = 1e-3
[factor.train.seed]
values = 1, 2
[schedule]
[asha]
metric = map10
rungs = 200, 100
reduction = 1
colour = blue
)";
  std::vector<std::string> errors = Refuse(text);
  const std::string all = Joined(errors);
  EXPECT_TRUE(AnyContains(errors, "bad.ini:3: [sweep] search: expected grid or random")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:2: [sweep] name:")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:4: [sweep] seeds: seed 1 repeats")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:6: [factor.mask.ratio] values:")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:8: [factor.mask.strategy] values: expected 1d or 2d"))
      << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:9: [factor.mask.strategy] when:")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:10: [factor.recon.weight] values: the factor has no"))
      << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:11: [factor.lr]: a factor is a trial config key"))
      << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:13: [factor.train.seed]: the trial seed is not a"))
      << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:15: [schedule]: unknown section")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:18: [asha] rungs: steps must be strictly increasing"))
      << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:19: [asha] reduction:")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:20: [asha] colour: unknown key; [asha] takes")) << all;
  EXPECT_EQ(errors.size(), 13u) << all;
  // Listed in file order.
  int previous = 0;
  for (const std::string& e : errors) {
    int line = std::stoi(e.substr(std::string("bad.ini:").size()));
    EXPECT_GE(line, previous) << all;
    previous = line;
  }
  // The summary line counts them.
  auto s = ParseSweepText(text, "bad.ini");
  EXPECT_EQ(s.status().message().rfind("bad.ini: 13 errors in the sweep:", 0), 0u)
      << s.status().message();
}

TEST(SweepErrors, SyntaxErrorsAreLocated) {
  std::vector<std::string> errors = Refuse(
      "values = 1\n"              // 1: outside any section
      "[sweep]\n"
      "name = s\n"
      "name = t\n"                // 4: repeated key
      "just words\n"              // 5: not key = value
      "[factor.mask.ratio\n"      // 6: malformed header
      "[factor.mask.ratio]\n"
      "values = 0.5\n"
      "Values = 0.5\n"            // 9: malformed key
      "[sweep]\n"                 // 10: repeated section
      "name = u\n");
  const std::string all = Joined(errors);
  EXPECT_TRUE(AnyContains(errors, "bad.ini:1: values: the key is outside any [section]")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:4: [sweep] name: the key repeats (first at line 3)"))
      << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:5: [sweep]: expected '[section]' or 'key = value'"))
      << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:6: malformed section header")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:9: [factor.mask.ratio]: malformed key 'Values'"))
      << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:10: [sweep]: the section repeats (first at line 2)"))
      << all;
  EXPECT_EQ(errors.size(), 6u) << all;
}

TEST(SweepErrors, MissingSweepSectionAndNoFactors) {
  std::vector<std::string> errors = Refuse("[asha]\nmetric = map10\nrungs = 10\n");
  const std::string all = Joined(errors);
  EXPECT_TRUE(AnyContains(errors, "no [sweep] section")) << all;
  EXPECT_TRUE(AnyContains(errors, "a sweep needs at least one factor")) << all;
  EXPECT_EQ(errors.size(), 2u) << all;
}

TEST(SweepErrors, FactorNamesMustBeSectionDotKey) {
  for (const char* name : {"lr", "Mask.ratio", "mask.ratio.extra", "mask.", ".ratio", "9a.b"}) {
    std::vector<std::string> errors =
        Refuse(std::string(kHeader) + "[factor." + name + "]\nvalues = 1\n");
    ASSERT_EQ(errors.size(), 1u) << name << "\n" << Joined(errors);
    EXPECT_NE(errors[0].find("a factor is a trial config key"), std::string::npos) << errors[0];
  }
}

TEST(SweepErrors, KnownFactorsAreRangeChecked) {
  struct Case {
    const char* factor;
    const char* value;
    const char* expected;
  };
  for (const Case& c : {Case{"recon.weight", "-1", "a number >= 0"},
                        Case{"text.augment", "1.5", "off, on or a probability"},
                        Case{"text.augment", "sometimes", "off, on or a probability"},
                        Case{"optim.lr", "0", "a number > 0"},
                        Case{"optim.lr", "fast", "a number > 0"},
                        Case{"model.preset", "huge", "tiny or base"},
                        Case{"mask.ratio", "0x1p-1", "a number in [0, 1)"},
                        Case{"mask.ratio", "nan", "a number in [0, 1)"}}) {
    std::vector<std::string> errors = Refuse(std::string(kHeader) + "[factor." + c.factor +
                                             "]\nvalues = " + c.value + "\n");
    ASSERT_EQ(errors.size(), 1u) << c.factor << "=" << c.value << "\n" << Joined(errors);
    EXPECT_NE(errors[0].find(c.expected), std::string::npos) << errors[0];
    EXPECT_NE(errors[0].find(std::string("[factor.") + c.factor + "] values"), std::string::npos);
  }
  EXPECT_TRUE(ValidateFactorValue("text.augment", "0.25").ok());
  EXPECT_TRUE(ValidateFactorValue("train.anything", "whatever").ok());
  EXPECT_EQ(ValidateFactorValue("mask.strategy", "3d").message(),
            "mask.strategy: expected 1d or 2d, got '3d'");
}

TEST(SweepErrors, RepeatedValuesAreRefusedNumerically) {
  std::vector<std::string> errors =
      Refuse(std::string(kHeader) + "[factor.recon.weight]\nvalues = 0.5, 1, 0.50\n");
  ASSERT_EQ(errors.size(), 1u) << Joined(errors);
  EXPECT_NE(errors[0].find("value '0.50' repeats '0.5'"), std::string::npos) << errors[0];
}

TEST(SweepErrors, ConditionThatNeverHoldsIsRefused) {
  std::vector<std::string> errors = Refuse(std::string(kHeader) +
                                           "[factor.mask.ratio]\nvalues = 0.5, 0.75\n"
                                           "[factor.mask.strategy]\nvalues = 1d, 2d\n"
                                           "when = mask.ratio == 0.3\n");
  ASSERT_EQ(errors.size(), 1u) << Joined(errors);
  EXPECT_NE(errors[0].find("never holds (mask.ratio takes 0.5, 0.75)"), std::string::npos)
      << errors[0];
}

TEST(SweepErrors, ConditionCycleIsRefused) {
  std::vector<std::string> errors = Refuse(std::string(kHeader) +
                                           "[factor.mask.ratio]\nvalues = 0, 0.5\n"
                                           "when = mask.strategy == 2d\n"
                                           "[factor.mask.strategy]\nvalues = 1d, 2d\n"
                                           "when = mask.ratio != 0\n");
  ASSERT_EQ(errors.size(), 1u) << Joined(errors);
  EXPECT_NE(errors[0].find("cycle among mask.ratio, mask.strategy"), std::string::npos)
      << errors[0];
}

TEST(SweepErrors, MalformedConditions) {
  for (const char* when : {"mask.ratio", "mask.ratio > 0", "mask.ratio == 0, 0.5",
                           "mask.ratio ==", "ratio == 0", "mask.ratio in"}) {
    std::vector<std::string> errors = Refuse(std::string(kHeader) +
                                             "[factor.mask.ratio]\nvalues = 0, 0.5\n"
                                             "[factor.mask.strategy]\nvalues = 1d, 2d\n"
                                             "when = " + when + "\n");
    ASSERT_EQ(errors.size(), 1u) << when << "\n" << Joined(errors);
    EXPECT_NE(errors[0].find("bad.ini:7: [factor.mask.strategy] when:"), std::string::npos)
        << errors[0];
  }
}

TEST(SweepErrors, RangeRules) {
  const std::string grid = std::string(kHeader);
  const std::string random = "[sweep]\nname = s\nsearch = random\nbudget = 4\n";
  auto one = [](const std::string& text, const std::string& needle) {
    std::vector<std::string> errors = Refuse(text);
    EXPECT_EQ(errors.size(), 1u) << Joined(errors);
    EXPECT_TRUE(AnyContains(errors, needle)) << Joined(errors);
  };
  one(grid + "[factor.optim.lr]\nrange = 1e-4, 1e-2\n", "range is for random search only");
  one(random + "[factor.optim.lr]\nvalues = 1e-3\nrange = 1e-4, 1e-2\n",
      "give values or range, not both");
  one(random + "[factor.optim.lr]\nrange = 1e-2, 1e-4\n", "needs lo < hi");
  one(random + "[factor.recon.weight]\nrange = 0, 1\nlog = true\n", "needs lo > 0");
  one(random + "[factor.mask.strategy]\nrange = 1, 2\n", "takes words");
  one(random + "[factor.mask.ratio]\nrange = 0.5, 1\n", "got '1'");
  one(random + "[factor.optim.lr]\nvalues = 1e-3\nlog = true\n", "log applies to a range only");
  one(random + "[factor.train.batch_size]\nrange = 8.5, 64\ninteger = true\n",
      "integer ends");
  one(random + "[factor.optim.lr]\nrange = 1e-4\n", "expected 'lo, hi'");
  one(random + "[factor.optim.lr]\nrange = 1e-4, 1e-2\nlog = yes\n", "expected true or false");
  one(random + "[factor.optim.lr]\n", "give values = v1, v2, ... or range = lo, hi");
}

TEST(SweepErrors, SweepKeys) {
  const std::string factor = "[factor.mask.ratio]\nvalues = 0.5\n";
  auto one = [&factor](const std::string& sweep, const std::string& needle) {
    std::vector<std::string> errors = Refuse("[sweep]\n" + sweep + factor);
    EXPECT_EQ(errors.size(), 1u) << Joined(errors);
    EXPECT_TRUE(AnyContains(errors, needle)) << Joined(errors);
  };
  one("name = s\nsearch = random\n", "random search needs budget >= 1");
  one("name = s\nbudget = -1\n", "must be >= 0");
  one("name = s\nbudget = lots\n", "[sweep] budget: expected an integer, got 'lots'");
  one("name = s\nseeds = 1, x\n", "got 'x' in '1, x'");
  one("name = s\nseeds = -1\n", "non-negative integers");
  one("name = s\npriority = 1.5\n", "[sweep] priority: expected an integer");
  one("name = s\ncolour = blue\n", "[sweep] colour: unknown key; [sweep] takes name, search");
  one("search = grid\n", "[sweep] name: a sweep needs a name");
}

TEST(SweepErrors, FactorWithEmptyListItem) {
  std::vector<std::string> errors =
      Refuse(std::string(kHeader) + "[factor.recon.weight]\nvalues = 0,,1\n");
  ASSERT_EQ(errors.size(), 1u) << Joined(errors);
  EXPECT_NE(errors[0].find("empty item"), std::string::npos) << errors[0];
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
  EXPECT_FALSE(ne->Holds({}));                        // even for !=
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
  EXPECT_NE(bad.message().find("coded: [factor.mask.ratio]: the factor appears twice"),
            std::string::npos)
      << bad.message();
  EXPECT_EQ(ExpandSweep(s).status().code(), Status::Code::kInvalidArgument);
}

TEST(SweepSpecJson, RandomSpecRoundTrips) {
  SweepSpec s = Parse(kRandom);
  auto r = SweepSpec::FromJson(nlohmann::json::parse(s.ToJson().dump()), "sweeps/lr-search");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->ToJson(), s.ToJson());
  EXPECT_EQ(Expand(*r), Expand(s));
}

TEST(SweepSpecJson, FromJsonRefusesInvalidSpecs) {
  nlohmann::json j = Parse(kAblation).ToJson();
  j["factors"][0]["values"] = {"0", "2"};
  auto r = SweepSpec::FromJson(j, "sweeps/x");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kCorruption);
  EXPECT_NE(r.status().message().find("sweeps/x"), std::string::npos);
  EXPECT_NE(r.status().message().find("got '2'"), std::string::npos) << r.status().message();

  nlohmann::json k = Parse(kAblation).ToJson();
  k["seeds"] = {1, -2};
  EXPECT_EQ(SweepSpec::FromJson(k, "sweeps/x").status().code(), Status::Code::kCorruption);
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

  // Through the journal's JSON and back; a spec without one has no key (earlier journals).
  auto back = SweepSpec::FromJson(nlohmann::json::parse(s.ToJson().dump()), "sweeps/x");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_TRUE(back->report_target.has_value());
  EXPECT_EQ(back->report_target->ToString(), "t2a_r1:0.3");
  EXPECT_FALSE(Parse(kAblation).ToJson().contains("report_target"));

  for (const char* bad : {"t2a_r1", "t2a_r1:30", "t2a_r1:0", "T2A:0.3", "t2a_r1:x", "t2a_r1:150%"}) {
    std::vector<std::string> errors = Refuse(std::string(kAblation) + "\n[report]\ntarget = " + bad + "\n");
    ASSERT_EQ(errors.size(), 1u) << bad << ": " << Joined(errors);
    EXPECT_NE(errors[0].find("[report] target: "), std::string::npos) << errors[0];
  }
  std::vector<std::string> unknown = Refuse(std::string(kAblation) + "\n[report]\nmetric = map10\n");
  ASSERT_EQ(unknown.size(), 1u) << Joined(unknown);
  EXPECT_NE(unknown[0].find("unknown key; [report] takes target"), std::string::npos) << unknown[0];
}

TEST(TrialSpecJson, RoundTrips) {
  std::vector<TrialSpec> trials = Expand(Parse(kAblation));
  for (const TrialSpec& t : trials) {
    auto r = TrialSpec::FromJson(nlohmann::json::parse(t.ToJson().dump()), "trial");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(*r, t);
  }
  nlohmann::json bad = trials[0].ToJson();
  bad["factors"]["mask.ratio"] = 0.5;  // a number, not text
  EXPECT_EQ(TrialSpec::FromJson(bad, "trial").status().code(), Status::Code::kCorruption);
}

TEST(TrialId, IsZeroPaddedAndGrowsPast9999) {
  EXPECT_EQ(TrialId(7), "t0007");
  EXPECT_EQ(TrialId(9999), "t9999");
  EXPECT_EQ(TrialId(10000), "t10000");
}

TEST(ConfigValues, ReadsEveryKeyOfATrialConfigAndSkipsWhatIsMalformed) {
  const auto v = ConfigValues(
      "# a trial config\n[model]\npreset = tiny\n\n[mask]\nratio = 0.75   # comment\nstrategy = 2d\n"
      "not a key line\n[text]\naugment = on\n[mask]\nratio = 0.1\n");
  EXPECT_EQ(v, (std::map<std::string, std::string>{
                   {"model.preset", "tiny"}, {"mask.ratio", "0.75"}, {"mask.strategy", "2d"}, {"text.augment", "on"}}));
  EXPECT_TRUE(ConfigValues("").empty());
}

}  // namespace
}  // namespace flap::coordinator
