// AudioCaps' CSV (youtube_id, start_time, caption; one row a caption) and audio folder: the rows of one clip grouped, its file found by '<ytid>_<start>' or '<ytid>' (sharding/ingest_internal.h).
#include <filesystem>
#include <cmath>
#include <cstdlib>
#include <map>

#include "common/file_util.h"
#include "sharding/ingest_internal.h"

namespace flap::sharding::ingest_internal {

Status Planner::AddAudioCaps(const IngestInput& input) {
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

}  // namespace flap::sharding::ingest_internal
