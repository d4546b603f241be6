// Implementation of coordinator/journal.h.
#include "coordinator/journal.h"

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/listener.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <filesystem>

#include "common/rocksdb_info_log.h"

namespace flap::coordinator {

// Passes RocksDB's background errors (a failed flush, compaction or WAL write) to the journal,
// which then fails as on a failed write, and keeps RocksDB from resuming on its own.
class Journal::ErrorListener : public rocksdb::EventListener {
 public:
  void Attach(Journal* journal) {
    MutexLock lock(&mu_);
    journal_ = journal;
  }
  void OnBackgroundError(rocksdb::BackgroundErrorReason reason, rocksdb::Status* error) override {
    if (error == nullptr || error->ok()) return;
    MutexLock lock(&mu_);
    if (journal_ == nullptr) return;
    journal_->Fail(Status::IOError("coordinator journal write to " + journal_->dir_ + " failed (RocksDB, " +
                                   ReasonName(reason) + "): " + error->ToString()));
  }
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason, rocksdb::Status, bool* auto_recovery) override {
    if (auto_recovery != nullptr) *auto_recovery = false;
  }

 private:
  static std::string ReasonName(rocksdb::BackgroundErrorReason reason) {
    switch (reason) {
      case rocksdb::BackgroundErrorReason::kFlush:
        return "flush";
      case rocksdb::BackgroundErrorReason::kCompaction:
        return "compaction";
      case rocksdb::BackgroundErrorReason::kWriteCallback:
        return "write";
      case rocksdb::BackgroundErrorReason::kMemTable:
        return "memtable";
      case rocksdb::BackgroundErrorReason::kManifestWrite:
        return "manifest write";
      case rocksdb::BackgroundErrorReason::kFlushNoWAL:
        return "flush";
      case rocksdb::BackgroundErrorReason::kManifestWriteNoWAL:
        return "manifest write";
    }
    return "background work";
  }

  Mutex mu_;
  Journal* journal_ GUARDED_BY(mu_) = nullptr;
};

StatusOr<std::unique_ptr<Journal>> Journal::Open(const std::string& dir, const JournalOptions& options) {
  auto listener = std::make_shared<ErrorListener>();
  rocksdb::Options db_options;
  db_options.create_if_missing = options.create_if_missing;
  db_options.paranoid_checks = true;
  db_options.max_open_files = 256;
  db_options.info_log = std::make_shared<IgnoringErrorsLogger>(dir);
  db_options.listeners.push_back(listener);
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, dir, &raw);
  if (!s.ok()) {
    return Status::IOError("cannot open the coordinator state in " + dir + ": " + s.ToString());
  }
  return std::unique_ptr<Journal>(new Journal(dir, std::unique_ptr<rocksdb::DB>(raw), std::move(listener), options));
}

Journal::Journal(std::string dir, std::unique_ptr<rocksdb::DB> db, std::shared_ptr<ErrorListener> listener,
                 const JournalOptions& options)
    : dir_(std::move(dir)),
      options_(options),
      db_(std::move(db)),
      listener_(std::move(listener)),
      pending_(std::make_unique<rocksdb::WriteBatch>()) {
  if (!db_->GetDbIdentity(identity_).ok()) identity_.clear();
  listener_->Attach(this);
  committer_ = std::thread([this] { CommitLoop(); });
}

Journal::~Journal() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  cv_.SignalAll();
  committer_.join();
  listener_->Attach(nullptr);
  if (!healthy()) {
    // Closing a database whose files saw a write error makes RocksDB flush and sync them again,
    // which its assertions refuse; the process ends anyway, and the files hold what was
    // committed.
    (void)db_.release();
  }
}

void Journal::Fail(const Status& failure) {
  MutexLock lock(&mu_);
  Settle(failure);
}

void Journal::Settle(const Status& failure) {
  const bool failed_now = !failure.ok() && status_.ok();
  if (failed_now) status_ = failure;
  std::vector<std::function<void(const Status&)>> ready;
  auto it = waiters_.begin();
  while (it != waiters_.end()) {
    if (!status_.ok() || it->first <= durable_) {
      ready.push_back(std::move(it->second));
      it = waiters_.erase(it);
    } else {
      ++it;
    }
  }
  const Status result = status_;
  if (!status_.ok()) durable_ = appended_;  // nothing more will be written
  mu_.Unlock();
  for (auto& fn : ready) fn(result);
  if (failed_now && options_.on_failure) options_.on_failure(result);
  mu_.Lock();
}

uint64_t Journal::Append(JournalBatch batch) {
  MutexLock lock(&mu_);
  if (batch.empty()) return appended_;
  for (auto& op : batch.ops_) {
    if (op.del) {
      pending_->Delete(op.key);
    } else {
      pending_->Put(op.key, op.value);
    }
  }
  ++appended_;
  cv_.SignalAll();
  return appended_;
}

uint64_t Journal::appended() const {
  MutexLock lock(&mu_);
  return appended_;
}

bool Journal::healthy() const {
  MutexLock lock(&mu_);
  return status_.ok();
}

Status Journal::status() const {
  MutexLock lock(&mu_);
  return status_;
}

void Journal::WhenDurable(uint64_t seq, std::function<void(const Status&)> done) {
  Status now;
  {
    MutexLock lock(&mu_);
    if (status_.ok() && durable_ < seq) {
      waiters_.emplace_back(seq, std::move(done));
      return;
    }
    now = status_;
  }
  done(now);
}

Status Journal::Wait(uint64_t seq) {
  Mutex m;
  CondVar cv;
  bool finished = false;
  Status result;
  WhenDurable(seq, [&](const Status& s) {
    MutexLock lock(&m);
    result = s;
    finished = true;
    cv.SignalAll();
  });
  MutexLock lock(&m);
  while (!finished) cv.Wait(&m);
  return result;
}

void Journal::CommitLoop() {
  mu_.Lock();
  while (true) {
    while (!stop_ && durable_ >= appended_) cv_.Wait(&mu_);
    if (durable_ == appended_ && stop_) break;
    rocksdb::WriteBatch batch;
    std::swap(batch, *pending_);
    const uint64_t target = appended_;
    const bool ok_so_far = status_.ok();
    mu_.Unlock();
    rocksdb::WriteOptions wo;
    wo.sync = options_.sync;
    Status s;
    if (ok_so_far) {
      rocksdb::Status rs = db_->Write(wo, &batch);
      if (!rs.ok()) {
        s = Status::IOError("coordinator journal write to " + dir_ + " failed: " + rs.ToString());
      }
    }
    mu_.Lock();
    if (s.ok() && status_.ok()) durable_ = target;
    Settle(s);
  }
  mu_.Unlock();
}

StatusOr<std::vector<std::pair<std::string, std::string>>> Journal::Scan(const std::string& prefix) const {
  std::vector<std::pair<std::string, std::string>> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    out.emplace_back(it->key().ToString(), it->value().ToString());
  }
  if (!it->status().ok()) {
    return Status::IOError("reading " + dir_ + " (prefix " + prefix + "): " + it->status().ToString());
  }
  return out;
}

StatusOr<std::string> Journal::Get(const std::string& key) const {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), key, &value);
  if (s.IsNotFound()) return Status::NotFound("no key " + key + " in " + dir_);
  if (!s.ok()) return Status::IOError("reading " + key + " from " + dir_ + ": " + s.ToString());
  return value;
}

Status Journal::Compact() {
  FLAP_RETURN_IF_ERROR(Wait(Append(JournalBatch())));
  rocksdb::Status s = db_->Flush(rocksdb::FlushOptions());
  if (s.ok()) s = db_->CompactRange(rocksdb::CompactRangeOptions(), nullptr, nullptr);
  if (!s.ok()) return Status::IOError("compacting " + dir_ + ": " + s.ToString());
  return Status::OK();
}

}  // namespace flap::coordinator
