// Outbox: the records a worker group must deliver to its coordinator (metrics, checkpoints, the
// end of a trial), kept in order until each is acknowledged, whatever the coordinator's outage.
//
// Records are opaque bytes with a sequence number (1, 2, ... across the outbox's life, also
// across processes sharing its folder). The oldest `memory_records` live in memory; once that
// many are waiting, later ones are appended to segment files in the folder (each synced before
// Push returns), at most `memory_records` a segment, named by their first sequence number.
// When memory empties, the oldest segment is read back; its file is removed once all of its
// records are acknowledged. Close() writes what is in memory to a segment, so a later Open of
// the same folder (a restarted agent) resends every record not acknowledged, in order. A record
// only in memory is lost if the process dies without Close (SIGKILL): the spill is a bound on
// memory and a hand-over between processes, not a write-ahead log.
//
// Segment format: records of [u64 sequence][u32 size][u64 FNV-1a of sequence and bytes][bytes],
// little-endian. A record torn by a crash while it was appended ends its segment's reading.
//
// Thread-safe: one thread pushes, another sends (Front / Pop), any waits.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>

#include "common/mutex.h"
#include "common/status.h"

namespace flap::worker {

struct OutboxOptions {
  std::string dir;               // the spill folder (created 0700); one outbox per folder
  size_t memory_records = 1024;  // records held in memory before spilling (>= 1)
};

class Outbox {
 public:
  // Opens the folder and reads back the records a previous outbox left there. The folder is
  // locked (flock on DIR/LOCK) while open: FailedPrecondition when another process holds it.
  static StatusOr<std::unique_ptr<Outbox>> Open(const OutboxOptions& options);
  ~Outbox();  // Close()

  // Appends a record (at most 64 MiB); its sequence number (0 once closed). Should the spill
  // fail (IOError, e.g. a full disk) the record is kept in memory all the same, in order, and the
  // error set in *spill_error for the caller to report.
  uint64_t Push(std::string record, Status* spill_error = nullptr);
  // The oldest record not acknowledged, waiting up to `wait` for one; false when none came.
  bool Front(uint64_t* seq, std::string* record, std::chrono::milliseconds wait);
  // Acknowledges the oldest record (the one Front gave).
  Status Pop();
  // Waits up to `wait` until every record up to `seq` is acknowledged; whether they are.
  bool WaitAcknowledged(uint64_t seq, std::chrono::milliseconds wait);
  // Records waiting, in memory and on disk.
  size_t size() const;
  size_t in_memory() const;
  // The sequence number of the last record pushed (0: none yet).
  uint64_t last() const;
  // Writes the records in memory to a segment (a later Open resends them); Push and Front are
  // not to be called afterwards.
  Status Close();

 private:
  struct Segment {
    std::string path;
    uint64_t first = 0;
    size_t records = 0;
  };
  explicit Outbox(OutboxOptions options) : options_(std::move(options)) {}
  std::string SegmentPath(uint64_t first) const;
  // Appends to the newest segment, starting one when needed.
  Status Spill(uint64_t seq, const std::string& record) REQUIRES(mu_);
  // Reads the oldest segment into memory (it stays on disk until drained).
  Status LoadOldest() REQUIRES(mu_);

  const OutboxOptions options_;
  mutable Mutex mu_;
  CondVar cv_;
  std::deque<std::pair<uint64_t, std::string>> memory_ GUARDED_BY(mu_);
  std::deque<Segment> segments_ GUARDED_BY(mu_);  // on disk, not in memory
  // After segments_, the disk having refused them.
  std::deque<std::pair<uint64_t, std::string>> unspilled_ GUARDED_BY(mu_);
  std::string loaded_ GUARDED_BY(mu_);  // the segment file memory_ was read from ("" none)
  uint64_t last_ GUARDED_BY(mu_) = 0;
  uint64_t acknowledged_ GUARDED_BY(mu_) = 0;  // every record up to it is acknowledged
  bool closed_ GUARDED_BY(mu_) = false;
  int lock_fd_ = -1;  // DIR/LOCK, flock'ed for the outbox's life
};

}  // namespace flap::worker
