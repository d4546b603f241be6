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
  // Records already read from an earlier file (Close writes memory anew before removing the
  // segment it came from) are skipped.
  for (const auto& [first, path] : files) {
    FLAP_ASSIGN_OR_RETURN(auto records, ReadSegment(path));
    size_t fresh = 0;
    for (const auto& [seq, record] : records) fresh += seq > box->last_;
    if (fresh == 0) {
      fs::remove(path, ec);
      continue;
    }
    box->segments_.push_back({path, first, fresh});
    box->last_ = std::max(box->last_, records.back().first);
  }
  if (!box->segments_.empty()) {
    box->acknowledged_ = box->segments_.front().first - 1;
    FLAP_RETURN_IF_ERROR(box->LoadOldest());
  } else {
    box->acknowledged_ = box->last_;
  }
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
  if (unspilled_.empty() && segments_.empty() && memory_.size() < options_.memory_records) {
    memory_.emplace_back(seq, std::move(record));
    return seq;
  }
  if (unspilled_.empty()) {
    const Status spilled = Spill(seq, record);
    if (spilled.ok()) return seq;
    if (spill_error != nullptr) *spill_error = spilled;
  }
  // The disk refused it: kept in memory behind the segments, in order.
  unspilled_.emplace_back(seq, std::move(record));
  return seq;
}

Status Outbox::Spill(uint64_t seq, const std::string& record) {
  const bool fresh = segments_.empty() || segments_.back().records >= options_.memory_records;
  const std::string path = fresh ? SegmentPath(seq) : segments_.back().path;
  bool created = false;
  FLAP_RETURN_IF_ERROR(AppendSynced(path, Encode(seq, record), &created));
  if (created) FLAP_RETURN_IF_ERROR(SyncDir(options_.dir));
  if (fresh) segments_.push_back({path, seq, 0});
  ++segments_.back().records;
  return Status::OK();
}

Status Outbox::LoadOldest() {
  const Segment s = segments_.front();
  FLAP_ASSIGN_OR_RETURN(auto records, ReadSegment(s.path));
  segments_.pop_front();
  for (auto& r : records) {
    if (r.first > acknowledged_) memory_.push_back(std::move(r));
  }
  loaded_ = s.path;
  return Status::OK();
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
  if (!memory_.empty()) return Status::OK();
  if (!loaded_.empty()) {
    std::error_code ec;
    fs::remove(loaded_, ec);
    const std::string removed = loaded_;
    loaded_.clear();
    if (ec) return Status::IOError("outbox: cannot remove " + removed + ": " + ec.message());
  }
  if (!segments_.empty()) return LoadOldest();
  memory_.swap(unspilled_);
  return Status::OK();
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
  for (const Segment& s : segments_) n += s.records;
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
  // Memory first, then what the disk refused earlier (after every segment): each as a segment
  // named by its first record, so a later Open reads them back in order.
  for (const auto* records : {&memory_, &unspilled_}) {
    if (records->empty()) continue;
    std::string bytes;
    for (const auto& [seq, record] : *records) bytes += Encode(seq, record);
    FLAP_RETURN_IF_ERROR(WriteFileAtomic(SegmentPath(records->front().first), bytes, 0600));
  }
  if (!loaded_.empty() && (memory_.empty() || loaded_ != SegmentPath(memory_.front().first))) {
    std::error_code ec;
    fs::remove(loaded_, ec);
  }
  loaded_.clear();
  return Status::OK();
}

}  // namespace flap::worker
