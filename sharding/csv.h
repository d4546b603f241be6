// CSV and UTF-8 as corpora's caption files and label lists hold them.
//
// Thread-safety: pure functions; safe from any thread.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace flap::sharding {

// Parses RFC 4180 CSV (comma-separated; fields may be quoted, with "" for a quote and with
// commas and line breaks inside quotes; \r\n or \n line ends; a UTF-8 BOM is skipped).
// Each row records the 1-based line it starts on. Corruption naming `what` for an
// unterminated quote.
struct CsvRow {
  int line = 0;
  std::vector<std::string> fields;
};
StatusOr<std::vector<CsvRow>> ParseCsv(const std::string& text, const std::string& what);

// True if `s` is well-formed UTF-8 (no overlongs, surrogates or code points over U+10FFFF).
bool IsValidUtf8(const std::string& s);

}  // namespace flap::sharding
