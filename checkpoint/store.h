// The checkpoint store: durable, verified, indexed checkpoints of a trial's training state.
// It stores bytes; it does not know tensors and never links LibTorch (the worker serialises
// the model, optimizer and RNG states and hands the bytes here).
//
// On-disk layout of a root:
//
//   ROOT/index/<trial_id>/          a RocksDB database: the trial's index (one per trial)
//   ROOT/<trial_id>/<step:012d>/    one folder per checkpoint: the caller's named files
//                                   (model.bin, optimizer.bin, state.json, ...) and
//                                   MANIFEST.json: trial, step, epoch, config hash, metrics,
//                                   extra metadata, and each file's size and XXH64 (16 hex
//                                   digits)
//   ROOT/<trial_id>/<step:012d>.damaged-<unix seconds>/
//                                   a damaged checkpoint that a later save of its step
//                                   replaced, moved aside for inspection (never deleted by
//                                   the store: not a step folder)
//
// The index maps the step (12 digits, so that keys sort by step) to the manifest's JSON text.
//
// The protocol (DESIGN.md, "Checkpoints"): a checkpoint exists once its index entry is
// committed. Save writes every file to a unique temporary file in the checkpoint folder,
// fsyncs, renames (common/atomic_file.h); writes MANIFEST.json the same way; fsyncs the
// checkpoint folder and its parent; and only then commits the index entry (RocksDB,
// sync=true). A save that fails before the commit (a full disk, an I/O error) removes its
// folder before returning. A crash at any point before the commit leaves a folder that no
// index entry names: invisible to List/LatestVerified, removed by the next Gc (or by a Save of
// the same step). A committed checkpoint that stops verifying (a damaged file, a folder deleted
// by hand, a malformed index entry) is passed over by LatestVerified and replaced by the next
// Save of its step (its folder moved aside first), so damage never blocks a trial's progress. The files are the truth
// once the manifest is durable, so a lost or corrupt index can be rebuilt from the manifests (RebuildIndex), by a
// process that holds the index's lock: RebuildIndex refuses while another process (a running worker) has the index
// open.
//
// What the store deletes: only folders named like a step (12 digits) directly under a trial's
// folder, never another name a user keeps there, never through a symbolic link (a link is
// removed itself, never followed), and nothing at all under a trial folder that is a symbolic
// link (Save, Gc and RebuildIndex refuse it; removal walks down from the root's descriptor,
// Env::RemoveAll, so a trial folder swapped for a link after that check refuses it too). What the store reads is never
// read through a link either: a checkpoint whose trial folder, step folder or files are symbolic links does not verify
// (Verify, Load, LatestVerified).
//
// Deletion (Gc) goes the other way: the index entry is deleted first (synced), then the folder.
// A crash in between leaves an unindexed folder: invisible, and removed by the next Gc's sweep
// of unindexed folders. Deleting the folder first could instead leave an index entry naming
// missing files, which resume would have to pass over as damage. Gc refuses to sweep anything
// while the index cannot be read, and sweeps no unindexed folder while no indexed checkpoint
// verifies, so a damaged or stale index never causes good checkpoints to be deleted.
//
// Process model: one Store per root per process. Each trial has its own RocksDB, which RocksDB
// locks against a second writing process, so several worker processes (different trials)
// share a root safely; within a trial, one process writes (rank 0 of the worker group: the
// other ranks send their per-rank state, e.g. RNG states, to rank 0, which saves them as
// files). Readers in other processes (flapctl ckpt list/verify) open with read_only = true,
// which takes no lock and sees the entries committed when they opened the index.
//
// Thread-safety: a Store is safe to use from several threads. Operations on different trials
// run in parallel; operations on one trial that write (Save, Gc, RebuildIndex) are serialised
// by a per-trial mutex.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoint/env.h"
#include "common/mutex.h"
#include "common/status.h"

namespace flap::checkpoint {

inline constexpr char kManifestName[] = "MANIFEST.json";
inline constexpr char kIndexDirName[] = "index";
// A damaged checkpoint replaced by a save is moved aside to <step folder> + this + <unix seconds>.
inline constexpr char kQuarantineInfix[] = ".damaged-";
inline constexpr int64_t kMaxStep = 999999999999;  // 12 digits

struct StoreOptions {
  // Open the trials' indexes read-only (no lock taken); Save, Gc and RebuildIndex fail with
  // FailedPrecondition.
  bool read_only = false;
  // The file system; nullptr means Env::Default(). Not owned; must outlive the Store.
  Env* env = nullptr;
  // A writable index held by another process (a group still stopping a trial that moved
  // on) is retried for this long before FailedPrecondition is returned; 0 fails at once.
  double lock_wait_s = 0;
};

// What the caller records with a checkpoint besides its files.
struct Metadata {
  std::string config_hash;                          // the trial's resolved config hash (required)
  int64_t epoch = 0;                                // the epoch the step belongs to
  std::map<std::string, double> metrics;            // e.g. {"map10": 0.31}; used by Gc's keep-best
  nlohmann::json extra = nlohmann::json::object();  // anything else (data cursor summary, ...)
};

struct FileEntry {
  std::string name;
  uint64_t size = 0;
  uint64_t xxh64 = 0;
};

// One committed checkpoint, as its index entry describes it.
struct Entry {
  std::string trial_id;
  int64_t step = 0;
  Metadata metadata;
  std::vector<FileEntry> files;  // sorted by name
  std::string dir;               // ROOT/<trial_id>/<step:012d>

  uint64_t TotalBytes() const;
  // "<trial_id>/<step:012d>", how messages name a checkpoint.
  std::string Name() const;
};

struct ResumePoint {
  Entry entry;
  // One line per checkpoint passed over (damaged, malformed index entry) and per forced
  // config mismatch, newest first.
  std::vector<std::string> warnings;
};

struct GcOptions {
  int keep_last = 1;     // keep the newest N entries (by step)
  int keep_best = 0;     // and the best K by `metric` (entries without it don't count)
  std::string metric;    // required when keep_best > 0
  bool maximize = true;  // "max": higher is better; false: "min"
};

struct GcReport {
  std::vector<int64_t> kept;                 // steps still indexed, newest first
  std::vector<int64_t> deleted;              // steps whose entries and folders were deleted
  std::vector<std::string> removed_orphans;  // unindexed folders swept (names)
  std::vector<std::string> warnings;         // damaged checkpoints seen, malformed entries
  int64_t newest_verified = -1;              // the step protected as newest verified; -1: none
};

class Store {
 public:
  // Opens (creating if needed, unless read_only) the root folder. The trials' indexes are
  // opened lazily, on first use. IOError if the root cannot be created; NotFound if read_only
  // and it does not exist.
  static StatusOr<std::unique_ptr<Store>> Open(const std::string& root, const StoreOptions& options = StoreOptions());

  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const std::string& root() const { return root_; }

  // Trial ids that have an index or checkpoint folders under the root, sorted.
  StatusOr<std::vector<std::string>> Trials();

  // Durably writes a checkpoint of `trial_id` at `step` (see the protocol above) and returns
  // its entry. `files` maps names (no '/', not starting with '.', not MANIFEST.json) to
  // bytes. InvalidArgument for a bad trial id, step or file name or an empty config hash;
  // FailedPrecondition if the step is already committed (and verifies) or the trial's folder is
  // a symbolic link; IOError if a write fails (nothing becomes visible then, and the folder is removed,
  // unless only the index commit failed: the complete folder is then left for the index
  // or the next Gc).
  //
  // A committed checkpoint at `step` that no longer verifies (what LatestVerified passes over:
  // a file or the manifest damaged or missing, the folder deleted or a symbolic link, the index
  // entry malformed) is replaced: its folder is first moved aside, never deleted, to
  // ROOT/<trial_id>/<step:012d>.damaged-<unix seconds> (Quarantine), and the commit swaps the
  // index entry; *quarantined (when given) then describes the damage and where the folder went
  // (empty when nothing was replaced). Until that commit the old entry stays and still fails to
  // verify, so a crash in between changes nothing a reader sees.
  StatusOr<Entry> Save(const std::string& trial_id, int64_t step, const std::map<std::string, std::string>& files,
                       const Metadata& metadata, std::string* quarantined = nullptr);

  // The trial's committed entries, newest (highest step) first; empty if the trial has none.
  // Corruption naming the index if it cannot be read (run RebuildIndex), or if it is missing
  // while manifests exist. A malformed entry: with `problems` null, Corruption naming it;
  // otherwise it is skipped and described in *problems.
  StatusOr<std::vector<Entry>> List(const std::string& trial_id, std::vector<std::string>* problems = nullptr);

  // OK if the manifest on disk matches the entry and every file exists with the manifest's
  // size and XXH64. Corruption "checkpoint <trial>/<step>: <file>: ..." naming the first
  // damaged file (missing, truncated, altered, a symbolic link or not a regular file) or the
  // missing/different manifest, or the trial or step folder that is a symbolic link.
  Status Verify(const Entry& entry);

  // The checkpoint to resume from: the newest entry that verifies, the damaged ones passed over
  // listed in warnings. NotFound if the trial has no checkpoint; Corruption listing them if
  // none verifies; Corruption from List if the index is unreadable. If its config hash differs
  // from `config_hash`: FailedPrecondition naming both, unless `force` (then a warning).
  StatusOr<ResumePoint> LatestVerified(const std::string& trial_id, const std::string& config_hash, bool force = false);

  // The files' bytes (name -> bytes), after checking sizes and checksums (Corruption as Verify).
  StatusOr<std::map<std::string, std::string>> Load(const Entry& entry);

  // Retention: keeps the newest `keep_last`, the best `keep_best` by the metric, and always the
  // newest entry that verifies; deletes the other entries (index entry first, synced, then the
  // folder); then removes every step folder (12-digit name) of the trial that no index entry
  // names (half-written saves, saves that crashed before the commit, deletions that crashed
  // after the index) -- unless some entries are malformed or none verifies (a warning says
  // so). Other names under the trial's folder are never touched. Corruption, deleting
  // nothing, if the index cannot be read; FailedPrecondition, deleting nothing, if the
  // trial's folder is a symbolic link. InvalidArgument for bad options.
  StatusOr<GcReport> Gc(const std::string& trial_id, const GcOptions& options);

  // Recreates the trial's index from the manifests on disk: the old index folder is moved
  // aside to index/<trial_id>.corrupt-<unix seconds> (kept for inspection), and every folder
  // whose MANIFEST.json parses is indexed; the others are left for Gc and listed in
  // *problems. Returns the number of entries indexed. FailedPrecondition, changing nothing,
  // while another process holds the old index's lock (a worker still writing the trial) or if
  // the trial's folder is a symbolic link.
  StatusOr<int> RebuildIndex(const std::string& trial_id, std::vector<std::string>* problems);

  // ROOT/<trial_id>/<step:012d> (checkpoint/layout.h).
  std::string CheckpointDir(const std::string& trial_id, int64_t step) const;

  // For tests: the folder of the trial's RocksDB index.
  std::string IndexDir(const std::string& trial_id) const;

  // Closes the trial's index (the next use reopens it). Lets tests and tools damage or move
  // an index; waits for the trial's writes in flight.
  void CloseIndex(const std::string& trial_id);

 private:
  struct TrialIndex;

  Store(std::string root, const StoreOptions& options);

  // The trial's open index, opening it if needed. `create`: make a new index if the trial has
  // none. Returns nullptr (OK) when the trial has no index and `create` is false.
  // Waits up to options.lock_wait_s while another process holds the index.
  StatusOr<std::shared_ptr<TrialIndex>> GetTrial(const std::string& trial_id, bool create);
  StatusOr<std::shared_ptr<TrialIndex>> TryGetTrial(const std::string& trial_id, bool create);
  // The entry of index key `key` (a step) holding `value`; Corruption naming it if the key is
  // no step or the value is no manifest of this trial and step.
  StatusOr<Entry> ParseIndexEntry(const std::string& trial_id, const std::string& key, const std::string& value) const;
  // Moves the folder of a damaged checkpoint at `step` aside, next to it: <step:012d>.damaged-<unix
  // seconds>[.N]. Returns the new path, or "" if there was no folder (nor link) there.
  StatusOr<std::string> Quarantine(const std::string& trial_id, int64_t step);
  StatusOr<std::vector<Entry>> ListLocked(TrialIndex* trial, const std::string& trial_id,
                                          std::vector<std::string>* problems);
  // FailedPrecondition if ROOT/<trial_id> is a symbolic link: nothing is written or deleted
  // through one.
  Status CheckTrialDir(const std::string& trial_id);

  const std::string root_;
  const StoreOptions options_;
  Env* const env_;

  Mutex mu_;
  std::map<std::string, std::shared_ptr<TrialIndex>> trials_ GUARDED_BY(mu_);
};

// Parses a MANIFEST.json / index value into an entry of `dir`. Corruption if malformed.
StatusOr<Entry> ParseManifest(const std::string& text, const std::string& dir);
// The manifest's JSON text for an entry.
std::string ManifestText(const Entry& entry);

}  // namespace flap::checkpoint
