// Test support: reads Prometheus's text exposition format (what a /metrics endpoint serves)
// into samples, so tests can look series up by name and labels whatever the label order.
// Handles the subset our servers write: one sample per line, `name{k="v",...} value`, with
// \\, \" and \n escapes in label values; comments and blank lines are skipped.
#pragma once

#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace flap::testing {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

inline std::vector<Sample> ParseExposition(const std::string& text) {
  std::vector<Sample> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    Sample s;
    size_t i = line.find_first_of("{ ");
    if (i == std::string::npos) continue;
    s.name = line.substr(0, i);
    if (line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const size_t eq = line.find('=', i);
        if (eq == std::string::npos || eq + 1 >= line.size() || line[eq + 1] != '"') break;
        const std::string key = line.substr(i, eq - i);
        std::string value;
        size_t j = eq + 2;
        for (; j < line.size() && line[j] != '"'; ++j) {
          if (line[j] == '\\' && j + 1 < line.size()) {
            ++j;
            value += line[j] == 'n' ? '\n' : line[j];
          } else {
            value += line[j];
          }
        }
        s.labels[key] = value;
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      i = line.find(' ', i);
      if (i == std::string::npos) continue;
    }
    s.value = std::strtod(line.c_str() + i + 1, nullptr);
    out.push_back(std::move(s));
  }
  return out;
}

// The samples named `name` whose labels include every pair of `labels`.
inline std::vector<Sample> FindSamples(const std::vector<Sample>& samples, const std::string& name,
                                       const std::map<std::string, std::string>& labels = {}) {
  std::vector<Sample> out;
  for (const Sample& s : samples) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = s.labels.find(k);
      match = match && it != s.labels.end() && it->second == v;
    }
    if (match) out.push_back(s);
  }
  return out;
}

// "name{k="v",...}" for failure messages.
inline std::string Describe(const std::string& name, const std::map<std::string, std::string>& labels) {
  std::string out = name + "{";
  for (const auto& [k, v] : labels) out += (out.back() == '{' ? "" : ",") + k + "=\"" + v + "\"";
  return out + "}";
}

}  // namespace flap::testing
