// Outbox: the records a worker group must deliver to its coordinator (metrics, checkpoints, the
// end of a trial), kept in order until each is acknowledged, whatever the coordinator's outage,
// and whatever happens to the process holding it.
//
// A write-ahead log. Records are opaque bytes with a sequence number (1, 2, ... across the
// outbox's life, also across processes sharing its folder). Push appends every record to the
// folder's newest segment file and makes it durable (fdatasync, and a folder fsync for a new
// file) before it returns, so a record Push returned survives the process dying any way
// (SIGKILL, the OOM killer) and the machine losing power. A segment holds at most
// `memory_records` records written by one process (a reopened folder starts a new segment, never
// appending behind a record a crash may have torn), named by its first sequence number, and its
// file is removed once all of its records are acknowledged (the one being appended to once it
// is also full; Open removes it otherwise). Memory is only a cache of the oldest
// records not acknowledged, at most `memory_records` of them; when it empties, the following
// records are read back from their segments.
//
// Acknowledgements: Pop writes the sequence number acknowledged to DIR/ACKED (write to a
// temporary file, rename), not synced: after SIGKILL the mark is exact (the kernel keeps what was
// written); after a power loss it may be older, and a later Open then resends a few records
// already acknowledged. That is harmless and cheaper than a sync per Pop: the coordinator keeps
// one record per (trial, kind, step) and refuses the repeat, and the Speaker counts a refused
// record as delivered (worker/speaker.cc). Close syncs the mark. A missing or unreadable mark
// counts as 0 (everything still in a segment is resent). Open reads back every segment, skipping
// the records at or below the mark; sequence numbers go on from the highest of the mark and the
// records found.
//
// Should the disk refuse a record (IOError: a full disk, a failing device) Push keeps it in
// memory all the same, in order, and sets the error in *spill_error; such a record is not durable
// until a later Push succeeds in writing it (each Push first retries the records the disk
// refused, in order) or Close writes it.
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

  // Appends a record (at most 64 MiB) durably; its sequence number (0 once closed). Should the
  // write fail (IOError, e.g. a full disk) the record is kept in memory all the same, in order,
  // and the error set in *spill_error for the caller to report.
  uint64_t Push(std::string record, Status* spill_error = nullptr);
  // The oldest record not acknowledged, waiting up to `wait` for one; false when none came.
  bool Front(uint64_t* seq, std::string* record, std::chrono::milliseconds wait);
  // Acknowledges the oldest record (the one Front gave), removing its segment once the segment
  // is all acknowledged. An IOError (the mark or a file could not be written or read) leaves
  // the record acknowledged all the same; at worst a later Open resends it.
  Status Pop();
  // Waits up to `wait` until every record up to `seq` is acknowledged; whether they are.
  bool WaitAcknowledged(uint64_t seq, std::chrono::milliseconds wait);
  // Records waiting, in memory and on disk.
  size_t size() const;
  size_t in_memory() const;
  // The sequence number of the last record pushed (0: none yet).
  uint64_t last() const;
  // Writes the records the disk refused so far to a segment and syncs the acknowledgement mark
  // (a later Open resends every record not acknowledged); Push and Front are not to be called
  // afterwards.
  Status Close();

 private:
  struct Segment {
    std::string path;
    uint64_t last = 0;   // its highest sequence number
    size_t records = 0;  // written to it
    size_t unread = 0;   // of them, after cached_: on disk only
  };
  explicit Outbox(OutboxOptions options) : options_(std::move(options)) {}
  std::string SegmentPath(uint64_t first) const;
  // Appends the records the disk refused so far, then `record`, in one write to the newest
  // segment (a new one when it is full or was not written by this process).
  Status Append(uint64_t seq, const std::string& record) REQUIRES(mu_);
  // The records not durable yet (not acknowledged), encoded in order; *first the first of them
  // (left as it is when none), *count increased by their number.
  std::string EncodeNotDurable(uint64_t* first, size_t* count) const REQUIRES(mu_);
  // Fills memory from the segments, from the record after cached_, up to the bound.
  Status Refill() REQUIRES(mu_);
  // Removes the segments all acknowledged.
  Status RemoveAcknowledged() REQUIRES(mu_);
  Status WriteMark(bool sync) REQUIRES(mu_);

  const OutboxOptions options_;
  mutable Mutex mu_;
  CondVar cv_;
  // The oldest records not acknowledged, acknowledged_ + 1 ... cached_ (at most memory_records,
  // but for records the disk refused).
  std::deque<std::pair<uint64_t, std::string>> memory_ GUARDED_BY(mu_);
  uint64_t cached_ GUARDED_BY(mu_) = 0;   // the last record memory_ took (or acknowledged_)
  std::deque<Segment> segments_ GUARDED_BY(mu_);  // oldest first
  bool append_new_segment_ GUARDED_BY(mu_) = true;  // the newest segment is not ours to append to
  // The records after cached_ that the disk refused (they follow every record on disk).
  std::deque<std::pair<uint64_t, std::string>> unspilled_ GUARDED_BY(mu_);
  uint64_t durable_ GUARDED_BY(mu_) = 0;  // every record after it is in memory only
  uint64_t last_ GUARDED_BY(mu_) = 0;
  uint64_t acknowledged_ GUARDED_BY(mu_) = 0;  // every record up to it is acknowledged
  bool closed_ GUARDED_BY(mu_) = false;
  int lock_fd_ = -1;  // DIR/LOCK, flock'ed for the outbox's life
};

}  // namespace flap::worker
