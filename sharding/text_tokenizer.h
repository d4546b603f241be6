// TextTokenizer: the caption tokenizer a run uses, one interface over the two kinds.
//   sentencepiece  the dataset's own SentencePiece model (tokenizer.h; the manifest names it):
//                  pad 0, no start or end token; identity: 16 hex digits of XXH64 over the
//                  model file's bytes.
//   bpe            a byte-level BPE tokenizer (bpe_tokenizer.h: RoBERTa's, GPT-2's) given by the
//                  config key text.tokenizer: a folder with vocab.json and merges.txt, or a
//                  tokenizer.json; each caption is <s> pieces </s>, pad is <pad>; identity:
//                  BpeTokenizer::identity() (the same for both file forms).
// The identity is what checkpoints, exports and warm starts compare (docs/warm_start.md).
//
// Thread-safety: Load functions are safe from any thread; a TextTokenizer is cheap to copy and
// its const methods are safe from many threads at once.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "sharding/bpe_tokenizer.h"
#include "sharding/manifest.h"
#include "sharding/tokenizer.h"

namespace flap::sharding {

class TextTokenizer {
 public:
  enum class Kind { kSentencePiece, kBpe };

  // A SentencePiece model file (Tokenizer::Load's errors).
  static StatusOr<TextTokenizer> LoadSentencePiece(const std::string& model_path);
  // A BPE folder (vocab.json + merges.txt) or tokenizer.json (BpeTokenizer::Load's errors).
  static StatusOr<TextTokenizer> LoadBpe(const std::string& path);
  // The tokenizer of a run on the dataset folder `dataset_dir` (whose manifest is `manifest`):
  // `bpe_path` (text.tokenizer) when it is not empty, else the dataset's SentencePiece model.
  static StatusOr<TextTokenizer> ForDataset(const std::string& dataset_dir, const Manifest& manifest,
                                            const std::string& bpe_path);

  Kind kind() const { return kind_; }
  const char* kind_name() const { return kind_ == Kind::kBpe ? "bpe" : "sentencepiece"; }
  // The ids of a caption: SentencePiece's pieces, or <s> pieces </s> for BPE (every id; the
  // batcher truncates). InvalidArgument for text without a piece (empty) and for text BPE
  // cannot encode (invalid UTF-8).
  StatusOr<std::vector<int>> Encode(const std::string& text) const;
  int vocab_size() const;
  int pad_id() const;
  // The id every encoding ends with (</s>), kept last when a caption is cut; -1: none.
  int end_id() const;
  const std::string& identity() const { return identity_; }
  // Where it was loaded from: the model file, or the BPE folder / tokenizer.json.
  const std::string& path() const { return path_; }
  // The files that make it up, as paths: the model file; vocab.json and merges.txt; or the
  // tokenizer.json.
  std::vector<std::string> files() const;
  // "bpe 0123456789abcdef (50265 ids, '/models/roberta-base')", for logs and errors.
  std::string Describe() const;

  // The SentencePiece model (kind() == kSentencePiece) or the BPE model.
  const Tokenizer* sentencepiece() const { return spm_ ? &*spm_ : nullptr; }
  const BpeTokenizer* bpe() const { return bpe_ ? &*bpe_ : nullptr; }

 private:
  TextTokenizer() = default;
  Kind kind_ = Kind::kSentencePiece;
  std::optional<Tokenizer> spm_;
  std::optional<BpeTokenizer> bpe_;
  std::string identity_;
  std::string path_;
};

}  // namespace flap::sharding
