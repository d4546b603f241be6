// ShardReader: reads samples, in order, from one WebDataset-style tar shard, either written by
// ShardWriter or LAION-style. Members are grouped by key: the member's path up to the first '.'
// of its file name ("dir/abc.flac" has key "dir/abc" and extension "flac"); the members of one
// key must be adjacent. A key needs one audio member (.flac, .wav, .ogg, .oga, .opus, .mp3: any
// libsndfile can decode; decoded to mono kSampleRate) and one .json member whose "text" is a
// string or a list of strings; optional "text_augment" and "tags" (string or list of strings).
// Other members, directories and names without an extension are skipped. A member that is not
// a regular file (a symbolic or hard link, a device, a FIFO) is skipped with a warning
// (warnings()), and so is a key whose audio or .json member was such a member: the rest of the
// shard is read. Compressed tars (.tar.gz, ...) are read too.
//
// Thread-safety: not thread-safe; one thread uses a reader at a time. Different readers may
// run on different threads.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "sharding/sample.h"

struct archive;

namespace flap::sharding {

class ShardReader {
 public:
  // Opens `path`. NotFound if it does not exist; IOError if it cannot be opened; Corruption if
  // it is not a (possibly compressed) tar archive.
  // decode_audio false: samples come without audio (Sample::audio empty), for readers that
  // need only captions and tags or decode later; the audio member must still be present, and
  // its encoded bytes are kept until the next call (raw_audio()).
  static StatusOr<std::unique_ptr<ShardReader>> Open(const std::string& path, bool decode_audio = true);

  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;
  ~ShardReader();

  // true: `*sample` holds the next sample (overwritten entirely). false: the shard is finished.
  // Corruption naming the shard and the member (or key) for a truncated or damaged archive, a
  // key without audio or without JSON, audio that does not decode, JSON that does not parse,
  // and a missing, mistyped or empty "text". After a failure the reader is unusable and every
  // later call returns the same error.
  StatusOr<bool> Next(Sample* sample);

  const std::string& path() const { return path_; }
  // What was skipped so far (members that are not regular files, the keys they left without
  // audio or caption), one line each naming the shard and the member or key.
  const std::vector<std::string>& warnings() const { return warnings_; }
  // With decode_audio false: the last sample's encoded audio member and its name.
  const std::string& raw_audio() const { return raw_audio_; }
  const std::string& raw_audio_name() const { return raw_audio_name_; }

 private:
  struct Member;
  ShardReader(std::string path, struct archive* archive, bool decode_audio);
  // Reads the next member header (folders and names without an extension passed over) into
  // *member; false at the end of the archive.
  StatusOr<bool> NextMember(Member* member);
  // The members of the next key: a sample (true), the end (false), or a key skipped (false,
  // skipped_key_ set).
  StatusOr<bool> NextKey(Sample* sample);
  Status ReadMemberData(const std::string& name, std::string* data);
  Status BuildSample(const std::string& key, const std::string& audio_name, const std::string& audio,
                     const std::string& json_name, const std::string& json, Sample* sample) const;

  const std::string path_;
  struct archive* archive_ = nullptr;
  const bool decode_audio_ = true;
  std::string raw_audio_, raw_audio_name_;
  Status error_;                     // sticky failure
  std::unique_ptr<Member> pending_;  // header read but belonging to the next key
  bool at_end_ = false;
  std::string last_member_;  // name of the last member header read, for messages
  std::vector<std::string> warnings_;
  bool skipped_key_ = false;  // the last NextKey skipped its key
};

// Reads every sample of the shard at `path`, in order. Errors as ShardReader::Open and Next.
StatusOr<std::vector<Sample>> ReadShard(const std::string& path);

}  // namespace flap::sharding
