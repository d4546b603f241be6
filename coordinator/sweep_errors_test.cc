// Tests for coordinator/sweep.h: malformed sweep files are refused with every error listed,
// each naming the file, line, section and key.
#include "coordinator/sweep.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "config/trial_config.h"
#include "coordinator/testing/sweep_test_util.h"

namespace flap::coordinator {
namespace {

using namespace sweep_testing;  // NOLINT: the sweep tests' own helpers

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
                                           "[factor.loss.recon_weight]\nvalues =\n");
  ASSERT_EQ(errors.size(), 2u) << Joined(errors);
  EXPECT_EQ(errors[0],
            "bad.ini:3: [factor.mask.ratio] values: the factor has no values: give values = "
            "v1, v2, ...");
  EXPECT_EQ(errors[1], "bad.ini:5: [factor.loss.recon_weight] values: the key has no value");
}

TEST(SweepErrors, ValueOutOfRange) {
  std::vector<std::string> errors = Refuse(std::string(kHeader) + "[factor.mask.ratio]\nvalues = 0, 1.0, -0.1\n");
  ASSERT_EQ(errors.size(), 2u) << Joined(errors);
  EXPECT_EQ(errors[0], "bad.ini:4: [factor.mask.ratio] values: mask.ratio must be in [0, 1), got '1.0'");
  EXPECT_NE(errors[1].find("got '-0.1'"), std::string::npos);
}

TEST(SweepErrors, UnknownStrategy) {
  std::vector<std::string> errors = Refuse(std::string(kHeader) + "[factor.mask.strategy]\nvalues = 2d, 3d\n");
  ASSERT_EQ(errors.size(), 1u) << Joined(errors);
  EXPECT_EQ(errors[0], "bad.ini:4: [factor.mask.strategy] values: mask.strategy must be '1d' or '2d', got '3d'");
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
[factor.loss.recon_weight]
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
  EXPECT_TRUE(AnyContains(errors, "bad.ini:8: [factor.mask.strategy] values: mask.strategy must be '1d' or '2d'"))
      << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:9: [factor.mask.strategy] when:")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:10: [factor.loss.recon_weight] values: the factor has no")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:11: [factor.lr]: a factor is a trial config key")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:13: [factor.train.seed]: the trial seed is not a")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:15: [schedule]: unknown section")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:18: [asha] rungs: rungs must be strictly increasing")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:19: [asha] reduction:")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:20: [asha] colour: unknown key 'colour' ([asha] takes")) << all;
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
  EXPECT_EQ(s.status().message().rfind("bad.ini: 13 errors in the sweep:", 0), 0u) << s.status().message();
}

TEST(SweepErrors, SyntaxErrorsAreLocated) {
  std::vector<std::string> errors = Refuse(
      "values = 1\n"  // 1: outside any section
      "[sweep]\n"
      "name = s\n"
      "name = t\n"            // 4: repeated key
      "just words\n"          // 5: not key = value
      "[factor.mask.ratio\n"  // 6: malformed header
      "[factor.mask.ratio]\n"
      "values = 0.5\n"
      "Values = 0.5\n"  // 9: malformed key
      "[sweep]\n"       // 10: repeated section
      "name = u\n");
  const std::string all = Joined(errors);
  EXPECT_TRUE(AnyContains(errors, "bad.ini:1: values: the key is outside any [section]")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:4: [sweep] name: the key repeats (first at line 3)")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:5: [sweep]: expected '[section]' or 'key = value'")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:6: malformed section header")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:9: [factor.mask.ratio]: malformed key 'Values'")) << all;
  EXPECT_TRUE(AnyContains(errors, "bad.ini:10: [sweep]: the section repeats (first at line 2)")) << all;
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
    std::vector<std::string> errors = Refuse(std::string(kHeader) + "[factor." + name + "]\nvalues = 1\n");
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
  for (const Case& c :
       {Case{"loss.recon_weight", "-1", "loss.recon_weight must be >= 0, got '-1'"},
        Case{"text.augment", "1.5", "off, on or a probability"},
        Case{"text.augment", "sometimes", "off, on or a probability"},
        Case{"optim.lr", "0", "optim.lr must be > 0, got '0'"},
        Case{"optim.lr", "fast", "expected a number, got 'fast'"}, Case{"model.preset", "huge", "'tiny' or 'base'"},
        Case{"mask.ratio", "0x1p-1", "expected a number"}, Case{"mask.ratio", "nan", "expected a number"},
        Case{"train.batch_size", "1", "train.batch_size must be >= 2"},
        Case{"data.crop", "middle", "data.crop must be random or first, got 'middle'"}}) {
    std::vector<std::string> errors =
        Refuse(std::string(kHeader) + "[factor." + c.factor + "]\nvalues = " + c.value + "\n");
    ASSERT_EQ(errors.size(), 1u) << c.factor << "=" << c.value << "\n" << Joined(errors);
    EXPECT_NE(errors[0].find(c.expected), std::string::npos) << errors[0];
    EXPECT_NE(errors[0].find(std::string("[factor.") + c.factor + "] values"), std::string::npos);
  }
  EXPECT_TRUE(ValidateFactorValue("text.augment", "0.25").ok());
  EXPECT_EQ(ValidateFactorValue("train.anything", "whatever").message(), "unknown key 'train.anything'");
  EXPECT_EQ(ValidateFactorValue("mask.strategy", "3d").message(),
            "mask.strategy: mask.strategy must be '1d' or '2d', got '3d'");
}

// A sweep file and a trial config read by the one INI reader (config/ini.h): the same mistake on
// line 3 of each is reported in the same shape, "<file>:3: [<section>] <key>: <what>". Before the
// reader was shared, the trial config's errors had no line and said "multiple occurrences" or
// "unrecognised option" (Boost.Program_options' words), and the sweep's unknown key named no
// closest key.
TEST(SweepErrors, TheSameMistakeReadsTheSameInASweepAndInATrialConfig) {
  auto sweep = [](const std::string& line3) {
    std::vector<std::string> errors = Refuse("[sweep]\nname = s\n" + line3 + "\n[factor.mask.ratio]\nvalues = 0.5\n");
    EXPECT_EQ(errors.size(), 1u) << Joined(errors);
    return errors.empty() ? std::string() : errors[0];
  };
  auto config = [](const std::string& line3) {
    StatusOr<std::map<std::string, std::string>> values = ParseConfigText("[mask]\nratio = 0.5\n" + line3 + "\n", "bad.ini");
    EXPECT_FALSE(values.ok());
    return values.ok() ? std::string() : values.status().message();
  };
  // A key twice.
  EXPECT_EQ(sweep("name = t"), "bad.ini:3: [sweep] name: the key repeats (first at line 2)");
  EXPECT_EQ(config("ratio = 0.6"), "bad.ini:3: [mask] ratio: the key repeats (first at line 2)");
  // A line without '='.
  EXPECT_EQ(sweep("name t"), "bad.ini:3: [sweep]: expected '[section]' or 'key = value', got 'name t'");
  EXPECT_EQ(config("ratio 0.6"), "bad.ini:3: [mask]: expected '[section]' or 'key = value', got 'ratio 0.6'");
  // An unknown key close to a known one: named, with the closest key.
  EXPECT_EQ(sweep("serach = grid"),
            "bad.ini:3: [sweep] serach: unknown key 'serach'; did you mean search? ([sweep] takes name, search, "
            "budget, seeds, priority, base_config, search_seed)");
  EXPECT_EQ(config("veiws = 2"),
            "bad.ini:3: [mask] veiws: unknown key 'mask.veiws'; did you mean mask.views? (flap-worker train --help "
            "lists the keys)");
}

TEST(SweepErrors, UnknownFactorKeyIsNamedWithTheClosestKey) {
  std::vector<std::string> errors = Refuse(std::string(kHeader) + "[factor.mask.ratoi]\nvalues = 0.5\n");
  ASSERT_EQ(errors.size(), 1u) << Joined(errors);
  EXPECT_EQ(errors[0],
            "bad.ini:3: [factor.mask.ratoi]: unknown key mask.ratoi in [factor.mask.ratoi]; did you mean "
            "mask.ratio? (a factor is a trial config key: flap-worker train --help lists them)");
  errors = Refuse(std::string(kHeader) + "[factor.model.colour]\nvalues = red\n");
  ASSERT_EQ(errors.size(), 1u) << Joined(errors);
  EXPECT_NE(errors[0].find("unknown key model.colour in [factor.model.colour] ("), std::string::npos) << errors[0];
}

TEST(SweepErrors, RepeatedValuesAreRefusedNumerically) {
  std::vector<std::string> errors = Refuse(std::string(kHeader) + "[factor.loss.recon_weight]\nvalues = 0.5, 1, 0.50\n");
  ASSERT_EQ(errors.size(), 1u) << Joined(errors);
  EXPECT_NE(errors[0].find("value '0.50' repeats '0.5'"), std::string::npos) << errors[0];
}

TEST(SweepErrors, ConditionThatNeverHoldsIsRefused) {
  std::vector<std::string> errors = Refuse(std::string(kHeader) +
                                           "[factor.mask.ratio]\nvalues = 0.5, 0.75\n"
                                           "[factor.mask.strategy]\nvalues = 1d, 2d\n"
                                           "when = mask.ratio == 0.3\n");
  ASSERT_EQ(errors.size(), 1u) << Joined(errors);
  EXPECT_NE(errors[0].find("never holds (mask.ratio takes 0.5, 0.75)"), std::string::npos) << errors[0];
}

TEST(SweepErrors, ConditionCycleIsRefused) {
  std::vector<std::string> errors = Refuse(std::string(kHeader) +
                                           "[factor.mask.ratio]\nvalues = 0, 0.5\n"
                                           "when = mask.strategy == 2d\n"
                                           "[factor.mask.strategy]\nvalues = 1d, 2d\n"
                                           "when = mask.ratio != 0\n");
  ASSERT_EQ(errors.size(), 1u) << Joined(errors);
  EXPECT_NE(errors[0].find("cycle among mask.ratio, mask.strategy"), std::string::npos) << errors[0];
}

TEST(SweepErrors, MalformedConditions) {
  for (const char* when :
       {"mask.ratio", "mask.ratio > 0", "mask.ratio == 0, 0.5", "mask.ratio ==", "ratio == 0", "mask.ratio in"}) {
    std::vector<std::string> errors = Refuse(std::string(kHeader) +
                                             "[factor.mask.ratio]\nvalues = 0, 0.5\n"
                                             "[factor.mask.strategy]\nvalues = 1d, 2d\n"
                                             "when = " +
                                             when + "\n");
    ASSERT_EQ(errors.size(), 1u) << when << "\n" << Joined(errors);
    EXPECT_NE(errors[0].find("bad.ini:7: [factor.mask.strategy] when:"), std::string::npos) << errors[0];
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
  one(random + "[factor.optim.lr]\nvalues = 1e-3\nrange = 1e-4, 1e-2\n", "give values or range, not both");
  one(random + "[factor.optim.lr]\nrange = 1e-2, 1e-4\n", "needs lo < hi");
  one(random + "[factor.loss.recon_weight]\nrange = 0, 1\nlog = true\n", "needs lo > 0");
  one(random + "[factor.mask.strategy]\nrange = 1, 2\n", "takes words");
  one(random + "[factor.mask.ratio]\nrange = 0.5, 1\n", "got '1'");
  one(random + "[factor.optim.lr]\nvalues = 1e-3\nlog = true\n", "log applies to a range only");
  one(random + "[factor.train.batch_size]\nrange = 8.5, 64\ninteger = true\n", "integer ends");
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
  one("name = s\ncolour = blue\n", "[sweep] colour: unknown key 'colour' ([sweep] takes name, search");
  one("search = grid\n", "[sweep] name: a sweep needs a name");
}

TEST(SweepErrors, FactorWithEmptyListItem) {
  std::vector<std::string> errors = Refuse(std::string(kHeader) + "[factor.loss.recon_weight]\nvalues = 0,,1\n");
  ASSERT_EQ(errors.size(), 1u) << Joined(errors);
  EXPECT_NE(errors[0].find("empty item"), std::string::npos) << errors[0];
}

}  // namespace
}  // namespace flap::coordinator
