// Tests for sharding/bpe_tokenizer.h: GPT-2's byte table and pre-tokeniser, merging by rank,
// RoBERTa's specials and truncation, the identity of both file forms, refused inputs, and ids
// identical to an independent Python implementation (tests/bpe_reference.py) that trains a
// vocabulary on tests/fixtures/bpe_captions.txt and encodes thousands of texts.
#include "sharding/bpe_tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/testing/testing.h"
#include "sharding/testing/test_util.h"

#ifndef FLAP_TESTS_DIR
#error "FLAP_TESTS_DIR must name the tests/ folder"
#endif

namespace flap::sharding {
namespace {

using Json = nlohmann::json;
using testing::ReadAll;
using testing::ScratchDir;
using testing::WriteAll;

std::string Utf8(char32_t c) {
  std::string s;
  if (c < 0x80) {
    s += static_cast<char>(c);
  } else if (c < 0x800) {
    s += static_cast<char>(0xC0 | (c >> 6));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    s += static_cast<char>(0xE0 | (c >> 12));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (c >> 18));
    s += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  }
  return s;
}

// The byte symbol of `byte` as UTF-8.
std::string Sym(uint8_t byte) { return Utf8(ByteToUnicode(byte)); }

// A small vocabulary: `leading` specials, the 256 byte symbols in byte order, `extra`, then
// `trailing` specials. Ids in that order from 0.
Json TinyVocab(const std::vector<std::string>& extra,
               const std::vector<std::string>& leading = {"<s>", "<pad>", "</s>", "<unk>"},
               const std::vector<std::string>& trailing = {"<mask>"}) {
  Json vocab = Json::object();
  int id = 0;
  for (const auto& t : leading) vocab[t] = id++;
  for (int b = 0; b < 256; ++b) vocab[Sym(static_cast<uint8_t>(b))] = id++;
  for (const auto& t : extra) vocab[t] = id++;
  for (const auto& t : trailing) vocab[t] = id++;
  return vocab;
}

std::string MergesTxt(const std::vector<std::pair<std::string, std::string>>& merges) {
  std::string out = "#version: 0.2\n";
  for (const auto& [a, b] : merges) out += a + " " + b + "\n";
  return out;
}

// A Hugging Face tokenizer.json with this vocabulary and merges (as pairs or as strings).
Json TokenizerJson(const Json& vocab, const std::vector<std::pair<std::string, std::string>>& merges, bool pairs) {
  Json m = Json::array();
  for (const auto& [a, b] : merges) m.push_back(pairs ? Json::array({a, b}) : Json(a + " " + b));
  return Json{
      {"version", "1.0"},
      {"added_tokens", Json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", nullptr},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"vocab", vocab}, {"merges", m}}}};
}

const std::string G = Sym(' ');  // 'Ġ'

// " the" merges to Ġthe; "ab"/"bc" for rank order.
const std::vector<std::pair<std::string, std::string>> kMerges = {
    {G, "t"}, {"h", "e"}, {G + "t", "he"}, {"a", "a"}, {"aa", "aa"}};
const std::vector<std::string> kExtra = {G + "t", "he", G + "the", "aa", "aaaa"};

// Writes vocab.json + merges.txt into `dir` and loads them.
StatusOr<BpeTokenizer> LoadTiny(const ScratchDir& dir, const Json& vocab,
                                const std::vector<std::pair<std::string, std::string>>& merges) {
  WriteAll(dir.File("vocab.json"), vocab.dump());
  WriteAll(dir.File("merges.txt"), MergesTxt(merges));
  return BpeTokenizer::Load(dir.path());
}

std::vector<std::string> Pre(const BpeTokenizer& tok, const std::string& text) {
  auto pieces = tok.PreTokenize(text);
  EXPECT_OK(pieces);
  return pieces.ok() ? *pieces : std::vector<std::string>{};
}

TEST(BpeTokenizer, ByteToUnicodeIsGpt2sTable) {
  EXPECT_EQ(ByteToUnicode(' '), U'\u0120');   // 'Ġ'
  EXPECT_EQ(ByteToUnicode('\n'), U'\u010A');  // 'Ċ'
  EXPECT_EQ(ByteToUnicode('\t'), U'\u0109');  // 'ĉ'
  EXPECT_EQ(ByteToUnicode(0x00), U'\u0100');
  EXPECT_EQ(ByteToUnicode('a'), U'a');
  EXPECT_EQ(ByteToUnicode('!'), U'!');
  EXPECT_EQ(ByteToUnicode('~'), U'~');
  EXPECT_EQ(ByteToUnicode(0x7F), U'\u0121');  // DEL follows the 33 bytes 0x00..0x20
  EXPECT_EQ(ByteToUnicode(0xA0), U'\u0142');
  EXPECT_EQ(ByteToUnicode(0xA1), U'\u00A1');
  EXPECT_EQ(ByteToUnicode(0xAC), U'\u00AC');
  EXPECT_EQ(ByteToUnicode(0xAD), U'\u0143');  // the last unprintable byte
  EXPECT_EQ(ByteToUnicode(0xAE), U'\u00AE');
  EXPECT_EQ(ByteToUnicode(0xFF), U'\u00FF');
  std::vector<char32_t> all;
  for (int b = 0; b < 256; ++b) all.push_back(ByteToUnicode(static_cast<uint8_t>(b)));
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::unique(all.begin(), all.end()), all.end()) << "the table is not one to one";
  EXPECT_LE(all.back(), U'\u0143');
}

TEST(BpeTokenizer, PreTokenizerSplitsLikeGpt2) {
  ScratchDir dir;
  ASSERT_OK_AND_ASSIGN(BpeTokenizer tok, LoadTiny(dir, TinyVocab(kExtra), kMerges));
  using V = std::vector<std::string>;
  EXPECT_EQ(Pre(tok, "Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(Pre(tok, "I'm here  now"), (V{"I", "'m", " here", " ", " now"}));
  EXPECT_EQ(Pre(tok, "a   b"), (V{"a", "  ", " b"}));
  EXPECT_EQ(Pre(tok, "x\t\ty"), (V{"x", "\t", "\t", "y"}));
  EXPECT_EQ(Pre(tok, "HE'S"), (V{"HE", "'", "S"}));
  EXPECT_EQ(Pre(tok, "don't we'll"), (V{"don", "'t", " we", "'ll"}));
  EXPECT_EQ(Pre(tok, "It's 2024!!"), (V{"It", "'s", " 2024", "!!"}));
  EXPECT_EQ(Pre(tok, "end   "), (V{"end", "   "}));
  EXPECT_EQ(Pre(tok, "caf\u00e9"), (V{"caf\u00e9"}));
  EXPECT_EQ(Pre(tok, "cafe\u0301"), (V{"cafe", "\u0301"}));  // a combining mark is neither L nor N
  EXPECT_EQ(Pre(tok, "\u4f60\u597d\u4e16\u754c \U0001F3B5\U0001F3B5"),
            (V{"\u4f60\u597d\u4e16\u754c", " \U0001F3B5\U0001F3B5"}));
  EXPECT_EQ(Pre(tok, "  lead"), (V{" ", " lead"}));
  EXPECT_EQ(Pre(tok, "a\n\nb"), (V{"a", "\n", "\n", "b"}));
  EXPECT_EQ(Pre(tok, "a 'quote' ok"), (V{"a", " '", "quote", "'", " ok"}));
  EXPECT_EQ(Pre(tok, "x1y 3.14 \u00bd \u216b"), (V{"x", "1", "y", " 3", ".", "14", " \u00bd", " \u216b"}));
  EXPECT_EQ(Pre(tok, "\u00a0nb\u3000sp"), (V{"\u00a0", "nb", "\u3000", "sp"}));
  EXPECT_EQ(Pre(tok, "dog\u2019s"), (V{"dog", "\u2019", "s"}));
  // U+180E and U+200B are not White_Space; U+0085 is.
  EXPECT_EQ(Pre(tok, "a\u180e\u200bb\u0085c"), (V{"a", "\u180e\u200b", "b", "\u0085", "c"}));
  EXPECT_EQ(Pre(tok, ""), V{});
}

TEST(BpeTokenizer, MergesTheLowestRankFirstAtEveryOccurrence) {
  ScratchDir dir;
  {
    // "b c" ranks before "a b": abc -> a bc.
    ASSERT_OK_AND_ASSIGN(BpeTokenizer tok, LoadTiny(dir, TinyVocab({"bc", "ab"}), {{"b", "c"}, {"a", "b"}}));
    ASSERT_OK_AND_ASSIGN(auto ids, tok.EncodePieces("abc"));
    EXPECT_EQ(ids, (std::vector<int>{tok.TokenToId("a"), tok.TokenToId("bc")}));
  }
  {
    // The other order: abc -> ab c.
    ASSERT_OK_AND_ASSIGN(BpeTokenizer tok, LoadTiny(dir, TinyVocab({"bc", "ab"}), {{"a", "b"}, {"b", "c"}}));
    ASSERT_OK_AND_ASSIGN(auto ids, tok.EncodePieces("abc"));
    EXPECT_EQ(ids, (std::vector<int>{tok.TokenToId("ab"), tok.TokenToId("c")}));
  }
  ASSERT_OK_AND_ASSIGN(BpeTokenizer tok, LoadTiny(dir, TinyVocab(kExtra), kMerges));
  const int a = tok.TokenToId("a"), aa = tok.TokenToId("aa"), aaaa = tok.TokenToId("aaaa");
  ASSERT_GE(aaaa, 0);
  // Every occurrence, left to right: aaa -> aa a; aaaaa -> aa aa a -> aaaa a.
  EXPECT_EQ(*tok.EncodePieces("aaa"), (std::vector<int>{aa, a}));
  EXPECT_EQ(*tok.EncodePieces("aaaaa"), (std::vector<int>{aaaa, a}));
  EXPECT_EQ(*tok.EncodePieces("aaaaaaaa"), (std::vector<int>{aaaa, aaaa}));
  // " the" -> Ġ t h e -> Ġt h e -> Ġt he -> Ġthe; "the" -> t he (no "t he" merge).
  EXPECT_EQ(*tok.EncodePieces(" the"), (std::vector<int>{tok.TokenToId(G + "the")}));
  EXPECT_EQ(*tok.EncodePieces("the the"),
            (std::vector<int>{tok.TokenToId("t"), tok.TokenToId("he"), tok.TokenToId(G + "the")}));
  // Bytes without merges: one id per byte (é is two bytes).
  EXPECT_EQ(*tok.EncodePieces("\u00e9"), (std::vector<int>{tok.TokenToId(Sym(0xC3)), tok.TokenToId(Sym(0xA9))}));
  EXPECT_GT(tok.cache_size(), 0u);
}

TEST(BpeTokenizer, SpecialsComeFromTheVocabularyAndTruncationKeepsEos) {
  ScratchDir dir;
  // GPT-2's layout: specials after everything else, in another order.
  ASSERT_OK_AND_ASSIGN(BpeTokenizer tok, LoadTiny(dir, TinyVocab(kExtra, {}, {"</s>", "<pad>", "<s>"}), kMerges));
  const int n = 256 + static_cast<int>(kExtra.size());
  EXPECT_EQ(tok.eos_id(), n);
  EXPECT_EQ(tok.pad_id(), n + 1);
  EXPECT_EQ(tok.bos_id(), n + 2);
  EXPECT_EQ(tok.unk_id(), -1);
  EXPECT_EQ(tok.mask_id(), -1);
  EXPECT_EQ(tok.vocab_size(), n + 3);
  EXPECT_EQ(tok.merges_size(), static_cast<int>(kMerges.size()));

  const int the = tok.TokenToId(G + "the");
  const int bos = tok.bos_id(), eos = tok.eos_id();
  EXPECT_EQ(*tok.Encode(""), (std::vector<int>{bos, eos}));
  EXPECT_EQ(*tok.Encode("the the the"),
            (std::vector<int>{bos, tok.TokenToId("t"), tok.TokenToId("he"), the, the, eos}));
  EXPECT_EQ(*tok.Encode("the the the", 6),
            (std::vector<int>{bos, tok.TokenToId("t"), tok.TokenToId("he"), the, the, eos}));
  EXPECT_EQ(*tok.Encode("the the the", 5), (std::vector<int>{bos, tok.TokenToId("t"), tok.TokenToId("he"), the, eos}));
  EXPECT_EQ(*tok.Encode("the the the", 3), (std::vector<int>{bos, tok.TokenToId("t"), eos}));
  EXPECT_EQ(*tok.Encode("the the the", 2), (std::vector<int>{bos, eos}));
  EXPECT_EQ(tok.Encode("x", 1).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(tok.Encode("x", -1).status().code(), Status::Code::kInvalidArgument);
  // Specials typed in the text are text.
  EXPECT_EQ(tok.Encode("<s>")->size(), 2u + 3u);

  ScratchDir dir2;
  ASSERT_OK_AND_ASSIGN(BpeTokenizer roberta, LoadTiny(dir2, TinyVocab(kExtra), kMerges));
  EXPECT_EQ(roberta.bos_id(), 0);
  EXPECT_EQ(roberta.pad_id(), 1);
  EXPECT_EQ(roberta.eos_id(), 2);
  EXPECT_EQ(roberta.unk_id(), 3);
  EXPECT_EQ(roberta.mask_id(), roberta.vocab_size() - 1);

  // Decode drops the specials and gives the bytes back.
  const std::string text = "Caf\u00e9 \u4f60\u597d \U0001F3B5 the\tthe  \n it's";
  ASSERT_OK_AND_ASSIGN(auto ids, roberta.Encode(text));
  EXPECT_EQ(*roberta.Decode(ids), text);
  EXPECT_EQ(roberta.Decode({roberta.vocab_size()}).status().code(), Status::Code::kInvalidArgument);
}

TEST(BpeTokenizer, RefusesTextThatIsNotUtf8) {
  ScratchDir dir;
  ASSERT_OK_AND_ASSIGN(BpeTokenizer tok, LoadTiny(dir, TinyVocab(kExtra), kMerges));
  for (const std::string& bad :
       {std::string("ab\xff"), std::string("ab\xc3"), std::string("ab\xed\xa0\x80"), std::string("ab\xc0\xaf")}) {
    auto ids = tok.Encode(bad);
    ASSERT_FALSE(ids.ok());
    EXPECT_EQ(ids.status().code(), Status::Code::kInvalidArgument);
    EXPECT_NE(ids.status().message().find("byte offset 2"), std::string::npos) << ids.status().ToString();
  }
}

// XXH64 of the canonical form the header documents.
std::string ExpectedIdentity(const Json& vocab, const std::vector<std::pair<std::string, std::string>>& merges) {
  std::map<int, std::string> by_id;
  for (const auto& [token, id] : vocab.items()) by_id[id.get<int>()] = token;
  std::string c = "flap-bpe-v1\nvocab " + std::to_string(by_id.size()) + "\n";
  for (const auto& [id, token] : by_id) c += std::to_string(token.size()) + ":" + token + "\n";
  c += "merges " + std::to_string(merges.size()) + "\n";
  for (const auto& [a, b] : merges)
    c += std::to_string(a.size()) + ":" + a + " " + std::to_string(b.size()) + ":" + b + "\n";
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(XXH64(c.data(), c.size(), 0)));
  return hex;
}

TEST(BpeTokenizer, IdentityIsTheSameForBothFileForms) {
  ScratchDir dir;
  const Json vocab = TinyVocab(kExtra);
  ASSERT_OK_AND_ASSIGN(BpeTokenizer files, LoadTiny(dir, vocab, kMerges));
  EXPECT_EQ(files.identity(), ExpectedIdentity(vocab, kMerges));
  EXPECT_EQ(files.identity().size(), 16u);

  WriteAll(dir.File("pairs.json"), TokenizerJson(vocab, kMerges, true).dump(2));
  WriteAll(dir.File("strings.json"), TokenizerJson(vocab, kMerges, false).dump());
  ASSERT_OK_AND_ASSIGN(BpeTokenizer pairs, BpeTokenizer::Load(dir.File("pairs.json")));
  ASSERT_OK_AND_ASSIGN(BpeTokenizer strings, BpeTokenizer::Load(dir.File("strings.json")));
  EXPECT_EQ(pairs.identity(), files.identity());
  EXPECT_EQ(strings.identity(), files.identity());
  EXPECT_EQ(pairs.vocab_size(), files.vocab_size());
  EXPECT_EQ(*pairs.Encode("the aaaaa the"), *files.Encode("the aaaaa the"));

  // The two-path form and the file layout do not matter; the merge order and the ids do.
  WriteAll(dir.File("v2.json"), vocab.dump(4));
  ASSERT_OK_AND_ASSIGN(BpeTokenizer two_paths, BpeTokenizer::Load(dir.File("v2.json"), dir.File("merges.txt")));
  EXPECT_EQ(two_paths.identity(), files.identity());
  auto swapped = kMerges;
  std::swap(swapped[3], swapped[1]);
  ScratchDir dir2;
  ASSERT_OK_AND_ASSIGN(BpeTokenizer reordered, LoadTiny(dir2, vocab, swapped));
  EXPECT_NE(reordered.identity(), files.identity());
  Json renumbered = TinyVocab(kExtra, {"<pad>", "<s>", "</s>", "<unk>"});
  ASSERT_OK_AND_ASSIGN(BpeTokenizer other_ids, LoadTiny(dir2, renumbered, kMerges));
  EXPECT_NE(other_ids.identity(), files.identity());
}

// Expects `result` to fail with `code` and a message holding every one of `parts`.
template <typename T>
void ExpectRefused(const StatusOr<T>& result, Status::Code code, const std::vector<std::string>& parts) {
  ASSERT_FALSE(result.ok()) << "accepted, expected a message with " << parts.front();
  EXPECT_EQ(result.status().code(), code) << result.status().ToString();
  for (const auto& p : parts) {
    EXPECT_NE(result.status().message().find(p), std::string::npos)
        << "no \"" << p << "\" in " << result.status().ToString();
  }
}

TEST(BpeTokenizer, RefusesBadVocabJsonAndMergesTxt) {
  ScratchDir dir;
  const std::string vocab_path = dir.File("vocab.json"), merges_path = dir.File("merges.txt");
  const Json good = TinyVocab(kExtra);
  auto load_raw = [&](const std::string& vocab_text, const std::string& merges_text) {
    WriteAll(vocab_path, vocab_text);
    WriteAll(merges_path, merges_text);
    return BpeTokenizer::Load(dir.path());
  };
  auto load = [&](const Json& vocab, const std::vector<std::pair<std::string, std::string>>& merges) {
    return load_raw(vocab.dump(), MergesTxt(merges));
  };
  const auto C = Status::Code::kCorruption;
  ASSERT_OK(load(good, kMerges));

  ExpectRefused(load_raw("{\"<s>\": 0,\n \"a\": }", MergesTxt(kMerges)), C, {vocab_path, "not valid JSON", "line 2"});
  ExpectRefused(load_raw("[1, 2]", MergesTxt(kMerges)), C, {vocab_path, "not a JSON object"});
  ExpectRefused(load_raw("{\"<s>\": 0, \"<s>\": 1}", MergesTxt(kMerges)), C, {vocab_path, "duplicate key \"<s>\""});
  Json dup = good;
  dup["zzz"] = good["he"];
  ExpectRefused(load(dup, kMerges), C, {vocab_path, "duplicate id " + good["he"].dump(), "\"zzz\"", "\"he\""});
  Json dup_high = good;
  dup_high["zzz"] = 10000;
  dup_high["yyy"] = 10000;
  ExpectRefused(load(dup_high, kMerges), C, {vocab_path, "duplicate id 10000"});
  Json gap = good;
  gap["zzz"] = good.size() + 5;
  ExpectRefused(load(gap, kMerges), C, {vocab_path, "no token has id " + std::to_string(good.size())});
  Json not_int = good;
  not_int["zzz"] = 3.5;
  ExpectRefused(load(not_int, kMerges), C, {vocab_path, "\"zzz\"", "not an integer"});
  Json negative = good;
  negative["zzz"] = -1;
  ExpectRefused(load(negative, kMerges), C, {vocab_path, "\"zzz\"", "negative id"});
  for (const char* special : {"<s>", "</s>", "<pad>"}) {
    std::vector<std::string> leading = {"<s>", "<pad>", "</s>", "<unk>"};
    leading.erase(std::find(leading.begin(), leading.end(), special));
    ExpectRefused(load(TinyVocab(kExtra, leading), kMerges), C, {vocab_path, std::string("no \"") + special + "\""});
  }
  Json no_byte = Json::object();
  for (const auto& [token, id] : good.items()) {
    if (token != Sym('\n'))
      no_byte[token] = id.get<int>() < good[Sym('\n')].get<int>() ? id.get<int>() : id.get<int>() - 1;
  }
  ExpectRefused(load(no_byte, kMerges), C, {vocab_path, "byte symbol \"" + Sym('\n') + "\"", "0x0A"});

  ExpectRefused(load_raw(good.dump(), "#version: 0.2\n" + G + " t\nh e x\n"), C,
                {merges_path, "line 3", "not two symbols"});
  ExpectRefused(load_raw(good.dump(), G + " t\n\nh e\n"), C, {merges_path, "line 2", "not two symbols"});
  ExpectRefused(load(good, {{G, "t"}, {"h", "q\u00e9"}}), C,
                {merges_path, "line 3", "\"q\u00e9\" is not in the vocabulary"});
  ExpectRefused(load(good, {{G, "t"}, {"t", "h"}}), C, {merges_path, "line 3", "merge \"t h\"", "result \"th\""});
  ExpectRefused(load(good, {{G, "t"}, {"h", "e"}, {G, "t"}}), C, {merges_path, "line 4", "repeats line 2"});

  ExpectRefused(BpeTokenizer::Load(dir.File("absent")), Status::Code::kNotFound, {dir.File("absent")});
  ScratchDir empty;
  WriteAll(empty.File("vocab.json"), good.dump());
  ExpectRefused(BpeTokenizer::Load(empty.path()), Status::Code::kNotFound, {empty.File("merges.txt")});
}

TEST(BpeTokenizer, RefusesBadTokenizerJson) {
  ScratchDir dir;
  const std::string path = dir.File("tokenizer.json");
  const Json good = TokenizerJson(TinyVocab(kExtra), kMerges, true);
  auto load = [&](const Json& j) {
    WriteAll(path, j.dump());
    return BpeTokenizer::Load(path);
  };
  const auto C = Status::Code::kCorruption, I = Status::Code::kInvalidArgument;
  ASSERT_OK(load(good));

  WriteAll(path, "{\"model\": {\"type\": \"BPE\",");
  ExpectRefused(BpeTokenizer::Load(path), C, {path, "not valid JSON"});
  Json wordpiece = good;
  wordpiece["model"] = {{"type", "WordPiece"}, {"unk_token", "[UNK]"}, {"vocab", {{"[UNK]", 0}, {"a", 1}}}};
  ExpectRefused(load(wordpiece), I, {path, "model.type is \"WordPiece\""});
  Json unigram = good;
  unigram["model"] = {{"type", "Unigram"}, {"unk_id", 0}, {"vocab", Json::array({Json::array({"<unk>", 0.0})})}};
  ExpectRefused(load(unigram), I, {path, "model.type is \"Unigram\""});
  Json no_model = good;
  no_model.erase("model");
  ExpectRefused(load(no_model), C, {path, "no \"model\""});
  Json bad_merge = good;
  bad_merge["model"]["merges"][2] = 7;
  ExpectRefused(load(bad_merge), C, {path, "model.merges[2]", "neither"});
  Json bad_string = good;
  bad_string["model"]["merges"][1] = "h e x";
  ExpectRefused(load(bad_string), C, {path, "model.merges[1]", "not two symbols"});
  Json unknown_part = good;
  unknown_part["model"]["merges"][4] = Json::array({"a", "zz"});
  ExpectRefused(load(unknown_part), C, {path, "model.merges[4]", "\"zz\" is not in the vocabulary"});
  Json dup_id = good;
  dup_id["model"]["vocab"]["zzz"] = 7;
  ExpectRefused(load(dup_id), C, {path, "model.vocab", "duplicate id 7"});
  Json prefix = good;
  prefix["pre_tokenizer"]["add_prefix_space"] = true;
  ExpectRefused(load(prefix), I, {path, "pre_tokenizer"});
  Json no_pre = good;
  no_pre["pre_tokenizer"] = nullptr;
  ExpectRefused(load(no_pre), I, {path, "pre_tokenizer"});
  Json normalizer = good;
  normalizer["normalizer"] = {{"type", "NFC"}};
  ExpectRefused(load(normalizer), I, {path, "normalizer"});
  Json suffix = good;
  suffix["model"]["end_of_word_suffix"] = "</w>";
  ExpectRefused(load(suffix), I, {path, "model.end_of_word_suffix"});
  Json dropout = good;
  dropout["model"]["dropout"] = 0.1;
  ExpectRefused(load(dropout), I, {path, "model.dropout"});
  Json added = good;
  added["added_tokens"] = Json::array({{{"id", 1}, {"content", "<s>"}, {"special", true}}});
  ExpectRefused(load(added), C, {path, "added_tokens[0]", "\"<s>\" has id 1"});
  Json added_outside = good;
  added_outside["added_tokens"] = Json::array({{{"id", 9999}, {"content", "<extra>"}, {"special", true}}});
  ExpectRefused(load(added_outside), I, {path, "added_tokens[0]", "\"<extra>\" is not in model.vocab"});
}

std::string Python() { return ::access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3"; }

// The C++ tokenizer and tests/bpe_reference.py give the same ids for every caption of
// tests/fixtures/bpe_captions.txt, pairs of captions joined by a newline, and random texts.
TEST(BpeTokenizer, MatchesTheReferenceImplementation) {
  const std::string python = Python();
  const auto probe = flap::testing::RunCommand(python + " -c 'import regex' 2>&1");
  if (probe.exit_code != 0) {
    GTEST_SKIP() << python << " with the regex module (Debian: python3-regex) is needed: " << probe.output;
  }
  ScratchDir dir;
  const std::string script = std::string(FLAP_TESTS_DIR) + "/bpe_reference.py";
  const std::string corpus = std::string(FLAP_TESTS_DIR) + "/fixtures/bpe_captions.txt";
  const auto run = flap::testing::RunCommand(python + " " + script + " --corpus " + corpus +
                                             " --merges 400 --max-length 16 --out " + dir.path() + " 2>&1");
  ASSERT_EQ(run.exit_code, 0) << run.output;

  ASSERT_OK_AND_ASSIGN(BpeTokenizer files, BpeTokenizer::Load(dir.path()));
  ASSERT_OK_AND_ASSIGN(BpeTokenizer hf, BpeTokenizer::Load(dir.File("tokenizer.json")));
  EXPECT_EQ(hf.identity(), files.identity());
  EXPECT_EQ(hf.vocab_size(), files.vocab_size());
  const Json cases = Json::parse(ReadAll(dir.File("cases.json")));
  ASSERT_EQ(cases["merges"].get<int>(), 400) << "the corpus trains fewer merges than asked";
  EXPECT_EQ(files.merges_size(), 400);
  const int max_length = cases["max_length"].get<int>();
  const Json& list = cases["cases"];
  ASSERT_GT(list.size(), 4000u);

  int mismatches = 0;
  size_t merged_ids = 0, truncated = 0;
  for (const Json& c : list) {
    const std::string text = c["text"].get<std::string>();
    const auto want = c["ids"].get<std::vector<int>>();
    const auto want_truncated = c["ids_truncated"].get<std::vector<int>>();
    ASSERT_OK_AND_ASSIGN(auto got, files.Encode(text));
    ASSERT_OK_AND_ASSIGN(auto got_truncated, files.Encode(text, max_length));
    ASSERT_OK_AND_ASSIGN(auto got_hf, hf.Encode(text));
    const auto want_pieces = c["pieces"].get<std::vector<std::string>>();
    ASSERT_OK_AND_ASSIGN(auto got_pieces, files.PreTokenize(text));
    if ((got_pieces != want_pieces || got != want || got_truncated != want_truncated || got_hf != want) &&
        ++mismatches <= 5) {
      ADD_FAILURE() << "text " << Json(text).dump() << "\n  reference pieces " << Json(want_pieces).dump()
                    << "\n  C++ pieces       " << Json(got_pieces).dump() << "\n  reference " << Json(want).dump()
                    << "\n  C++       " << Json(got).dump() << "\n  truncated reference " << Json(want_truncated).dump()
                    << " C++ " << Json(got_truncated).dump();
    }
    ASSERT_OK_AND_ASSIGN(std::string back, files.Decode(got));
    EXPECT_EQ(back, text);
    for (int id : got) merged_ids += id > 259 && id != files.mask_id();
    truncated += want.size() > static_cast<size_t>(max_length);
  }
  EXPECT_EQ(mismatches, 0) << "of " << list.size() << " texts";
  // The comparison covers merges and truncation, not only single bytes.
  EXPECT_GT(merged_ids, list.size());
  EXPECT_GT(truncated, list.size() / 10);
}

// Many threads encoding at once (a fresh cache filling up meanwhile) get what one thread gets.
TEST(BpeTokenizer, EncodeFromManyThreads) {
  const std::string corpus = ReadAll(std::string(FLAP_TESTS_DIR) + "/fixtures/bpe_captions.txt");
  std::vector<std::string> texts;
  for (size_t pos = 0; pos < corpus.size();) {
    size_t end = corpus.find('\n', pos);
    if (end == std::string::npos) end = corpus.size();
    texts.push_back(corpus.substr(pos, end - pos));
    pos = end + 1;
  }
  ASSERT_GT(texts.size(), 3000u);
  ScratchDir dir;
  std::vector<std::pair<std::string, std::string>> merges = kMerges;
  std::vector<std::string> extra = kExtra;
  for (const auto& [a, b] : std::vector<std::pair<std::string, std::string>>{
           {"e", "s"}, {"i", "n"}, {"o", "u"}, {"in", "g"}, {G, "a"}, {G, "b"}}) {
    merges.emplace_back(a, b);
    extra.push_back(a + b);
  }
  ASSERT_OK_AND_ASSIGN(BpeTokenizer serial, LoadTiny(dir, TinyVocab(extra), merges));
  std::vector<std::vector<int>> want;
  for (const auto& t : texts) want.push_back(*serial.Encode(t));
  ASSERT_OK_AND_ASSIGN(BpeTokenizer shared, BpeTokenizer::Load(dir.path()));
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = 0; i < texts.size(); ++i) {
        const size_t k = (i * 7 + static_cast<size_t>(t) * 389) % texts.size();
        auto ids = shared.Encode(texts[k]);
        if (!ids.ok() || *ids != want[k]) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_GT(shared.cache_size(), 100u);
  EXPECT_LE(shared.cache_size(), BpeTokenizer::kCacheCapacity);
}

}  // namespace
}  // namespace flap::sharding
