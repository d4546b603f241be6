// Ingestion: turns a user's corpus (Clotho CSVs + audio, AudioCaps CSVs + audio, or existing
// WebDataset shards) into a dataset folder (shards, manifest, tokenizer; see manifest.h). Not
// the streaming loader (that lives in the worker) and not an audio feature extractor.
//
// How a run goes:
//   1. Plan (cheap, single-threaded): read every CSV (or every source shard), check captions
//      (non-empty, valid UTF-8), keys (unique after sanitizing) and that each audio file
//      exists; assign each clip a split (the input's --split, a corpus's own split name mapped
//      to its role by SplitRole, or a seeded hash of the key); order the clips of each split
//      by a seeded permutation (a hash of (shuffle_seed, key), so a shard holds clips from all
//      over the corpus rather than alphabetical neighbours) and cut each split into fixed
//      chunks of samples_per_shard clips. Splits come in the order train, val, test, then any
//      others by name. Chunk i of split S becomes shard "S-%06d.tar". The assignment is made before any audio
//      is decoded, so a shard's contents are a pure function of its chunk: clips rejected while
//      decoding leave their shard shorter, they never shift clips into other shards.
//   2. Write (parallel over shards): decode each clip to mono kSampleRate, apply the duration
//      limits, write the shard atomically (ShardWriter), record it in "ingest_state.json"
//      (written atomically after each shard, with the shard's size, checksum and issues).
//   3. Finish: train the tokenizer on the training split's captions, write
//      "ingest_report.json" and finally the manifest (so a folder with a manifest is complete).
//
// Resumable and idempotent: a rerun with the same inputs and options (the plan's fingerprint,
// which covers every key, caption, audio file size and mtime and every content option) keeps
// each shard whose state entry matches the file on disk (size and XXH64) and redoes the rest,
// so a run killed at any point and rerun ends with the same bytes as an uninterrupted run.
// Thread timing never changes any output.
//
// Bad input never crashes a run and never vanishes: every rejected clip is an IngestIssue with
// a reason (see the kReason* constants), counted in the report. OnError::kFail stops at the
// first one (in plan order for plan-time issues) with an error naming the file and reason.
//
// Thread-safety: Ingest may be called from any thread; two runs must not share an output folder.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "sharding/csv.h"  // ParseCsv, IsValidUtf8: also the ingestion's

namespace flap::sharding {

enum class IngestFormat { kClotho, kAudioCaps, kWebDataset };

// The default IngestOptions::shuffle_seed (flapctl data ingest --shuffle-seed).
inline constexpr uint64_t kDefaultShuffleSeed = 1;

// The role of a corpus's own split name: Clotho's "development" -> "train", "validation" ->
// "val", "evaluation" -> "test"; any other name (AudioCaps' "train", "val", "test" included)
// is returned unchanged.
std::string SplitRole(const std::string& corpus_split);
enum class OnError { kSkip, kFail };

// Parses "clotho" / "audiocaps" / "wds"; InvalidArgument otherwise.
StatusOr<IngestFormat> ParseIngestFormat(const std::string& name);
const char* IngestFormatName(IngestFormat format);

// Why a clip (or caption row, or source shard) was rejected.
inline constexpr char kReasonMissingFile[] = "missing_file";    // audio file not found
inline constexpr char kReasonUndecodable[] = "undecodable";     // libsndfile cannot decode it
inline constexpr char kReasonTruncated[] = "truncated";         // fewer frames than declared
inline constexpr char kReasonZeroLength[] = "zero_length";      // no audio frames at all
inline constexpr char kReasonTooShort[] = "too_short";          // under min_seconds
inline constexpr char kReasonTooLong[] = "too_long";            // over max_seconds, no crop
inline constexpr char kReasonEmptyCaption[] = "empty_caption";  // a caption is blank
inline constexpr char kReasonInvalidUtf8[] = "invalid_utf8";    // a caption is not UTF-8
inline constexpr char kReasonDuplicateKey[] = "duplicate_key";  // key seen before (first kept)
inline constexpr char kReasonBadRow[] = "bad_row";              // CSV row malformed
inline constexpr char kReasonCorruptShard[] = "corrupt_shard";  // WDS source damaged midway
inline constexpr char kReasonBadMember[] = "bad_member";        // WDS member not a regular file (skipped)

// One corpus part. Clotho/AudioCaps: `csv` and `audio_dir`. WebDataset: `shards` (paths).
// `split` names the split of every clip of this input (a role, "train" / "val" / "test", or a
// corpus's own split name, mapped by SplitRole, or any other name); empty: the seeded split
// decides.
struct IngestInput {
  std::string csv;
  std::string audio_dir;
  std::vector<std::string> shards;
  std::string split;
};

struct IngestOptions {
  IngestFormat format = IngestFormat::kClotho;
  std::vector<IngestInput> inputs;  // at least one
  // Inputs without a split: a hash of (seed, key) drawn uniformly in [0, 1) sends a clip to
  // "val" when it falls under val_fraction, to "test" when it falls under val_fraction +
  // test_fraction, else to "train". Each in [0, 1), their sum below 1.
  double val_fraction = 0.0;
  double test_fraction = 0.0;
  uint64_t seed = 0;
  // The seed of the order of the clips within each split (recorded in the manifest's
  // provenance as "shuffle_seed"). The same inputs and seed give the same shards.
  uint64_t shuffle_seed = kDefaultShuffleSeed;
  int samples_per_shard = 256;  // chunk size; shards hold at most this many clips
  double min_seconds = 0.1;     // shorter clips are rejected (too_short)
  double max_seconds = 30.0;    // longer clips are rejected (too_long), or cropped if `crop`
  bool crop = false;
  OnError on_error = OnError::kSkip;
  int threads = 0;  // decode/write threads; 0: hardware concurrency
  int vocab_size = 1000;
  std::string name = "ingested";      // dataset name in the manifest
  std::string train_split = "train";  // whose captions train the tokenizer
  // Test hook: when >= 0, stop (FailedPrecondition) once this many shards were newly written
  // in this run, as a kill would, before the tokenizer, report and manifest.
  int stop_after_shards = -1;
};

struct IngestIssue {
  std::string file;    // the audio file, CSV line ("captions.csv:12") or source shard
  std::string key;     // the clip's key (may be empty for a malformed row)
  std::string reason;  // one of the kReason* constants
  std::string detail;  // human-readable
};

struct IngestReport {
  int64_t accepted = 0;                      // clips written into shards
  std::map<std::string, int64_t> per_split;  // accepted clips by split
  std::map<std::string, int64_t> by_reason;  // rejected clips by reason
  std::vector<IngestIssue> issues;           // every rejection, in plan order
  int shards_written = 0;                    // shards (re)written by this run
  int shards_reused = 0;                     // shards kept from an earlier run
};

inline constexpr char kIngestReportFileName[] = "ingest_report.json";
inline constexpr char kIngestStateFileName[] = "ingest_state.json";

// Ingests options.inputs into `out_dir` (created if missing). Success: the folder holds the
// shards, tokenizer, ingest_report.json and manifest.json (its provenance names the format,
// inputs and options), and *report (if not null) describes the run. InvalidArgument for bad
// options or an unreadable/headerless CSV; NotFound for a missing CSV or source shard;
// with OnError::kFail, InvalidArgument "<file>: <reason>: <detail>" for the first bad clip
// (the report written so far is still saved); IOError when writing fails.
Status Ingest(const IngestOptions& options, const std::string& out_dir, IngestReport* report = nullptr);

}  // namespace flap::sharding
