// Clotho's captions CSV (file_name, caption_1..caption_5) and audio folder: one clip a row (sharding/ingest_internal.h).
#include <filesystem>

#include "common/file_util.h"
#include "sharding/ingest_internal.h"

namespace flap::sharding::ingest_internal {

Status Planner::AddClotho(const IngestInput& input) {
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

}  // namespace flap::sharding::ingest_internal
