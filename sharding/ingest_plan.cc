// The ingestion's shared helpers and the Planner's checks common to every format
// (sharding/ingest_internal.h).
#include <sys/stat.h>
#include <xxhash.h>

#include <cstdio>
#include <filesystem>

#include "common/file_util.h"
#include "sharding/ingest_internal.h"
#include "sharding/manifest.h"

namespace flap::sharding::ingest_internal {

std::string Trim(const std::string& s) {
  const char* ws = " \t\r\n";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

std::string SanitizeKey(const std::string& raw) {
  std::string key = raw;
  for (char& c : key) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '.' || c == '/' || c == '\\' || u < 0x20 || u == 0x7f) c = '_';
  }
  return key;
}

std::string Stem(const std::string& file_name) {
  std::string base = std::filesystem::path(file_name).filename().string();
  size_t dot = base.rfind('.');
  return dot == std::string::npos || dot == 0 ? base : base.substr(0, dot);
}

namespace {

// SplitMix64's step and finaliser.
uint64_t Mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

std::string SeededSplit(uint64_t seed, const std::string& key, double val_fraction, double test_fraction) {
  const uint64_t h = Mix64(XXH64(key.data(), key.size(), seed));
  const double u = static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);
  if (u < val_fraction) return kValSplit;
  if (u < val_fraction + test_fraction) return kTestSplit;
  return kTrainSplit;
}

uint64_t ShuffleRank(uint64_t shuffle_seed, const std::string& key) {
  return Mix64(XXH64(key.data(), key.size(), Mix64(shuffle_seed ^ 0x73687566666c6521ULL)));
}

int SplitOrder(const std::string& split) {
  if (split == kTrainSplit) return 0;
  if (split == kValSplit) return 1;
  if (split == kTestSplit) return 2;
  return 3;
}

std::string Hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

json IssueToJson(const IngestIssue& i) {
  return {{"file", i.file}, {"key", i.key}, {"reason", i.reason}, {"detail", i.detail}};
}

IngestIssue IssueFromJson(const json& j) {
  IngestIssue i;
  i.file = j.value("file", "");
  i.key = j.value("key", "");
  i.reason = j.value("reason", "");
  i.detail = j.value("detail", "");
  return i;
}

Status IssueToStatus(const IngestIssue& i) {
  return Status::InvalidArgument(i.file + ": " + i.reason + ": " + i.detail +
                                 (i.key.empty() ? "" : " (key " + i.key + ")"));
}

bool StatFile(const std::string& path, int64_t* size, int64_t* mtime_ns) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  *size = static_cast<int64_t>(st.st_size);
  *mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  return true;
}

const char* CaptionProblem(const std::string& caption) {
  if (!IsValidUtf8(caption)) return kReasonInvalidUtf8;
  if (Trim(caption).empty()) return kReasonEmptyCaption;
  return "";
}

StatusOr<std::vector<CsvRow>> Planner::ReadCsv(const std::string& path) {
  FLAP_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  FLAP_ASSIGN_OR_RETURN(std::vector<CsvRow> rows, ParseCsv(text, path));
  if (rows.empty()) return Status::InvalidArgument(path + ": empty CSV (no header)");
  return rows;
}

std::string Planner::SplitFor(const IngestInput& input, const std::string& key) const {
  return input.split.empty() ? SeededSplit(options_.seed, key, options_.val_fraction, options_.test_fraction)
                             : SplitRole(input.split);
}

void Planner::AddFileCandidate(Candidate c, const IngestInput& input) {
  c.split = SplitFor(input, c.key);
  if (!StatFile(c.audio_path, &c.file_size, &c.file_mtime_ns)) {
    if (seen_.count(c.key)) {  // a duplicate is reported as such first
      Issue(c.audio_path, c.key, kReasonDuplicateKey, "first seen at " + seen_[c.key]);
      return;
    }
    seen_[c.key] = c.origin;
    Issue(c.audio_path, c.key, kReasonMissingFile, "audio file not found (" + c.origin + ")");
    return;
  }
  AddCandidate(std::move(c));
}

void Planner::AddCandidate(Candidate c) {
  auto it = seen_.find(c.key);
  if (it != seen_.end()) {
    Issue(c.audio_path.empty() ? c.origin : c.audio_path, c.key, kReasonDuplicateKey,
          "first seen at " + it->second + "; this one (" + c.origin + ") is dropped");
    return;
  }
  seen_[c.key] = c.origin;
  candidates_.push_back(std::move(c));
}

void Planner::Issue(std::string file, std::string key, const char* reason, std::string detail) {
  issues_.push_back({std::move(file), std::move(key), reason, std::move(detail)});
}

}  // namespace flap::sharding::ingest_internal
