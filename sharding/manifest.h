// Manifest: the index of a dataset folder. A dataset is a folder holding its shards, a
// "manifest.json" (this struct) and the tokenizer model it names. The manifest lists every shard
// with its split, sample count, byte size and XXH64 checksum, plus free-form provenance (how the
// dataset was made). Shard names are plain file names inside the folder.
//
// manifest.json:
//   {"format_version": 1, "name": "...", "sample_rate": 16000, "tokenizer": "tokenizer.model",
//    "shards": [{"name": "train-000000.tar", "split": "train", "num_samples": 250,
//                "bytes": 123456, "xxh64": "0123456789abcdef"}, ...],
//    "provenance": {...}}
//
// Split roles: a dataset's clips serve in three roles, each a split of that name: "train"
// (training), "val" (model selection: evaluation during training, early stopping, keeping the
// best checkpoint) and "test" (reported once training is over). Datasets made before the roles
// existed have "train" and one held-out split "eval", which is read in the val role; they have
// no test split (Manifest::ResolveSplit holds this rule). Other split names are allowed too.
//
// Thread-safety: Manifest is a value; the functions keep no shared state and are safe from any
// thread.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "sharding/sample.h"

namespace flap::sharding {

inline constexpr char kManifestFileName[] = "manifest.json";
inline constexpr int kManifestFormatVersion = 1;

// The split roles, and the held-out split of datasets made before val and test existed.
inline constexpr char kTrainSplit[] = "train";
inline constexpr char kValSplit[] = "val";
inline constexpr char kTestSplit[] = "test";
inline constexpr char kLegacyEvalSplit[] = "eval";

struct ShardInfo {
  std::string name;   // file name inside the dataset folder (no '/')
  std::string split;  // e.g. "train", "val", "test"
  int64_t num_samples = 0;
  int64_t bytes = 0;  // file size
  std::string xxh64;  // 16 lowercase hex digits of XXH64 (seed 0) of the file
};

struct Manifest {
  int format_version = kManifestFormatVersion;
  std::string name;
  int sample_rate = kSampleRate;
  std::string tokenizer = "tokenizer.model";             // file name inside the dataset folder
  std::vector<ShardInfo> shards;                         // in manifest order
  nlohmann::json provenance = nlohmann::json::object();  // how it was made
  // How the augmented-captions side file was made (augment.h); null when there is none.
  nlohmann::json augment = nullptr;

  // The shards of `split`, in manifest order (empty if none).
  std::vector<ShardInfo> ShardsOf(const std::string& split) const;
  // Total samples over the shards of `split`.
  int64_t NumSamples(const std::string& split) const;
  // The distinct splits, in order of first appearance.
  std::vector<std::string> Splits() const;
  // The split to read for `split` (a role, or any split name): `split` itself when it has
  // shards; for "val" in a manifest with no "val" shards but "eval" shards (made before the
  // roles existed), "eval"; otherwise "" (the dataset has no such split; an old dataset has no
  // "test").
  std::string ResolveSplit(const std::string& split) const;
};

// Reads "<dataset_dir>/manifest.json". NotFound if it is missing; IOError if unreadable;
// Corruption naming the file and the field (e.g. "shards[3].xxh64") if it does not parse, a
// field is missing or mistyped, the format version is unknown, a shard name is not a plain file
// name, or two shards share a name.
StatusOr<Manifest> ReadManifest(const std::string& dataset_dir);

// Writes "<dataset_dir>/manifest.json" atomically (temporary file, fsync, rename): readers see
// the old manifest or the new one, never a part. InvalidArgument for a manifest that
// ReadManifest would reject; IOError on failure.
Status WriteManifest(const std::string& dataset_dir, const Manifest& m);

// The manifest as JSON, and back. FromJson's errors name `what` (a file) and the field.
nlohmann::json ManifestToJson(const Manifest& m);
StatusOr<Manifest> ManifestFromJson(const nlohmann::json& j, const std::string& what);

// XXH64 (seed 0) of the file at `path` as 16 lowercase hex digits. NotFound / IOError.
StatusOr<std::string> FileXxh64(const std::string& path);

// Checks that "<dataset_dir>/<info.name>" has info.bytes bytes and checksum info.xxh64. OK;
// NotFound if the shard is missing; Corruption naming the shard for a wrong size or checksum.
// Does not decode the samples (see ReadShard for that).
Status VerifyShard(const std::string& dataset_dir, const ShardInfo& info);

// Describes `path` as a ShardInfo (name = file name, size, checksum), for building manifests.
StatusOr<ShardInfo> DescribeShard(const std::string& path, const std::string& split, int64_t num_samples);

// The augmented-captions side file (augment.h) that a manifest's "augment" section names.
inline constexpr char kAugmentFileName[] = "text_augment.jsonl";

// The side file of a dataset, if its manifest names one: key -> augmented captions. Empty map
// when there is none; Corruption naming the file and line for a damaged one.
StatusOr<std::map<std::string, std::vector<std::string>>> ReadAugmentFile(const std::string& dataset_dir,
                                                                          const Manifest& manifest);

}  // namespace flap::sharding
