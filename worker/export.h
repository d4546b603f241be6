// Exported models (`flap-worker export`), and the one way the after-training commands (embed,
// search, zeroshot: worker/inference.h) load a model: from an export folder, or from a
// training run's model.pt with its config.
//
// An export folder holds, and needs nothing else (no trial folder, no dataset):
//   model.safetensors  every parameter and buffer of the model, float32, under the model's own
//                      names (docs/training.md, "Exported models", lists them); its metadata
//                      says {"format": "flap-export", "format_version": "1", "tokenizer_kind",
//                      "tokenizer_identity"} (a text warm start from it checks the identity). The warm-start
//                      reader (warm_start.h) reads it: model.init_audio / model.init_text
//                      initialise an encoder from it exactly.
//   config.json        {"format": "flap-export", "format_version": 1, "config": {KEY: VALUE}
//                      (the model.* keys, model.recon_source, data.max_frames and eval.crop: what
//                      builds the model and feeds it), "sample_rate": the audio rate the
//                      features expect, "tokenizer": {"kind": "sentencepiece" | "bpe",
//                      "files": its files in the folder, "identity" (sharding/text_tokenizer.h),
//                      "vocab_size"; for sentencepiece also "file" and "xxh64", as the first
//                      exports wrote them}}
//   tokenizer.model    the run's tokenizer, byte for byte: the dataset's SentencePiece model, or
//   (vocab.json and merges.txt, or tokenizer.json) the BPE text.tokenizer named
//   card.json          where the model came from (ExportModel says what)
// The folder is written under a temporary name beside the destination and renamed into place
// once complete, so a failed export leaves nothing behind, and an existing destination is never
// overwritten.
//
// Loading checks everything it relies on and names what differs: config.json's format, the
// tokenizer file's hash and vocabulary against config.json (a tokenizer mismatch), and every
// tensor of the model (a model of another architecture: a missing, extra or differently shaped
// tensor, named).
//
// Thread-safety: free functions; a loaded model is used by one thread at a time.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "config/trial_config.h"
#include "sharding/text_tokenizer.h"
#include "worker/core/model.h"

namespace flap::worker {

inline constexpr char kExportFormat[] = "flap-export";
inline constexpr int kExportFormatVersion = 1;

// Every parameter and buffer of `model` by its own name, as float32 CPU tensors.
std::map<std::string, at::Tensor> ModelTensors(core::FlapModel& model);
// Copies `tensors` into `model`: every parameter and buffer must be there with its shape and
// nothing else may be; otherwise InvalidArgument naming the tensors (from `file`) and the model
// is left untouched.
Status LoadModelTensors(core::FlapModel& model, const std::map<std::string, at::Tensor>& tensors,
                        const std::string& file);

// The config keys an export records (config.json's "config"): what builds the model
// (model.*, but not the warm-start paths; model.recon_source) and what feeds it (data.max_frames,
// eval.crop).
std::map<std::string, std::string> ModelConfigValues(const TrialConfig& config);

struct ExportOptions {
  // A training run's model.pt: train.output_dir's, or a checkpoint's (ROOT/TRIAL/STEP/model.pt).
  std::string model_path;
  // The run's config. data.path names its dataset: the tokenizer is copied from there (or from
  // text.tokenizer, a BPE) and the card records the dataset's identity.
  TrialConfig config;
  // A JSON object recorded in the card as "sweep" (flapctl sweep best: sweep, cell, factors,
  // trial, the figures validation selected it by); null: none.
  nlohmann::json card_extra;
  // Export although the config's model keys differ from those the run recorded.
  bool force = false;
};

// Writes the export folder `out_dir` (which must not exist, or be an empty folder) and returns
// its card. card.json records: the model (source file, config hash, trial id, seed,
// parameters); the training data (dataset name, folder, clips per split, XXH64 of its
// manifest.json); the tokenizer's identity; what training spent (steps, samples, FLOPs,
// seconds); the evaluation sets' identities and figures the run recorded (validation, and test
// when the run evaluated it); the sweep's entry (card_extra); and the code version.
// The run's record is read beside model_path: a checkpoint's MANIFEST.json (config hash, the
// validation metrics of that step, model.pt's checksum, verified) and state.json (the run's
// config, steps, samples, FLOPs), or train.output_dir's summary.json. A model key (model.*,
// model.recon_source) that differs from the run's recorded config is FailedPrecondition naming each
// (unless force): attention heads, for one, change no tensor's shape; a model.pt that does not
// match its checkpoint's checksum is Corruption; one that does not fit the config is
// InvalidArgument; an existing non-empty out_dir is AlreadyExists.
StatusOr<nlohmann::json> ExportModel(const ExportOptions& options, const std::string& out_dir, std::ostream& log);

// A model ready for inference, with the tokenizer its texts need and the audio rate its
// features expect.
struct InferenceModel {
  TrialConfig config;  // the model part set (ModelConfigValues); the rest defaults
  core::FlapModel model{nullptr};
  sharding::TextTokenizer tokenizer;  // its identity() is the one the model was trained with
  int sample_rate = 0;
  std::string source;  // what was loaded, for messages
};

// Loads `model`: an export folder (config.json inside), or a model.pt of a training run with
// `config` (data.path names the dataset whose tokenizer it was trained with; model keys that
// differ from the config recorded beside the file are FailedPrecondition unless `force`). The model is moved to `device` and put in eval mode.
StatusOr<InferenceModel> LoadInferenceModel(const std::string& model, const TrialConfig& config,
                                            const c10::Device& device, bool force = false);

// The run config of a model.pt, from `args` (--config FILE, --KEY VALUE ...: ParseTrialConfig).
// Without --config, the config the run recorded beside `model_path` (train.output_dir's
// summary.json, a checkpoint's state.json) is the base, which the --KEY VALUE flags override.
StatusOr<TrialConfig> RunConfigOf(const std::string& model_path, const std::vector<std::string>& args);

// A new folder `out_dir` holding `files` (name -> contents), written under a temporary name
// beside it and renamed into place once every file is durable: a failure leaves nothing
// behind. AlreadyExists when out_dir exists and is not an empty folder, InvalidArgument when it
// is a symbolic link (CheckNewFolder).
Status CheckNewFolder(const std::string& out_dir);
Status WriteNewFolder(const std::string& out_dir, const std::map<std::string, std::string>& files);

// The code version compiled in: the commit (12 hex digits, "-dirty" with uncommitted
// changes), or "unknown" outside a git checkout.
const char* CodeVersion();

}  // namespace flap::worker
