// Implementation of sharding/shard_writer.h with libarchive's writer over a file descriptor.
#include "sharding/shard_writer.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common/file_util.h"

namespace flap::sharding {

Status ValidateSampleKey(const std::string& key) {
  if (key.empty()) return Status::InvalidArgument("sample key is empty");
  if (key.size() > 200) {
    return Status::InvalidArgument("sample key '" + key.substr(0, 40) + "...' is longer than 200 bytes");
  }
  for (unsigned char c : key) {
    if (c == '.' || c == '/' || c == '\\') {
      return Status::InvalidArgument("sample key '" + key + "' contains '" + std::string(1, static_cast<char>(c)) +
                                     "' (keys may not hold '.', '/' or '\\')");
    }
    if (c < 0x20 || c == 0x7f) {
      return Status::InvalidArgument("sample key '" + key + "' contains a control character");
    }
  }
  return Status::OK();
}

ShardWriter::ShardWriter(std::string path, AudioFormat format, std::unique_ptr<AtomicFile> file,
                         struct archive* archive)
    : path_(std::move(path)), format_(format), file_(std::move(file)), archive_(archive) {}

ShardWriter::~ShardWriter() {
  if (!closed_) Abandon();
}

void ShardWriter::Abandon() {
  if (archive_ != nullptr) {
    archive_write_free(archive_);  // also closes the archive; the fd stays ours
    archive_ = nullptr;
  }
  file_.reset();  // closes and removes the temporary file
  closed_ = true;
}

StatusOr<std::unique_ptr<ShardWriter>> ShardWriter::Create(const std::string& path, AudioFormat format) {
  auto file = AtomicFile::Create(path);
  if (!file.ok()) return file.status().WithContext("cannot create shard " + path);
  struct archive* a = archive_write_new();
  if (a == nullptr) return Status::Internal(path + ": archive_write_new failed");
  if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK || archive_write_add_filter_none(a) != ARCHIVE_OK ||
      archive_write_open_fd(a, file.value()->fd()) != ARCHIVE_OK) {
    std::string msg = archive_error_string(a) ? archive_error_string(a) : "unknown error";
    archive_write_free(a);
    return Status::IOError(file.value()->temp_path() + ": cannot start tar archive: " + msg);
  }
  return std::unique_ptr<ShardWriter>(new ShardWriter(path, format, std::move(file).value(), a));
}

Status ShardWriter::WriteMember(const std::string& name, const std::string& data) {
  struct archive_entry* entry = archive_entry_new();
  archive_entry_set_pathname_utf8(entry, name.c_str());
  archive_entry_set_filetype(entry, AE_IFREG);
  archive_entry_set_perm(entry, 0644);
  archive_entry_set_size(entry, static_cast<la_int64_t>(data.size()));
  archive_entry_set_mtime(entry, 0, 0);
  archive_entry_set_uid(entry, 0);
  archive_entry_set_gid(entry, 0);
  int rc = archive_write_header(archive_, entry);
  archive_entry_free(entry);
  if (rc < ARCHIVE_WARN) {
    return Status::IOError(temp_path() + ": writing tar header of " + name +
                           " failed: " + (archive_error_string(archive_) ? archive_error_string(archive_) : ""));
  }
  size_t done = 0;
  while (done < data.size()) {
    la_ssize_t n = archive_write_data(archive_, data.data() + done, data.size() - done);
    if (n <= 0) {
      return Status::IOError(temp_path() + ": writing member " + name +
                             " failed: " + (archive_error_string(archive_) ? archive_error_string(archive_) : ""));
    }
    done += static_cast<size_t>(n);
  }
  return Status::OK();
}

Status ShardWriter::Add(const Sample& sample) {
  if (closed_) return Status::FailedPrecondition(path_ + ": Add after Close");
  if (!error_.ok()) return error_;
  Status key_status = ValidateSampleKey(sample.key);
  if (!key_status.ok()) return key_status.WithContext(path_);
  if (keys_.count(sample.key) != 0) {
    return Status::InvalidArgument(path_ + ": sample key '" + sample.key + "' added twice");
  }
  if (sample.captions.empty()) {
    return Status::InvalidArgument(path_ + ": sample '" + sample.key + "' has no captions");
  }
  for (const auto* list : {&sample.captions, &sample.captions_augment}) {
    for (const std::string& c : *list) {
      if (c.empty()) {
        return Status::InvalidArgument(path_ + ": sample '" + sample.key + "' has an empty caption");
      }
    }
  }
  if (sample.audio.empty()) {
    return Status::InvalidArgument(path_ + ": sample '" + sample.key + "' has no audio");
  }
  auto encoded = EncodeAudio(sample.audio, kSampleRate, format_);
  if (!encoded.ok()) return encoded.status().WithContext(path_ + ": sample '" + sample.key + "'");

  nlohmann::json meta = nlohmann::json::object();
  meta["text"] = sample.captions;
  meta["text_augment"] = sample.captions_augment;
  meta["tags"] = sample.tags;
  meta["duration"] = static_cast<double>(sample.audio.size()) / kSampleRate;
  // Invalid UTF-8 in a caption is replaced rather than thrown on.
  const std::string json_text = meta.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);

  Status s = WriteMember(sample.key + "." + AudioFormatExtension(format_), encoded.value());
  if (s.ok()) s = WriteMember(sample.key + ".json", json_text);
  if (!s.ok()) {
    error_ = s;
    return s;
  }
  keys_.insert(sample.key);
  ++num_samples_;
  return Status::OK();
}

Status ShardWriter::Close() {
  if (closed_) return Status::FailedPrecondition(path_ + ": Close called twice");
  if (!error_.ok()) {
    Abandon();
    return error_;
  }
  if (archive_write_close(archive_) != ARCHIVE_OK) {
    Status s = Status::IOError(temp_path() + ": finishing tar archive failed: " +
                               (archive_error_string(archive_) ? archive_error_string(archive_) : ""));
    Abandon();
    return s;
  }
  archive_write_free(archive_);
  archive_ = nullptr;
  Status s = file_->Commit();  // fsync, rename onto the path, fsync the folder
  file_.reset();
  closed_ = true;
  return s;
}

}  // namespace flap::sharding
