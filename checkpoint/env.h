// Env: the file-system calls the checkpoint store makes, behind an interface so that tests can
// fake a crash between two of them (leveldb's include/leveldb/env.h and
// db/fault_injection_test.cc). Not a general-purpose file API: only what store.cc needs.
//
// Thread-safety: Env::Default() is a stateless singleton, safe from any thread. Subclasses used
// by tests must be safe from the threads that share the Store using them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace flap::checkpoint {

// Size and XXH64 (seed 0) of a file's contents.
struct FileDigest {
  uint64_t size = 0;
  uint64_t xxh64 = 0;
};

class Env {
 public:
  virtual ~Env() = default;

  // The POSIX implementation. Never deleted.
  static Env* Default();

  // Writes `contents` to a unique temporary file beside `path` (never following a symbolic
  // link), fsyncs it, renames it onto `path` and fsyncs the parent directory: readers see the
  // old file or all of the new one (common/atomic_file.h). IOError naming the path; nothing is
  // left behind then.
  virtual Status WriteFileAtomic(const std::string& path, const std::string& contents) = 0;

  // Reads the whole file. NotFound if it does not exist, IOError otherwise, and IOError for a
  // symbolic link (never followed) or anything but a regular file.
  virtual StatusOr<std::string> ReadFile(const std::string& path) = 0;

  // Streams the file through XXH64. NotFound and IOError as ReadFile.
  virtual StatusOr<FileDigest> HashFile(const std::string& path) = 0;

  // fsyncs a directory so that entries created, renamed or removed in it are durable.
  virtual Status SyncDir(const std::string& dir) = 0;

  // Creates `dir` and missing parents; OK if it exists.
  virtual Status MakeDirs(const std::string& dir) = 0;

  // Removes the file or directory tree at `root`/`relative` (`relative`: names joined by '/',
  // none empty, "." or ".."); OK if it does not exist. Never follows a symbolic link below
  // `root`: the walk starts from the root's descriptor and opens each folder of `relative`
  // from its parent's (O_NOFOLLOW | O_DIRECTORY), so a folder of `relative` that is (or is
  // swapped for) a link refuses the removal (FailedPrecondition), and a link at `relative`
  // itself or anywhere in the tree is removed itself, never what it points to.
  virtual Status RemoveAll(const std::string& root, const std::string& relative) = 0;

  // Renames a file or directory (same file system).
  virtual Status Rename(const std::string& from, const std::string& to) = 0;

  // The names (not paths) of the entries of `dir` that are directories, sorted; symbolic links
  // are not listed, whatever they point to. An empty list if `dir` does not exist.
  virtual StatusOr<std::vector<std::string>> ListSubdirs(const std::string& dir) = 0;

  virtual bool Exists(const std::string& path) = 0;

  // Whether `path` itself is a symbolic link (lstat); false if it does not exist.
  virtual bool IsSymlink(const std::string& path) = 0;
};

// XXH64 (seed 0) of a buffer, and its 16 lowercase hex digits form used in manifests.
uint64_t Xxh64(const std::string& bytes);
std::string HexDigest(uint64_t digest);

}  // namespace flap::checkpoint
