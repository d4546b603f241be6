// The POSIX Env of checkpoint/env.h. Atomic writes and directory fsyncs reuse sharding's
// file helpers; hashing streams the file so that multi-GiB model files are never held twice.
#include "checkpoint/env.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <system_error>

#include "sharding/file_util.h"

namespace flap::checkpoint {
namespace fs = std::filesystem;

uint64_t Xxh64(const std::string& bytes) { return XXH64(bytes.data(), bytes.size(), 0); }

std::string HexDigest(uint64_t digest) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(digest));
  return buf;
}

namespace {

class PosixEnv : public Env {
 public:
  Status WriteFileAtomic(const std::string& path, const std::string& contents) override {
    return sharding::WriteFileAtomic(path, contents);
  }

  StatusOr<std::string> ReadFile(const std::string& path) override {
    return sharding::ReadFileToString(path);
  }

  StatusOr<FileDigest> HashFile(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      if (err == ENOENT) return Status::NotFound(path + ": no such file");
      return Status::IOError(path + ": cannot open: " + sharding::ErrnoMessage(err));
    }
    std::unique_ptr<XXH64_state_t, decltype(&XXH64_freeState)> state(XXH64_createState(),
                                                                       &XXH64_freeState);
    XXH64_reset(state.get(), 0);
    constexpr size_t kChunk = 1 << 20;
    std::unique_ptr<char[]> buf(new char[kChunk]);
    FileDigest digest;
    while (true) {
      ssize_t n = ::read(fd, buf.get(), kChunk);
      if (n < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        ::close(fd);
        return Status::IOError(path + ": read failed: " + sharding::ErrnoMessage(err));
      }
      if (n == 0) break;
      XXH64_update(state.get(), buf.get(), static_cast<size_t>(n));
      digest.size += static_cast<uint64_t>(n);
    }
    ::close(fd);
    digest.xxh64 = XXH64_digest(state.get());
    return digest;
  }

  Status SyncDir(const std::string& dir) override {
    // SyncParentDir fsyncs the folder holding its argument: name an entry inside `dir`.
    return sharding::SyncParentDir(sharding::JoinPath(dir, "."));
  }

  Status MakeDirs(const std::string& dir) override { return sharding::MakeDirs(dir); }

  Status RemoveAll(const std::string& path) override {
    std::error_code ec;
    fs::remove_all(path, ec);
    if (ec) return Status::IOError(path + ": cannot remove: " + ec.message());
    return Status::OK();
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
      if (it->is_directory(type_ec)) names.push_back(it->path().filename().string());
    }
    if (ec) return Status::IOError(dir + ": cannot list: " + ec.message());
    std::sort(names.begin(), names.end());
    return names;
  }

  bool Exists(const std::string& path) override {
    std::error_code ec;
    return fs::exists(path, ec);
  }
};

}  // namespace

Env* Env::Default() {
  static PosixEnv* env = new PosixEnv();
  return env;
}

}  // namespace flap::checkpoint
