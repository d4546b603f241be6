#include "config/ini.h"

#include <algorithm>
#include <limits>
#include <map>
#include <sstream>

namespace flap::ini {
namespace {

std::string StripComment(const std::string& line) {
  for (size_t i = 0; i < line.size(); ++i) {
    if ((line[i] == '#' || line[i] == ';') && (i == 0 || IsSpace(line[i - 1]))) return line.substr(0, i);
  }
  return line;
}

bool IsKeyName(const std::string& s) {
  if (s.empty() || !(s[0] >= 'a' && s[0] <= 'z')) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.')) return false;
  }
  return true;
}

// The lexer's state between lines.
class Lexer {
 public:
  Lexer(const Options& options, Errors* errors) : options_(options), errors_(errors) {}

  void Line(int line, const std::string& raw) {
    const std::string s = Trim(StripComment(raw));
    if (s.empty()) return;
    if (s.front() == '[') return Header(line, s);
    const size_t eq = s.find('=');
    const std::string section = current_ >= 0 ? sections_[current_].name : "";
    if (eq == std::string::npos) {
      errors_->AddAt(line, section, "", "expected '[section]' or 'key = value', got '" + s + "'");
      return;
    }
    const std::string key = Trim(std::string_view(s).substr(0, eq));
    const std::string value = Trim(std::string_view(s).substr(eq + 1));
    if (current_ < 0 && !ignoring_) {
      if (!options_.top_level_keys) {
        errors_->AddAt(line, "", key, "the key is outside any [section]");
        return;
      }
      sections_.push_back(Section{"", 0, {}});
      current_ = static_cast<int>(sections_.size()) - 1;
    }
    if (current_ < 0) return;  // under a refused header: its keys are skipped quietly
    Section& sec = sections_[current_];
    if (!IsKeyName(key)) {
      errors_->AddAt(line, sec.name, "", "malformed key '" + key + "'");
      return;
    }
    if (const Key* first = sec.Find(key)) {
      errors_->AddAt(line, sec.name, key, "the key repeats (first at line " + std::to_string(first->line) + ")");
      return;
    }
    sec.keys.push_back(Key{key, value, line});
  }

  std::vector<Section> Take() { return std::move(sections_); }

 private:
  void Header(int line, const std::string& s) {
    const std::string name = s.back() == ']' ? Trim(std::string_view(s).substr(1, s.size() - 2)) : "";
    current_ = -1;
    ignoring_ = true;
    if (name.empty()) {
      errors_->AddAt(line, "", "", "malformed section header '" + s + "'");
      return;
    }
    auto same = std::find_if(sections_.begin(), sections_.end(), [&name](const Section& r) { return r.name == name; });
    if (same != sections_.end() && !options_.repeated_sections) {
      errors_->AddAt(line, name, "", "the section repeats (first at line " + std::to_string(same->line) + ")");
      return;
    }
    if (same == sections_.end()) same = sections_.insert(sections_.end(), Section{name, line, {}});
    current_ = static_cast<int>(same - sections_.begin());
    ignoring_ = false;
  }

  const Options& options_;
  Errors* errors_;
  std::vector<Section> sections_;
  int current_ = -1;       // index into sections_, -1 before any (or after a refused) header
  bool ignoring_ = false;  // inside a refused section header: skip its keys quietly
};

}  // namespace

const Key* Section::Find(const std::string& name) const {
  auto it = std::find_if(keys.begin(), keys.end(), [&name](const Key& k) { return k.name == name; });
  return it == keys.end() ? nullptr : &*it;
}

Errors::Errors(std::string source, std::string what, Locator locate, bool summary_for_one)
    : source_(std::move(source)), what_(std::move(what)), locate_(std::move(locate)), summary_for_one_(summary_for_one) {}

void Errors::Add(const std::string& section, const std::string& key, const std::string& message) {
  if (silenced_.count({section, key}) != 0) return;
  AddAt(locate_ ? locate_(section, key) : 0, section, key, message);
}

void Errors::AddAt(int line, const std::string& section, const std::string& key, const std::string& message) {
  std::string e = source_ + (line > 0 ? ":" + std::to_string(line) : "") + ": ";
  if (!section.empty()) e += "[" + section + "]";
  if (!key.empty()) e += (section.empty() ? "" : " ") + key;
  if (!section.empty() || !key.empty()) e += ": ";
  list_.push_back({line, e + message});
}

Status Errors::ToStatus() const {
  if (list_.empty()) return Status::OK();
  if (list_.size() == 1 && !summary_for_one_) return Status::InvalidArgument(list_[0].second);
  std::vector<std::pair<int, std::string>> sorted = list_;
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    auto key = [](int line) { return line > 0 ? line : std::numeric_limits<int>::max(); };
    return key(a.first) < key(b.first);
  });
  std::string msg = source_ + ": " + std::to_string(sorted.size()) + (sorted.size() == 1 ? " error" : " errors") +
                    " in " + what_ + ":";
  for (const auto& e : sorted) msg += "\n  " + e.second;
  return Status::InvalidArgument(msg);
}

std::vector<Section> Lex(const std::string& text, const Options& options, Errors* errors) {
  Lexer lexer(options, errors);
  std::istringstream in(text);
  std::string raw;
  for (int line = 1; std::getline(in, raw); ++line) lexer.Line(line, raw);
  return lexer.Take();
}

Errors::Locator LocateIn(const std::vector<Section>* sections) {
  return [sections](const std::string& section, const std::string& key) {
    for (const Section& s : *sections) {
      if (s.name != section) continue;
      const Key* k = s.Find(key);
      return k != nullptr ? k->line : s.line;
    }
    return 0;
  };
}

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

std::string ClosestName(const std::string& name, const std::vector<std::string>& known) {
  const size_t limit = std::max<size_t>(1, std::min<size_t>(3, name.size() / 4));
  std::string best;
  size_t best_distance = limit + 1;
  for (const std::string& k : known) {
    const size_t d = EditDistance(name, k);
    if (d < best_distance) {
      best = k;
      best_distance = d;
    }
  }
  return best;
}

std::string UnknownKeyMessage(const std::string& name, const std::string& closest) {
  return "unknown key '" + name + "'" + (closest.empty() ? "" : "; did you mean " + closest + "?");
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && IsSpace(s[b])) ++b;
  while (e > b && IsSpace(s[e - 1])) --e;
  return std::string(s.substr(b, e - b));
}

}  // namespace flap::ini
