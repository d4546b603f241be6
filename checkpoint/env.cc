// The POSIX Env of checkpoint/env.h. Atomic writes and directory fsyncs are
// common/atomic_file.h's; hashing streams the file so that multi-GiB model files are never
// held twice; reading and hashing open regular files only, never through a symbolic link
// (O_NOFOLLOW); removal walks down from the root's descriptor (openat / fstatat / unlinkat,
// every folder opened O_NOFOLLOW | O_DIRECTORY from its parent's), so that it never follows a
// symbolic link, not even one swapped in for a folder above the one removed.
#include "checkpoint/env.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <system_error>

#include "common/atomic_file.h"
#include "common/file_util.h"

namespace flap::checkpoint {
namespace fs = std::filesystem;

uint64_t Xxh64(const std::string& bytes) { return XXH64(bytes.data(), bytes.size(), 0); }

std::string HexDigest(uint64_t digest) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(digest));
  return buf;
}

namespace {

Status RemoveError(const std::string& path, const char* what, int err) {
  return Status::IOError(path + ": cannot remove (" + what + "): " + ErrnoMessage(err));
}

Status RemoveEntry(int dir_fd, const std::string& name, const std::string& path);

// Removes every entry of the open folder `dir_fd` (`where` names it in messages), descending
// into real folders only: a symbolic link is unlinked, never followed.
Status RemoveContents(int dir_fd, const std::string& where) {
  const int list_fd = ::dup(dir_fd);
  if (list_fd < 0) return RemoveError(where, "dup", errno);
  DIR* d = ::fdopendir(list_fd);
  if (d == nullptr) {
    const int err = errno;
    ::close(list_fd);
    return RemoveError(where, "opendir", err);
  }
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  const int read_err = errno;
  ::closedir(d);
  if (read_err != 0) return RemoveError(where, "readdir", read_err);
  for (const std::string& name : names)
    FLAP_RETURN_IF_ERROR(RemoveEntry(dir_fd, name, JoinPath(where, name)));
  return Status::OK();
}

// Removes the entry `name` of the open folder `dir_fd` (`path` names it in messages): a real
// folder with everything in it (opened O_NOFOLLOW | O_DIRECTORY), anything else, a symbolic
// link included, unlinked itself. OK if it is gone.
Status RemoveEntry(int dir_fd, const std::string& name, const std::string& path) {
  struct stat st;
  if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return Status::OK();
    return RemoveError(path, "lstat", errno);
  }
  if (S_ISDIR(st.st_mode)) {
    const int sub = ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub >= 0) {
      Status s = RemoveContents(sub, path);
      ::close(sub);
      FLAP_RETURN_IF_ERROR(s);
      if (::unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
        return RemoveError(path, "rmdir", errno);
      }
      return Status::OK();
    }
    if (errno == ENOENT) return Status::OK();
    // ELOOP / ENOTDIR: replaced by a link or a file meanwhile; unlink that below.
    if (errno != ELOOP && errno != ENOTDIR) return RemoveError(path, "open", errno);
  }
  if (::unlinkat(dir_fd, name.c_str(), 0) != 0 && errno != ENOENT) return RemoveError(path, "unlink", errno);
  return Status::OK();
}

// Streams the file at `path` through `sink` in chunks of up to 1 MiB, reserving its size in
// *reserve first when given. Only a regular file is read: a symbolic link is refused, never
// followed (O_NOFOLLOW; a checkpoint's files are the store's own, inside the root), and so is
// anything else (a FIFO would block the reader: opened O_NONBLOCK, then refused).
Status ReadChunks(const std::string& path, const std::function<void(const char*, size_t)>& sink,
                  std::string* reserve = nullptr) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return Status::NotFound(path + ": no such file");
    if (err == ELOOP) return Status::IOError(path + ": is a symbolic link (refused: never followed)");
    return Status::IOError(path + ": cannot open: " + ErrnoMessage(err));
  }
  struct stat st = {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return Status::IOError(path + ": cannot stat: " + ErrnoMessage(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::IOError(path + ": is not a regular file (refused)");
  }
  if (reserve != nullptr && st.st_size > 0) reserve->reserve(static_cast<size_t>(st.st_size));
  constexpr size_t kChunk = 1 << 20;
  std::unique_ptr<char[]> buf(new char[kChunk]);
  while (true) {
    const ssize_t n = ::read(fd, buf.get(), kChunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return Status::IOError(path + ": read failed: " + ErrnoMessage(err));
    }
    if (n == 0) break;
    sink(buf.get(), static_cast<size_t>(n));
  }
  ::close(fd);
  return Status::OK();
}

class PosixEnv : public Env {
 public:
  Status WriteFileAtomic(const std::string& path, const std::string& contents) override {
    return flap::WriteFileAtomic(path, contents);
  }

  StatusOr<std::string> ReadFile(const std::string& path) override {
    std::string out;
    FLAP_RETURN_IF_ERROR(ReadChunks(
        path, [&](const char* data, size_t n) { out.append(data, n); }, &out));
    return out;
  }

  StatusOr<FileDigest> HashFile(const std::string& path) override {
    std::unique_ptr<XXH64_state_t, decltype(&XXH64_freeState)> state(XXH64_createState(), &XXH64_freeState);
    XXH64_reset(state.get(), 0);
    FileDigest digest;
    FLAP_RETURN_IF_ERROR(ReadChunks(path, [&](const char* data, size_t n) {
      XXH64_update(state.get(), data, n);
      digest.size += n;
    }));
    digest.xxh64 = XXH64_digest(state.get());
    return digest;
  }

  Status SyncDir(const std::string& dir) override { return flap::SyncDir(dir); }

  Status MakeDirs(const std::string& dir) override { return flap::MakeDirs(dir); }

  Status RemoveAll(const std::string& root, const std::string& relative) override {
    std::vector<std::string> parts;
    for (size_t b = 0; b <= relative.size();) {
      const size_t e = std::min(relative.find('/', b), relative.size());
      parts.push_back(relative.substr(b, e - b));
      b = e + 1;
    }
    for (const std::string& p : parts) {
      if (p.empty() || p == "." || p == "..") {
        return Status::InvalidArgument("cannot remove '" + relative + "' under " + root + ": not a relative path");
      }
    }
    // The root is the caller's own folder (its path may go through links); below it, every
    // folder is opened from its parent's descriptor without following a link.
    int fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? Status::OK() : RemoveError(root, "open", errno);
    std::string path = root;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      path = JoinPath(path, parts[i]);
      const int next = ::openat(fd, parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      const int err = errno;
      struct stat st;
      const bool link =
          next < 0 && ::fstatat(fd, parts[i].c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode);
      ::close(fd);
      if (next < 0) {
        if (err == ENOENT) return Status::OK();
        if (link) {
          return Status::FailedPrecondition(path + " is a symbolic link: refusing to remove " +
                                            JoinPath(root, relative) + " through it");
        }
        return RemoveError(path, "open", err);
      }
      fd = next;
    }
    Status s = RemoveEntry(fd, parts.back(), JoinPath(root, relative));
    ::close(fd);
    return s;
  }

  Status Rename(const std::string& from, const std::string& to) override {
    std::error_code ec;
    fs::rename(from, to, ec);
    if (ec) return Status::IOError(from + ": cannot rename to " + to + ": " + ec.message());
    return Status::OK();
  }

  StatusOr<std::vector<std::string>> ListSubdirs(const std::string& dir) override {
    std::vector<std::string> names;
    std::error_code ec;
    if (!fs::exists(dir, ec)) return names;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      std::error_code type_ec;
      // symlink_status: a link to a folder is not a folder here.
      if (fs::is_directory(it->symlink_status(type_ec))) {
        names.push_back(it->path().filename().string());
      }
    }
    if (ec) return Status::IOError(dir + ": cannot list: " + ec.message());
    std::sort(names.begin(), names.end());
    return names;
  }

  bool Exists(const std::string& path) override {
    std::error_code ec;
    return fs::exists(path, ec);
  }

  bool IsSymlink(const std::string& path) override {
    struct stat st;
    return ::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
  }
};

}  // namespace

Env* Env::Default() {
  static PosixEnv* env = new PosixEnv();
  return env;
}

}  // namespace flap::checkpoint
