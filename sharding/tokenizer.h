// Tokenizer: the caption tokenizer, a SentencePiece unigram model trained on a dataset's
// training captions and stored beside its shards. Ids: pad 0, unk 1, bos 2, eos 3; pieces
// from 4 up. Encode never adds bos/eos and never yields the pad id.
//
// SentencePiece itself runs inside the loadable module libflap_spm.so (see spm_module.h: it
// must not share a process's symbol scope with LibTorch's protobuf). The module is loaded on
// the first Load or TrainTokenizer; if it cannot be found they return FailedPrecondition
// (set FLAP_SPM_MODULE to its path when the binary is moved away from its build tree).
//
// Thread-safety: Load and TrainTokenizer are safe from any thread. A Tokenizer is cheap to
// copy (copies share one immutable SentencePiece processor) and its const methods are safe to
// call from many threads at once.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace flap::sharding {

class Tokenizer {
 public:
  static constexpr int kPadId = 0;
  static constexpr int kUnkId = 1;
  static constexpr int kBosId = 2;
  static constexpr int kEosId = 3;

  // Loads a SentencePiece model. NotFound if the file is missing; Corruption naming the file
  // if it is not a SentencePiece model or its pad/unk/bos/eos ids are not 0/1/2/3;
  // FailedPrecondition if the SentencePiece module cannot be loaded.
  static StatusOr<Tokenizer> Load(const std::string& model_path);

  // The ids of `text`, without bos/eos (empty for empty text). Unknown characters map to
  // kUnkId.
  std::vector<int> Encode(const std::string& text) const;
  // The text of `ids` (pad, bos and eos are dropped).
  std::string Decode(const std::vector<int>& ids) const;
  // Number of ids, special ones included: ids lie in [0, vocab_size()).
  int vocab_size() const;

 private:
  class Model;
  explicit Tokenizer(std::shared_ptr<const Model> model) : model_(std::move(model)) {}
  std::shared_ptr<const Model> model_;  // immutable, shared by copies
};

// Trains a unigram SentencePiece model on `texts` (each one sentence) and writes it atomically
// to `model_path`. vocab_size is a soft limit (the model may be smaller when the texts are
// few). Deterministic: the same texts give the same model bytes. InvalidArgument for no
// non-empty text or vocab_size < 8; Internal if SentencePiece fails; IOError if writing fails;
// FailedPrecondition if the SentencePiece module cannot be loaded.
Status TrainTokenizer(const std::vector<std::string>& texts, const std::string& model_path, int vocab_size);

}  // namespace flap::sharding
