// Implementation of sharding/bpe_tokenizer.h.
#include "sharding/bpe_tokenizer.h"

#include <unicode/regex.h>
#include <unicode/utext.h>
#include <unicode/utf8.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <cinttypes>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <shared_mutex>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "common/file_util.h"

namespace flap::sharding {
namespace {

using Json = nlohmann::json;

constexpr char kPattern[] = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// GPT-2's bytes_to_unicode, both ways.
struct ByteTable {
  std::array<char32_t, 256> to_unicode{};
  std::array<std::string, 256> utf8;  // to_unicode as UTF-8
  std::unordered_map<char32_t, uint8_t> to_byte;

  ByteTable() {
    std::array<bool, 256> printable{};
    for (int b = '!'; b <= '~'; ++b) printable[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) to_unicode[b] = printable[b] ? static_cast<char32_t>(b) : next++;
    for (int b = 0; b < 256; ++b) {
      char buf[4];
      int32_t len = 0;
      U8_APPEND_UNSAFE(buf, len, static_cast<UChar32>(to_unicode[b]));
      utf8[b].assign(buf, len);
      to_byte[to_unicode[b]] = static_cast<uint8_t>(b);
    }
  }
};

const ByteTable& Bytes() {
  static const ByteTable table;
  return table;
}

// The compiled pre-tokenisation expression, shared by every tokenizer (ICU's RegexPattern is
// immutable and may make matchers from many threads).
StatusOr<const icu::RegexPattern*> Pattern() {
  static std::once_flag once;
  static std::unique_ptr<icu::RegexPattern> pattern;
  static Status status;
  std::call_once(once, [] {
    UErrorCode err = U_ZERO_ERROR;
    UParseError parse_error;
    pattern.reset(icu::RegexPattern::compile(icu::UnicodeString::fromUTF8(kPattern), 0, parse_error, err));
    if (U_FAILURE(err)) {
      pattern.reset();
      status = Status::Internal(std::string("ICU cannot compile the pre-tokenisation expression: ") + u_errorName(err));
    }
  });
  if (!status.ok()) return status;
  return static_cast<const icu::RegexPattern*>(pattern.get());
}

// Offset of the first byte of `text` that does not begin a valid UTF-8 sequence, or -1.
int64_t InvalidUtf8Offset(const std::string& text) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const int64_t n = static_cast<int64_t>(text.size());
  int64_t i = 0;
  while (i < n) {
    const int64_t start = i;
    UChar32 c;
    U8_NEXT(s, i, n, c);
    if (c < 0) return start;
  }
  return -1;
}

std::string Quote(const std::string& s) { return Json(s).dump(-1, ' ', false, Json::error_handler_t::replace); }

// Parses JSON, refusing duplicate keys in any object.
StatusOr<Json> ParseJson(const std::string& path, const std::string& text) {
  struct Frame {
    std::unordered_set<std::string> keys;
    std::string last_key;
  };
  std::vector<Frame> frames;
  std::string duplicate;
  auto callback = [&](int /*depth*/, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        frames.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!frames.empty()) frames.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!frames.empty() && duplicate.empty()) {
          const std::string key = parsed.get<std::string>();
          if (!frames.back().keys.insert(key).second) {
            duplicate = "duplicate key " + Quote(key);
            if (frames.size() >= 2) duplicate += " in " + Quote(frames[frames.size() - 2].last_key);
          }
          frames.back().last_key = key;
        }
        break;
      default:
        break;
    }
    return true;
  };
  Json json;
  try {
    json = Json::parse(text, callback);
  } catch (const Json::exception& e) {
    std::string what = e.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 2: ..." without the tag.
    if (const size_t at = what.find("] "); what.rfind("[json.exception", 0) == 0 && at != std::string::npos) {
      what = what.substr(at + 2);
    }
    return Status::Corruption(path + ": not valid JSON: " + what);
  }
  if (!duplicate.empty()) return Status::Corruption(path + ": " + duplicate);
  return json;
}

// What Load reads, before it is checked and indexed.
struct Source {
  std::string vocab_file;   // for messages
  std::string vocab_entry;  // e.g. "model.vocab"; "" for a vocab.json
  std::string merges_file;
  const Json* vocab = nullptr;
  // (a, b, where): `where` names the entry ("line 12", "model.merges[11]").
  std::vector<std::tuple<std::string, std::string, std::string>> merges;
};

std::string Hex16(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016" PRIx64, v);
  return buf;
}

}  // namespace

char32_t ByteToUnicode(uint8_t byte) { return Bytes().to_unicode[byte]; }

class BpeTokenizer::Model {
 public:
  std::vector<std::string> tokens;                           // by id
  std::unordered_map<std::string, int> ids;                  // token -> id
  std::unordered_map<uint64_t, std::pair<int, int>> merges;  // (a << 32 | b) -> (rank, result)
  int merges_size = 0;
  std::array<int, 256> byte_ids{};
  std::vector<bool> special;  // by id
  int bos = -1, eos = -1, pad = -1, unk = -1, mask = -1;
  std::string identity;
  const icu::RegexPattern* pattern = nullptr;

  mutable std::shared_mutex cache_mu;
  mutable std::unordered_map<std::string, std::vector<int>> cache;

  static StatusOr<std::shared_ptr<const Model>> Build(const Source& src);

  // Appends the ids of one pre-token (its bytes).
  void Bpe(const std::string& piece, std::vector<int>* out) const;
  Status PreTokenize(const std::string& text, const std::function<void(size_t, size_t)>& each) const;
};

StatusOr<std::shared_ptr<const BpeTokenizer::Model>> BpeTokenizer::Model::Build(const Source& src) {
  auto model = std::make_shared<Model>();
  const std::string vocab_where = src.vocab_file + (src.vocab_entry.empty() ? "" : ": " + src.vocab_entry);
  const Json& vocab = *src.vocab;
  if (!vocab.is_object()) return Status::Corruption(vocab_where + ": the vocabulary is not a JSON object");
  if (vocab.size() > static_cast<size_t>(INT_MAX)) return Status::Corruption(vocab_where + ": too many tokens");
  const int n = static_cast<int>(vocab.size());
  if (n == 0) return Status::Corruption(vocab_where + ": the vocabulary is empty");
  model->tokens.assign(n, std::string());
  std::vector<bool> seen(n, false);
  model->ids.reserve(n);
  // An integer id (checked below), ids beyond int64 clamped (they are refused as a gap anyway).
  auto id_of = [](const Json& value) {
    return value.is_number_unsigned() ? static_cast<int64_t>(std::min<uint64_t>(value.get<uint64_t>(), INT64_MAX))
                                      : value.get<int64_t>();
  };
  for (const auto& [token, value] : vocab.items()) {
    if (!value.is_number_integer()) {
      return Status::Corruption(vocab_where + ": token " + Quote(token) + ": the id " + value.dump() +
                                " is not an integer");
    }
    const int64_t id = id_of(value);
    if (id < 0) {
      return Status::Corruption(vocab_where + ": token " + Quote(token) + ": negative id " + std::to_string(id));
    }
    // n tokens must have the ids 0..n-1: an id >= n means a gap or a repeat, found below.
    if (id >= n) continue;
    if (seen[id]) {
      return Status::Corruption(vocab_where + ": duplicate id " + std::to_string(id) + ": tokens " +
                                Quote(model->tokens[id]) + " and " + Quote(token));
    }
    seen[id] = true;
    model->tokens[id] = token;
    model->ids.emplace(token, static_cast<int>(id));
  }
  if (static_cast<int>(model->ids.size()) != n) {
    // Some ids are >= n: either they repeat each other or some id below n has no token.
    std::unordered_map<int64_t, std::string> high;
    for (const auto& [token, value] : vocab.items()) {
      const int64_t id = id_of(value);
      if (id < n) continue;
      auto [it, inserted] = high.emplace(id, token);
      if (!inserted) {
        return Status::Corruption(vocab_where + ": duplicate id " + std::to_string(id) + ": tokens " +
                                  Quote(it->second) + " and " + Quote(token));
      }
    }
    const int missing = static_cast<int>(std::find(seen.begin(), seen.end(), false) - seen.begin());
    return Status::Corruption(vocab_where + ": ids are not 0.." + std::to_string(n - 1) + " (" + std::to_string(n) +
                              " tokens): no token has id " + std::to_string(missing));
  }

  const ByteTable& bytes = Bytes();
  for (int b = 0; b < 256; ++b) {
    auto it = model->ids.find(bytes.utf8[b]);
    if (it == model->ids.end()) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "0x%02X", b);
      return Status::Corruption(vocab_where + ": the byte symbol " + Quote(bytes.utf8[b]) + " (byte " + hex +
                                ") is not in the vocabulary");
    }
    model->byte_ids[b] = it->second;
  }

  model->special.assign(n, false);
  struct SpecialSlot {
    const char* token;
    int* id;
    bool required;
  };
  for (const SpecialSlot& s : {SpecialSlot{"<s>", &model->bos, true}, SpecialSlot{"</s>", &model->eos, true},
                               SpecialSlot{"<pad>", &model->pad, true}, SpecialSlot{"<unk>", &model->unk, false},
                               SpecialSlot{"<mask>", &model->mask, false}}) {
    auto it = model->ids.find(s.token);
    if (it == model->ids.end()) {
      if (!s.required) continue;
      return Status::Corruption(vocab_where + ": no " + Quote(s.token) +
                                " in the vocabulary (<s>, </s> and <pad> are required)");
    }
    *s.id = it->second;
    model->special[it->second] = true;
  }

  // Merges, and the canonical form of the identity.
  std::string canonical = "flap-bpe-v1\nvocab " + std::to_string(n) + "\n";
  for (const std::string& t : model->tokens) canonical += std::to_string(t.size()) + ":" + t + "\n";
  canonical += "merges " + std::to_string(src.merges.size()) + "\n";
  std::unordered_map<uint64_t, std::string> where_of;  // pair -> entry, for repeats
  model->merges.reserve(src.merges.size());
  int rank = 0;
  for (const auto& [a, b, where] : src.merges) {
    const std::string entry = src.merges_file + ": " + where + ": merge " + Quote(a + " " + b);
    auto ia = model->ids.find(a);
    if (ia == model->ids.end()) return Status::Corruption(entry + ": " + Quote(a) + " is not in the vocabulary");
    auto ib = model->ids.find(b);
    if (ib == model->ids.end()) return Status::Corruption(entry + ": " + Quote(b) + " is not in the vocabulary");
    auto ir = model->ids.find(a + b);
    if (ir == model->ids.end()) {
      return Status::Corruption(entry + ": its result " + Quote(a + b) + " is not in the vocabulary");
    }
    const uint64_t key = (static_cast<uint64_t>(ia->second) << 32) | static_cast<uint32_t>(ib->second);
    auto [it, inserted] = model->merges.emplace(key, std::make_pair(rank, ir->second));
    if (!inserted) return Status::Corruption(entry + " repeats " + where_of[key]);
    where_of.emplace(key, where);
    canonical += std::to_string(a.size()) + ":" + a + " " + std::to_string(b.size()) + ":" + b + "\n";
    ++rank;
  }
  model->merges_size = rank;
  model->identity = Hex16(XXH64(canonical.data(), canonical.size(), 0));
  FLAP_ASSIGN_OR_RETURN(model->pattern, Pattern());
  return std::shared_ptr<const Model>(std::move(model));
}

Status BpeTokenizer::Model::PreTokenize(const std::string& text,
                                        const std::function<void(size_t, size_t)>& each) const {
  if (const int64_t bad = InvalidUtf8Offset(text); bad >= 0) {
    return Status::InvalidArgument("text is not valid UTF-8 (byte offset " + std::to_string(bad) + ")");
  }
  if (text.empty()) return Status::OK();
  UErrorCode err = U_ZERO_ERROR;
  UText* ut = utext_openUTF8(nullptr, text.data(), static_cast<int64_t>(text.size()), &err);
  std::unique_ptr<icu::RegexMatcher> matcher(U_SUCCESS(err) ? pattern->matcher(err) : nullptr);
  if (U_SUCCESS(err)) matcher->reset(ut);
  while (U_SUCCESS(err) && matcher->find(err)) {
    const int64_t start = matcher->start64(err);
    const int64_t end = matcher->end64(err);
    if (U_FAILURE(err)) break;
    each(static_cast<size_t>(start), static_cast<size_t>(end - start));
  }
  matcher.reset();
  utext_close(ut);
  if (U_FAILURE(err)) return Status::Internal(std::string("ICU pre-tokenisation failed: ") + u_errorName(err));
  return Status::OK();
}

void BpeTokenizer::Model::Bpe(const std::string& piece, std::vector<int>* out) const {
  {
    std::shared_lock lock(cache_mu);
    auto it = cache.find(piece);
    if (it != cache.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int> word;
  word.reserve(piece.size());
  for (unsigned char c : piece) word.push_back(byte_ids[c]);
  std::vector<int> merged;
  while (word.size() > 1) {
    // The adjacent pair of lowest rank.
    int best_rank = std::numeric_limits<int>::max();
    int first = -1, second = -1, result = -1;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      auto it = merges.find((static_cast<uint64_t>(word[i]) << 32) | static_cast<uint32_t>(word[i + 1]));
      if (it != merges.end() && it->second.first < best_rank) {
        best_rank = it->second.first;
        first = word[i];
        second = word[i + 1];
        result = it->second.second;
      }
    }
    if (first < 0) break;
    // Every occurrence, left to right.
    merged.clear();
    for (size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
        merged.push_back(result);
        i += 2;
      } else {
        merged.push_back(word[i]);
        ++i;
      }
    }
    word.swap(merged);
  }
  out->insert(out->end(), word.begin(), word.end());
  std::unique_lock lock(cache_mu);
  if (cache.size() < kCacheCapacity) cache.emplace(piece, std::move(word));
}

// --- loading ------------------------------------------------------------------------------------

StatusOr<BpeTokenizer> BpeTokenizer::Load(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return Load(JoinPath(path, "vocab.json"), JoinPath(path, "merges.txt"));
  }
  if (!std::filesystem::exists(path, ec)) {
    return Status::NotFound(path +
                            ": no such file or folder (expected a folder with vocab.json and merges.txt, "
                            "or a tokenizer.json)");
  }
  return LoadTokenizerJson(path);
}

StatusOr<BpeTokenizer> BpeTokenizer::Load(const std::string& vocab_path, const std::string& merges_path) {
  FLAP_ASSIGN_OR_RETURN(const std::string vocab_text, ReadFileToString(vocab_path));
  FLAP_ASSIGN_OR_RETURN(const std::string merges_text, ReadFileToString(merges_path));
  FLAP_ASSIGN_OR_RETURN(const Json vocab, ParseJson(vocab_path, vocab_text));
  Source src;
  src.vocab_file = vocab_path;
  src.merges_file = merges_path;
  src.vocab = &vocab;
  size_t line_no = 0;
  for (size_t pos = 0; pos < merges_text.size();) {
    size_t end = merges_text.find('\n', pos);
    if (end == std::string::npos) end = merges_text.size();
    std::string line = merges_text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line_no == 1 && line.rfind("#version", 0) == 0) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string::npos) {
      return Status::Corruption(merges_path + ": line " + std::to_string(line_no) + ": " + Quote(line) +
                                " is not two symbols separated by one space");
    }
    src.merges.emplace_back(line.substr(0, space), line.substr(space + 1), "line " + std::to_string(line_no));
  }
  FLAP_ASSIGN_OR_RETURN(auto model, Model::Build(src));
  return BpeTokenizer(std::move(model));
}

StatusOr<BpeTokenizer> BpeTokenizer::LoadTokenizerJson(const std::string& path) {
  FLAP_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path));
  FLAP_ASSIGN_OR_RETURN(const Json root, ParseJson(path, text));
  if (!root.is_object()) return Status::Corruption(path + ": not a JSON object");
  auto model_it = root.find("model");
  if (model_it == root.end() || !model_it->is_object()) return Status::Corruption(path + ": no \"model\" object");
  const Json& model = *model_it;
  auto type_it = model.find("type");
  if (type_it != model.end()) {
    if (!type_it->is_string() || type_it->get<std::string>() != "BPE") {
      return Status::InvalidArgument(path + ": model.type is " + type_it->dump() +
                                     ", not \"BPE\" (only byte-level BPE tokenizers are read)");
    }
  } else if (!model.contains("merges")) {
    return Status::InvalidArgument(path + ": model has no \"type\" and no \"merges\": not a BPE model");
  }
  auto is_null_or = [](const Json& obj, const char* key, auto&& ok) {
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() || ok(*it);
  };
  auto unsupported = [&](const std::string& entry, const Json& value, const std::string& why) {
    return Status::InvalidArgument(path + ": " + entry + " " + value.dump() + ": " + why);
  };
  if (!is_null_or(root, "normalizer", [](const Json&) { return false; })) {
    return unsupported("normalizer", root["normalizer"],
                       "a normaliser is not supported (byte-level BPE encodes the text as it is)");
  }
  {
    auto it = root.find("pre_tokenizer");
    const bool ok = it != root.end() && it->is_object() && it->value("type", Json()) == "ByteLevel" &&
                    it->value("add_prefix_space", Json(false)) == false && it->value("use_regex", Json(true)) == true;
    if (!ok) {
      return unsupported("pre_tokenizer", it == root.end() ? Json() : *it,
                         "must be ByteLevel with add_prefix_space false and use_regex true (GPT-2's expression)");
    }
  }
  if (!is_null_or(model, "dropout", [](const Json& v) { return v.is_number() && v.get<double>() == 0.0; })) {
    return unsupported("model.dropout", model["dropout"], "BPE dropout is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (!is_null_or(model, key, [](const Json& v) { return v.is_string() && v.get<std::string>().empty(); })) {
      return unsupported(std::string("model.") + key, model[key], "not supported by byte-level BPE");
    }
  }
  if (!is_null_or(model, "ignore_merges", [](const Json& v) { return v.is_boolean() && !v.get<bool>(); })) {
    return unsupported("model.ignore_merges", model["ignore_merges"], "not supported (every word is merged)");
  }

  auto vocab_it = model.find("vocab");
  if (vocab_it == model.end()) return Status::Corruption(path + ": no model.vocab");
  auto merges_it = model.find("merges");
  if (merges_it == model.end() || !merges_it->is_array())
    return Status::Corruption(path + ": model.merges is not an array");
  Source src;
  src.vocab_file = path;
  src.vocab_entry = "model.vocab";
  src.merges_file = path;
  src.vocab = &*vocab_it;
  for (size_t i = 0; i < merges_it->size(); ++i) {
    const Json& m = (*merges_it)[i];
    const std::string where = "model.merges[" + std::to_string(i) + "]";
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || space == 0 || space + 1 == s.size() ||
          s.find(' ', space + 1) != std::string::npos) {
        return Status::Corruption(path + ": " + where + ": " + Quote(s) + " is not two symbols separated by one space");
      }
      src.merges.emplace_back(s.substr(0, space), s.substr(space + 1), where);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      src.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>(), where);
    } else {
      return Status::Corruption(path + ": " + where + ": " + m.dump() +
                                " is neither an \"a b\" string nor an [\"a\", \"b\"] pair");
    }
  }
  FLAP_ASSIGN_OR_RETURN(auto built, Model::Build(src));
  // Added tokens must be the vocabulary's own.
  if (auto added = root.find("added_tokens"); added != root.end() && !added->is_null()) {
    if (!added->is_array()) return Status::Corruption(path + ": added_tokens is not an array");
    for (size_t i = 0; i < added->size(); ++i) {
      const Json& t = (*added)[i];
      const std::string where = path + ": added_tokens[" + std::to_string(i) + "]";
      if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() || !t.contains("content") ||
          !t["content"].is_string()) {
        return Status::Corruption(where + ": not an object with an integer \"id\" and a string \"content\"");
      }
      const std::string content = t["content"].get<std::string>();
      auto it = built->ids.find(content);
      if (it == built->ids.end()) {
        return Status::InvalidArgument(
            where + ": " + Quote(content) +
            " is not in model.vocab (added tokens outside the vocabulary are not supported)");
      }
      if (t["id"].get<int64_t>() != it->second) {
        return Status::Corruption(where + ": " + Quote(content) + " has id " + t["id"].dump() +
                                  " but model.vocab gives it " + std::to_string(it->second));
      }
    }
  }
  return BpeTokenizer(std::move(built));
}

// --- encoding -----------------------------------------------------------------------------------

StatusOr<std::vector<std::string>> BpeTokenizer::PreTokenize(const std::string& text) const {
  std::vector<std::string> out;
  FLAP_RETURN_IF_ERROR(model_->PreTokenize(text, [&](size_t at, size_t len) { out.push_back(text.substr(at, len)); }));
  return out;
}

StatusOr<std::vector<int>> BpeTokenizer::EncodePieces(const std::string& text) const {
  std::vector<int> ids;
  std::string piece;
  FLAP_RETURN_IF_ERROR(model_->PreTokenize(text, [&](size_t at, size_t len) {
    piece.assign(text, at, len);
    model_->Bpe(piece, &ids);
  }));
  return ids;
}

StatusOr<std::vector<int>> BpeTokenizer::Encode(const std::string& text, int max_length) const {
  if (max_length < 0 || max_length == 1) {
    return Status::InvalidArgument("max_length " + std::to_string(max_length) +
                                   ": must be 0 (no limit) or at least 2 (<s> and </s>)");
  }
  std::vector<int> ids{model_->bos};
  std::string piece;
  FLAP_RETURN_IF_ERROR(model_->PreTokenize(text, [&](size_t at, size_t len) {
    piece.assign(text, at, len);
    model_->Bpe(piece, &ids);
  }));
  if (max_length > 0 && static_cast<int64_t>(ids.size()) + 1 > max_length) ids.resize(max_length - 1);
  ids.push_back(model_->eos);
  return ids;
}

StatusOr<std::string> BpeTokenizer::Decode(const std::vector<int>& ids) const {
  const ByteTable& bytes = Bytes();
  std::string out;
  for (size_t k = 0; k < ids.size(); ++k) {
    const int id = ids[k];
    if (id < 0 || id >= vocab_size()) {
      return Status::InvalidArgument("id " + std::to_string(id) + " (position " + std::to_string(k) +
                                     ") is outside the vocabulary of " + std::to_string(vocab_size()));
    }
    if (model_->special[id]) continue;
    const std::string& token = model_->tokens[id];
    const auto* s = reinterpret_cast<const uint8_t*>(token.data());
    const int32_t n = static_cast<int32_t>(token.size());
    for (int32_t i = 0; i < n;) {
      UChar32 c;
      U8_NEXT(s, i, n, c);
      auto it = c < 0 ? bytes.to_byte.end() : bytes.to_byte.find(static_cast<char32_t>(c));
      if (it == bytes.to_byte.end()) {
        return Status::InvalidArgument("id " + std::to_string(id) + ": token " + Quote(token) +
                                       " holds a character that is no byte symbol");
      }
      out.push_back(static_cast<char>(it->second));
    }
  }
  return out;
}

int BpeTokenizer::vocab_size() const { return static_cast<int>(model_->tokens.size()); }
int BpeTokenizer::merges_size() const { return model_->merges_size; }
const std::string& BpeTokenizer::identity() const { return model_->identity; }
int BpeTokenizer::bos_id() const { return model_->bos; }
int BpeTokenizer::eos_id() const { return model_->eos; }
int BpeTokenizer::pad_id() const { return model_->pad; }
int BpeTokenizer::unk_id() const { return model_->unk; }
int BpeTokenizer::mask_id() const { return model_->mask; }

int BpeTokenizer::TokenToId(const std::string& token) const {
  auto it = model_->ids.find(token);
  return it == model_->ids.end() ? -1 : it->second;
}

std::string BpeTokenizer::IdToToken(int id) const {
  return id >= 0 && id < vocab_size() ? model_->tokens[id] : std::string();
}

size_t BpeTokenizer::cache_size() const {
  std::shared_lock lock(model_->cache_mu);
  return model_->cache.size();
}

}  // namespace flap::sharding
