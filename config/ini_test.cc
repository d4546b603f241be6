// Tests for config/ini.h: the INI lexer of sweep files and trial configs, its error lines and
// the closest-name suggestion.
#include "config/ini.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace flap::ini {
namespace {

struct Lexed {
  std::vector<Section> sections;
  std::string errors;  // ToStatus's message; "" when none
};

Lexed LexText(const std::string& text, const Options& options = {}) {
  Lexed out;
  Errors errors("f.ini", "the file", LocateIn(&out.sections));
  out.sections = Lex(text, options, &errors);
  const Status s = errors.ToStatus();
  if (!s.ok()) out.errors = s.message();
  return out;
}

TEST(IniLex, SectionsKeysValuesAndLines) {
  Lexed l = LexText(
      "# a comment\n"
      "[mask]\n"
      "ratio = 0.75   # trailing comment\n"
      "\n"
      "  strategy=2d\n"
      "[model]  ; another comment\n"
      "preset = tiny\n"
      "path = a#b;c\n"
      "root =\n"
      "expr = a = b\n");
  EXPECT_EQ(l.errors, "");
  ASSERT_EQ(l.sections.size(), 2u);
  EXPECT_EQ(l.sections[0].name, "mask");
  EXPECT_EQ(l.sections[0].line, 2);
  ASSERT_EQ(l.sections[0].keys.size(), 2u);
  EXPECT_EQ(l.sections[0].keys[0].name, "ratio");
  EXPECT_EQ(l.sections[0].keys[0].value, "0.75");
  EXPECT_EQ(l.sections[0].keys[0].line, 3);
  EXPECT_EQ(l.sections[0].keys[1].value, "2d");
  EXPECT_EQ(l.sections[0].keys[1].line, 5);
  const Section& model = l.sections[1];
  EXPECT_EQ(model.line, 6);
  ASSERT_NE(model.Find("path"), nullptr);
  EXPECT_EQ(model.Find("path")->value, "a#b;c");  // not after whitespace: not a comment
  EXPECT_EQ(model.Find("root")->value, "");
  EXPECT_EQ(model.Find("expr")->value, "a = b");
  EXPECT_EQ(model.Find("colour"), nullptr);
}

TEST(IniLex, EverySyntaxErrorIsListedWithItsLine) {
  Lexed l = LexText(
      "values = 1\n"        // 1: outside any section
      "[sweep]\n"           // 2
      "name = a\n"          // 3
      "name = b\n"          // 4: repeats
      "just words\n"        // 5: no '='
      "[factor.x\n"         // 6: malformed header
      "ignored = 1\n"       // 7: under a refused header, skipped quietly
      "[factor.y]\n"        // 8
      "Values = 0.5\n"      // 9: malformed key
      "[sweep]\n"           // 10: the section repeats
      "name = c\n");        // 11: skipped quietly
  EXPECT_EQ(l.errors,
            "f.ini: 6 errors in the file:\n"
            "  f.ini:1: values: the key is outside any [section]\n"
            "  f.ini:4: [sweep] name: the key repeats (first at line 3)\n"
            "  f.ini:5: [sweep]: expected '[section]' or 'key = value', got 'just words'\n"
            "  f.ini:6: malformed section header '[factor.x'\n"
            "  f.ini:9: [factor.y]: malformed key 'Values'\n"
            "  f.ini:10: [sweep]: the section repeats (first at line 2)");
  ASSERT_EQ(l.sections.size(), 2u);
  EXPECT_EQ(l.sections[0].Find("name")->value, "a");  // what was read is kept
}

TEST(IniLex, OptionsForTrialConfigs) {
  const Options config{/*repeated_sections=*/true, /*top_level_keys=*/true};
  Lexed l = LexText("mask.ratio = 0.5\n[train]\nseed = 1\n[mask]\nviews = 2\n[train]\nseed = 2\n", config);
  EXPECT_EQ(l.errors, "f.ini: 1 error in the file:\n  f.ini:7: [train] seed: the key repeats (first at line 3)");
  ASSERT_EQ(l.sections.size(), 3u);
  EXPECT_EQ(l.sections[0].name, "");
  EXPECT_EQ(l.sections[0].Find("mask.ratio")->line, 1);
  EXPECT_EQ(l.sections[2].name, "mask");  // a key of [mask] after another section
  EXPECT_EQ(l.sections[2].Find("views")->value, "2");
}

TEST(IniErrors, OneErrorAloneOrWithItsSummary) {
  Errors errors("c.ini", "the config", nullptr, /*summary_for_one=*/false);
  EXPECT_TRUE(errors.ToStatus().ok());
  errors.AddAt(3, "mask", "ratoi", "unknown key");
  EXPECT_EQ(errors.ToStatus().message(), "c.ini:3: [mask] ratoi: unknown key");
  errors.AddAt(0, "", "", "at no line");
  errors.AddAt(2, "", "mask.views", "bad");
  EXPECT_EQ(errors.ToStatus().message(),
            "c.ini: 3 errors in the config:\n  c.ini:2: mask.views: bad\n  c.ini:3: [mask] ratoi: unknown key\n"
            "  c.ini: at no line");
  errors.Silence("mask", "views");
  errors.Add("mask", "views", "dropped");
  EXPECT_EQ(errors.size(), 3u);
}

TEST(IniNames, ClosestNameIsALikelyMisspelling) {
  const std::vector<std::string> known = {"name", "search", "budget", "seeds"};
  EXPECT_EQ(ClosestName("nmae", known), "name");  // a swap is one edit
  EXPECT_EQ(ClosestName("seed", known), "seeds");
  EXPECT_EQ(ClosestName("colour", known), "");
  EXPECT_EQ(EditDistance("ratoi", "ratio"), 1u);
  EXPECT_EQ(EditDistance("", "abc"), 3u);
  EXPECT_EQ(UnknownKeyMessage("nmae", "name"), "unknown key 'nmae'; did you mean name?");
  EXPECT_EQ(UnknownKeyMessage("colour", ""), "unknown key 'colour'");
}

}  // namespace
}  // namespace flap::ini
