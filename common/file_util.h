// Whole-file reads and small path and folder helpers, for every part: reading a file into a
// string (the one implementation; no part reads whole files by hand), creating folders,
// joining paths, fsyncing a file's folder. Atomic whole-file writes are common/atomic_file.h's
// (included here: WriteFileAtomic, SyncDir).
//
// Header-only, like the rest of common/; POSIX.
//
// Thread-safety: free functions without shared state; safe from any thread.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>

#include "common/atomic_file.h"
#include "common/status.h"

namespace flap {

// strerror(err) as a string, for messages.
inline std::string ErrnoMessage(int err) { return std::strerror(err); }

// "<dir>/<name>" (no doubled separator; `name` alone when `dir` is empty).
inline std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  if (dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

// The whole file. NotFound naming the path if it does not exist, IOError naming it if it cannot
// be opened or read.
inline StatusOr<std::string> ReadFileToString(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return Status::NotFound(path + ": no such file");
    return Status::IOError(path + ": cannot open: " + ErrnoMessage(err));
  }
  // Read straight into a buffer sized from fstat (grown if the file grows meanwhile), in large
  // reads: no intermediate copies, which matters for multi-GB checkpoint files.
  struct stat st = {};
  const size_t capacity =
      (::fstat(fd, &st) == 0 && st.st_size > 0) ? static_cast<size_t>(st.st_size) + 1 : (size_t{1} << 16);
  std::string out(capacity, '\0');
  size_t size = 0;
  while (true) {
    if (size == out.size()) out.resize(out.size() * 2);
    const ssize_t n = ::read(fd, out.data() + size, std::min<size_t>(out.size() - size, size_t{1} << 26));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return Status::IOError(path + ": read failed: " + ErrnoMessage(err));
    }
    if (n == 0) break;
    size += static_cast<size_t>(n);
  }
  ::close(fd);
  out.resize(size);
  return out;
}

// fsyncs the folder holding `path` so a rename into it is durable. IOError on failure.
inline Status SyncParentDir(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return SyncDir(dir.empty() ? "." : dir);
}

// Creates `dir` and its missing parents. OK if it already exists as a folder; IOError naming it
// otherwise.
inline Status MakeDirs(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError(dir + ": cannot create directory: " + ec.message());
  if (!std::filesystem::is_directory(dir, ec)) return Status::IOError(dir + ": exists and is not a directory");
  return Status::OK();
}

}  // namespace flap
