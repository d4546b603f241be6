// The INI reader of every file a person writes for this project: sweep files
// (coordinator/sweep.h) and trial configs (config/trial_config.h). One lexer, one way of
// reporting what is wrong, so both kinds of file name a mistake the same way:
//
//   <source>:<line>: [<section>] <key>: <what is wrong>
//
// Syntax. A "[section]" header, then "key = value" lines (whitespace around the key and the
// value is dropped; the value is the rest of the line, '=' included). Blank lines are ignored,
// and so is a comment: '#' or ';' at the start of a line or after whitespace, to the end of the
// line ("lr = 1e-3  # peak" is "1e-3"; "path = a#b" keeps its '#'). A key is a word of
// [a-z0-9_.] starting with a letter. Section names are free text (not empty). Within a section a
// key may not repeat ("the key repeats (first at line 3)"). What a reader accepts beyond this
// (which sections and keys exist, whether a value may be empty) is the reader's; the lexer only
// splits the text and reports what does not parse, every problem with its line.
//
// Thread-safety: values and pure functions; an Errors is used by one thread.
#pragma once

#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace flap::ini {

struct Key {
  std::string name;   // "ratio"
  std::string value;  // "0.75"; may be empty ("root =")
  int line = 0;       // 1-based
};

struct Section {
  std::string name;       // "mask"; "" for keys written before any header (Options::top_level_keys)
  int line = 0;           // of its (first) header; 0 for ""
  std::vector<Key> keys;  // in file order, each name once

  // The key named `name`, or nullptr.
  const Key* Find(const std::string& name) const;
};

// How strict the lexer is where sweep files and trial configs differ.
struct Options {
  // false: a second "[s]" header is refused ("the section repeats (first at line N)") and its
  // keys are skipped; true: it continues the section (keys still may not repeat in it).
  bool repeated_sections = false;
  // false: a key before any header is refused ("the key is outside any [section]"); true: it
  // is kept in a section named "" (a trial config's "mask.ratio = 0.5" on top of a file).
  bool top_level_keys = false;
};

// The errors of one file (or one spec), each "<source>[:<line>]: [<section>] <key>: <what>",
// listed in file order by ToStatus.
class Errors {
 public:
  // The line where (section, key) was written: the key's line, else its section header's; 0
  // when unknown (a value that did not come from a file).
  using Locator = std::function<int(const std::string& section, const std::string& key)>;

  // `what` names the whole in the summary line: "the sweep" -> "<source>: 2 errors in the
  // sweep:". `summary_for_one` false: a single error is reported as its line alone.
  Errors(std::string source, std::string what, Locator locate, bool summary_for_one = true);

  // An error about (section, key) at the line the locator gives, unless silenced.
  void Add(const std::string& section, const std::string& key, const std::string& message);
  void AddAt(int line, const std::string& section, const std::string& key, const std::string& message);
  // Later errors about (section, key) are dropped: its text was already refused, so what the
  // reader holds there is a default, not what was written.
  void Silence(const std::string& section, const std::string& key) { silenced_.insert({section, key}); }
  bool empty() const { return list_.empty(); }
  size_t size() const { return list_.size(); }

  // OK when there are none; else InvalidArgument: a summary line ("<source>: N errors in
  // <what>:") then each error on its own line, indented, in file order (those without a line
  // last); or, with one error and !summary_for_one, that error's text alone.
  Status ToStatus() const;

 private:
  std::string source_;
  std::string what_;
  Locator locate_;
  bool summary_for_one_;
  std::set<std::pair<std::string, std::string>> silenced_;
  std::vector<std::pair<int, std::string>> list_;  // (line, text) in the order found
};

// The sections of `text` in file order (a repeated section once, where it first appears, when
// options.repeated_sections). Every syntax problem is added to *errors with its line; what
// could be read is returned all the same.
std::vector<Section> Lex(const std::string& text, const Options& options, Errors* errors);

// A locator over `sections` (which must outlive it): the line of a key, else of its section.
Errors::Locator LocateIn(const std::vector<Section>* sections);

// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
// neighbouring characters ("ratoi" -> "ratio") each count one.
size_t EditDistance(const std::string& a, const std::string& b);

// The name of `known` closest to `name`, when it is close enough to be a likely misspelling (at
// most max(1, min(3, |name| / 4)) edits); empty otherwise, and for a tie the first in `known`.
std::string ClosestName(const std::string& name, const std::vector<std::string>& known);

// "unknown key 'NAME'", with "; did you mean CLOSE?" when `closest` is not empty.
std::string UnknownKeyMessage(const std::string& name, const std::string& closest);

bool IsSpace(char c);
std::string Trim(std::string_view s);

}  // namespace flap::ini
