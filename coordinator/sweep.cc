// Sweep files (sweep.h): the readers of each section of the file (lexed by config/ini.h, which
// reports every syntax error with its line), and the parser that puts them together with
// validation.
#include "coordinator/sweep.h"

#include "common/file_util.h"

#include <algorithm>
#include <utility>

#include "coordinator/sweep_internal.h"

namespace flap::coordinator {
using namespace sweep_internal;  // NOLINT: this part's own helpers
namespace {

using RawKey = ini::Key;

// Reads typed keys of one section, reporting text that does not convert (and silencing
// later errors about that key: the spec holds a default there, not what was written).
class SectionReader {
 public:
  SectionReader(const ini::Section& sec, Errors* errors) : sec_(sec), errors_(errors) {}

  // The text of `key`, or nullptr when absent or empty (an empty value is refused by
  // RefuseEmpty).
  const RawKey* Find(const std::string& key) {
    const RawKey* raw = sec_.Find(key);
    if (raw == nullptr) return nullptr;
    if (raw->value.empty()) {
      errors_->Silence(sec_.name, key);
      return nullptr;
    }
    return raw;
  }

  // Refuses every key written without a value.
  void RefuseEmpty() {
    for (const RawKey& raw : sec_.keys) {
      if (raw.value.empty()) errors_->AddAt(raw.line, sec_.name, raw.name, "the key has no value");
    }
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

  // Refuses every key not in `known`, naming the closest known key.
  void RefuseUnknown(const std::vector<std::string>& known) {
    std::string list;
    for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
    for (const RawKey& raw : sec_.keys) {
      if (std::find(known.begin(), known.end(), raw.name) != known.end()) continue;
      Refuse(raw.name, raw,
             ini::UnknownKeyMessage(raw.name, ini::ClosestName(raw.name, known)) + " ([" + SectionKind() +
                 "] takes " + list + ")");
    }
  }

 private:
  std::string SectionKind() const { return sec_.name.rfind("factor.", 0) == 0 ? "factor.*" : sec_.name; }

  const ini::Section& sec_;
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
  std::vector<ini::Section> sections;
  // Errors point at the line of the key (or of its section's header).
  Errors errors(source, ini::LocateIn(&sections));
  sections = ini::Lex(text, ini::Options{}, &errors);

  if (sections.empty() && errors.empty()) {
    errors.AddAt(0, "", "",
                 "the file is empty: a sweep needs a [sweep] section and at least "
                 "one [factor.<section>.<key>] section");
    return errors.ToStatus();
  }

  SweepSpec spec;
  bool have_sweep = false;
  for (const ini::Section& sec : sections) {
    SectionReader reader(sec, &errors);
    reader.RefuseEmpty();
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
