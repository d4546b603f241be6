// Implementation of sharding/shard_reader.h with libarchive's streaming reader.
#include "sharding/shard_reader.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "sharding/audio.h"

namespace flap::sharding {
namespace {

constexpr la_int64_t kMaxMemberBytes = la_int64_t{1} << 30;  // a 1 GiB member is damage

bool IsAudioExtension(const std::string& ext) {
  return ext == "flac" || ext == "wav" || ext == "ogg" || ext == "oga" || ext == "opus" || ext == "mp3";
}

std::string ArchiveError(struct archive* a) {
  const char* s = archive_error_string(a);
  return s ? s : "unknown libarchive error";
}

bool IsBlank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c) != 0; });
}

// Reads a field that may be a string or a list of strings into *out (blank strings dropped).
// `required`: the field must exist. Returns an empty string on success, else what is wrong.
std::string ReadStringList(const nlohmann::json& meta, const char* field, std::vector<std::string>* out) {
  out->clear();
  auto it = meta.find(field);
  if (it == meta.end() || it->is_null()) return "";
  if (it->is_string()) {
    const std::string& s = it->get_ref<const std::string&>();
    if (!IsBlank(s)) out->push_back(s);
    return "";
  }
  if (!it->is_array()) return std::string("\"") + field + "\" is neither a string nor a list";
  for (const auto& v : *it) {
    if (!v.is_string()) return std::string("\"") + field + "\" holds a non-string element";
    const std::string& s = v.get_ref<const std::string&>();
    if (!IsBlank(s)) out->push_back(s);
  }
  return "";
}

}  // namespace

struct ShardReader::Member {
  std::string name;  // full member path
  std::string key;
  std::string ext;          // lower case
  std::string not_regular;  // "" for a regular file, else what it is ("a symbolic link", ...)
};

namespace {
// What a tar member that is neither a regular file nor a folder is.
std::string MemberType(mode_t type) {
  switch (type) {
    case AE_IFLNK:
      return "a symbolic link";
    case AE_IFCHR:
      return "a character device";
    case AE_IFBLK:
      return "a block device";
    case AE_IFIFO:
      return "a FIFO";
    case AE_IFSOCK:
      return "a socket";
    default:
      return "not a regular file";
  }
}
}  // namespace

ShardReader::ShardReader(std::string path, struct archive* archive, bool decode_audio)
    : path_(std::move(path)), archive_(archive), decode_audio_(decode_audio) {}

ShardReader::~ShardReader() {
  if (archive_ != nullptr) archive_read_free(archive_);
}

StatusOr<std::unique_ptr<ShardReader>> ShardReader::Open(const std::string& path, bool decode_audio) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    int err = errno;
    if (err == ENOENT) return Status::NotFound(path + ": no such shard");
    return Status::IOError(path + ": cannot stat shard: " + ErrnoMessage(err));
  }
  if (!S_ISREG(st.st_mode)) return Status::IOError(path + ": shard is not a regular file");
  struct archive* a = archive_read_new();
  if (a == nullptr) return Status::Internal(path + ": archive_read_new failed");
  archive_read_support_filter_all(a);
  archive_read_support_format_tar(a);
  if (archive_read_open_filename(a, path.c_str(), 1 << 16) != ARCHIVE_OK) {
    Status s = Status::Corruption(path + ": not a readable tar archive: " + ArchiveError(a));
    archive_read_free(a);
    return s;
  }
  return std::unique_ptr<ShardReader>(new ShardReader(path, a, decode_audio));
}

StatusOr<bool> ShardReader::NextMember(Member* member) {
  while (true) {
    struct archive_entry* entry = nullptr;
    int rc = archive_read_next_header(archive_, &entry);
    if (rc == ARCHIVE_EOF) return false;
    if (rc < ARCHIVE_WARN) {
      return Status::Corruption(
          path_ + ": damaged tar archive" +
          (last_member_.empty() ? std::string(" at its start") : " after member " + last_member_) + ": " +
          ArchiveError(archive_));
    }
    const char* name = archive_entry_pathname_utf8(entry);
    if (name == nullptr) name = archive_entry_pathname(entry);
    if (name == nullptr) continue;
    const mode_t type = archive_entry_filetype(entry);
    if (type == AE_IFDIR) continue;
    // A hard link has a regular file's type and a link target: it carries no data of its own.
    const bool hardlink = archive_entry_hardlink(entry) != nullptr;
    std::string full(name);
    size_t slash = full.rfind('/');
    size_t base = slash == std::string::npos ? 0 : slash + 1;
    size_t dot = full.find('.', base);
    if (dot == std::string::npos || dot == base) continue;  // no extension, or a dot file
    last_member_ = full;
    member->name = full;
    member->key = full.substr(0, dot);
    member->ext = full.substr(dot + 1);
    member->not_regular = hardlink ? "a hard link" : type == AE_IFREG ? "" : MemberType(type);
    std::transform(member->ext.begin(), member->ext.end(), member->ext.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return true;
  }
}

Status ShardReader::ReadMemberData(const std::string& name, std::string* data) {
  data->clear();
  char buf[1 << 16];
  while (true) {
    la_ssize_t n = archive_read_data(archive_, buf, sizeof(buf));
    if (n == 0) break;
    if (n < 0) {
      return Status::Corruption(path_ + ": member " + name + " is damaged or truncated: " + ArchiveError(archive_));
    }
    if (static_cast<la_int64_t>(data->size()) + n > kMaxMemberBytes) {
      return Status::Corruption(path_ + ": member " + name + " is larger than 1 GiB");
    }
    data->append(buf, static_cast<size_t>(n));
  }
  return Status::OK();
}

Status ShardReader::BuildSample(const std::string& key, const std::string& audio_name, const std::string& audio,
                                const std::string& json_name, const std::string& json, Sample* sample) const {
  if (audio_name.empty()) {
    return Status::Corruption(path_ + ": key '" + key + "' has no audio member (.flac, .wav, .ogg, .opus or .mp3)");
  }
  if (json_name.empty()) {
    return Status::Corruption(path_ + ": key '" + key + "' has no .json member");
  }
  nlohmann::json meta = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (meta.is_discarded()) {
    return Status::Corruption(path_ + ": member " + json_name + " is not valid JSON");
  }
  if (!meta.is_object()) {
    return Status::Corruption(path_ + ": member " + json_name + " is not a JSON object");
  }
  if (meta.find("text") == meta.end()) {
    return Status::Corruption(path_ + ": member " + json_name + " has no \"text\" field");
  }
  Sample s;
  s.key = key;
  std::string problem = ReadStringList(meta, "text", &s.captions);
  if (problem.empty() && s.captions.empty()) problem = "\"text\" holds no non-empty caption";
  if (problem.empty()) problem = ReadStringList(meta, "text_augment", &s.captions_augment);
  if (problem.empty()) problem = ReadStringList(meta, "tags", &s.tags);
  if (!problem.empty()) return Status::Corruption(path_ + ": member " + json_name + ": " + problem);
  if (decode_audio_) {
    auto decoded = DecodeAudio(audio.data(), audio.size(), path_ + ": member " + audio_name);
    if (!decoded.ok()) return decoded.status();
    s.audio = std::move(decoded).value();
  }
  *sample = std::move(s);
  return Status::OK();
}

StatusOr<bool> ShardReader::Next(Sample* sample) {
  if (!error_.ok()) return error_;
  for (;;) {
    if (at_end_ && pending_ == nullptr) return false;
    StatusOr<bool> got = NextKey(sample);
    if (!got.ok() || *got || !skipped_key_) return got;
  }
}

StatusOr<bool> ShardReader::NextKey(Sample* sample) {
  skipped_key_ = false;
  std::string key, audio_name, audio, json_name, json, bad_member;
  bool have_key = false;
  while (true) {
    Member member;
    if (pending_ != nullptr) {
      member = std::move(*pending_);
      pending_.reset();
    } else {
      StatusOr<bool> got = NextMember(&member);
      if (!got.ok()) {
        error_ = got.status();
        return error_;
      }
      if (!got.value()) {
        at_end_ = true;
        break;
      }
    }
    if (have_key && member.key != key) {
      pending_ = std::make_unique<Member>(std::move(member));
      break;
    }
    if (!have_key) {
      key = member.key;
      have_key = true;
    }
    std::string* target = nullptr;
    if (!member.not_regular.empty()) {
      warnings_.push_back(path_ + ": member " + member.name + " is " + member.not_regular + ": skipped");
      if (bad_member.empty()) bad_member = member.name;
    } else if (IsAudioExtension(member.ext) && audio_name.empty()) {
      audio_name = member.name;
      target = &audio;
    } else if (member.ext == "json" && json_name.empty()) {
      json_name = member.name;
      target = &json;
    }
    if (target != nullptr) {
      Status s = ReadMemberData(member.name, target);
      if (!s.ok()) {
        error_ = s;
        return error_;
      }
    } else if (archive_read_data_skip(archive_) < ARCHIVE_WARN) {
      error_ =
          Status::Corruption(path_ + ": member " + member.name + " is damaged or truncated: " + ArchiveError(archive_));
      return error_;
    }
  }
  if (!have_key) return false;
  if (!bad_member.empty() && (audio_name.empty() || json_name.empty())) {
    // Its audio or caption was the member skipped: the sample is skipped, the shard read on.
    warnings_.push_back(path_ + ": key '" + key + "' skipped: it has no " + (audio_name.empty() ? "audio" : ".json") +
                        " member that is a regular file");
    skipped_key_ = true;
    return false;
  }
  Status s = BuildSample(key, audio_name, audio, json_name, json, sample);
  if (!s.ok()) {
    error_ = s;
    return error_;
  }
  if (!decode_audio_) {
    raw_audio_ = std::move(audio);
    raw_audio_name_ = std::move(audio_name);
  }
  return true;
}

StatusOr<std::vector<Sample>> ReadShard(const std::string& path) {
  FLAP_ASSIGN_OR_RETURN(std::unique_ptr<ShardReader> reader, ShardReader::Open(path));
  std::vector<Sample> samples;
  while (true) {
    Sample sample;
    FLAP_ASSIGN_OR_RETURN(bool more, reader->Next(&sample));
    if (!more) break;
    samples.push_back(std::move(sample));
  }
  return samples;
}

}  // namespace flap::sharding
