// Atomic whole-file writes, the one implementation every part uses (shards, manifests, the
// fbank cache, checkpoint files, reports, the coordinator's address file, ...).
//
// The new contents go to a temporary file of a fresh, unique name in the destination's folder,
// "<dir>/.<name>.tmp-<random>", created with O_CREAT | O_EXCL | O_NOFOLLOW (as mkstemp does, but
// with the caller's mode, to which the umask applies): it is never an existing file, so a
// symbolic link planted at a predictable name is not followed and two writers of the same path
// (several workers filling one shared fbank cache) never write into the same temporary file.
// The file is fsynced, renamed onto the path (rename replaces a symbolic link found at the path
// instead of writing through it) and the folder is fsynced: readers see the old file or all of
// the new one; of concurrent writers, the last rename wins. On failure the temporary file is
// removed. A process killed mid-write leaves its hidden temporary file behind.
//
// Header-only, like the rest of common/ (which has no library of its own); POSIX.
//
// Thread-safety: free functions and a class without shared state; an AtomicFile is used by one
// thread at a time.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>

#include "common/status.h"

namespace flap {

namespace atomic_file_internal {

inline std::string ErrnoText(int err) { return std::strerror(err); }

// The folder holding `path` ("." for a bare name) and the last component.
inline void SplitPath(const std::string& path, std::string* dir, std::string* name) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) {
    *dir = ".";
    *name = path;
  } else {
    *dir = slash == 0 ? "/" : path.substr(0, slash);
    *name = path.substr(slash + 1);
  }
}

// Six characters from [0-9a-z], different on every call (per-thread generator seeded from the
// OS's random device, the process id and the clock).
inline std::string RandomSuffix() {
  thread_local std::mt19937_64 gen([] {
    std::random_device rd;
    const uint64_t t = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    const uint64_t tid = std::hash<std::thread::id>()(std::this_thread::get_id());
    return (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ t ^ (tid << 7) ^ (static_cast<uint64_t>(::getpid()) << 40);
  }());
  static const char kChars[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::string s(6, '0');
  for (char& c : s) c = kChars[gen() % 36];
  return s;
}

}  // namespace atomic_file_internal

// fsyncs the folder `dir` so that entries created, renamed or removed in it are durable.
// IOError naming it.
inline Status SyncDir(const std::string& dir) {
  const std::string d = dir.empty() ? "." : dir;
  const int fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return Status::IOError(d + ": cannot open directory: " + atomic_file_internal::ErrnoText(errno));
  }
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return Status::IOError(d + ": fsync failed: " + atomic_file_internal::ErrnoText(err));
  return Status::OK();
}

// A file being written under a unique temporary name, which Commit() renames onto its path.
class AtomicFile {
 public:
  // Creates the temporary file beside `path` with `mode` (the umask applies). IOError naming it
  // if it cannot be created (a missing folder, no permission, no space).
  static StatusOr<std::unique_ptr<AtomicFile>> Create(const std::string& path, mode_t mode = 0644) {
    std::string dir, name;
    atomic_file_internal::SplitPath(path, &dir, &name);
    if (name.empty() || name == "." || name == "..") {
      return Status::InvalidArgument(path + ": not a file name");
    }
    // Room for the prefix and suffix within NAME_MAX (255).
    const std::string stem = "." + name.substr(0, 200) + ".tmp-";
    const std::string prefix = (dir == "/" ? std::string("/") : dir + "/") + stem;
    int last_err = 0;
    for (int attempt = 0; attempt < 100; ++attempt) {
      std::string tmp = prefix + atomic_file_internal::RandomSuffix();
      const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
      if (fd >= 0) return std::unique_ptr<AtomicFile>(new AtomicFile(path, std::move(tmp), dir, fd));
      last_err = errno;
      if (last_err == EINTR || last_err == EEXIST) continue;
      return Status::IOError(tmp + ": cannot create: " + atomic_file_internal::ErrnoText(last_err));
    }
    return Status::IOError(prefix +
                           "*: cannot create a unique temporary file: " + atomic_file_internal::ErrnoText(last_err));
  }

  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile() { Abandon(); }

  // The open temporary file (-1 once committed or abandoned), for writers that need a
  // descriptor (libarchive). Not to be closed by the caller.
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }

  // Appends the bytes. IOError naming the temporary file (e.g. ENOSPC).
  Status Write(const char* data, size_t size) {
    if (fd_ < 0) return Status::FailedPrecondition(path_ + ": write after commit or abandon");
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::write(fd_, data + done, size - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::IOError(temp_path_ + ": write failed: " + atomic_file_internal::ErrnoText(errno));
      }
      done += static_cast<size_t>(n);
    }
    return Status::OK();
  }
  Status Write(const std::string& bytes) { return Write(bytes.data(), bytes.size()); }

  // fsyncs and closes the file, renames it onto the path and fsyncs the folder. On failure
  // (IOError naming the file) the temporary file is removed and the path left as it was,
  // except when only the final folder fsync fails.
  Status Commit() {
    if (fd_ < 0) return Status::FailedPrecondition(path_ + ": commit after commit or abandon");
    if (::fsync(fd_) != 0) return Fail(temp_path_ + ": fsync failed: ");
    const int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) return Fail(temp_path_ + ": close failed: ");
    if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
      return Fail(path_ + ": rename from " + temp_path_ + " failed: ");
    }
    committed_ = true;
    return SyncDir(dir_);
  }

  // Closes and removes the temporary file (nothing appears at the path). Idempotent.
  void Abandon() {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    if (!committed_ && !removed_) {
      ::unlink(temp_path_.c_str());
      removed_ = true;
    }
  }

 private:
  AtomicFile(std::string path, std::string temp_path, std::string dir, int fd)
      : path_(std::move(path)), temp_path_(std::move(temp_path)), dir_(std::move(dir)), fd_(fd) {}

  Status Fail(const std::string& what) {
    const int err = errno;
    Abandon();
    return Status::IOError(what + atomic_file_internal::ErrnoText(err));
  }

  const std::string path_, temp_path_, dir_;
  int fd_ = -1;
  bool committed_ = false;
  bool removed_ = false;
};

// Writes `contents` to `path` atomically (see above), creating the file with `mode` (umask
// applied). IOError naming the file on failure; nothing is left behind then.
inline Status WriteFileAtomic(const std::string& path, const std::string& contents, mode_t mode = 0644) {
  FLAP_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> file, AtomicFile::Create(path, mode));
  FLAP_RETURN_IF_ERROR(file->Write(contents));
  return file->Commit();
}

}  // namespace flap
