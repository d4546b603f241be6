// Small file helpers shared by the sharding part: whole-file reads, atomic whole-file writes,
// and directory fsync. Internal to sharding/ (not part of its contract with other parts).
//
// Thread-safety: free functions without shared state; safe from any thread (two threads or
// processes writing the same path at once get one of the two contents, whole).
#pragma once

#include <string>

#include "common/status.h"

namespace flap::sharding {

// Reads the whole file. NotFound if it does not exist, IOError if it cannot be read.
StatusOr<std::string> ReadFileToString(const std::string& path);

// flap::WriteFileAtomic (common/atomic_file.h): writes `contents` to a unique temporary file
// beside `path`, fsyncs it, renames it onto `path` and fsyncs the parent directory, so readers
// see either the old file or the whole new one; concurrent writers never share a temporary
// file and a planted symbolic link is never followed. IOError naming the path on failure (the
// temporary file is removed).
Status WriteFileAtomic(const std::string& path, const std::string& contents);

// fsyncs the directory holding `path` so a rename into it is durable. IOError on failure.
Status SyncParentDir(const std::string& path);

// Creates `dir` and its missing parents. OK if it already exists as a directory; IOError
// otherwise.
Status MakeDirs(const std::string& dir);

// "<dir>/<name>" (no doubled separator).
std::string JoinPath(const std::string& dir, const std::string& name);

// strerror(errno) as a string, for messages.
std::string ErrnoMessage(int err);

}  // namespace flap::sharding
