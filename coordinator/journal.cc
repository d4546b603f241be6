// Implementation of coordinator/journal.h.
#include "coordinator/journal.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

namespace flap::coordinator {

StatusOr<std::unique_ptr<Journal>> Journal::Open(const std::string& dir, const JournalOptions& options) {
  rocksdb::Options db_options;
  db_options.create_if_missing = options.create_if_missing;
  db_options.paranoid_checks = true;
  db_options.max_open_files = 256;
  db_options.keep_log_file_num = 4;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, dir, &raw);
  if (!s.ok()) {
    return Status::IOError("cannot open the coordinator state in " + dir + ": " + s.ToString());
  }
  return std::unique_ptr<Journal>(new Journal(dir, std::unique_ptr<rocksdb::DB>(raw), options));
}

Journal::Journal(std::string dir, std::unique_ptr<rocksdb::DB> db, const JournalOptions& options)
    : dir_(std::move(dir)), options_(options), db_(std::move(db)), pending_(std::make_unique<rocksdb::WriteBatch>()) {
  committer_ = std::thread([this] { CommitLoop(); });
}

Journal::~Journal() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  committer_.join();
}

uint64_t Journal::Append(JournalBatch batch) {
  std::lock_guard<std::mutex> lock(mu_);
  if (batch.empty()) return appended_;
  for (auto& op : batch.ops_) {
    if (op.del) {
      pending_->Delete(op.key);
    } else {
      pending_->Put(op.key, op.value);
    }
  }
  ++appended_;
  cv_.notify_all();
  return appended_;
}

uint64_t Journal::appended() const {
  std::lock_guard<std::mutex> lock(mu_);
  return appended_;
}

bool Journal::healthy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_.ok();
}

Status Journal::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

void Journal::WhenDurable(uint64_t seq, std::function<void(const Status&)> done) {
  Status now;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (status_.ok() && durable_ < seq) {
      waiters_.emplace_back(seq, std::move(done));
      return;
    }
    now = status_;
  }
  done(now);
}

Status Journal::Wait(uint64_t seq) {
  std::mutex m;
  std::condition_variable cv;
  bool finished = false;
  Status result;
  WhenDurable(seq, [&](const Status& s) {
    std::lock_guard<std::mutex> lock(m);
    result = s;
    finished = true;
    cv.notify_all();
  });
  std::unique_lock<std::mutex> lock(m);
  cv.wait(lock, [&] { return finished; });
  return result;
}

void Journal::CommitLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || durable_ < appended_; });
    if (durable_ == appended_ && stop_) break;
    rocksdb::WriteBatch batch;
    std::swap(batch, *pending_);
    const uint64_t target = appended_;
    const bool ok_so_far = status_.ok();
    lock.unlock();
    rocksdb::WriteOptions wo;
    wo.sync = options_.sync;
    Status s;
    if (ok_so_far) {
      rocksdb::Status rs = db_->Write(wo, &batch);
      if (!rs.ok()) {
        s = Status::IOError("coordinator journal write to " + dir_ + " failed: " + rs.ToString());
      }
    }
    lock.lock();
    const bool failed_now = !s.ok() && status_.ok();
    if (failed_now) status_ = s;
    if (status_.ok()) durable_ = target;
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
    lock.unlock();
    for (auto& fn : ready) fn(result);
    if (failed_now && options_.on_failure) options_.on_failure(result);
    lock.lock();
  }
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

}  // namespace flap::coordinator
