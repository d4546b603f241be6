// ShardWriter: writes samples into one WebDataset-style tar shard (libarchive, pax-restricted
// ustar). Each sample becomes two adjacent members: "<key>.flac" (or ".wav"), 16-bit PCM mono
// at kSampleRate, then "<key>.json":
//   {"duration": seconds, "tags": [...], "text": [captions...], "text_augment": [...]}
// The bytes are a pure function of the samples added: mtime 0, uid/gid 0, empty user and group
// names, mode 0644, keys in insertion order. The shard is written to a unique temporary file
// beside `path` (common/atomic_file.h), fsynced and renamed onto `path` by Close(), so a shard
// that exists is complete; a writer destroyed without Close() removes its temporary file.
//
// Thread-safety: not thread-safe; one thread uses a writer at a time. Different writers may
// run on different threads.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include "common/atomic_file.h"
#include "common/status.h"
#include "sharding/audio.h"
#include "sharding/sample.h"

struct archive;

namespace flap::sharding {

class ShardWriter {
 public:
  // Opens a temporary file beside `path` for writing. IOError naming it if it cannot be
  // created.
  static StatusOr<std::unique_ptr<ShardWriter>> Create(const std::string& path,
                                                       AudioFormat format = AudioFormat::kFlac);

  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;
  ~ShardWriter();

  // Appends `sample` (its audio is taken to be at kSampleRate). InvalidArgument, with nothing
  // written, for an empty key, a key holding '.', '/', '\\' or a control character, a key used
  // before in this shard, no captions, an empty caption, or empty audio. IOError if writing
  // fails; the writer is then unusable and Close() returns that error.
  Status Add(const Sample& sample);

  // Finishes the archive, fsyncs it and renames it onto the final path: the file appears only
  // now. IOError on failure (nothing appears). Calling Close() twice is FailedPrecondition.
  Status Close();

  // Samples added so far.
  int64_t num_samples() const { return num_samples_; }
  const std::string& path() const { return path_; }
  // The temporary file being written ("" once closed).
  std::string temp_path() const { return file_ ? file_->temp_path() : std::string(); }

 private:
  ShardWriter(std::string path, AudioFormat format, std::unique_ptr<AtomicFile> file, struct archive* archive);
  Status WriteMember(const std::string& name, const std::string& data);
  void Abandon();

  const std::string path_;
  const AudioFormat format_;
  std::unique_ptr<AtomicFile> file_;  // the temporary file; null once closed or abandoned
  struct archive* archive_ = nullptr;
  bool closed_ = false;
  Status error_;  // first write failure; sticky
  int64_t num_samples_ = 0;
  std::set<std::string> keys_;
};

// Checks a key as ShardWriter::Add does. OK or InvalidArgument saying why.
Status ValidateSampleKey(const std::string& key);

}  // namespace flap::sharding
