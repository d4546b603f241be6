// After training: embedding audio and captions with a trained model, searching the embeddings,
// and zero-shot classification (flap-worker embed, search and zeroshot; docs/training.md,
// "After training"). Models load through export.h (an export folder, or a model.pt with its
// config).
//
// Audio goes through the evaluator's path: files are decoded and resampled to the model's rate
// (sharding/audio.h), their features computed as a shard's are (ComputeClipFeatures), and the
// clips embedded by EmbedClips with eval.crop's windows, so a clip's embedding from a file
// equals the one evaluation computes from the same audio in a shard. A file that cannot be
// decoded, or that is silent (no sample reaches one step of 16-bit audio, 2^-15), fails the
// command naming it.
//
// Embeddings files: PREFIX.npy (float32 (rows, D), numpy.load reads it) or PREFIX.safetensors
// (one tensor "embeddings"), and PREFIX.csv, the index: a header "key,row" and one line per
// row (RFC 4180 quoting). Both files are written atomically, the index last; a failed write
// leaves neither.
//
// Thread-safety: free functions; the model is used by one thread at a time.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include "common/status.h"
#include "worker/core/device.h"
#include "worker/evaluator.h"
#include "worker/export.h"

namespace flap::worker {

struct AudioFile {
  std::string key;   // what outputs call it
  std::string path;  // where it is read from
};

// The audio files `path` names: a folder (every file below it with an audio extension: wav,
// flac, ogg, oga, opus, mp3, aif, aiff, au; sorted; the key is the path inside the folder), a
// single audio file (the key is its name), or any other file as a list (one path per line,
// relative to the list's folder unless absolute; blank lines and lines starting with '#'
// skipped; the key is the line). NotFound for a missing path or a listed file that does not
// exist (naming the list's line); InvalidArgument when nothing is found.
StatusOr<std::vector<AudioFile>> ListAudioFiles(const std::string& path);

struct EmbedOptions {
  int64_t batch_size = 64;  // clips (or captions) per forward pass
  core::Precision precision = core::Precision::kFp32;
  EvalCrop crop = EvalCrop::kChunks;  // windows of a clip longer than the model's (eval.crop)
  int64_t chunk = 256;                // files decoded and featurised at a time
  int feature_threads = 1;            // fbank threads
  std::ostream* progress = nullptr;   // a line per chunk when there are several
};

// (files, D) normalised fp32 embeddings, in the order of `files`, on the model's device.
// Corruption naming the file for audio that cannot be decoded; InvalidArgument naming it for
// silent audio.
StatusOr<at::Tensor> EmbedAudioFiles(InferenceModel& model, const std::vector<AudioFile>& files,
                                     const EmbedOptions& options);
// (texts, D) normalised fp32 embeddings of captions. InvalidArgument naming the caption (by
// 1-based position) when it has no tokens.
StatusOr<at::Tensor> EmbedCaptions(InferenceModel& model, const std::vector<std::string>& texts,
                                   const EmbedOptions& options);

// Writes PREFIX.npy (format "npy") or PREFIX.safetensors ("safetensors") and PREFIX.csv.
// InvalidArgument for another format or a key count that differs from the rows.
Status WriteEmbeddings(const std::string& prefix, const std::string& format, const std::vector<std::string>& keys,
                       const at::Tensor& embeddings);

struct EmbeddingIndex {
  std::vector<std::string> keys;
  at::Tensor embeddings;  // (rows, D) float32, CPU
};
// Reads PREFIX.npy or PREFIX.safetensors (`path`, either) with the PREFIX.csv beside it;
// Corruption when they disagree (row count, a row out of order).
StatusOr<EmbeddingIndex> ReadEmbeddings(const std::string& path);

struct SearchHit {
  int64_t row = 0;
  std::string key;
  float score = 0;  // cosine similarity
};
// The top_k rows of `index` by cosine similarity to `query` (D), best first (ties: lower
// row first). Exact: every row is scored.
std::vector<SearchHit> SearchIndex(const EmbeddingIndex& index, const at::Tensor& query, int64_t top_k);

// ---- Zero-shot classification ----

struct LabelledClip {
  AudioFile file;
  std::vector<int> labels;  // indices into LabelSet::classes
};
struct LabelSet {
  std::vector<std::string> classes;  // sorted
  std::vector<LabelledClip> clips;   // in file order
  bool multi_label = false;          // some clip has several labels
};
// A labels CSV with a header: the file column is "filename", "file" or "path" (relative to
// `audio_dir`), the label column "category" (ESC-50's meta/esc50.csv), "label", or "labels"
// (several per clip, separated by ';'). InvalidArgument naming the file and line for a missing
// column, an empty file name or label, or a file listed twice; NotFound naming the line for
// a file that does not exist; InvalidArgument when it holds no clip or fewer than two classes.
StatusOr<LabelSet> ReadLabelSet(const std::string& csv_path, const std::string& audio_dir);

// The text embedded for a class: `prompt` with "{}" replaced by the class name ('_' read as a
// space). InvalidArgument when the prompt has no "{}".
StatusOr<std::string> PromptText(const std::string& prompt, const std::string& class_name);

struct ClassScore {
  std::string name;
  int64_t clips = 0;          // clips with this label
  double top1 = 0;            // recall at 1: of its clips, those whose best class is it
  double average_precision = 0;  // over all clips ranked by their score for it
};
struct ZeroShotResult {
  int64_t clips = 0;
  double top1 = 0, top5 = 0;  // a clip counts when one of its labels is the best (among the best 5)
  double map = 0;             // mean over classes (with clips) of average precision
  double chance_top1 = 0, chance_top5 = 0;  // what a random ranking of the classes scores
  double chance_map = 0;  // what random scores give in expectation: each class's share of clips
  std::vector<ClassScore> classes;
  std::vector<std::vector<int64_t>> confusion;  // [true][predicted best], each clip's first label
};
// Scores (clips, classes) similarities against the labels.
ZeroShotResult ScoreZeroShot(const at::Tensor& scores, const LabelSet& labels);

// Writes into the new folder `out_dir` (staged and renamed into place like an export; an
// existing non-empty folder is AlreadyExists): summary.json, classes.csv (the per-class
// table), confusion.csv and confusion.png (rows: true class, columns: predicted, in the order
// of classes.csv; shade: the row's share).
Status WriteZeroShot(const std::string& out_dir, const ZeroShotResult& result, const nlohmann::json& summary);

// The per-class table and the headline figures, for people.
std::string FormatZeroShot(const ZeroShotResult& result);

// `flap-worker export | embed | search | zeroshot ARGS` (docs/training.md, "After training"):
// tables and progress on `err`, the JSON result on `out`. Returns the exit status: 0, 2 for a
// bad command line, config or input (InvalidArgument), 1 for any other failure.
int RunInferenceCommand(const std::string& command, const std::vector<std::string>& args, std::ostream& out,
                        std::ostream& err);

}  // namespace flap::worker
