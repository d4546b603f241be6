// Implementation of sharding/manifest.h (nlohmann::json without exceptions, libxxhash).
#include "sharding/manifest.h"

#include <sstream>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <set>

#include "common/file_util.h"

namespace flap::sharding {
namespace {

bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

bool IsHex16(const std::string& s) {
  if (s.size() != 16) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// Field readers: each returns an empty string on success, else what is wrong with `field`.
std::string GetString(const nlohmann::json& j, const char* field, const std::string& where, std::string* out) {
  auto it = j.find(field);
  if (it == j.end()) return where + field + " is missing";
  if (!it->is_string()) return where + field + " is not a string";
  *out = it->get<std::string>();
  return "";
}

std::string GetInt(const nlohmann::json& j, const char* field, const std::string& where, int64_t* out) {
  auto it = j.find(field);
  if (it == j.end()) return where + field + " is missing";
  if (!it->is_number_integer()) return where + field + " is not an integer";
  *out = it->get<int64_t>();
  return "";
}

std::string CheckManifest(const Manifest& m) {
  if (m.format_version != kManifestFormatVersion) {
    return "format_version " + std::to_string(m.format_version) + " is not supported (expected " +
           std::to_string(kManifestFormatVersion) + ")";
  }
  if (m.sample_rate <= 0) return "sample_rate must be positive";
  if (!IsPlainFileName(m.tokenizer)) return "tokenizer '" + m.tokenizer + "' is not a file name";
  std::set<std::string> names;
  for (size_t i = 0; i < m.shards.size(); ++i) {
    const ShardInfo& s = m.shards[i];
    const std::string where = "shards[" + std::to_string(i) + "].";
    if (!IsPlainFileName(s.name)) return where + "name '" + s.name + "' is not a file name";
    if (!names.insert(s.name).second) return where + "name '" + s.name + "' appears twice";
    if (s.split.empty()) return where + "split is empty";
    if (s.num_samples < 0) return where + "num_samples is negative";
    if (s.bytes < 0) return where + "bytes is negative";
    if (!IsHex16(s.xxh64)) return where + "xxh64 '" + s.xxh64 + "' is not 16 lowercase hex digits";
  }
  if (!m.provenance.is_object()) return "provenance is not an object";
  return "";
}

}  // namespace

std::vector<ShardInfo> Manifest::ShardsOf(const std::string& split) const {
  std::vector<ShardInfo> out;
  for (const ShardInfo& s : shards) {
    if (s.split == split) out.push_back(s);
  }
  return out;
}

int64_t Manifest::NumSamples(const std::string& split) const {
  int64_t n = 0;
  for (const ShardInfo& s : shards) {
    if (s.split == split) n += s.num_samples;
  }
  return n;
}

std::vector<std::string> Manifest::Splits() const {
  std::vector<std::string> out;
  for (const ShardInfo& s : shards) {
    bool seen = false;
    for (const std::string& x : out) seen = seen || x == s.split;
    if (!seen) out.push_back(s.split);
  }
  return out;
}

std::string Manifest::ResolveSplit(const std::string& split) const {
  if (!ShardsOf(split).empty()) return split;
  if (split == kValSplit && !ShardsOf(kLegacyEvalSplit).empty()) return kLegacyEvalSplit;
  return "";
}

nlohmann::json ManifestToJson(const Manifest& m) {
  nlohmann::json j = nlohmann::json::object();
  j["format_version"] = m.format_version;
  j["name"] = m.name;
  j["sample_rate"] = m.sample_rate;
  j["tokenizer"] = m.tokenizer;
  nlohmann::json shards = nlohmann::json::array();
  for (const ShardInfo& s : m.shards) {
    shards.push_back(
        {{"name", s.name}, {"split", s.split}, {"num_samples", s.num_samples}, {"bytes", s.bytes}, {"xxh64", s.xxh64}});
  }
  j["shards"] = std::move(shards);
  j["provenance"] = m.provenance;
  if (!m.augment.is_null()) j["augment"] = m.augment;
  return j;
}

StatusOr<Manifest> ManifestFromJson(const nlohmann::json& j, const std::string& what) {
  auto bad = [&what](const std::string& problem) { return Status::Corruption(what + ": " + problem); };
  if (!j.is_object()) return bad("not a JSON object");
  Manifest m;
  int64_t v = 0;
  std::string problem;
  if (!(problem = GetInt(j, "format_version", "", &v)).empty()) return bad(problem);
  m.format_version = static_cast<int>(v);
  if (m.format_version != kManifestFormatVersion) {
    return bad("format_version " + std::to_string(v) + " is not supported (expected " +
               std::to_string(kManifestFormatVersion) + ")");
  }
  if (!(problem = GetString(j, "name", "", &m.name)).empty()) return bad(problem);
  if (!(problem = GetInt(j, "sample_rate", "", &v)).empty()) return bad(problem);
  m.sample_rate = static_cast<int>(v);
  if (!(problem = GetString(j, "tokenizer", "", &m.tokenizer)).empty()) return bad(problem);
  auto shards = j.find("shards");
  if (shards == j.end()) return bad("shards is missing");
  if (!shards->is_array()) return bad("shards is not a list");
  for (size_t i = 0; i < shards->size(); ++i) {
    const nlohmann::json& e = (*shards)[i];
    const std::string where = "shards[" + std::to_string(i) + "].";
    if (!e.is_object()) return bad("shards[" + std::to_string(i) + "] is not an object");
    ShardInfo s;
    if (!(problem = GetString(e, "name", where, &s.name)).empty()) return bad(problem);
    if (!(problem = GetString(e, "split", where, &s.split)).empty()) return bad(problem);
    if (!(problem = GetInt(e, "num_samples", where, &s.num_samples)).empty()) return bad(problem);
    if (!(problem = GetInt(e, "bytes", where, &s.bytes)).empty()) return bad(problem);
    if (!(problem = GetString(e, "xxh64", where, &s.xxh64)).empty()) return bad(problem);
    m.shards.push_back(std::move(s));
  }
  auto prov = j.find("provenance");
  if (prov != j.end()) m.provenance = *prov;
  auto aug = j.find("augment");
  if (aug != j.end()) {
    if (!aug->is_object()) return Status::Corruption(what + ": field 'augment' is not an object");
    m.augment = *aug;
  }
  if (!(problem = CheckManifest(m)).empty()) return bad(problem);
  return m;
}

StatusOr<Manifest> ReadManifest(const std::string& dataset_dir) {
  const std::string path = JoinPath(dataset_dir, kManifestFileName);
  StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) {
    if (text.status().code() == Status::Code::kNotFound) {
      return Status::NotFound(path + ": no manifest (is " + dataset_dir + " a dataset folder?)");
    }
    return text.status();
  }
  nlohmann::json j = nlohmann::json::parse(text.value(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::Corruption(path + ": not valid JSON");
  return ManifestFromJson(j, path);
}

Status WriteManifest(const std::string& dataset_dir, const Manifest& m) {
  const std::string path = JoinPath(dataset_dir, kManifestFileName);
  std::string problem = CheckManifest(m);
  if (!problem.empty()) return Status::InvalidArgument(path + ": " + problem);
  std::string text = ManifestToJson(m).dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  return WriteFileAtomic(path, text);
}

StatusOr<std::string> FileXxh64(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return Status::NotFound(path + ": no such file");
    return Status::IOError(path + ": cannot open: " + ErrnoMessage(err));
  }
  XXH64_state_t* state = XXH64_createState();
  XXH64_reset(state, 0);
  std::vector<char> buf(1 << 20);
  while (true) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      XXH64_freeState(state);
      ::close(fd);
      return Status::IOError(path + ": read failed: " + ErrnoMessage(err));
    }
    if (n == 0) break;
    XXH64_update(state, buf.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  unsigned long long digest = XXH64_digest(state);
  XXH64_freeState(state);
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", digest);
  return std::string(hex);
}

Status VerifyShard(const std::string& dataset_dir, const ShardInfo& info) {
  const std::string path = JoinPath(dataset_dir, info.name);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    int err = errno;
    if (err == ENOENT) return Status::NotFound(path + ": shard listed in the manifest is missing");
    return Status::IOError(path + ": cannot stat shard: " + ErrnoMessage(err));
  }
  if (static_cast<int64_t>(st.st_size) != info.bytes) {
    return Status::Corruption(path + ": shard has " + std::to_string(st.st_size) + " bytes, the manifest says " +
                              std::to_string(info.bytes));
  }
  FLAP_ASSIGN_OR_RETURN(std::string digest, FileXxh64(path));
  if (digest != info.xxh64) {
    return Status::Corruption(path + ": shard checksum xxh64 " + digest + " does not match the manifest's " +
                              info.xxh64);
  }
  return Status::OK();
}

StatusOr<ShardInfo> DescribeShard(const std::string& path, const std::string& split, int64_t num_samples) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    int err = errno;
    if (err == ENOENT) return Status::NotFound(path + ": no such shard");
    return Status::IOError(path + ": cannot stat shard: " + ErrnoMessage(err));
  }
  ShardInfo info;
  info.name = std::filesystem::path(path).filename().string();
  info.split = split;
  info.num_samples = num_samples;
  info.bytes = static_cast<int64_t>(st.st_size);
  FLAP_ASSIGN_OR_RETURN(info.xxh64, FileXxh64(path));
  return info;
}

StatusOr<std::map<std::string, std::vector<std::string>>> ReadAugmentFile(const std::string& dataset_dir,
                                                                          const Manifest& manifest) {
  std::map<std::string, std::vector<std::string>> out;
  if (!manifest.augment.is_object() || !manifest.augment.contains("file")) return out;
  if (!manifest.augment["file"].is_string()) return Status::Corruption("manifest: augment.file is not a string");
  const std::string path = JoinPath(dataset_dir, manifest.augment["file"].get<std::string>());
  FLAP_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  std::istringstream in(text);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("key") || !j["key"].is_string() ||
        !j.contains("text_augment") || !j["text_augment"].is_array()) {
      return Status::Corruption(path + ":" + std::to_string(n) +
                                ": expected {\"key\": string, \"text_augment\": [strings]}");
    }
    std::vector<std::string> texts;
    for (const auto& t : j["text_augment"]) {
      if (!t.is_string() || t.get<std::string>().empty()) {
        return Status::Corruption(path + ":" + std::to_string(n) + ": an augmented caption is not a non-empty string");
      }
      texts.push_back(t.get<std::string>());
    }
    out[j["key"].get<std::string>()] = std::move(texts);
  }
  return out;
}

}  // namespace flap::sharding
