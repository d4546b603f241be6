// Implementation of sharding/ingest.h: plan (CSV / source shards -> clips in seeded order ->
// chunks), write (decode + ShardWriter per chunk, in a pool of threads), finish (tokenizer,
// report, manifest). Resume state lives in ingest_state.json.
#include "sharding/ingest.h"

#include <sndfile.h>
#include <sys/stat.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "common/file_util.h"
#include "sharding/audio.h"
#include "sharding/manifest.h"
#include "sharding/shard_reader.h"
#include "sharding/shard_writer.h"
#include "sharding/tokenizer.h"

namespace flap::sharding {
namespace {

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

std::string Trim(const std::string& s) {
  const char* ws = " \t\r\n";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

// Keys may not hold '.', '/', '\\' or control characters (ShardWriter); replace them.
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

uint64_t Mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The seeded split: a pure function of (seed, key).
std::string SeededSplit(uint64_t seed, const std::string& key, double val_fraction, double test_fraction) {
  const uint64_t h = Mix64(XXH64(key.data(), key.size(), seed));
  const double u = static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);
  if (u < val_fraction) return kValSplit;
  if (u < val_fraction + test_fraction) return kTestSplit;
  return kTrainSplit;
}

// The clip's place in the seeded order of its split: a pure function of (shuffle_seed, key).
// Sorting a split's clips by it applies a seeded permutation; the seed is mixed with a constant
// first, so the order does not follow the seeded split's draw when both seeds are equal.
uint64_t ShuffleRank(uint64_t shuffle_seed, const std::string& key) {
  return Mix64(XXH64(key.data(), key.size(), Mix64(shuffle_seed ^ 0x73687566666c6521ULL)));
}

// Splits are ordered train, val, test, then the others by name.
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

// Stats `path`; false if it is not a readable regular file.
bool StatFile(const std::string& path, int64_t* size, int64_t* mtime_ns) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  *size = static_cast<int64_t>(st.st_size);
  *mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  return true;
}

// Checks one caption; empty string if fine, else the reason.
const char* CaptionProblem(const std::string& caption) {
  if (!IsValidUtf8(caption)) return kReasonInvalidUtf8;
  if (Trim(caption).empty()) return kReasonEmptyCaption;
  return "";
}

// ---- Planning ----

class Planner {
 public:
  explicit Planner(const IngestOptions& options) : options_(options) {}

  Status AddClotho(const IngestInput& input) {
    FLAP_ASSIGN_OR_RETURN(std::vector<CsvRow> rows, ReadCsv(input.csv));
    const std::vector<std::string>& header = rows[0].fields;
    int file_col = -1;
    std::vector<int> caption_cols;
    for (size_t c = 0; c < header.size(); ++c) {
      const std::string name = Trim(header[c]);
      if (name == "file_name") file_col = static_cast<int>(c);
      if (name.rfind("caption", 0) == 0) caption_cols.push_back(static_cast<int>(c));
    }
    if (file_col < 0 || caption_cols.empty()) {
      return Status::InvalidArgument(input.csv +
                                     ": not a Clotho captions CSV (needs a header with "
                                     "file_name and caption_1..caption_5)");
    }
    for (size_t r = 1; r < rows.size(); ++r) {
      const CsvRow& row = rows[r];
      const std::string where = input.csv + ":" + std::to_string(row.line);
      if (row.fields.size() == 1 && Trim(row.fields[0]).empty()) continue;  // blank line
      if (row.fields.size() != header.size()) {
        Issue(where, "", kReasonBadRow,
              std::to_string(row.fields.size()) + " fields, the header has " + std::to_string(header.size()));
        continue;
      }
      const std::string file_name = row.fields[static_cast<size_t>(file_col)];
      const std::string key = SanitizeKey(Stem(file_name));
      if (Trim(file_name).empty() || key.empty()) {
        Issue(where, "", kReasonBadRow, "empty file_name");
        continue;
      }
      Candidate c;
      c.key = key;
      c.origin = where;
      bool bad = false;
      for (int col : caption_cols) {
        const std::string& caption = row.fields[static_cast<size_t>(col)];
        const char* problem = CaptionProblem(caption);
        if (*problem) {
          Issue(where, key, problem, "caption column '" + header[static_cast<size_t>(col)] + "'");
          bad = true;
          break;
        }
        c.captions.push_back(Trim(caption));
      }
      if (bad) continue;
      c.audio_path = JoinPath(input.audio_dir, file_name);
      AddFileCandidate(std::move(c), input);
    }
    return Status::OK();
  }

  Status AddAudioCaps(const IngestInput& input) {
    FLAP_ASSIGN_OR_RETURN(std::vector<CsvRow> rows, ReadCsv(input.csv));
    const std::vector<std::string>& header = rows[0].fields;
    int yt_col = -1, start_col = -1, caption_col = -1;
    for (size_t c = 0; c < header.size(); ++c) {
      const std::string name = Trim(header[c]);
      if (name == "youtube_id") yt_col = static_cast<int>(c);
      if (name == "start_time") start_col = static_cast<int>(c);
      if (name == "caption") caption_col = static_cast<int>(c);
    }
    if (yt_col < 0 || caption_col < 0) {
      return Status::InvalidArgument(input.csv +
                                     ": not an AudioCaps CSV (needs a header with youtube_id, "
                                     "start_time and caption)");
    }
    // Audio files by stem, listed once.
    std::map<std::string, std::string> by_stem;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(input.audio_dir, ec)) {
      const std::string name = entry.path().filename().string();
      auto [it, inserted] = by_stem.emplace(Stem(name), name);
      if (!inserted && name < it->second) it->second = name;  // deterministic on ties
    }
    if (ec) return Status::NotFound(input.audio_dir + ": cannot list the audio folder: " + ec.message());

    // Rows of one clip (same youtube id) are grouped, in first-appearance order.
    std::vector<Candidate> clips;
    std::map<std::string, size_t> index;
    std::map<std::string, std::string> start_of;
    for (size_t r = 1; r < rows.size(); ++r) {
      const CsvRow& row = rows[r];
      const std::string where = input.csv + ":" + std::to_string(row.line);
      if (row.fields.size() == 1 && Trim(row.fields[0]).empty()) continue;
      if (row.fields.size() != header.size()) {
        Issue(where, "", kReasonBadRow,
              std::to_string(row.fields.size()) + " fields, the header has " + std::to_string(header.size()));
        continue;
      }
      const std::string ytid = Trim(row.fields[static_cast<size_t>(yt_col)]);
      const std::string key = SanitizeKey(ytid);
      if (key.empty()) {
        Issue(where, "", kReasonBadRow, "empty youtube_id");
        continue;
      }
      const std::string& caption = row.fields[static_cast<size_t>(caption_col)];
      const char* problem = CaptionProblem(caption);
      if (*problem) {
        Issue(where, key, problem, "caption");
        continue;
      }
      auto it = index.find(key);
      if (it == index.end()) {
        Candidate c;
        c.key = key;
        c.origin = where;
        index[key] = clips.size();
        start_of[key] = start_col >= 0 ? Trim(row.fields[static_cast<size_t>(start_col)]) : "";
        clips.push_back(std::move(c));
        it = index.find(key);
      }
      clips[it->second].captions.push_back(Trim(caption));
    }
    for (Candidate& c : clips) {
      // "<ytid>_<start>" (as written, or as an integer), else "<ytid>".
      std::vector<std::string> stems;
      const std::string& start = start_of[c.key];
      if (!start.empty()) {
        stems.push_back(c.key + "_" + start);
        char* end = nullptr;
        double v = std::strtod(start.c_str(), &end);
        if (end && *end == '\0' && std::isfinite(v)) {
          stems.push_back(c.key + "_" + std::to_string(static_cast<long long>(std::llround(v))));
        }
      }
      stems.push_back(c.key);
      std::string found;
      for (const std::string& s : stems) {
        auto f = by_stem.find(s);
        if (f != by_stem.end()) {
          found = f->second;
          break;
        }
      }
      c.audio_path = JoinPath(input.audio_dir, found.empty() ? stems.front() + ".*" : found);
      AddFileCandidate(std::move(c), input);
    }
    return Status::OK();
  }

  Status AddWebDataset(const IngestInput& input) {
    for (const std::string& path : input.shards) {
      int64_t size = 0, mtime = 0;
      if (!StatFile(path, &size, &mtime)) {
        Issue(path, "", kReasonMissingFile, "source shard not found");
        continue;
      }
      fingerprint_ += "wds " + path + " " + std::to_string(size) + " " + std::to_string(mtime) + "\n";
      auto reader = ShardReader::Open(path, /*decode_audio=*/false);
      if (!reader.ok()) {
        Issue(path, "", kReasonCorruptShard, reader.status().ToString());
        continue;
      }
      Sample sample;
      for (int64_t ordinal = 0;; ++ordinal) {
        StatusOr<bool> more = reader.value()->Next(&sample);
        if (!more.ok()) {
          Issue(path, "", kReasonCorruptShard, "samples after the damage are lost: " + more.status().ToString());
          break;
        }
        if (!more.value()) break;
        Candidate c;
        c.key = SanitizeKey(sample.key);
        c.origin = path + ":" + sample.key;
        bool bad = false;
        for (const std::string& caption : sample.captions) {
          const char* problem = CaptionProblem(caption);
          if (*problem) {
            Issue(c.origin, c.key, problem, "text");
            bad = true;
            break;
          }
          c.captions.push_back(Trim(caption));
        }
        if (bad) continue;
        for (const std::string& t : sample.captions_augment) {
          if (!*CaptionProblem(t)) c.captions_augment.push_back(Trim(t));
        }
        for (const std::string& t : sample.tags) {
          if (!*CaptionProblem(t)) c.tags.push_back(Trim(t));
        }
        c.source_shard = path;
        c.source_index = ordinal;
        const std::string& raw = reader.value()->raw_audio();
        c.audio_xxh64 = XXH64(raw.data(), raw.size(), 0);
        c.split = SplitFor(input, c.key);
        AddCandidate(std::move(c));
      }
      for (const std::string& warning : reader.value()->warnings()) Issue(path, "", kReasonBadMember, warning);
    }
    return Status::OK();
  }

  std::vector<Candidate>& candidates() { return candidates_; }
  std::vector<IngestIssue>& issues() { return issues_; }
  const std::string& fingerprint_text() const { return fingerprint_; }

 private:
  StatusOr<std::vector<CsvRow>> ReadCsv(const std::string& path) {
    FLAP_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
    FLAP_ASSIGN_OR_RETURN(std::vector<CsvRow> rows, ParseCsv(text, path));
    if (rows.empty()) return Status::InvalidArgument(path + ": empty CSV (no header)");
    return rows;
  }

  std::string SplitFor(const IngestInput& input, const std::string& key) const {
    return input.split.empty() ? SeededSplit(options_.seed, key, options_.val_fraction, options_.test_fraction)
                               : SplitRole(input.split);
  }

  void AddFileCandidate(Candidate c, const IngestInput& input) {
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

  void AddCandidate(Candidate c) {
    auto it = seen_.find(c.key);
    if (it != seen_.end()) {
      Issue(c.audio_path.empty() ? c.origin : c.audio_path, c.key, kReasonDuplicateKey,
            "first seen at " + it->second + "; this one (" + c.origin + ") is dropped");
      return;
    }
    seen_[c.key] = c.origin;
    candidates_.push_back(std::move(c));
  }

  void Issue(std::string file, std::string key, const char* reason, std::string detail) {
    issues_.push_back({std::move(file), std::move(key), reason, std::move(detail)});
  }

  const IngestOptions& options_;
  std::vector<Candidate> candidates_;
  std::vector<IngestIssue> issues_;
  std::map<std::string, std::string> seen_;  // key -> origin of its first occurrence
  std::string fingerprint_;
};

// ---- Writing ----

// Declared frames and rate of an audio file, from its header; false if it cannot be opened.
bool ProbeAudio(const std::string& path, int64_t* frames, int* rate) {
  SF_INFO info{};
  SNDFILE* snd = sf_open(path.c_str(), SFM_READ, &info);
  if (snd == nullptr) return false;
  *frames = static_cast<int64_t>(info.frames);
  *rate = info.samplerate;
  sf_close(snd);
  return true;
}

// Decodes and checks one clip; true with *sample filled, or false with *issue filled.
// WebDataset clips come decoded already (`wds_audio`, from DecodeSourceClips).
bool PrepareClip(const IngestOptions& options, const Candidate& c, StatusOr<std::vector<float>>* wds_audio,
                 Sample* sample, IngestIssue* issue) {
  *issue = IngestIssue{c.audio_path.empty() ? c.origin : c.audio_path, c.key, "", ""};
  std::vector<float> audio;
  if (c.audio_path.empty()) {
    if (wds_audio == nullptr || !wds_audio->ok()) {
      issue->reason = kReasonUndecodable;
      issue->detail = wds_audio == nullptr ? "not read" : wds_audio->status().ToString();
      return false;
    }
    audio = std::move(*wds_audio).value();
  } else {
    int64_t frames = 0;
    int rate = 0;
    if (!ProbeAudio(c.audio_path, &frames, &rate)) {
      issue->reason = kReasonUndecodable;
      issue->detail = std::string("libsndfile cannot open it: ") + sf_strerror(nullptr);
      return false;
    }
    if (frames == 0) {
      issue->reason = kReasonZeroLength;
      issue->detail = "the file holds no audio frames";
      return false;
    }
    StatusOr<std::vector<float>> decoded = DecodeAudioFile(c.audio_path);
    if (!decoded.ok()) {
      const bool truncated = frames > 0 && decoded.status().code() == Status::Code::kCorruption &&
                             decoded.status().message().find("decoding failed") != std::string::npos;
      issue->reason = truncated ? kReasonTruncated : kReasonUndecodable;
      issue->detail = decoded.status().ToString();
      return false;
    }
    audio = std::move(decoded).value();
    if (frames > 0 && rate > 0) {
      const double expected = static_cast<double>(frames) * kSampleRate / rate;
      if (static_cast<double>(audio.size()) < expected - std::max(2.0, expected * 0.001)) {
        issue->reason = kReasonTruncated;
        issue->detail = "decoded " + std::to_string(audio.size()) + " samples, the header promises " +
                        std::to_string(std::llround(expected));
        return false;
      }
    }
  }
  const double seconds = static_cast<double>(audio.size()) / kSampleRate;
  if (audio.empty()) {
    issue->reason = kReasonZeroLength;
    issue->detail = "no audio";
    return false;
  }
  if (seconds < options.min_seconds) {
    issue->reason = kReasonTooShort;
    issue->detail = std::to_string(seconds) + " s < --min-seconds " + std::to_string(options.min_seconds);
    return false;
  }
  if (seconds > options.max_seconds) {
    if (!options.crop) {
      issue->reason = kReasonTooLong;
      issue->detail = std::to_string(seconds) + " s > --max-seconds " + std::to_string(options.max_seconds);
      return false;
    }
    audio.resize(static_cast<size_t>(std::llround(options.max_seconds * kSampleRate)));
  }
  sample->key = c.key;
  sample->audio = std::move(audio);
  sample->captions = c.captions;
  sample->captions_augment = c.captions_augment;
  sample->tags = c.tags;
  return true;
}

// Decodes the audio of the chunk's WebDataset clips: each source shard they come from is read
// once, in order, decoding only the members the chunk needs (memory: one chunk's audio).
std::map<size_t, StatusOr<std::vector<float>>> DecodeSourceClips(const std::vector<Candidate>& candidates,
                                                                 const Chunk& chunk) {
  std::map<std::string, std::map<int64_t, size_t>> by_source;  // source -> ordinal -> candidate
  for (size_t i = chunk.first; i < chunk.first + chunk.count; ++i) {
    if (candidates[i].audio_path.empty()) by_source[candidates[i].source_shard][candidates[i].source_index] = i;
  }
  std::map<size_t, StatusOr<std::vector<float>>> out;
  for (const auto& [source, wanted] : by_source) {
    auto reader = ShardReader::Open(source, /*decode_audio=*/false);
    Status failure = reader.ok() ? Status::OK() : reader.status();
    Sample sample;
    auto it = wanted.begin();
    for (int64_t ordinal = 0; failure.ok() && it != wanted.end(); ++ordinal) {
      StatusOr<bool> more = reader.value()->Next(&sample);
      if (!more.ok() || !more.value()) {
        failure = more.ok() ? Status::Corruption(source + ": ended before sample " + std::to_string(it->first) +
                                                 " (changed during ingestion?)")
                            : more.status();
        break;
      }
      if (ordinal != it->first) continue;
      const Candidate& c = candidates[it->second];
      if (SanitizeKey(sample.key) != c.key) {
        out.emplace(it->second,
                    Status::Corruption(source + ": sample " + std::to_string(ordinal) + " is '" + sample.key +
                                       "', planned '" + c.key + "' (changed during ingestion?)"));
      } else {
        const std::string& raw = reader.value()->raw_audio();
        out.emplace(it->second,
                    DecodeAudio(raw.data(), raw.size(), source + ": member " + reader.value()->raw_audio_name()));
      }
      ++it;
    }
    for (; it != wanted.end(); ++it) out.emplace(it->second, failure);
  }
  return out;
}

// Writes one chunk into its shard. Stops early (result.done false) when `stop` is raised.
ChunkResult WriteChunk(const IngestOptions& options, const std::vector<Candidate>& candidates, const Chunk& chunk,
                       const std::string& out_dir, std::atomic<bool>* stop) {
  ChunkResult result;
  const std::string path = JoinPath(out_dir, chunk.name);
  std::unique_ptr<ShardWriter> writer;
  std::map<size_t, StatusOr<std::vector<float>>> wds = DecodeSourceClips(candidates, chunk);
  for (size_t i = chunk.first; i < chunk.first + chunk.count; ++i) {
    if (stop->load()) return result;
    Sample sample;
    IngestIssue issue;
    auto audio = wds.find(i);
    if (!PrepareClip(options, candidates[i], audio == wds.end() ? nullptr : &audio->second, &sample, &issue)) {
      result.issues.push_back(issue);
      if (options.on_error == OnError::kFail) {
        stop->store(true);
        return result;
      }
      continue;
    }
    if (!writer) {
      auto created = ShardWriter::Create(path, AudioFormat::kFlac);
      if (!created.ok()) {
        result.status = created.status();
        return result;
      }
      writer = std::move(created).value();
    }
    Status s = writer->Add(sample);
    if (!s.ok()) {
      result.status = s.WithContext(chunk.name);
      return result;
    }
  }
  if (writer) {
    result.status = writer->Close();
    if (!result.status.ok()) return result;
    result.num_samples = writer->num_samples();
    auto info = DescribeShard(path, chunk.split, result.num_samples);
    if (!info.ok()) {
      result.status = info.status();
      return result;
    }
    result.bytes = info->bytes;
    result.xxh64 = info->xxh64;
  } else {
    std::error_code ec;
    std::filesystem::remove(path, ec);  // a chunk with no good clip has no shard
  }
  result.done = true;
  return result;
}

json ChunkResultToJson(const ChunkResult& r) {
  json issues = json::array();
  for (const IngestIssue& i : r.issues) issues.push_back(IssueToJson(i));
  return {{"num_samples", r.num_samples}, {"bytes", r.bytes}, {"xxh64", r.xxh64}, {"issues", issues}};
}

// A state entry is reusable when its shard (if any) is on disk with the recorded size/checksum.
bool ReuseChunk(const std::string& out_dir, const Chunk& chunk, const json& entry, ChunkResult* r) {
  try {
    r->num_samples = entry.at("num_samples").get<int64_t>();
    r->bytes = entry.at("bytes").get<int64_t>();
    r->xxh64 = entry.at("xxh64").get<std::string>();
    for (const json& i : entry.at("issues")) r->issues.push_back(IssueFromJson(i));
  } catch (const json::exception&) {
    return false;
  }
  if (r->num_samples > 0) {
    ShardInfo info{chunk.name, chunk.split, r->num_samples, r->bytes, r->xxh64};
    if (!VerifyShard(out_dir, info).ok()) return false;
  } else if (std::filesystem::exists(JoinPath(out_dir, chunk.name))) {
    return false;
  }
  r->done = true;
  return true;
}

json OptionsToJson(const IngestOptions& o) {
  json inputs = json::array();
  for (const IngestInput& in : o.inputs) {
    json j = {{"split", in.split.empty() ? in.split : SplitRole(in.split)}};
    if (SplitRole(in.split) != in.split) j["corpus_split"] = in.split;
    if (!in.csv.empty()) j["csv"] = in.csv;
    if (!in.audio_dir.empty()) j["audio_dir"] = in.audio_dir;
    if (!in.shards.empty()) j["shards"] = in.shards;
    inputs.push_back(j);
  }
  return {{"format", IngestFormatName(o.format)},
          {"inputs", inputs},
          {"val_fraction", o.val_fraction},
          {"test_fraction", o.test_fraction},
          {"seed", o.seed},
          {"shuffle_seed", o.shuffle_seed},
          {"samples_per_shard", o.samples_per_shard},
          {"min_seconds", o.min_seconds},
          {"max_seconds", o.max_seconds},
          {"crop", o.crop},
          {"vocab_size", o.vocab_size},
          {"train_split", o.train_split}};
}

Status WriteReport(const std::string& out_dir, const IngestReport& report) {
  json issues = json::array();
  for (const IngestIssue& i : report.issues) issues.push_back(IssueToJson(i));
  int64_t rejected = 0;
  for (const auto& [reason, n] : report.by_reason) rejected += n;
  json j = {{"accepted", report.accepted},          {"rejected", rejected}, {"per_split", report.per_split},
            {"by_reason", report.by_reason},        {"issues", issues},     {"shards_written", report.shards_written},
            {"shards_reused", report.shards_reused}};
  return WriteFileAtomic(JoinPath(out_dir, kIngestReportFileName), j.dump(2) + "\n");
}

}  // namespace

StatusOr<IngestFormat> ParseIngestFormat(const std::string& name) {
  if (name == "clotho") return IngestFormat::kClotho;
  if (name == "audiocaps") return IngestFormat::kAudioCaps;
  if (name == "wds" || name == "webdataset") return IngestFormat::kWebDataset;
  return Status::InvalidArgument("unknown format '" + name + "' (clotho, audiocaps or wds)");
}

std::string SplitRole(const std::string& corpus_split) {
  if (corpus_split == "development") return kTrainSplit;
  if (corpus_split == "validation") return kValSplit;
  if (corpus_split == "evaluation") return kTestSplit;
  return corpus_split;
}

const char* IngestFormatName(IngestFormat format) {
  switch (format) {
    case IngestFormat::kClotho:
      return "clotho";
    case IngestFormat::kAudioCaps:
      return "audiocaps";
    case IngestFormat::kWebDataset:
      return "wds";
  }
  return "unknown";
}

bool IsValidUtf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len = 0;
    uint32_t cp = 0;
    if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + static_cast<size_t>(len) > n) return false;
    for (int k = 1; k < len; ++k) {
      if ((p[i + static_cast<size_t>(k)] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (p[i + static_cast<size_t>(k)] & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += static_cast<size_t>(len);
  }
  return true;
}

StatusOr<std::vector<CsvRow>> ParseCsv(const std::string& text, const std::string& what) {
  std::vector<CsvRow> rows;
  size_t i = 0;
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) i = 3;
  int line = 1;
  while (i < text.size()) {
    CsvRow row;
    row.line = line;
    std::string field;
    bool row_done = false;
    while (!row_done) {
      field.clear();
      if (i < text.size() && text[i] == '"') {
        const int quote_line = line;
        ++i;
        while (true) {
          if (i >= text.size()) {
            return Status::Corruption(what + ":" + std::to_string(quote_line) + ": unterminated quoted field");
          }
          const char c = text[i++];
          if (c == '"') {
            if (i < text.size() && text[i] == '"') {
              field += '"';
              ++i;
            } else {
              break;
            }
          } else {
            if (c == '\n') ++line;
            field += c;
          }
        }
        // Anything between the closing quote and the separator is kept (lenient).
        while (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
          field += text[i++];
        }
      } else {
        while (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
          field += text[i++];
        }
      }
      row.fields.push_back(field);
      if (i >= text.size()) {
        row_done = true;
      } else if (text[i] == ',') {
        ++i;
      } else {  // line end
        if (text[i] == '\r') ++i;
        if (i < text.size() && text[i] == '\n') ++i;
        ++line;
        row_done = true;
      }
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

Status Ingest(const IngestOptions& options, const std::string& out_dir, IngestReport* report_out) {
  if (options.inputs.empty()) return Status::InvalidArgument("ingest: no inputs");
  if (options.samples_per_shard < 1) return Status::InvalidArgument("ingest: samples_per_shard must be at least 1");
  for (const auto& [name, value] :
       {std::pair<const char*, double>{"val_fraction", options.val_fraction}, {"test_fraction", options.test_fraction}}) {
    if (!(value >= 0.0 && value < 1.0)) {
      return Status::InvalidArgument("ingest: " + std::string(name) + " is " + std::to_string(value) +
                                     ", it must lie in [0, 1)");
    }
  }
  if (!(options.val_fraction + options.test_fraction < 1.0)) {
    return Status::InvalidArgument("ingest: val_fraction " + std::to_string(options.val_fraction) +
                                   " + test_fraction " + std::to_string(options.test_fraction) +
                                   " must be below 1 (nothing would be left for training)");
  }
  if (!(options.min_seconds >= 0.0 && options.max_seconds > 0.0 && options.min_seconds <= options.max_seconds)) {
    return Status::InvalidArgument("ingest: need 0 <= min_seconds <= max_seconds and max_seconds > 0");
  }
  if (options.vocab_size < 8) return Status::InvalidArgument("ingest: vocab_size must be at least 8");
  for (const IngestInput& in : options.inputs) {
    if (in.split.find_first_of("/\\. ") != std::string::npos) {
      return Status::InvalidArgument("ingest: split name '" + in.split + "' may not hold '/', '\\', '.' or spaces");
    }
    if (options.format == IngestFormat::kWebDataset) {
      if (in.shards.empty()) return Status::InvalidArgument("ingest: a WebDataset input needs shards");
    } else if (in.csv.empty() || in.audio_dir.empty()) {
      return Status::InvalidArgument("ingest: a Clotho/AudioCaps input needs a CSV and an audio folder");
    }
  }

  // 1. Plan.
  Planner planner(options);
  for (const IngestInput& in : options.inputs) {
    switch (options.format) {
      case IngestFormat::kClotho:
        FLAP_RETURN_IF_ERROR(planner.AddClotho(in));
        break;
      case IngestFormat::kAudioCaps:
        FLAP_RETURN_IF_ERROR(planner.AddAudioCaps(in));
        break;
      case IngestFormat::kWebDataset:
        FLAP_RETURN_IF_ERROR(planner.AddWebDataset(in));
        break;
    }
  }
  FLAP_RETURN_IF_ERROR(MakeDirs(out_dir));
  IngestReport report;
  report.issues = planner.issues();
  if (options.on_error == OnError::kFail && !report.issues.empty()) {
    for (const IngestIssue& i : report.issues) ++report.by_reason[i.reason];
    FLAP_RETURN_IF_ERROR(WriteReport(out_dir, report));
    if (report_out) *report_out = report;
    return IssueToStatus(report.issues.front());
  }
  std::vector<Candidate>& cands = planner.candidates();
  for (Candidate& c : cands) c.rank = ShuffleRank(options.shuffle_seed, c.key);
  std::sort(cands.begin(), cands.end(), [](const Candidate& a, const Candidate& b) {
    const int oa = SplitOrder(a.split), ob = SplitOrder(b.split);
    return std::tie(oa, a.split, a.rank, a.key) < std::tie(ob, b.split, b.rank, b.key);
  });
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < cands.size();) {
    size_t j = i;
    while (j < cands.size() && cands[j].split == cands[i].split) ++j;
    int index = 0;
    for (size_t first = i; first < j; first += static_cast<size_t>(options.samples_per_shard)) {
      Chunk chunk;
      chunk.split = cands[i].split;
      chunk.index = index++;
      char buf[32];
      std::snprintf(buf, sizeof(buf), "-%06d.tar", chunk.index);
      chunk.name = chunk.split + buf;
      chunk.first = first;
      chunk.count = std::min(j - first, static_cast<size_t>(options.samples_per_shard));
      chunks.push_back(chunk);
    }
    i = j;
  }

  // The fingerprint: everything a shard's bytes depend on.
  json content_options = OptionsToJson(options);
  content_options.erase("vocab_size");  // the tokenizer's options do not touch the shards
  content_options.erase("train_split");
  std::string fp = "flap ingest v" + std::to_string(kIngestVersion) + "\n" + content_options.dump() + "\n" +
                   planner.fingerprint_text();
  for (const Candidate& c : cands) {
    fp += c.split + "\t" + c.key + "\t" + c.audio_path + "\t" + std::to_string(c.file_size) + "\t" +
          std::to_string(c.file_mtime_ns) + "\t" + c.source_shard + "\t" + std::to_string(c.source_index) + "\t" +
          std::to_string(c.audio_xxh64);
    for (const auto* list : {&c.captions, &c.captions_augment, &c.tags}) {
      for (const std::string& s : *list) fp += "\t" + s;
      fp += "\t|";
    }
    fp += "\n";
  }
  const std::string fingerprint = Hex64(XXH64(fp.data(), fp.size(), 0));

  // 2. Write, reusing what an earlier run with the same fingerprint finished.
  const std::string state_path = JoinPath(out_dir, kIngestStateFileName);
  json state = {{"fingerprint", fingerprint}, {"shards", json::object()}};
  {
    StatusOr<std::string> old = ReadFileToString(state_path);
    if (old.ok()) {
      json parsed = json::parse(old.value(), nullptr, /*allow_exceptions=*/false);
      if (parsed.is_object() && parsed.value("fingerprint", "") == fingerprint && parsed.contains("shards") &&
          parsed["shards"].is_object()) {
        state = parsed;
      }
    }
  }
  std::vector<ChunkResult> results(chunks.size());
  std::vector<size_t> todo;
  for (size_t k = 0; k < chunks.size(); ++k) {
    auto it = state["shards"].find(chunks[k].name);
    if (it != state["shards"].end() && ReuseChunk(out_dir, chunks[k], *it, &results[k])) {
      ++report.shards_reused;
    } else {
      results[k] = ChunkResult();
      state["shards"].erase(chunks[k].name);
      todo.push_back(k);
    }
  }
  FLAP_RETURN_IF_ERROR(WriteFileAtomic(state_path, state.dump(1) + "\n"));

  std::mutex mu;  // guards state, written_count and the state file
  int written_count = 0;
  std::atomic<bool> stop{false};
  std::atomic<size_t> next{0};
  auto work = [&]() {
    for (size_t t = next++; t < todo.size() && !stop.load(); t = next++) {
      const size_t k = todo[t];
      ChunkResult r = WriteChunk(options, cands, chunks[k], out_dir, &stop);
      std::lock_guard<std::mutex> lock(mu);
      if (r.done && !stop.load()) {
        state["shards"][chunks[k].name] = ChunkResultToJson(r);
        Status s = WriteFileAtomic(state_path, state.dump(1) + "\n");
        if (!s.ok()) r.status = s;
        ++written_count;
        if (options.stop_after_shards >= 0 && written_count >= options.stop_after_shards) stop = true;
      }
      if (!r.status.ok()) stop = true;
      results[k] = std::move(r);
    }
  };
  const size_t hw =
      options.threads > 0 ? static_cast<size_t>(options.threads) : std::max(1u, std::thread::hardware_concurrency());
  const size_t num_threads = std::max<size_t>(1, std::min(hw, todo.size()));
  std::vector<std::thread> threads;
  for (size_t t = 1; t < num_threads; ++t) threads.emplace_back(work);
  work();
  for (std::thread& t : threads) t.join();
  report.shards_written = written_count;

  for (size_t k = 0; k < chunks.size(); ++k) {
    if (!results[k].status.ok()) return results[k].status;
  }
  for (size_t k = 0; k < chunks.size(); ++k) {
    for (const IngestIssue& i : results[k].issues) report.issues.push_back(i);
  }
  for (const IngestIssue& i : report.issues) ++report.by_reason[i.reason];
  if (options.on_error == OnError::kFail) {
    for (size_t k = 0; k < chunks.size(); ++k) {  // the first bad clip in plan order
      if (!results[k].issues.empty()) {
        FLAP_RETURN_IF_ERROR(WriteReport(out_dir, report));
        if (report_out) *report_out = report;
        return IssueToStatus(results[k].issues.front());
      }
    }
  }
  for (size_t k = 0; k < chunks.size(); ++k) {
    if (!results[k].done) {
      if (report_out) *report_out = report;
      return Status::FailedPrecondition("ingest: stopped after " + std::to_string(written_count) +
                                        " shards (stop_after_shards)");
    }
  }

  // 3. Tokenizer, report, manifest.
  std::set<std::string> rejected_keys;
  for (const ChunkResult& r : results) {
    for (const IngestIssue& i : r.issues) rejected_keys.insert(i.key);
  }
  Manifest manifest;
  manifest.name = options.name;
  std::vector<std::string> texts;
  for (size_t k = 0; k < chunks.size(); ++k) {
    const Chunk& chunk = chunks[k];
    if (results[k].num_samples > 0) {
      manifest.shards.push_back({chunk.name, chunk.split, results[k].num_samples, results[k].bytes, results[k].xxh64});
      report.accepted += results[k].num_samples;
      report.per_split[chunk.split] += results[k].num_samples;
    }
    if (chunk.split != options.train_split) continue;
    for (size_t i = chunk.first; i < chunk.first + chunk.count; ++i) {
      if (rejected_keys.count(cands[i].key)) continue;
      for (const std::string& c : cands[i].captions) texts.push_back(c);
      for (const std::string& c : cands[i].captions_augment) texts.push_back(c);
    }
  }
  if (texts.empty()) {
    FLAP_RETURN_IF_ERROR(WriteReport(out_dir, report));
    if (report_out) *report_out = report;
    return Status::InvalidArgument("ingest: no accepted clip in the training split '" + options.train_split +
                                   "' to train the tokenizer on");
  }
  FLAP_RETURN_IF_ERROR(TrainTokenizer(texts, JoinPath(out_dir, manifest.tokenizer), options.vocab_size));
  FLAP_RETURN_IF_ERROR(WriteReport(out_dir, report));
  json provenance = OptionsToJson(options);
  provenance["generator"] = "flap ingest";
  provenance["generator_version"] = kIngestVersion;
  provenance["fingerprint"] = fingerprint;
  provenance["accepted"] = report.accepted;
  provenance["rejected_by_reason"] = report.by_reason;
  manifest.provenance = provenance;
  if (report_out) *report_out = report;
  return WriteManifest(out_dir, manifest);
}

}  // namespace flap::sharding
