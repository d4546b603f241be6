// ForwardingEnv: an Env that passes every call on to Env::Default(). Tests derive from it and
// override the calls they fake a fault or a race in.
#pragma once

#include <string>
#include <vector>

#include "checkpoint/env.h"

namespace flap::checkpoint {

class ForwardingEnv : public Env {
 public:
  Status WriteFileAtomic(const std::string& path, const std::string& contents) override {
    return Env::Default()->WriteFileAtomic(path, contents);
  }
  StatusOr<std::string> ReadFile(const std::string& path) override { return Env::Default()->ReadFile(path); }
  StatusOr<FileDigest> HashFile(const std::string& path) override { return Env::Default()->HashFile(path); }
  Status SyncDir(const std::string& dir) override { return Env::Default()->SyncDir(dir); }
  Status MakeDirs(const std::string& dir) override { return Env::Default()->MakeDirs(dir); }
  Status RemoveAll(const std::string& root, const std::string& relative) override {
    return Env::Default()->RemoveAll(root, relative);
  }
  Status Rename(const std::string& from, const std::string& to) override { return Env::Default()->Rename(from, to); }
  StatusOr<std::vector<std::string>> ListSubdirs(const std::string& dir) override {
    return Env::Default()->ListSubdirs(dir);
  }
  bool Exists(const std::string& path) override { return Env::Default()->Exists(path); }
  bool IsSymlink(const std::string& path) override { return Env::Default()->IsSymlink(path); }
};

}  // namespace flap::checkpoint
