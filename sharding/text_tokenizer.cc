#include "sharding/text_tokenizer.h"

#include <filesystem>

#include "common/file_util.h"

namespace flap::sharding {

StatusOr<TextTokenizer> TextTokenizer::LoadSentencePiece(const std::string& model_path) {
  FLAP_ASSIGN_OR_RETURN(Tokenizer spm, Tokenizer::Load(model_path));
  TextTokenizer t;
  t.kind_ = Kind::kSentencePiece;
  FLAP_ASSIGN_OR_RETURN(t.identity_, FileXxh64(model_path));
  t.spm_.emplace(std::move(spm));
  t.path_ = model_path;
  return t;
}

StatusOr<TextTokenizer> TextTokenizer::LoadBpe(const std::string& path) {
  FLAP_ASSIGN_OR_RETURN(BpeTokenizer bpe, BpeTokenizer::Load(path));
  TextTokenizer t;
  t.kind_ = Kind::kBpe;
  t.identity_ = bpe.identity();
  t.bpe_.emplace(std::move(bpe));
  t.path_ = path;
  return t;
}

StatusOr<TextTokenizer> TextTokenizer::ForDataset(const std::string& dataset_dir, const Manifest& manifest,
                                                  const std::string& bpe_path) {
  if (!bpe_path.empty()) {
    auto t = LoadBpe(bpe_path);
    if (!t.ok()) return t.status().WithContext("text.tokenizer");
    return t;
  }
  return LoadSentencePiece(JoinPath(dataset_dir, manifest.tokenizer));
}

StatusOr<std::vector<int>> TextTokenizer::Encode(const std::string& text) const {
  std::vector<int> ids;
  if (bpe_) {
    FLAP_ASSIGN_OR_RETURN(ids, bpe_->Encode(text));
    if (ids.size() > 2) return ids;  // more than <s> </s>
  } else {
    ids = spm_->Encode(text);
    if (!ids.empty()) return ids;
  }
  return Status::InvalidArgument("'" + text + "' has no tokens");
}

int TextTokenizer::vocab_size() const { return bpe_ ? bpe_->vocab_size() : spm_->vocab_size(); }
int TextTokenizer::pad_id() const { return bpe_ ? bpe_->pad_id() : Tokenizer::kPadId; }
int TextTokenizer::end_id() const { return bpe_ ? bpe_->eos_id() : -1; }

std::vector<std::string> TextTokenizer::files() const {
  std::error_code ec;
  if (bpe_ && std::filesystem::is_directory(path_, ec))
    return {JoinPath(path_, "vocab.json"), JoinPath(path_, "merges.txt")};
  return {path_};
}

std::string TextTokenizer::Describe() const {
  return std::string(kind_name()) + " " + identity_ + " (" + std::to_string(vocab_size()) + " ids, '" + path_ + "')";
}

}  // namespace flap::sharding
