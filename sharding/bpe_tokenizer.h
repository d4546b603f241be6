// BpeTokenizer: byte-level BPE as in GPT-2 and RoBERTa. Reads a vocabulary and its ranked
// merges, either as vocab.json + merges.txt or as a Hugging Face tokenizer.json whose model is
// BPE, and encodes text the RoBERTa way: <s> pieces </s>.
//
// Encoding, as GPT-2's encoder.py does it:
//   1. The text (UTF-8) is cut into pre-tokens by GPT-2's regular expression
//        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//      (every match in order, leftmost first; the classes are Unicode's: \p{L} letters, \p{N}
//      numbers, \s the White_Space property).
//   2. Each byte of a pre-token becomes one symbol through GPT-2's bytes_to_unicode table
//      (printable bytes stand for themselves, the others map to U+0100 upwards: space is 'Ġ'
//      U+0120, newline 'Ċ' U+010A; see ByteToUnicode).
//   3. While some adjacent pair of symbols is a merge, the pair of lowest rank (its line in the
//      merges) is merged at every occurrence, left to right.
//   4. The resulting symbols are looked up in the vocabulary. Pre-tokens are cached.
// Special tokens in the text ("<s>" typed in a caption) are not recognised: they are encoded
// as ordinary text.
//
// Unicode classes come from ICU's regular expressions (libicu), matched on the UTF-8 text
// directly through a UText. ICU rather than PCRE2 because Debian 12's ICU (72) implements
// Unicode 15.0, as does Debian 12's Python `regex` module that GPT-2's expression was written
// for, so \p{L}, \p{N} and \s select exactly the same code points; Debian 12's PCRE2 (10.42)
// is at Unicode 14.0 (thousands of later letters, such as CJK extension H, are not \p{L}
// there) and its \s also matches U+180E, which is not White_Space.
//
// Identity: the 16 lowercase hex digits of XXH64 (seed 0) over the canonical form
//     "flap-bpe-v1\n"
//     "vocab <N>\n"   then per id 0..N-1: "<byte length of token>:<token>\n"
//     "merges <M>\n"  then per merge by rank: "<len a>:<a> <len b>:<b>\n"
// (lengths in decimal), so vocab.json + merges.txt and the tokenizer.json holding the same
// vocabulary and merges have the same identity, whatever the files' layout.
//
// Refused, with a Status naming the file and the entry: a missing file (NotFound); JSON that
// does not parse, duplicate keys, ids that are not integers, repeated, negative or leave a gap
// in 0..N-1, a merges line or entry that is not two symbols, a merge whose part or result is
// not in the vocabulary, a merge listed twice, a missing byte symbol, a missing <s>, </s> or
// <pad> (Corruption); a tokenizer.json whose model is not BPE (WordPiece, Unigram, ...) or
// whose normaliser, pre-tokeniser or model options would encode differently from the above
// (InvalidArgument).
//
// Thread-safety: Load is safe from any thread. A BpeTokenizer is cheap to copy (copies share
// one immutable model and one cache) and its const methods, Encode among them, are safe to
// call from many threads at once: the cache of pre-tokens is guarded by a reader-writer lock
// and stops growing at a fixed number of entries.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace flap::sharding {

class BpeTokenizer {
 public:
  // `path` is a folder holding vocab.json and merges.txt, or a tokenizer.json file.
  static StatusOr<BpeTokenizer> Load(const std::string& path);
  // A vocab.json and a merges.txt. merges.txt: one merge per line, "a b" (the two symbols
  // separated by one space), by rank; a first line starting with "#version" is skipped, a
  // trailing "\r" is dropped.
  static StatusOr<BpeTokenizer> Load(const std::string& vocab_path, const std::string& merges_path);
  // A Hugging Face tokenizer.json: "model": {"type": "BPE", "vocab": {...}, "merges": [...]},
  // merges as "a b" strings or ["a", "b"] pairs. Its "added_tokens" must agree with the
  // vocabulary; its post-processor and decoder are not read (Encode is RoBERTa's).
  static StatusOr<BpeTokenizer> LoadTokenizerJson(const std::string& path);

  // <s>, the ids of the pieces of `text`, </s>. max_length 0: no limit; otherwise at most
  // max_length ids: the first max_length - 1 and </s>. InvalidArgument for text that is not
  // valid UTF-8 (naming the byte offset) and for max_length < 0 or 1.
  StatusOr<std::vector<int>> Encode(const std::string& text, int max_length = 0) const;
  // The ids of the pieces of `text`, without <s> and </s>.
  StatusOr<std::vector<int>> EncodePieces(const std::string& text) const;
  // The pre-tokens of `text` (step 1 above), as byte strings of `text`.
  StatusOr<std::vector<std::string>> PreTokenize(const std::string& text) const;
  // The bytes of `ids`, special tokens left out. InvalidArgument for an id outside the
  // vocabulary or a token holding a character that is no byte symbol.
  StatusOr<std::string> Decode(const std::vector<int>& ids) const;

  // Number of tokens, specials included: ids lie in [0, vocab_size()).
  int vocab_size() const;
  int merges_size() const;
  // The identity (see above): 16 lowercase hex digits.
  const std::string& identity() const;
  int bos_id() const;   // <s>
  int eos_id() const;   // </s>
  int pad_id() const;   // <pad>
  int unk_id() const;   // <unk>, -1 when the vocabulary has none
  int mask_id() const;  // <mask>, -1 when the vocabulary has none
  // The id of `token`, -1 when it is not in the vocabulary.
  int TokenToId(const std::string& token) const;
  // The token of `id` ("" outside the vocabulary).
  std::string IdToToken(int id) const;
  // The pre-tokens held by the cache now (at most kCacheCapacity).
  size_t cache_size() const;

  static constexpr size_t kCacheCapacity = 1 << 16;

 private:
  class Model;
  explicit BpeTokenizer(std::shared_ptr<const Model> model) : model_(std::move(model)) {}
  std::shared_ptr<const Model> model_;  // immutable apart from its guarded cache
};

// GPT-2's bytes_to_unicode: the code point that stands for `byte` in byte-level tokens.
char32_t ByteToUnicode(uint8_t byte);

}  // namespace flap::sharding
