// Implementation of checkpoint/store.h over RocksDB (one database per trial) and an Env.
#include "checkpoint/store.h"

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <thread>
#include <utility>

#include "checkpoint/layout.h"
#include "common/file_util.h"
#include "common/rocksdb_info_log.h"

namespace flap::checkpoint {

struct Store::TrialIndex {
  Mutex mu;                         // serialises writes to this trial (Save, Gc, RebuildIndex)
  std::unique_ptr<rocksdb::DB> db;  // guarded by mu when replaced; RocksDB is thread-safe
  // A write to the index failed (e.g. no space for its log): RocksDB then refuses writes until
  // resumed, which the next Save or Gc tries first.
  bool write_failed GUARDED_BY(mu) = false;
};

namespace {

constexpr char kFormat[] = "flap-checkpoint-v1";

Status ValidateTrialId(const std::string& id) {
  if (id.empty() || id.size() > 200 || id == kIndexDirName || id[0] == '.') {
    return Status::InvalidArgument("bad trial id '" + id + "'");
  }
  for (char c : id) {
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
    if (!ok) {
      return Status::InvalidArgument("bad trial id '" + id + "': use letters, digits, '_', '-' and '.'");
    }
  }
  return Status::OK();
}

Status ValidateFileName(const std::string& name) {
  if (name.empty() || name[0] == '.' || name.find('/') != std::string::npos || name == kManifestName ||
      (name.size() > 4 && name.substr(name.size() - 4) == ".tmp")) {
    return Status::InvalidArgument("bad checkpoint file name '" + name + "'");
  }
  return Status::OK();
}

Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return Status::OK();
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
    return Status::FailedPrecondition(what +
                                      ": held by another process (one writing process per trial): " + s.ToString());
  }
  if (s.IsIOError() && !s.IsPathNotFound()) return Status::IOError(what + ": " + s.ToString());
  return Status::Corruption(what + ": " + s.ToString());
}

std::string CorruptIndexHint(const std::string& trial_id) {
  return " (the checkpoint files are intact if their manifests are: rebuild the index with "
         "Store::RebuildIndex or `flapctl ckpt reindex ROOT --trial " +
         trial_id + "`)";
}

// Resumes writes to an index after a failed write (RocksDB stops writing after one).
Status ResumeWrites(rocksdb::DB* db, bool* write_failed, const std::string& trial_id) {
  if (!*write_failed) return Status::OK();
  FLAP_RETURN_IF_ERROR(
      FromRocks(db->Resume(), "index of trial " + trial_id + ": resuming writes after a failed write"));
  *write_failed = false;
  return Status::OK();
}

}  // namespace

uint64_t Entry::TotalBytes() const {
  uint64_t total = 0;
  for (const FileEntry& f : files) total += f.size;
  return total;
}

std::string Entry::Name() const { return trial_id + "/" + StepDirName(step); }

std::string ManifestText(const Entry& entry) {
  nlohmann::json files = nlohmann::json::array();
  for (const FileEntry& f : entry.files) {
    files.push_back({{"name", f.name}, {"size", f.size}, {"xxh64", HexDigest(f.xxh64)}});
  }
  nlohmann::json j = {
      {"format", kFormat},
      {"trial_id", entry.trial_id},
      {"step", entry.step},
      {"epoch", entry.metadata.epoch},
      {"config_hash", entry.metadata.config_hash},
      {"metrics", entry.metadata.metrics},
      {"extra", entry.metadata.extra},
      {"files", files},
  };
  return j.dump(1) + "\n";
}

StatusOr<Entry> ParseManifest(const std::string& text, const std::string& dir) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const std::string& why) { return Status::Corruption("manifest of " + dir + " malformed: " + why); };
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  if (j.value("format", "") != kFormat) return bad("format is not " + std::string(kFormat));
  Entry e;
  e.dir = dir;
  if (!j.contains("trial_id") || !j["trial_id"].is_string()) return bad("no trial_id");
  if (!j.contains("step") || !j["step"].is_number_integer()) return bad("no step");
  if (!j.contains("config_hash") || !j["config_hash"].is_string()) return bad("no config_hash");
  if (!j.contains("files") || !j["files"].is_array()) return bad("no files");
  e.trial_id = j["trial_id"].get<std::string>();
  e.step = j["step"].get<int64_t>();
  e.metadata.config_hash = j["config_hash"].get<std::string>();
  if (j.contains("epoch") && j["epoch"].is_number_integer()) e.metadata.epoch = j["epoch"];
  if (j.contains("metrics") && j["metrics"].is_object()) {
    for (auto it = j["metrics"].begin(); it != j["metrics"].end(); ++it) {
      if (!it.value().is_number()) return bad("metric '" + it.key() + "' is not a number");
      e.metadata.metrics[it.key()] = it.value().get<double>();
    }
  }
  if (j.contains("extra")) e.metadata.extra = j["extra"];
  for (const auto& f : j["files"]) {
    if (!f.is_object() || !f.contains("name") || !f["name"].is_string() || !f.contains("size") ||
        !f["size"].is_number_unsigned() || !f.contains("xxh64") || !f["xxh64"].is_string()) {
      return bad("a file record lacks name, size or xxh64");
    }
    FileEntry fe;
    fe.name = f["name"].get<std::string>();
    fe.size = f["size"].get<uint64_t>();
    const std::string hex = f["xxh64"].get<std::string>();
    if (hex.size() != 16 || hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
      return bad("xxh64 of " + fe.name + " is not 16 hex digits");
    }
    fe.xxh64 = std::stoull(hex, nullptr, 16);
    if (!ValidateFileName(fe.name).ok()) return bad("bad file name '" + fe.name + "'");
    e.files.push_back(fe);
  }
  return e;
}

Store::Store(std::string root, const StoreOptions& options)
    : root_(std::move(root)), options_(options), env_(options.env != nullptr ? options.env : Env::Default()) {}

Store::~Store() = default;

StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& root, const StoreOptions& options) {
  Env* env = options.env != nullptr ? options.env : Env::Default();
  if (options.read_only) {
    if (!env->Exists(root)) return Status::NotFound(root + ": no such checkpoint root");
  } else {
    FLAP_RETURN_IF_ERROR(env->MakeDirs(JoinPath(root, kIndexDirName)));
  }
  return std::unique_ptr<Store>(new Store(root, options));
}

std::string Store::CheckpointDir(const std::string& trial_id, int64_t step) const {
  return JoinPath(JoinPath(root_, trial_id), StepDirName(step));
}

std::string Store::IndexDir(const std::string& trial_id) const {
  return JoinPath(JoinPath(root_, kIndexDirName), trial_id);
}

Status Store::CheckTrialDir(const std::string& trial_id) {
  const std::string dir = JoinPath(root_, trial_id);
  if (env_->IsSymlink(dir)) {
    return Status::FailedPrecondition(
        "checkpoint folder of trial " + trial_id + " (" + dir +
        ") is a symbolic link: refusing to write or delete through it (a trial's folder must "
        "be a real folder under the root)");
  }
  return Status::OK();
}

StatusOr<std::vector<std::string>> Store::Trials() {
  std::set<std::string> ids;
  FLAP_ASSIGN_OR_RETURN(std::vector<std::string> indexed, env_->ListSubdirs(JoinPath(root_, kIndexDirName)));
  for (const std::string& id : indexed) {
    if (ValidateTrialId(id).ok()) ids.insert(id);
  }
  FLAP_ASSIGN_OR_RETURN(std::vector<std::string> dirs, env_->ListSubdirs(root_));
  for (const std::string& id : dirs) {
    if (ValidateTrialId(id).ok()) ids.insert(id);
  }
  // Moved-aside indexes ("<id>.corrupt-<t>") have no checkpoint folder of their own.
  std::vector<std::string> out;
  for (const std::string& id : ids) {
    if (id.find(".corrupt-") != std::string::npos && !env_->Exists(JoinPath(root_, id))) continue;
    out.push_back(id);
  }
  return out;
}

StatusOr<std::shared_ptr<Store::TrialIndex>> Store::GetTrial(const std::string& trial_id, bool create) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(options_.lock_wait_s * 1000));
  while (true) {
    StatusOr<std::shared_ptr<TrialIndex>> trial = TryGetTrial(trial_id, create);
    if (trial.ok() || trial.status().code() != Status::Code::kFailedPrecondition ||
        std::chrono::steady_clock::now() >= deadline) {
      return trial;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

StatusOr<std::shared_ptr<Store::TrialIndex>> Store::TryGetTrial(const std::string& trial_id, bool create) {
  FLAP_RETURN_IF_ERROR(ValidateTrialId(trial_id));
  MutexLock lock(&mu_);
  auto it = trials_.find(trial_id);
  if (it != trials_.end()) return it->second;
  const std::string dir = IndexDir(trial_id);
  const bool exists = env_->Exists(dir);
  if (!exists) {
    if (!create) {
      // No index: fine if the trial never saved, damage if checkpoint folders with manifests
      // exist (the index folder was lost).
      FLAP_ASSIGN_OR_RETURN(std::vector<std::string> steps, env_->ListSubdirs(JoinPath(root_, trial_id)));
      for (const std::string& s : steps) {
        if (env_->Exists(JoinPath(JoinPath(JoinPath(root_, trial_id), s), kManifestName))) {
          return Status::Corruption("index of trial " + trial_id + " (" + dir +
                                    ") is missing but checkpoint folders exist" + CorruptIndexHint(trial_id));
        }
      }
      return std::shared_ptr<TrialIndex>();
    }
    FLAP_RETURN_IF_ERROR(env_->MakeDirs(JoinPath(root_, kIndexDirName)));
  }
  rocksdb::Options options;
  // Only a trial without an index folder gets a new one: a folder whose database cannot be
  // opened is reported, never silently replaced by an empty index.
  options.create_if_missing = !exists;
  options.paranoid_checks = true;
  options.max_open_files = 64;
  options.keep_log_file_num = 2;
  // On a full disk RocksDB's own info log aborted the process (its next line asserted after a
  // failed write); a reader leaves the writer's log alone.
  if (!options_.read_only) options.info_log = std::make_shared<IgnoringErrorsLogger>(dir);
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s =
      options_.read_only ? rocksdb::DB::OpenForReadOnly(options, dir, &raw) : rocksdb::DB::Open(options, dir, &raw);
  if (!s.ok()) {
    Status st = FromRocks(s, "index of trial " + trial_id + " (" + dir + ") cannot be opened");
    if (!exists && !options_.read_only) {
      // The index this call was making (a full disk, say) holds nothing yet: removed, so that
      // the next save makes it anew rather than finding a folder without a database.
      options.info_log.reset();
      (void)env_->RemoveAll(root_, JoinPath(kIndexDirName, trial_id));
    }
    if (st.code() == Status::Code::kCorruption) {
      return Status::Corruption(st.message() + CorruptIndexHint(trial_id));
    }
    return st;
  }
  auto trial = std::make_shared<TrialIndex>();
  trial->db.reset(raw);
  trials_[trial_id] = trial;
  return trial;
}

void Store::CloseIndex(const std::string& trial_id) {
  std::shared_ptr<TrialIndex> trial;
  {
    MutexLock lock(&mu_);
    auto it = trials_.find(trial_id);
    if (it == trials_.end()) return;
    trial = it->second;
    trials_.erase(it);
  }
  MutexLock lock(&trial->mu);
  trial->db.reset();
}

StatusOr<std::string> Store::Quarantine(const std::string& trial_id, int64_t step) {
  const std::string trial_dir = JoinPath(root_, trial_id);
  const std::string dir = CheckpointDir(trial_id, step);
  if (!env_->Exists(dir) && !env_->IsSymlink(dir)) return std::string();
  const auto now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  const std::string base = dir + kQuarantineInfix + std::to_string(now);
  std::string aside = base;
  for (int n = 1; env_->Exists(aside) || env_->IsSymlink(aside); ++n) aside = base + "." + std::to_string(n);
  // A rename moves a link itself, never what it points to.
  FLAP_RETURN_IF_ERROR(env_->Rename(dir, aside));
  FLAP_RETURN_IF_ERROR(env_->SyncDir(trial_dir));
  return aside;
}

StatusOr<Entry> Store::Save(const std::string& trial_id, int64_t step, const std::map<std::string, std::string>& files,
                            const Metadata& metadata, std::string* quarantined) {
  if (quarantined != nullptr) quarantined->clear();
  if (options_.read_only) return Status::FailedPrecondition("store opened read-only");
  FLAP_RETURN_IF_ERROR(ValidateTrialId(trial_id));
  if (step < 0 || step > kMaxStep) {
    return Status::InvalidArgument("step " + std::to_string(step) + " out of [0, 10^12)");
  }
  if (metadata.config_hash.empty()) return Status::InvalidArgument("empty config hash");
  for (const auto& [name, bytes] : files) FLAP_RETURN_IF_ERROR(ValidateFileName(name));
  for (const auto& [name, value] : metadata.metrics) {
    if (!std::isfinite(value)) {
      return Status::InvalidArgument("metric '" + name + "' is not finite");
    }
  }

  FLAP_RETURN_IF_ERROR(CheckTrialDir(trial_id));

  FLAP_ASSIGN_OR_RETURN(std::shared_ptr<TrialIndex> trial, GetTrial(trial_id, /*create=*/true));
  MutexLock lock(&trial->mu);
  if (!trial->db) return Status::FailedPrecondition("index of " + trial_id + " was closed");
  FLAP_RETURN_IF_ERROR(ResumeWrites(trial->db.get(), &trial->write_failed, trial_id));
  const std::string key = StepDirName(step);
  std::string existing;
  rocksdb::Status gs = trial->db->Get(rocksdb::ReadOptions(), key, &existing);
  if (!gs.ok() && !gs.IsNotFound()) return FromRocks(gs, "index of trial " + trial_id);
  if (gs.ok()) {
    // A committed checkpoint that verifies is never replaced. One that does not (a file or its
    // manifest damaged or missing, its folder deleted or a link, its index entry malformed)
    // is the one resume passed over: its folder is moved aside and this save replaces it, the
    // index entry swapped by the commit below.
    StatusOr<Entry> old = ParseIndexEntry(trial_id, key, existing);
    Status damage = old.ok() ? Verify(old.value()) : old.status();
    if (damage.ok()) return Status::FailedPrecondition("checkpoint " + trial_id + "/" + key + " already exists");
    FLAP_ASSIGN_OR_RETURN(std::string aside, Quarantine(trial_id, step));
    if (quarantined != nullptr) {
      *quarantined =
          damage.message() + (aside.empty() ? "; no folder left to move aside" : "; moved aside to " + aside);
    }
  }

  Entry entry;
  entry.trial_id = trial_id;
  entry.step = step;
  entry.metadata = metadata;
  entry.dir = CheckpointDir(trial_id, step);
  const std::string trial_dir = JoinPath(root_, trial_id);
  const bool new_trial_dir = !env_->Exists(trial_dir);
  // Leftovers of a save of this step that crashed before its commit: never visible, replace.
  FLAP_RETURN_IF_ERROR(env_->RemoveAll(root_, JoinPath(trial_id, key)));
  for (const auto& [name, bytes] : files) {
    entry.files.push_back(FileEntry{name, bytes.size(), Xxh64(bytes)});
  }
  const std::string manifest = ManifestText(entry);
  // Everything up to the durable manifest. If any of it fails (a full disk, an I/O error), the
  // folder is removed at once: it could never be committed, and on a full disk the space it
  // holds is what the next save needs.
  auto write_files = [&]() -> Status {
    FLAP_RETURN_IF_ERROR(env_->MakeDirs(entry.dir));
    for (const auto& [name, bytes] : files) {
      FLAP_RETURN_IF_ERROR(env_->WriteFileAtomic(JoinPath(entry.dir, name), bytes));
    }
    FLAP_RETURN_IF_ERROR(env_->WriteFileAtomic(JoinPath(entry.dir, kManifestName), manifest));
    FLAP_RETURN_IF_ERROR(env_->SyncDir(entry.dir));
    FLAP_RETURN_IF_ERROR(env_->SyncDir(trial_dir));
    if (new_trial_dir) FLAP_RETURN_IF_ERROR(env_->SyncDir(root_));
    return Status::OK();
  };
  Status written = write_files();
  if (!written.ok()) {
    Status removed = env_->RemoveAll(root_, JoinPath(trial_id, key));
    if (removed.ok()) removed = env_->SyncDir(trial_dir);
    if (!removed.ok()) {
      return written.WithContext("checkpoint " + trial_id + "/" + key +
                                 " not saved (its partial "
                                 "folder could not be removed either: " +
                                 removed.message() + ")");
    }
    return written.WithContext("checkpoint " + trial_id + "/" + key + " not saved (its partial folder was removed)");
  }

  // A failed commit leaves the folder: it is complete and durable, and the entry may still
  // reach the index (a log write that failed only at its fsync); if it does not, the folder is
  // unindexed and the next Gc removes it.
  rocksdb::WriteOptions wo;
  wo.sync = true;
  Status committed =
      FromRocks(trial->db->Put(wo, key, manifest), "index of trial " + trial_id + ": commit of step " + key);
  if (!committed.ok()) {
    trial->write_failed = true;
    return committed;
  }
  return entry;
}

StatusOr<Entry> Store::ParseIndexEntry(const std::string& trial_id, const std::string& key,
                                       const std::string& value) const {
  int64_t step = 0;
  if (!ParseStepDirName(key, &step)) {
    return Status::Corruption("index of trial " + trial_id + ": malformed key '" + key + "'");
  }
  const std::string name = trial_id + "/" + key;
  StatusOr<Entry> e = ParseManifest(value, CheckpointDir(trial_id, step));
  if (!e.ok()) return Status::Corruption("index entry of checkpoint " + name + " malformed: " + e.status().message());
  if (e->step != step || e->trial_id != trial_id) {
    return Status::Corruption("index entry of checkpoint " + name + " names " + e->Name());
  }
  return e;
}

StatusOr<std::vector<Entry>> Store::ListLocked(TrialIndex* trial, const std::string& trial_id,
                                               std::vector<std::string>* problems) {
  std::vector<Entry> entries;
  if (trial == nullptr || !trial->db) return entries;
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  std::unique_ptr<rocksdb::Iterator> it(trial->db->NewIterator(ro));
  for (it->SeekToLast(); it->Valid(); it->Prev()) {
    StatusOr<Entry> e = ParseIndexEntry(trial_id, it->key().ToString(), it->value().ToString());
    if (e.ok()) {
      entries.push_back(std::move(e).value());
      continue;
    }
    if (problems == nullptr) return e.status();
    problems->push_back(e.status().message());
  }
  if (!it->status().ok()) {
    return Status::Corruption("index of trial " + trial_id + " unreadable: " + it->status().ToString() +
                              CorruptIndexHint(trial_id));
  }
  return entries;
}

StatusOr<std::vector<Entry>> Store::List(const std::string& trial_id, std::vector<std::string>* problems) {
  FLAP_ASSIGN_OR_RETURN(std::shared_ptr<TrialIndex> trial, GetTrial(trial_id, false));
  if (!trial) return std::vector<Entry>();
  MutexLock lock(&trial->mu);
  return ListLocked(trial.get(), trial_id, problems);
}

namespace {

// OK if the manifest on disk describes the same checkpoint as `entry`, in a real folder: a
// checkpoint folder or trial folder that is a symbolic link is refused, never read through
// (the files themselves are opened without following a link: Env::ReadFile, HashFile).
Status CheckManifest(Env* env, const Entry& entry) {
  const std::string name = "checkpoint " + entry.Name();
  const std::string trial_dir = std::filesystem::path(entry.dir).parent_path().string();
  for (const std::string& dir : {trial_dir, entry.dir}) {
    if (env->IsSymlink(dir)) {
      return Status::Corruption(name + ": " + dir +
                                " is a symbolic link (refused: a checkpoint is read only from "
                                "real folders under the root)");
    }
  }
  StatusOr<std::string> manifest = env->ReadFile(JoinPath(entry.dir, kManifestName));
  if (!manifest.ok()) {
    return Status::Corruption(
        name + ": " + kManifestName + ": " +
        (manifest.status().code() == Status::Code::kNotFound ? std::string("missing") : manifest.status().message()));
  }
  StatusOr<Entry> on_disk = ParseManifest(manifest.value(), entry.dir);
  if (!on_disk.ok()) return Status::Corruption(name + ": " + on_disk.status().message());
  if (ManifestText(on_disk.value()) != ManifestText(entry)) {
    return Status::Corruption(name + ": " + kManifestName + ": differs from the index entry");
  }
  return Status::OK();
}

}  // namespace

Status Store::Verify(const Entry& entry) {
  const std::string name = "checkpoint " + entry.Name();
  FLAP_RETURN_IF_ERROR(CheckManifest(env_, entry));
  for (const FileEntry& f : entry.files) {
    StatusOr<FileDigest> d = env_->HashFile(JoinPath(entry.dir, f.name));
    if (!d.ok()) {
      if (d.status().code() == Status::Code::kNotFound) {
        return Status::Corruption(name + ": " + f.name + ": missing");
      }
      return Status::Corruption(name + ": " + f.name + ": " + d.status().message());
    }
    if (d->size != f.size) {
      return Status::Corruption(name + ": " + f.name + ": " + std::to_string(d->size) + " bytes, the manifest says " +
                                std::to_string(f.size) + (d->size < f.size ? " (truncated)" : ""));
    }
    if (d->xxh64 != f.xxh64) {
      return Status::Corruption(name + ": " + f.name + ": checksum " + HexDigest(d->xxh64) + ", the manifest says " +
                                HexDigest(f.xxh64));
    }
  }
  return Status::OK();
}

StatusOr<ResumePoint> Store::LatestVerified(const std::string& trial_id, const std::string& config_hash, bool force) {
  ResumePoint point;
  FLAP_ASSIGN_OR_RETURN(std::vector<Entry> entries, List(trial_id, &point.warnings));
  if (entries.empty() && point.warnings.empty()) {
    return Status::NotFound("trial " + trial_id + " has no checkpoint under " + root_);
  }
  for (Entry& e : entries) {
    Status s = Verify(e);
    if (!s.ok()) {
      point.warnings.push_back("passed over damaged " + s.message());
      continue;
    }
    if (e.metadata.config_hash != config_hash) {
      const std::string msg = "checkpoint " + e.Name() + " was written with config hash " + e.metadata.config_hash +
                              ", this run's config hash is " + config_hash;
      if (!force) {
        return Status::FailedPrecondition(msg +
                                          ": refusing to resume a different config "
                                          "(force it to resume anyway)");
      }
      point.warnings.push_back(msg + ": resuming anyway (forced)");
    }
    point.entry = std::move(e);
    return point;
  }
  std::string msg = "no checkpoint of trial " + trial_id + " verifies:";
  for (const std::string& w : point.warnings) msg += "\n  " + w;
  return Status::Corruption(msg);
}

StatusOr<std::map<std::string, std::string>> Store::Load(const Entry& entry) {
  const std::string name = "checkpoint " + entry.Name();
  FLAP_RETURN_IF_ERROR(CheckManifest(env_, entry));
  std::map<std::string, std::string> out;
  for (const FileEntry& f : entry.files) {
    StatusOr<std::string> bytes = env_->ReadFile(JoinPath(entry.dir, f.name));
    if (!bytes.ok()) {
      return Status::Corruption(
          name + ": " + f.name + ": " +
          (bytes.status().code() == Status::Code::kNotFound ? std::string("missing") : bytes.status().message()));
    }
    if (bytes->size() != f.size) {
      return Status::Corruption(name + ": " + f.name + ": " + std::to_string(bytes->size()) +
                                " bytes, the manifest says " + std::to_string(f.size));
    }
    const uint64_t digest = Xxh64(bytes.value());
    if (digest != f.xxh64) {
      return Status::Corruption(name + ": " + f.name + ": checksum " + HexDigest(digest) + ", the manifest says " +
                                HexDigest(f.xxh64));
    }
    out[f.name] = std::move(bytes).value();
  }
  return out;
}

StatusOr<GcReport> Store::Gc(const std::string& trial_id, const GcOptions& options) {
  if (options_.read_only) return Status::FailedPrecondition("store opened read-only");
  if (options.keep_last < 0 || options.keep_best < 0) {
    return Status::InvalidArgument("keep_last and keep_best must not be negative");
  }
  if (options.keep_best > 0 && options.metric.empty()) {
    return Status::InvalidArgument("keep_best needs a metric");
  }
  FLAP_RETURN_IF_ERROR(ValidateTrialId(trial_id));
  FLAP_RETURN_IF_ERROR(CheckTrialDir(trial_id));
  const std::string trial_dir = JoinPath(root_, trial_id);
  FLAP_ASSIGN_OR_RETURN(std::shared_ptr<TrialIndex> trial, GetTrial(trial_id, false));
  GcReport report;
  if (!trial) {
    // No index and no manifest anywhere (GetTrial checked): only half-written saves remain.
    // Only folders named like a step are the store's; anything else is left alone.
    FLAP_ASSIGN_OR_RETURN(std::vector<std::string> names, env_->ListSubdirs(trial_dir));
    for (const std::string& s : names) {
      int64_t step = 0;
      if (!ParseStepDirName(s, &step)) continue;
      FLAP_RETURN_IF_ERROR(env_->RemoveAll(root_, JoinPath(trial_id, s)));
      report.removed_orphans.push_back(trial_id + "/" + s);
    }
    if (!report.removed_orphans.empty()) FLAP_RETURN_IF_ERROR(env_->SyncDir(trial_dir));
    return report;
  }
  MutexLock lock(&trial->mu);
  FLAP_ASSIGN_OR_RETURN(std::vector<Entry> entries, ListLocked(trial.get(), trial_id, &report.warnings));
  const bool malformed_entries = !report.warnings.empty();
  if (trial->db) FLAP_RETURN_IF_ERROR(ResumeWrites(trial->db.get(), &trial->write_failed, trial_id));

  // Which entries stay: newest N, best K, and the newest that verifies.
  std::set<int64_t> keep;
  for (int i = 0; i < options.keep_last && i < static_cast<int>(entries.size()); ++i) {
    keep.insert(entries[i].step);
  }
  if (options.keep_best > 0) {
    std::vector<const Entry*> scored;
    for (const Entry& e : entries) {
      if (e.metadata.metrics.count(options.metric)) scored.push_back(&e);
    }
    std::stable_sort(scored.begin(), scored.end(), [&](const Entry* a, const Entry* b) {
      const double x = a->metadata.metrics.at(options.metric);
      const double y = b->metadata.metrics.at(options.metric);
      return options.maximize ? x > y : x < y;
    });
    for (int i = 0; i < options.keep_best && i < static_cast<int>(scored.size()); ++i) {
      keep.insert(scored[i]->step);
    }
  }
  for (const Entry& e : entries) {
    Status s = Verify(e);
    if (s.ok()) {
      report.newest_verified = e.step;
      keep.insert(e.step);
      break;
    }
    report.warnings.push_back("damaged " + s.message());
  }

  rocksdb::WriteOptions wo;
  wo.sync = true;
  std::set<int64_t> indexed;
  for (const Entry& e : entries) {
    if (keep.count(e.step)) {
      indexed.insert(e.step);
      report.kept.push_back(e.step);
      continue;
    }
    // Index entry first (synced), then the folder: a crash in between leaves an unindexed
    // folder, which the sweep below removes next time.
    Status deleted =
        FromRocks(trial->db->Delete(wo, StepDirName(e.step)), "index of trial " + trial_id + ": delete of " + e.Name());
    if (!deleted.ok()) {
      trial->write_failed = true;
      return deleted;
    }
    FLAP_RETURN_IF_ERROR(env_->RemoveAll(root_, JoinPath(trial_id, StepDirName(e.step))));
    report.deleted.push_back(e.step);
  }

  // Sweep unindexed folders: only folders named like a step (12 digits), never anything else
  // a user keeps under the trial's folder, and never through a symbolic link (ListSubdirs does
  // not list links). Skipped while some index entries are malformed (their folders cannot be
  // told apart from garbage until the index is repaired) and while no indexed checkpoint
  // verifies: an index that names only damaged or missing checkpoints is not to be trusted
  // to say which folders are garbage (an index rebuilt while a worker kept writing its old
  // one, say), and the unindexed folders may be the only good checkpoints left.
  if (!malformed_entries && report.newest_verified < 0 && !entries.empty()) {
    report.warnings.push_back("no indexed checkpoint of trial " + trial_id +
                              " verifies: unindexed folders left in place (rebuild the index "
                              "with `flapctl ckpt reindex` once no process writes the trial)");
  }
  if (!malformed_entries && report.newest_verified >= 0) {
    FLAP_ASSIGN_OR_RETURN(std::vector<std::string> names, env_->ListSubdirs(trial_dir));
    for (const std::string& s : names) {
      int64_t step = 0;
      if (!ParseStepDirName(s, &step) || indexed.count(step)) continue;
      FLAP_RETURN_IF_ERROR(env_->RemoveAll(root_, JoinPath(trial_id, s)));
      report.removed_orphans.push_back(trial_id + "/" + s);
    }
  }
  if (!report.deleted.empty() || !report.removed_orphans.empty()) {
    FLAP_RETURN_IF_ERROR(env_->SyncDir(trial_dir));
  }
  return report;
}

StatusOr<int> Store::RebuildIndex(const std::string& trial_id, std::vector<std::string>* problems) {
  if (options_.read_only) return Status::FailedPrecondition("store opened read-only");
  FLAP_RETURN_IF_ERROR(ValidateTrialId(trial_id));
  FLAP_RETURN_IF_ERROR(CheckTrialDir(trial_id));
  CloseIndex(trial_id);
  const std::string dir = IndexDir(trial_id);
  if (env_->Exists(dir)) {
    // The old index is moved aside only under its lock (RocksDB's LOCK file, which a writing
    // process holds while it has the index open): a worker still running this trial would go
    // on committing into the moved index and deleting, by retention, the folders that the
    // new one names.
    rocksdb::Env* renv = rocksdb::Env::Default();
    rocksdb::FileLock* index_lock = nullptr;
    rocksdb::Status ls = renv->LockFile(JoinPath(dir, "LOCK"), &index_lock);
    if (!ls.ok()) {
      return Status::FailedPrecondition(
          "index of trial " + trial_id + " (" + dir +
          ") is locked by a process that has it "
          "open, most likely a worker still running this trial: stop it before rebuilding the "
          "index (" +
          ls.ToString() + ")");
    }
    const auto now =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    Status moved = env_->Rename(dir, dir + ".corrupt-" + std::to_string(now));
    if (moved.ok()) moved = env_->SyncDir(JoinPath(root_, kIndexDirName));
    // Released before the new index is made at the same path (RocksDB refuses to lock a file
    // name this process holds).
    (void)renv->UnlockFile(index_lock);
    FLAP_RETURN_IF_ERROR(moved);
  }
  FLAP_ASSIGN_OR_RETURN(std::shared_ptr<TrialIndex> trial, GetTrial(trial_id, /*create=*/true));
  MutexLock lock(&trial->mu);
  const std::string trial_dir = JoinPath(root_, trial_id);
  FLAP_ASSIGN_OR_RETURN(std::vector<std::string> steps, env_->ListSubdirs(trial_dir));
  rocksdb::WriteBatch batch;
  int count = 0;
  for (const std::string& s : steps) {
    const std::string ckpt = JoinPath(trial_dir, s);
    int64_t step = 0;
    // Only step folders are the store's (not a quarantined checkpoint, nor a user's folder).
    if (!ParseStepDirName(s, &step)) continue;
    StatusOr<std::string> text = env_->ReadFile(JoinPath(ckpt, kManifestName));
    if (!text.ok()) {
      if (problems) problems->push_back(ckpt + ": no manifest (left for gc)");
      continue;
    }
    StatusOr<Entry> e = ParseManifest(text.value(), ckpt);
    if (!e.ok() || e->step != step || e->trial_id != trial_id) {
      if (problems) {
        problems->push_back(ckpt + ": " + (e.ok() ? "manifest names another checkpoint" : e.status().message()));
      }
      continue;
    }
    batch.Put(s, text.value());
    ++count;
  }
  rocksdb::WriteOptions wo;
  wo.sync = true;
  FLAP_RETURN_IF_ERROR(FromRocks(trial->db->Write(wo, &batch), "index of trial " + trial_id));
  return count;
}

}  // namespace flap::checkpoint
