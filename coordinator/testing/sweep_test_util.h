// Test support for the sweep tests (sweep_test.cc, sweep_expand_test.cc,
// sweep_errors_test.cc): the README's ablation sweep and helpers that parse, expand, or refuse
// a sweep file and read its error lines.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "coordinator/sweep.h"

namespace flap::coordinator::sweep_testing {

// The ablation of the README: ratio x strategy (meaningless at ratio 0) x reconstruction.
inline constexpr char kAblation[] = R"(# mask ablation
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

[factor.loss.recon_weight]
values = 0, 0.5

[asha]
metric = map10
mode = max
rungs = 100, 200, 400
reduction = 3
)";

inline SweepSpec Parse(const std::string& text) {
  auto s = ParseSweepText(text, "test.ini");
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(s).value() : SweepSpec{};
}

inline std::vector<TrialSpec> Expand(const SweepSpec& spec) {
  auto t = ExpandSweep(spec);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? std::move(t).value() : std::vector<TrialSpec>{};
}

// The error lines of a refused sweep (the summary line dropped).
inline std::vector<std::string> ErrorLines(const Status& s) {
  std::vector<std::string> lines;
  size_t start = s.message().find('\n');
  while (start != std::string::npos) {
    size_t end = s.message().find('\n', start + 1);
    lines.push_back(s.message().substr(start + 3, end == std::string::npos ? std::string::npos : end - start - 3));
    start = end;
  }
  return lines;
}

// Refuses `text` and returns its error lines; each must name the file.
inline std::vector<std::string> Refuse(const std::string& text) {
  auto s = ParseSweepText(text, "bad.ini");
  EXPECT_FALSE(s.ok());
  if (s.ok()) return {};
  EXPECT_EQ(s.status().code(), Status::Code::kInvalidArgument);
  std::vector<std::string> lines = ErrorLines(s.status());
  for (const std::string& l : lines) EXPECT_EQ(l.rfind("bad.ini", 0), 0u) << l;
  return lines;
}

inline bool AnyContains(const std::vector<std::string>& lines, const std::string& needle) {
  for (const std::string& l : lines) {
    if (l.find(needle) != std::string::npos) return true;
  }
  return false;
}

inline std::string Joined(const std::vector<std::string>& lines) {
  std::string all;
  for (const std::string& l : lines) all += l + "\n";
  return all;
}

// A random search over ranges (log-uniform, integer) and values.
inline constexpr char kRandom[] = R"([sweep]
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

inline constexpr char kHeader[] = "[sweep]\nname = s\n";

}  // namespace flap::coordinator::sweep_testing
