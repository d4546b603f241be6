// Journal: the coordinator's durable state, a RocksDB database written with group commit. A
// caller stages a batch of puts and deletes (Append, in the order of its in-memory changes) and
// gets a sequence number; a committer thread writes everything staged so far as one synced
// RocksDB WriteBatch and then runs the callbacks waiting on those sequence numbers. So an RPC
// handler changes its state under its own lock, appends the change, releases the lock and
// replies from the callback (WhenDurable): the reply never leaves before its change is on disk,
// and concurrent changes share one fsync.
//
// What it is not: a general database layer. Reads go straight to RocksDB (Scan, Get) and see
// only committed data.
//
// Failure. A failed write, or an error of RocksDB's background work (flush, compaction: a full
// disk), is permanent: every waiting and later callback gets the error, and healthy() turns
// false. The in-memory state of the caller is then ahead of the disk, so the
// service refuses every later call (UNAVAILABLE) until it is restarted from what was committed,
// and JournalOptions::on_failure is called (flap-coordinator exits 74 from it). A failed journal
// is not closed at destruction (RocksDB's assertions refuse closing files that saw a write
// error); what was committed stays on disk. RocksDB's info log (DIR/LOG) ignores its own write
// errors.
//
// Thread-safety: thread-safe. Callbacks run on the committer thread (or on the caller's thread
// when the sequence number is already durable); they must not block.
//
// RocksDB's headers stay in journal.cc: this header declares its types only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"

namespace rocksdb {
class DB;
class WriteBatch;
}  // namespace rocksdb

namespace flap::coordinator {

struct JournalOptions {
  bool sync = true;  // fsync every commit (false only for throwaway benchmarks)
  bool create_if_missing = true;
  // Called once, on the committer thread or RocksDB's, when a write or background work fails (after the waiting
  // callbacks got the error). flap-coordinator exits from it so that its supervisor restarts it from the committed
  // state; it must not block.
  std::function<void(const Status&)> on_failure;
};

// Staged changes, applied in order.
class JournalBatch {
 public:
  void Put(std::string key, std::string value) { ops_.push_back({std::move(key), std::move(value), false}); }
  void Delete(std::string key) { ops_.push_back({std::move(key), {}, true}); }
  bool empty() const { return ops_.empty(); }

 private:
  friend class Journal;
  struct Op {
    std::string key;
    std::string value;
    bool del = false;
  };
  std::vector<Op> ops_;
};

class Journal {
 public:
  // Opens (creating if allowed) the database in `dir`. IOError naming the folder on failure,
  // e.g. when another coordinator holds its lock.
  static StatusOr<std::unique_ptr<Journal>> Open(const std::string& dir, const JournalOptions& options);
  // Commits what is staged, then stops the committer thread.
  ~Journal();

  // Stages `batch`; returns its sequence number (1, 2, ...). An empty batch gets the current
  // sequence number, so waiting on it waits for everything staged before.
  uint64_t Append(JournalBatch batch);
  // The sequence number of the latest staged batch.
  uint64_t appended() const;
  // Runs `done` once everything up to `seq` is committed (OK) or the journal failed (the error).
  void WhenDurable(uint64_t seq, std::function<void(const Status&)> done);
  // Blocks until `seq` is committed; the journal's error otherwise.
  Status Wait(uint64_t seq);
  bool healthy() const;
  Status status() const;

  // Committed (key, value) pairs whose key starts with `prefix`, in key order.
  StatusOr<std::vector<std::pair<std::string, std::string>>> Scan(const std::string& prefix) const;
  // The committed value of `key`: NotFound when absent.
  StatusOr<std::string> Get(const std::string& key) const;
  // Commits what is staged, then writes every committed record into table files and compacts
  // them (RocksDB's Flush and CompactRange over all keys): the folder then holds the records in
  // as few table files as they fill and no log to replay (a checked-in test journal). IOError
  // naming the folder on failure.
  Status Compact();
  const std::string& dir() const { return dir_; }
  // The database's identity (RocksDB's DB identity): made when the folder's database is
  // created, the same at every later open of it.
  const std::string& identity() const { return identity_; }

 private:
  class ErrorListener;

  Journal(std::string dir, std::unique_ptr<rocksdb::DB> db, std::shared_ptr<ErrorListener> listener,
          const JournalOptions& options);
  void CommitLoop() EXCLUDES(mu_);
  // Fails the journal with `failure` (the first failure wins).
  void Fail(const Status& failure) EXCLUDES(mu_);
  // Records `failure` unless OK or one came before, then runs the callbacks that are settled
  // (all of them once failed) and, on the first failure, on_failure, with mu_ released for
  // them and taken again.
  void Settle(const Status& failure) REQUIRES(mu_);

  const std::string dir_;
  std::string identity_;
  const JournalOptions options_;
  std::unique_ptr<rocksdb::DB> db_;  // thread-safe itself
  std::shared_ptr<ErrorListener> listener_;

  mutable Mutex mu_;
  CondVar cv_;
  std::unique_ptr<rocksdb::WriteBatch> pending_ GUARDED_BY(mu_);
  uint64_t appended_ GUARDED_BY(mu_) = 0;
  uint64_t durable_ GUARDED_BY(mu_) = 0;
  Status status_ GUARDED_BY(mu_);  // the first write failure
  bool stop_ GUARDED_BY(mu_) = false;
  std::vector<std::pair<uint64_t, std::function<void(const Status&)>>> waiters_ GUARDED_BY(mu_);
  std::thread committer_;
};

}  // namespace flap::coordinator
