// RocksDB's info log as a plain file whose write errors are ignored, for every RocksDB database
// the project keeps (the coordinator's journal, the checkpoint store's trial indexes).
//
// RocksDB's own file logger asserts on its next line once a write of it failed, so on a full
// disk any later log line (opening a database, writing its MANIFEST, closing) aborted the
// process. This one writes DIR/LOG (the previous one kept as DIR/LOG.old, as RocksDB's
// keep_log_file_num = 2 would) and loses lines, nothing else, when the disk is full; a file it
// cannot open drops every line.
//
// Header-only; include it only from code that links RocksDB. Thread-safety: Logv may be called
// from any thread.
#pragma once

#include <rocksdb/env.h>

#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <string>

#include "common/mutex.h"

namespace flap {

class IgnoringErrorsLogger : public rocksdb::Logger {
 public:
  explicit IgnoringErrorsLogger(const std::string& dir) : rocksdb::Logger(rocksdb::InfoLogLevel::INFO_LEVEL) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    std::filesystem::rename(dir + "/LOG", dir + "/LOG.old", ec);
    file_ = std::fopen((dir + "/LOG").c_str(), "w");
  }
  ~IgnoringErrorsLogger() override {
    if (file_ != nullptr) std::fclose(file_);
  }
  IgnoringErrorsLogger(const IgnoringErrorsLogger&) = delete;
  IgnoringErrorsLogger& operator=(const IgnoringErrorsLogger&) = delete;

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    MutexLock lock(&mu_);
    if (file_ == nullptr) return;
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof(stamp), "%Y/%m/%d-%H:%M:%S ", &tm);
    std::fputs(stamp, file_);
    std::vfprintf(file_, format, ap);
    std::fputc('\n', file_);
    std::fflush(file_);  // a full disk loses log lines, nothing else
    std::clearerr(file_);
  }

 private:
  Mutex mu_;
  std::FILE* file_ GUARDED_BY(mu_) = nullptr;
};

}  // namespace flap
