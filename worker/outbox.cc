// Implementation of worker/outbox.h.
#include "worker/outbox.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/file_util.h"
#include "common/atomic_file.h"

namespace flap::worker {
namespace {

namespace fs = std::filesystem;

constexpr const char* kPrefix = "outbox-";
constexpr const char* kSuffix = ".rec";
constexpr const char* kMark = "ACKED";  // the highest sequence number acknowledged
constexpr size_t kHeader = 8 + 4 + 8;
constexpr uint64_t kMaxRecord = 64u << 20;  // larger sizes read back are damage

uint64_t Fnv1a(uint64_t seq, const std::string& bytes) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](unsigned char c) {
    h ^= c;
    h *= 1099511628211ull;
  };
  for (int i = 0; i < 8; ++i) mix(static_cast<unsigned char>(seq >> (8 * i)));
  for (char c : bytes) mix(static_cast<unsigned char>(c));
  return h;
}

void PutLe(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t GetLe(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

std::string Encode(uint64_t seq, const std::string& record) {
  std::string out;
  out.reserve(kHeader + record.size());
  PutLe(&out, seq, 8);
  PutLe(&out, record.size(), 4);
  PutLe(&out, Fnv1a(seq, record), 8);
  out += record;
  return out;
}

// The whole records of a segment file, in order; a torn or damaged record ends the reading.
StatusOr<std::vector<std::pair<uint64_t, std::string>>> ReadSegment(const std::string& path) {
  StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return Status::IOError("outbox: cannot read " + path + ": " + text.status().message());
  const std::string data = *std::move(text);
  std::vector<std::pair<uint64_t, std::string>> out;
  for (size_t at = 0; at + kHeader <= data.size();) {
    const uint64_t seq = GetLe(data.data() + at, 8);
    const uint64_t size = GetLe(data.data() + at + 8, 4);
    const uint64_t sum = GetLe(data.data() + at + 12, 8);
    if (size > kMaxRecord || at + kHeader + size > data.size()) break;
    std::string record = data.substr(at + kHeader, size);
    if (Fnv1a(seq, record) != sum) break;
    out.emplace_back(seq, std::move(record));
    at += kHeader + size;
  }
  return out;
}

Status AppendSynced(const std::string& path, const std::string& bytes, bool* created) {
  *created = !fs::exists(path);
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Status::IOError("outbox: cannot open " + path + ": " + std::strerror(errno));
  const off_t before = ::lseek(fd, 0, SEEK_END);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n == 0 ? ENOSPC : errno;
      (void)!::ftruncate(fd, before);  // no torn record for the next append to follow
      ::close(fd);
      return Status::IOError("outbox: cannot append to " + path + ": " + std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  const bool synced = ::fdatasync(fd) == 0;
  const int err = errno;
  if (!synced) (void)!::ftruncate(fd, before);
  ::close(fd);
  if (!synced) return Status::IOError("outbox: cannot sync " + path + ": " + std::strerror(err));
  return Status::OK();
}

// The acknowledgement mark: "<sequence>\n"; 0 when the file is missing or does not hold one.
uint64_t ReadMark(const std::string& path) {
  StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok() || text->empty() || text->size() > 24 || text->back() != '\n') return 0;
  uint64_t v = 0;
  for (size_t i = 0; i + 1 < text->size(); ++i) {
    const char c = (*text)[i];
    if (c < '0' || c > '9') return 0;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

// Replaces `path` by `text` through `path`.tmp and a rename, without a sync: readers (a process
// started after a SIGKILL) see the old or the new mark, never a mix. The folder is locked, so the
// temporary name is this process's alone.
Status ReplaceUnsynced(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Status::IOError("outbox: cannot open " + tmp + ": " + std::strerror(errno));
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  const int err = errno;
  ::close(fd);
  if (!written || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = written ? errno : err;
    ::unlink(tmp.c_str());
    return Status::IOError("outbox: cannot write " + path + ": " + std::strerror(e));
  }
  return Status::OK();
}

}  // namespace

StatusOr<std::unique_ptr<Outbox>> Outbox::Open(const OutboxOptions& options) {
  if (options.dir.empty()) return Status::InvalidArgument("outbox: no folder");
  if (options.memory_records < 1) return Status::InvalidArgument("outbox: memory_records must be >= 1");
  std::error_code ec;
  fs::create_directories(options.dir, ec);
  if (ec) return Status::IOError("outbox: cannot create " + options.dir + ": " + ec.message());
  fs::permissions(options.dir, fs::perms::owner_all, ec);
  std::unique_ptr<Outbox> box(new Outbox(options));
  const std::string lock_path = options.dir + "/LOCK";
  box->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (box->lock_fd_ < 0) return Status::IOError("outbox: cannot open " + lock_path + ": " + std::strerror(errno));
  if (::flock(box->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return Status::FailedPrecondition("outbox: " + options.dir + " is in use by another process");
  }
  std::vector<std::pair<uint64_t, std::string>> files;
  for (const auto& entry : fs::directory_iterator(options.dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(kPrefix, 0) != 0 || name.size() <= std::strlen(kPrefix) + std::strlen(kSuffix) ||
        name.compare(name.size() - std::strlen(kSuffix), std::string::npos, kSuffix) != 0) {
      continue;
    }
    files.emplace_back(std::strtoull(name.c_str() + std::strlen(kPrefix), nullptr, 10), entry.path().string());
  }
  if (ec) return Status::IOError("outbox: cannot list " + options.dir + ": " + ec.message());
  std::sort(files.begin(), files.end());
  MutexLock lock(&box->mu_);  // nothing else holds the box yet; its state is set under mu_ all the same
  const uint64_t mark = ReadMark(options.dir + "/" + kMark);
  box->last_ = mark;
  uint64_t first_fresh = 0;
  // Records at or below the mark are acknowledged; records already read from an earlier file
  // (a folder written by an outbox that wrote its memory to a segment at Close) are skipped.
  for (const auto& [first, path] : files) {
    FLAP_ASSIGN_OR_RETURN(auto records, ReadSegment(path));
    size_t fresh = 0;
    for (const auto& [seq, record] : records) {
      if (seq <= box->last_) continue;
      if (first_fresh == 0) first_fresh = seq;
      ++fresh;
      box->last_ = seq;
    }
    if (fresh == 0) {
      fs::remove(path, ec);
      continue;
    }
    box->segments_.push_back({path, box->last_, records.size(), fresh});
  }
  box->acknowledged_ = box->segments_.empty() ? box->last_ : std::max(mark, first_fresh - 1);
  box->cached_ = box->acknowledged_;
  box->durable_ = box->last_;
  FLAP_RETURN_IF_ERROR(box->Refill());
  return box;
}

Outbox::~Outbox() {
  (void)Close();
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

std::string Outbox::SegmentPath(uint64_t first) const {
  char name[64];
  std::snprintf(name, sizeof(name), "%s%020llu%s", kPrefix, static_cast<unsigned long long>(first), kSuffix);
  return options_.dir + "/" + name;
}

uint64_t Outbox::Push(std::string record, Status* spill_error) {
  MutexLock lock(&mu_);
  if (closed_) {
    if (spill_error != nullptr) *spill_error = Status::FailedPrecondition("outbox: closed");
    return 0;
  }
  const uint64_t seq = ++last_;
  cv_.SignalAll();
  const Status written = Append(seq, record);
  if (!written.ok() && spill_error != nullptr) *spill_error = written;
  if (cached_ == seq - 1 && memory_.size() < options_.memory_records) {
    memory_.emplace_back(seq, std::move(record));
    cached_ = seq;
  } else if (written.ok()) {
    ++segments_.back().unread;
  } else {
    unspilled_.emplace_back(seq, std::move(record));  // in order, behind every record on disk
  }
  return seq;
}

std::string Outbox::EncodeNotDurable(uint64_t* first, size_t* count) const {
  std::string bytes;
  for (const auto* records : {&memory_, &unspilled_}) {
    for (const auto& [seq, record] : *records) {
      if (seq <= durable_) continue;
      if (*first == 0) *first = seq;
      bytes += Encode(seq, record);
      ++*count;
    }
  }
  return bytes;
}

Status Outbox::Append(uint64_t seq, const std::string& record) {
  // The records the disk refused earlier (not acknowledged yet) go first, in order.
  uint64_t first = 0;
  size_t count = 0;
  std::string bytes = EncodeNotDurable(&first, &count);
  ++count;
  if (first == 0) first = seq;
  bytes += Encode(seq, record);
  const bool fresh = append_new_segment_ || segments_.empty() || segments_.back().records >= options_.memory_records;
  const std::string path = fresh ? SegmentPath(first) : segments_.back().path;
  bool created = false;
  Status s = AppendSynced(path, bytes, &created);
  if (s.ok() && created) s = SyncDir(options_.dir);
  if (!s.ok()) {
    append_new_segment_ = true;  // its end may hold a torn record: nothing goes behind it
    std::error_code ec;
    if (created) fs::remove(path, ec);
    return s;
  }
  if (fresh) segments_.push_back({path, 0, 0, 0});
  append_new_segment_ = false;
  Segment& back = segments_.back();
  back.last = seq;
  back.records += count;
  back.unread += unspilled_.size();  // durable now: read back from disk when their turn comes
  unspilled_.clear();
  durable_ = seq;
  return Status::OK();
}

Status Outbox::Refill() {
  Status damaged;
  for (Segment& segment : segments_) {
    if (memory_.size() >= options_.memory_records) break;
    if (segment.unread == 0) continue;
    auto records = ReadSegment(segment.path);
    size_t taken = 0;
    if (records.ok()) {
      for (auto& r : *records) {
        if (r.first <= cached_ || memory_.size() >= options_.memory_records) continue;
        cached_ = r.first;
        memory_.push_back(std::move(r));
        ++taken;
      }
    }
    if (taken == 0) {  // the file changed under the outbox: its records are lost
      if (damaged.ok()) {
        damaged = records.ok() ? Status::IOError("outbox: " + segment.path + " lost its records") : records.status();
      }
      segment.unread = 0;
      cached_ = std::max(cached_, segment.last);
      continue;
    }
    segment.unread -= std::min(segment.unread, taken);
  }
  if (memory_.empty()) {
    memory_.swap(unspilled_);
    if (!memory_.empty()) cached_ = memory_.back().first;
  }
  return damaged;
}

Status Outbox::RemoveAcknowledged() {
  Status s;
  while (!segments_.empty() && segments_.front().last <= acknowledged_) {
    // The segment being appended to stays until full: removing it would cost the next Push a
    // new file and a folder sync.
    if (segments_.size() == 1 && !append_new_segment_ && segments_.front().records < options_.memory_records) break;
    std::error_code ec;
    fs::remove(segments_.front().path, ec);
    if (ec && s.ok()) s = Status::IOError("outbox: cannot remove " + segments_.front().path + ": " + ec.message());
    segments_.pop_front();
  }
  if (segments_.empty()) append_new_segment_ = true;
  return s;
}

Status Outbox::WriteMark(bool sync) {
  const std::string path = options_.dir + "/" + kMark;
  const std::string text = std::to_string(acknowledged_) + "\n";
  return sync ? WriteFileAtomic(path, text, 0600) : ReplaceUnsynced(path, text);
}

bool Outbox::Front(uint64_t* seq, std::string* record, std::chrono::milliseconds wait) {
  MutexLock lock(&mu_);
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (memory_.empty()) {
    if (cv_.WaitUntil(&mu_, deadline) && memory_.empty()) return false;
  }
  *seq = memory_.front().first;
  *record = memory_.front().second;
  return true;
}

Status Outbox::Pop() {
  MutexLock lock(&mu_);
  if (memory_.empty()) return Status::FailedPrecondition("outbox: nothing to acknowledge");
  acknowledged_ = memory_.front().first;
  memory_.pop_front();
  cv_.SignalAll();
  // The mark before the removals: a segment outliving a crash between them is all at or below it.
  Status s = WriteMark(false);
  Status removed = RemoveAcknowledged();
  if (s.ok()) s = removed;
  if (memory_.empty()) {
    Status refilled = Refill();
    if (s.ok()) s = refilled;
  }
  return s;
}

bool Outbox::WaitAcknowledged(uint64_t seq, std::chrono::milliseconds wait) {
  MutexLock lock(&mu_);
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (acknowledged_ < seq) {
    if (cv_.WaitUntil(&mu_, deadline)) return acknowledged_ >= seq;
  }
  return true;
}

size_t Outbox::size() const {
  MutexLock lock(&mu_);
  size_t n = memory_.size() + unspilled_.size();
  for (const Segment& s : segments_) n += s.unread;
  return n;
}

size_t Outbox::in_memory() const {
  MutexLock lock(&mu_);
  return memory_.size();
}

uint64_t Outbox::last() const {
  MutexLock lock(&mu_);
  return last_;
}

Status Outbox::Close() {
  MutexLock lock(&mu_);
  if (closed_) return Status::OK();
  closed_ = true;
  // The records the disk refused, as a segment named by the first of them (after every other).
  uint64_t first = 0;
  size_t count = 0;
  const std::string bytes = EncodeNotDurable(&first, &count);
  Status s;
  if (first != 0) s = WriteFileAtomic(SegmentPath(first), bytes, 0600);
  const Status marked = WriteMark(true);
  return s.ok() ? marked : s;
}

}  // namespace flap::worker
