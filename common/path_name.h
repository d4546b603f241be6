// Names that become one component of a path: sweep, trial and group ids, report file names.
// A sweep's report goes to <report-dir>/<sweep>/, its checkpoints to <ckpt.root>/<trial>/, so a
// name must never climb out of its folder or hide in it: 1..64 characters of [A-Za-z0-9_.-],
// not starting with a dot (which refuses ".", ".." and hidden names; '/' is outside the set).
// The one check every part uses (coordinator requests and sweep files, flapctl, the worker).
//
// Thread-safety: pure functions; safe from any thread.
#pragma once

#include <cstddef>
#include <string>

namespace flap {

inline constexpr size_t kMaxPathNameLength = 64;

// Whether `c` is in [A-Za-z0-9_.-], the characters of a path name.
inline bool IsPathNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

// `name` with every character outside [A-Za-z0-9_.-] replaced by `replacement` (one for one:
// the length stays; a multi-byte UTF-8 character becomes several). A file or id made of a
// host name or a trial id; its length and leading dot are the caller's (PathNameProblem).
inline std::string CleanPathNameChars(std::string name, char replacement = '_') {
  for (char& c : name) {
    if (!IsPathNameChar(c)) c = replacement;
  }
  return name;
}

// "" when `name` is a valid path name, else what is wrong with it (without the name itself).
// `max_length`: names made of others (a worker's trial id is "<sweep>-<trial>") may be longer.
inline std::string PathNameProblem(const std::string& name, size_t max_length = kMaxPathNameLength) {
  if (name.empty()) return "is empty";
  if (name.size() > max_length) {
    return "is " + std::to_string(name.size()) + " bytes; at most " + std::to_string(max_length) + " allowed";
  }
  for (char c : name) {
    if (!IsPathNameChar(c)) return "has characters outside [A-Za-z0-9_.-]";
  }
  if (name[0] == '.') return "starts with a dot (names become folders and files)";
  return "";
}

inline bool IsPathName(const std::string& name) { return PathNameProblem(name).empty(); }

}  // namespace flap
