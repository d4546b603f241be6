// WebDataset shards as a source: every sample of each shard, read again (and decoded) only when its chunk is written (sharding/ingest_internal.h).
#include <filesystem>
#include <xxhash.h>

#include "sharding/shard_reader.h"

#include "common/file_util.h"
#include "sharding/ingest_internal.h"

namespace flap::sharding::ingest_internal {

Status Planner::AddWebDataset(const IngestInput& input) {
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

}  // namespace flap::sharding::ingest_internal
