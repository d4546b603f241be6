// Implementation of sharding/file_util.h with POSIX calls; atomic writes and folder fsyncs are
// common/atomic_file.h's.
#include "sharding/file_util.h"

#include "common/atomic_file.h"

#include <algorithm>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

namespace flap::sharding {

std::string ErrnoMessage(int err) { return std::strerror(err); }

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  if (dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

StatusOr<std::string> ReadFileToString(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return Status::NotFound(path + ": no such file");
    return Status::IOError(path + ": cannot open: " + ErrnoMessage(err));
  }
  // Read straight into a buffer sized from fstat (grown if the file grows meanwhile), in
  // large reads: no intermediate copies, which matters for multi-GB checkpoint files.
  struct stat st = {};
  size_t capacity = (::fstat(fd, &st) == 0 && st.st_size > 0) ? static_cast<size_t>(st.st_size) + 1 : (1 << 16);
  std::string out(capacity, '\0');
  size_t size = 0;
  while (true) {
    if (size == out.size()) out.resize(out.size() * 2);
    ssize_t n = ::read(fd, out.data() + size, std::min<size_t>(out.size() - size, size_t{1} << 26));
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
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

Status SyncParentDir(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  return flap::SyncDir(dir.empty() ? "." : dir);
}

Status WriteFileAtomic(const std::string& path, const std::string& contents) {
  return flap::WriteFileAtomic(path, contents);
}

Status MakeDirs(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IOError(dir + ": cannot create directory: " + ec.message());
  if (!std::filesystem::is_directory(dir, ec)) {
    return Status::IOError(dir + ": exists and is not a directory");
  }
  return Status::OK();
}

}  // namespace flap::sharding
