// Sweep files (sweep.h): the INI layer (lines, sections, keys, each error with its line), the
// readers of each section, and the parser that puts them together with validation.
#include "coordinator/sweep.h"

#include "common/file_util.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string_view>
#include <utility>

#include "coordinator/sweep_internal.h"

namespace flap::coordinator {
using namespace sweep_internal;  // NOLINT: this part's own helpers
namespace {

struct RawKey {
  std::string value;
  int line = 0;
};

struct RawSection {
  std::string name;
  int line = 0;
  std::map<std::string, RawKey> keys;
  std::vector<std::string> order;  // keys in file order
};

std::string StripComment(const std::string& line) {
  for (size_t i = 0; i < line.size(); ++i) {
    if ((line[i] == '#' || line[i] == ';') && (i == 0 || IsSpace(line[i - 1]))) {
      return line.substr(0, i);
    }
  }
  return line;
}

bool IsKey(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || c == '_')) return false;
  }
  return true;
}

std::vector<RawSection> ParseIni(const std::string& text, Errors* errors) {
  std::vector<RawSection> sections;
  std::istringstream in(text);
  std::string raw;
  int line = 0;
  int current = -1;       // index into sections, -1 before any (or after a refused) header
  bool ignoring = false;  // inside a refused section header: skip its keys quietly
  while (std::getline(in, raw)) {
    ++line;
    const std::string s = Trim(StripComment(raw));
    if (s.empty()) continue;
    if (s.front() == '[') {
      std::string name = s.back() == ']' ? Trim(std::string_view(s).substr(1, s.size() - 2)) : "";
      current = -1;
      ignoring = true;
      if (name.empty()) {
        errors->AddAt(line, "", "", "malformed section header '" + s + "'");
        continue;
      }
      auto dup =
          std::find_if(sections.begin(), sections.end(), [&name](const RawSection& r) { return r.name == name; });
      if (dup != sections.end()) {
        errors->AddAt(line, name, "", "the section repeats (first at line " + std::to_string(dup->line) + ")");
        continue;
      }
      sections.push_back(RawSection{name, line, {}, {}});
      current = static_cast<int>(sections.size()) - 1;
      ignoring = false;
      continue;
    }
    const size_t eq = s.find('=');
    if (eq == std::string::npos) {
      errors->AddAt(line, current >= 0 ? sections[current].name : "", "",
                    "expected '[section]' or 'key = value', got '" + s + "'");
      continue;
    }
    const std::string key = Trim(std::string_view(s).substr(0, eq));
    const std::string value = Trim(std::string_view(s).substr(eq + 1));
    if (current < 0) {
      if (!ignoring) errors->AddAt(line, "", key, "the key is outside any [section]");
      continue;
    }
    RawSection& sec = sections[current];
    if (!IsKey(key)) {
      errors->AddAt(line, sec.name, "", "malformed key '" + key + "'");
      continue;
    }
    if (auto it = sec.keys.find(key); it != sec.keys.end()) {
      errors->AddAt(line, sec.name, key, "the key repeats (first at line " + std::to_string(it->second.line) + ")");
      continue;
    }
    sec.keys.emplace(key, RawKey{value, line});
    sec.order.push_back(key);
    if (value.empty()) {
      errors->AddAt(line, sec.name, key, "the key has no value");
    }
  }
  return sections;
}

// Reads typed keys of one raw section, reporting text that does not convert (and silencing
// later errors about that key: the spec holds a default there, not what was written).
class SectionReader {
 public:
  SectionReader(const RawSection& sec, Errors* errors) : sec_(sec), errors_(errors) {}

  // The raw text of `key`, or nullptr when absent or empty (empty was reported by ParseIni).
  const RawKey* Find(const std::string& key) {
    auto it = sec_.keys.find(key);
    if (it == sec_.keys.end()) return nullptr;
    if (it->second.value.empty()) {
      errors_->Silence(sec_.name, key);
      return nullptr;
    }
    return &it->second;
  }

  void Refuse(const std::string& key, const RawKey& raw, const std::string& message) {
    errors_->AddAt(raw.line, sec_.name, key, message);
    errors_->Silence(sec_.name, key);
  }

  void String(const std::string& key, std::string* out) {
    if (const RawKey* raw = Find(key)) *out = raw->value;
  }

  template <typename T>
  void Integer(const std::string& key, T* out) {
    const RawKey* raw = Find(key);
    if (raw == nullptr) return;
    if (!ParseInteger(raw->value, out)) {
      Refuse(key, *raw,
             std::string("expected ") + (std::is_unsigned_v<T> ? "a non-negative integer" : "an integer") + ", got '" +
                 raw->value + "'");
    }
  }

  template <typename T>
  void IntegerList(const std::string& key, std::vector<T>* out) {
    const RawKey* raw = Find(key);
    if (raw == nullptr) return;
    out->clear();
    for (const std::string& item : SplitList(raw->value)) {
      T v{};
      if (!ParseInteger(item, &v)) {
        Refuse(key, *raw,
               std::string("expected a list of ") + (std::is_unsigned_v<T> ? "non-negative integers" : "integers") +
                   ", got '" + item + "' in '" + raw->value + "'");
        return;
      }
      out->push_back(v);
    }
  }

  void NumberList(const std::string& key, std::vector<double>* out) {
    const RawKey* raw = Find(key);
    if (raw == nullptr) return;
    out->clear();
    for (const std::string& item : SplitList(raw->value)) {
      double v = 0;
      if (!ParseDouble(item, &v)) {
        Refuse(key, *raw, "expected a list of numbers, got '" + item + "' in '" + raw->value + "'");
        return;
      }
      out->push_back(v);
    }
  }

  void Bool(const std::string& key, bool* out) {
    const RawKey* raw = Find(key);
    if (raw != nullptr && !ParseBool(raw->value, out)) {
      Refuse(key, *raw, "expected true or false, got '" + raw->value + "'");
    }
  }

  // Refuses every key not in `known`.
  void RefuseUnknown(const std::vector<std::string>& known) {
    for (const std::string& key : sec_.order) {
      if (std::find(known.begin(), known.end(), key) != known.end()) continue;
      std::string list;
      for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
      Refuse(key, sec_.keys.at(key), "unknown key; [" + SectionKind() + "] takes " + list);
    }
  }

 private:
  std::string SectionKind() const { return sec_.name.rfind("factor.", 0) == 0 ? "factor.*" : sec_.name; }

  const RawSection& sec_;
  Errors* errors_;
};

void ReadSweepSection(SectionReader* r, SweepSpec* spec) {
  r->RefuseUnknown({"name", "search", "budget", "seeds", "priority", "base_config", "search_seed"});
  r->String("name", &spec->name);
  if (const RawKey* raw = r->Find("search")) {
    if (raw->value == "grid") {
      spec->search = SearchKind::kGrid;
    } else if (raw->value == "random") {
      spec->search = SearchKind::kRandom;
    } else {
      r->Refuse("search", *raw, "expected grid or random, got '" + raw->value + "'");
    }
  }
  r->Integer("budget", &spec->budget);
  r->IntegerList("seeds", &spec->seeds);
  r->Integer("priority", &spec->priority);
  r->String("base_config", &spec->base_config);
  r->Integer("search_seed", &spec->search_seed);
}

void ReadFactorSection(SectionReader* r, const std::string& section, Errors* errors, FactorSpec* f) {
  r->RefuseUnknown({"values", "range", "log", "integer", "when"});
  if (const RawKey* raw = r->Find("values")) {
    for (const std::string& item : SplitList(raw->value)) {
      if (item.empty()) {
        r->Refuse("values", *raw, "empty item in the list '" + raw->value + "'");
        f->values.clear();
        break;
      }
      f->values.push_back(item);
    }
  }
  if (const RawKey* raw = r->Find("range")) {
    std::vector<std::string> ends = SplitList(raw->value);
    if (ends.size() != 2 || !ParseDouble(ends[0], &f->lo) || !ParseDouble(ends[1], &f->hi)) {
      r->Refuse("range", *raw, "expected 'lo, hi' (two numbers), got '" + raw->value + "'");
      errors->Silence(section, "values");  // a range was meant: "no values" would mislead
      errors->Silence(section, "log");
      errors->Silence(section, "integer");
    } else {
      f->has_range = true;
    }
  }
  r->Bool("log", &f->log);
  r->Bool("integer", &f->integer);
  if (const RawKey* raw = r->Find("when")) {
    auto c = ParseCondition(raw->value);
    if (c.ok()) {
      f->when = std::move(c).value();
    } else {
      r->Refuse("when", *raw, c.status().message());
    }
  }
}

void ReadAshaSection(SectionReader* r, AshaConfig* asha) {
  r->RefuseUnknown({"metric", "mode", "unit", "rungs", "reduction"});
  r->String("metric", &asha->metric);
  r->String("unit", &asha->unit);
  if (const RawKey* raw = r->Find("mode")) {
    auto m = ParseAshaMode(raw->value);
    if (m.ok()) {
      asha->mode = *m;
    } else {
      r->Refuse("mode", *raw, "expected max or min, got '" + raw->value + "'");
    }
  }
  r->NumberList("rungs", &asha->rungs);
  r->Integer("reduction", &asha->reduction);
}

void ReadReportSection(SectionReader* r, std::optional<ReportTarget>* target) {
  r->RefuseUnknown({"target"});
  if (const RawKey* raw = r->Find("target")) {
    auto t = ParseReportTarget(raw->value);
    if (t.ok()) {
      *target = *t;
    } else {
      r->Refuse("target", *raw, t.status().message());
    }
  }
}

}  // namespace

StatusOr<SweepSpec> ParseSweepText(const std::string& text, const std::string& source) {
  std::vector<RawSection> sections;
  // Errors point at the line of the key (or of its section's header).
  Errors errors(source, [&sections](const std::string& section, const std::string& key) {
    for (const RawSection& s : sections) {
      if (s.name != section) continue;
      auto it = s.keys.find(key);
      return it != s.keys.end() ? it->second.line : s.line;
    }
    return 0;
  });
  sections = ParseIni(text, &errors);

  if (sections.empty() && errors.empty()) {
    errors.AddAt(0, "", "",
                 "the file is empty: a sweep needs a [sweep] section and at least "
                 "one [factor.<section>.<key>] section");
    return errors.ToStatus();
  }

  SweepSpec spec;
  bool have_sweep = false;
  for (const RawSection& sec : sections) {
    SectionReader reader(sec, &errors);
    if (sec.name == "sweep") {
      have_sweep = true;
      ReadSweepSection(&reader, &spec);
    } else if (sec.name == "asha") {
      spec.asha.emplace();
      ReadAshaSection(&reader, &*spec.asha);
    } else if (sec.name == "report") {
      ReadReportSection(&reader, &spec.report_target);
    } else if (sec.name.rfind("factor.", 0) == 0) {
      FactorSpec f;
      f.name = sec.name.substr(std::string("factor.").size());
      ReadFactorSection(&reader, sec.name, &errors, &f);
      spec.factors.push_back(std::move(f));
    } else {
      errors.AddAt(sec.line, sec.name, "",
                   "unknown section; expected [sweep], [asha], [report] or [factor.<section>.<key>]");
    }
  }
  if (!have_sweep) {
    errors.AddAt(0, "", "", "no [sweep] section (it names the sweep)");
    errors.Silence("sweep", "name");
  }
  Validate(spec, &errors);
  FLAP_RETURN_IF_ERROR(errors.ToStatus());
  return spec;
}

StatusOr<SweepSpec> ParseSweepFile(const std::string& path) {
  StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) {
    return text.status().WithContext("sweep file '" + path + "' cannot be read");
  }
  return ParseSweepText(*text, path);
}

}  // namespace flap::coordinator
