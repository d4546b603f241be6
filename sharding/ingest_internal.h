// Internal to sharding/'s ingestion (sharding/ingest.h is its contract; no other part includes
// this): the plan's types, the Planner with one adapter per corpus format (ingest_clotho.cc,
// ingest_audiocaps.cc, ingest_webdataset.cc; their shared checks in ingest_plan.cc), and the
// writing of one chunk of the plan into a shard (ingest_write.cc). ingest.cc drives them.
//
// Thread-safety: a Planner is used by one thread; WriteChunk may run on several threads at once
// for different chunks (it reads the plan, never writes it).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "sharding/csv.h"
#include "sharding/ingest.h"

namespace flap::sharding::ingest_internal {

using nlohmann::json;

// Bump when shard contents for the same inputs change. 2: val / test roles, seeded clip order.
constexpr int kIngestVersion = 2;

// One clip as planned: where its audio comes from and what its captions are.
struct Candidate {
  std::string key;
  std::string split;
  uint64_t rank = 0;       // place in the seeded order of its split (ShuffleRank)
  std::string origin;      // file or "csv:line" that introduced it, for messages
  std::string audio_path;  // empty for WebDataset sources (source_shard below)
  // WebDataset sources: the sample's shard and position in it (read again, and decoded, only
  // when its chunk is written, so memory does not grow with the corpus), and the XXH64 of its
  // encoded audio member (for the fingerprint).
  std::string source_shard;
  int64_t source_index = -1;
  uint64_t audio_xxh64 = 0;
  std::vector<std::string> captions;
  std::vector<std::string> captions_augment;
  std::vector<std::string> tags;
  int64_t file_size = 0;
  int64_t file_mtime_ns = 0;
};

struct Chunk {
  std::string split;
  int index = 0;
  std::string name;             // "<split>-%06d.tar"
  size_t first = 0, count = 0;  // range in the sorted candidate list
};

// What writing one chunk produced.
struct ChunkResult {
  bool done = false;
  int64_t num_samples = 0;
  int64_t bytes = 0;
  std::string xxh64;
  std::vector<IngestIssue> issues;
  Status status;  // IOError etc. (not bad input)
};

// ---- Shared helpers (ingest_plan.cc) ----

// `s` without leading and trailing blanks (space, tab, CR, LF).
std::string Trim(const std::string& s);
// Keys may not hold '.', '/', '\\' or control characters (ShardWriter); they become '_'.
std::string SanitizeKey(const std::string& raw);
// The file name of `file_name` without its folder and last extension.
std::string Stem(const std::string& file_name);
// The seeded split of a clip: a pure function of (seed, key) and the fractions.
std::string SeededSplit(uint64_t seed, const std::string& key, double val_fraction, double test_fraction);
// The clip's place in the seeded order of its split: a pure function of (shuffle_seed, key).
// Sorting a split's clips by it applies a seeded permutation; the seed is mixed with a constant
// first, so the order does not follow the seeded split's draw when both seeds are equal.
uint64_t ShuffleRank(uint64_t shuffle_seed, const std::string& key);
// Splits are ordered train, val, test, then the others by name.
int SplitOrder(const std::string& split);
// 16 lower-case hex digits.
std::string Hex64(uint64_t v);
json IssueToJson(const IngestIssue& i);
IngestIssue IssueFromJson(const json& j);
// InvalidArgument naming the issue's file, reason, detail and key.
Status IssueToStatus(const IngestIssue& i);
// Stats `path`; false if it is not a readable regular file.
bool StatFile(const std::string& path, int64_t* size, int64_t* mtime_ns);
// Checks one caption; empty string if fine, else the reason (kReasonInvalidUtf8, kReasonEmptyCaption).
const char* CaptionProblem(const std::string& caption);

// ---- Planning ----

// Collects the clips of every input as Candidates, and an IngestIssue for each one refused while
// planning (a bad row, a bad caption, a missing audio file, a duplicate key, a damaged source
// shard). Each Add* reads one input of its format; an error status only for an input that cannot
// be read at all (a CSV that is not of the format, a folder that cannot be listed).
class Planner {
 public:
  explicit Planner(const IngestOptions& options) : options_(options) {}

  Status AddClotho(const IngestInput& input);      // ingest_clotho.cc
  Status AddAudioCaps(const IngestInput& input);   // ingest_audiocaps.cc
  Status AddWebDataset(const IngestInput& input);  // ingest_webdataset.cc

  std::vector<Candidate>& candidates() { return candidates_; }
  std::vector<IngestIssue>& issues() { return issues_; }
  // What the plan depends on beyond its candidates (source shards' sizes and times).
  const std::string& fingerprint_text() const { return fingerprint_; }

 private:
  // The rows of a CSV with a header; InvalidArgument for an empty one.
  StatusOr<std::vector<CsvRow>> ReadCsv(const std::string& path);
  // The input's split role, or the seeded split when the input has none.
  std::string SplitFor(const IngestInput& input, const std::string& key) const;
  // Adds a clip whose audio is a file, refusing a missing file or a duplicate key.
  void AddFileCandidate(Candidate c, const IngestInput& input);
  // Adds a clip, refusing a key seen before (the first is kept).
  void AddCandidate(Candidate c);
  void Issue(std::string file, std::string key, const char* reason, std::string detail);

  const IngestOptions& options_;
  std::vector<Candidate> candidates_;
  std::vector<IngestIssue> issues_;
  std::map<std::string, std::string> seen_;  // key -> origin of its first occurrence
  std::string fingerprint_;
};

// ---- Writing (ingest_write.cc) ----

// Writes one chunk into its shard. Stops early (result.done false) when `stop` is raised.
ChunkResult WriteChunk(const IngestOptions& options, const std::vector<Candidate>& candidates, const Chunk& chunk,
                       const std::string& out_dir, std::atomic<bool>* stop);
json ChunkResultToJson(const ChunkResult& r);
// A state entry is reusable when its shard (if any) is on disk with the recorded size/checksum.
bool ReuseChunk(const std::string& out_dir, const Chunk& chunk, const json& entry, ChunkResult* r);

}  // namespace flap::sharding::ingest_internal
