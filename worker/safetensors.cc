#include "worker/safetensors.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <system_error>
#include <vector>
#include <filesystem>

#include "common/atomic_file.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the safetensors reader copies little-endian values as they are: a little-endian host is required"
#endif

namespace flap::worker {
namespace {

// Header length limit of the reference implementation.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct Dtype {
  const char* name;
  int64_t bytes;
  bool supported;
  at::ScalarType type;  // meaningful when supported
};

// Every dtype of the format; the F8 types and unsigned types wider than a byte are recognised
// (so their byte counts are checked) but not converted.
const std::vector<Dtype>& Dtypes() {
  static const std::vector<Dtype> dtypes = {
      {"F64", 8, true, at::kDouble},    {"F32", 4, true, at::kFloat},      {"F16", 2, true, at::kHalf},
      {"BF16", 2, true, at::kBFloat16}, {"I64", 8, true, at::kLong},       {"I32", 4, true, at::kInt},
      {"I16", 2, true, at::kShort},     {"I8", 1, true, at::kChar},        {"U8", 1, true, at::kByte},
      {"BOOL", 1, true, at::kByte},     {"U16", 2, false, at::kFloat},     {"U32", 4, false, at::kFloat},
      {"U64", 8, false, at::kFloat},    {"F8_E4M3", 1, false, at::kFloat}, {"F8_E5M2", 1, false, at::kFloat},
  };
  return dtypes;
}

const Dtype* FindDtype(const std::string& name) {
  for (const Dtype& d : Dtypes()) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

std::string SupportedList() {
  std::string s;
  for (const Dtype& d : Dtypes()) {
    if (!d.supported) continue;
    if (!s.empty()) s += ", ";
    s += d.name;
  }
  return s;
}

struct Entry {
  std::string name;
  const Dtype* dtype = nullptr;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

struct Header {
  std::vector<Entry> entries;
  std::map<std::string, std::string> metadata;
};

// "safetensors file '<file>': <what>", as Corruption.
Status BadFile(const std::string& file, const std::string& what) {
  return Status::Corruption("safetensors file '" + file + "': " + what);
}

// The header's JSON object, refusing a key listed twice (JSON parsers keep the last).
StatusOr<nlohmann::json> ParseHeaderJson(const std::string& text, const std::string& file) {
  if (text.empty() || text[0] != '{') return BadFile(file, "the header does not start with a JSON object");
  std::set<std::string> seen;
  std::string duplicate;
  nlohmann::json::parser_callback_t on_event = [&](int depth, nlohmann::json::parse_event_t event,
                                                   nlohmann::json& parsed) {
    if (event == nlohmann::json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text, on_event);
  } catch (const nlohmann::json::exception& e) {
    return BadFile(file, std::string("the header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) return BadFile(file, "the header is not a JSON object");
  if (!duplicate.empty()) return BadFile(file, "tensor '" + duplicate + "' is listed twice in the header");
  return header;
}

// One tensor's entry, checked: a known dtype, a shape of non-negative integers, data offsets
// inside the buffer that hold exactly the shape's bytes.
StatusOr<Entry> ParseEntry(const std::string& name, const nlohmann::json& v, uint64_t buffer_bytes,
                           const std::string& file) {
  auto bad_tensor = [&](const std::string& what) { return BadFile(file, "tensor '" + name + "': " + what); };
  if (!v.is_object()) return bad_tensor("its entry is not an object");
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!v.contains(field)) return bad_tensor(std::string("no \"") + field + "\"");
  }
  Entry e;
  e.name = name;
  if (!v["dtype"].is_string()) return bad_tensor("\"dtype\" is not a string");
  const std::string dtype = v["dtype"].get<std::string>();
  e.dtype = FindDtype(dtype);
  if (e.dtype == nullptr) return bad_tensor("unknown dtype '" + dtype + "' (readable: " + SupportedList() + ")");
  if (!v["shape"].is_array()) return bad_tensor("\"shape\" is not an array");
  // Element count, guarded against overflow: the byte count must fit in the buffer anyway.
  uint64_t numel = 1;
  bool overflow = false;
  for (const auto& d : v["shape"]) {
    if (!d.is_number_unsigned()) return bad_tensor("\"shape\" holds " + d.dump() + ", not a non-negative integer");
    const uint64_t n = d.get<uint64_t>();
    if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      overflow = true;
    else if (n != 0 && numel > std::numeric_limits<uint64_t>::max() / n)
      overflow = true;
    else
      numel *= n;
    e.shape.push_back(overflow ? 0 : static_cast<int64_t>(n));
  }
  const auto& offsets = v["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    return bad_tensor("\"data_offsets\" is " + offsets.dump() + ", not [begin, end] in bytes");
  }
  e.begin = offsets[0].get<uint64_t>();
  e.end = offsets[1].get<uint64_t>();
  if (e.begin > e.end) {
    return bad_tensor("data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                      "] end before they begin");
  }
  if (e.end > buffer_bytes) {
    return bad_tensor("data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                      "] reach past the end of the " + std::to_string(buffer_bytes) + "-byte data buffer");
  }
  const uint64_t bytes = static_cast<uint64_t>(e.dtype->bytes);
  if (overflow || numel > std::numeric_limits<uint64_t>::max() / bytes || numel * bytes != e.end - e.begin) {
    return bad_tensor("shape " + v["shape"].dump() + " of " + dtype + " does not take the " +
                      std::to_string(e.end - e.begin) + " bytes of its data_offsets");
  }
  return e;
}

// The buffer must be indexed entirely, without overlaps or holes.
Status CheckCoverage(const std::vector<Entry>& entries, uint64_t buffer_bytes, const std::string& file) {
  std::vector<const Entry*> order;
  for (const Entry& e : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t pos = 0;
  const Entry* previous = nullptr;
  for (const Entry* e : order) {
    if (e->begin < pos) {
      return BadFile(file, "tensor '" + e->name + "' (bytes " + std::to_string(e->begin) + ".." +
                               std::to_string(e->end) + ") overlaps tensor '" + previous->name + "' (bytes " +
                               std::to_string(previous->begin) + ".." + std::to_string(previous->end) + ")");
    }
    if (e->begin > pos) {
      return BadFile(file, "bytes " + std::to_string(pos) + ".." + std::to_string(e->begin) +
                               " of the data buffer, before tensor '" + e->name + "', belong to no tensor");
    }
    pos = e->end;
    previous = e;
  }
  if (pos != buffer_bytes) {
    return BadFile(file, "bytes " + std::to_string(pos) + ".." + std::to_string(buffer_bytes) +
                             " at the end of the data buffer belong to no tensor");
  }
  return Status::OK();
}

// Parses and checks the JSON header against a byte buffer of `buffer_bytes`.
StatusOr<Header> ParseHeader(const std::string& text, uint64_t buffer_bytes, const std::string& file) {
  FLAP_ASSIGN_OR_RETURN(const nlohmann::json header, ParseHeaderJson(text, file));
  Header out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return BadFile(file, "\"__metadata__\" is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) return BadFile(file, "\"__metadata__\" entry '" + m.key() + "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    FLAP_ASSIGN_OR_RETURN(Entry e, ParseEntry(name, v, buffer_bytes, file));
    out.entries.push_back(std::move(e));
  }
  FLAP_RETURN_IF_ERROR(CheckCoverage(out.entries, buffer_bytes, file));
  return out;
}

// Converts one checked entry whose bytes start at `data`.
StatusOr<at::Tensor> ToTensor(const Entry& e, const char* data, const std::string& file) {
  if (!e.dtype->supported) {
    return Status::InvalidArgument("safetensors file '" + file + "': tensor '" + e.name + "': dtype '" + e.dtype->name +
                                   "' is not supported (readable: " + SupportedList() + ")");
  }
  at::Tensor raw = at::empty(e.shape, at::TensorOptions().dtype(e.dtype->type));
  if (e.end > e.begin) std::memcpy(raw.data_ptr(), data, static_cast<size_t>(e.end - e.begin));
  if (std::string(e.dtype->name) == "BOOL") raw = raw.ne(0);
  return raw.to(at::kFloat).contiguous();
}

StatusOr<SafetensorsContents> Materialise(const Header& header, const char* buffer, const std::string& file) {
  SafetensorsContents out;
  out.metadata = header.metadata;
  for (const Entry& e : header.entries) {
    FLAP_ASSIGN_OR_RETURN(at::Tensor t, ToTensor(e, buffer + e.begin, file));
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

uint64_t ReadLe64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// Checks the 8-byte prefix of a file of `total` bytes; returns the header length.
StatusOr<uint64_t> HeaderLength(const char* prefix, uint64_t total, const std::string& file) {
  if (total < 8) {
    return Status::Corruption("safetensors file '" + file + "': " + std::to_string(total) +
                              " bytes, too short for the 8-byte header length");
  }
  const uint64_t n = ReadLe64(prefix);
  if (n > kMaxHeaderBytes) {
    return Status::Corruption("safetensors file '" + file + "': header length " + std::to_string(n) +
                              " is over the format's limit of " + std::to_string(kMaxHeaderBytes) + " bytes");
  }
  if (n > total - 8) {
    return Status::Corruption("safetensors file '" + file + "': header length " + std::to_string(n) +
                              " reaches past the end of the file (" + std::to_string(total) + " bytes; truncated?)");
  }
  return n;
}

std::string DtypeName(at::ScalarType t) {
  switch (t) {
    case at::kDouble:
      return "F64";
    case at::kFloat:
      return "F32";
    case at::kHalf:
      return "F16";
    case at::kBFloat16:
      return "BF16";
    default:
      return "";
  }
}

}  // namespace

StatusOr<SafetensorsContents> ParseSafetensors(const std::string& bytes, const std::string& name) {
  FLAP_ASSIGN_OR_RETURN(const uint64_t n, HeaderLength(bytes.data(), bytes.size(), name));
  const uint64_t buffer_bytes = bytes.size() - 8 - n;
  FLAP_ASSIGN_OR_RETURN(Header header, ParseHeader(bytes.substr(8, n), buffer_bytes, name));
  return Materialise(header, bytes.data() + 8 + n, name);
}

namespace {

// Opens `path` and reads and checks its header against the file's size; *in is left at the
// start of the data buffer, *buffer_bytes its length.
StatusOr<Header> OpenAndReadHeader(const std::string& path, std::ifstream* in, uint64_t* buffer_bytes) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return Status::NotFound("safetensors file '" + path + "' does not exist");
  const uintmax_t total = std::filesystem::file_size(path, ec);
  if (ec) return Status::IOError("safetensors file '" + path + "': cannot read its size: " + ec.message());
  in->open(path, std::ios::binary);
  if (!*in) return Status::IOError("safetensors file '" + path + "' cannot be opened: " + std::strerror(errno));
  auto read = [&](char* dst, uint64_t count) {
    in->read(dst, static_cast<std::streamsize>(count));
    return static_cast<uint64_t>(in->gcount()) == count;
  };
  char prefix[8] = {};
  if (total >= 8 && !read(prefix, 8)) return Status::IOError("safetensors file '" + path + "': read failed");
  FLAP_ASSIGN_OR_RETURN(const uint64_t n, HeaderLength(prefix, total, path));
  std::string text(n, '\0');
  if (!read(text.data(), n)) return Status::IOError("safetensors file '" + path + "': read of the header failed");
  *buffer_bytes = total - 8 - n;
  // Everything is checked against the file's size before the buffer is read.
  return ParseHeader(text, *buffer_bytes, path);
}

}  // namespace

StatusOr<SafetensorsIndex> ReadSafetensorsIndex(const std::string& path) {
  std::ifstream in;
  uint64_t buffer_bytes = 0;
  FLAP_ASSIGN_OR_RETURN(Header header, OpenAndReadHeader(path, &in, &buffer_bytes));
  SafetensorsIndex index;
  index.metadata = std::move(header.metadata);
  for (const Entry& e : header.entries) index.tensors[e.name] = {e.dtype->name, e.shape};
  return index;
}

StatusOr<SafetensorsContents> ReadSafetensorsWithMetadata(const std::string& path) {
  std::ifstream in;
  uint64_t buffer_bytes = 0;
  FLAP_ASSIGN_OR_RETURN(Header header, OpenAndReadHeader(path, &in, &buffer_bytes));
  std::string buffer(buffer_bytes, '\0');
  in.read(buffer.data(), static_cast<std::streamsize>(buffer_bytes));
  if (static_cast<uint64_t>(in.gcount()) != buffer_bytes) {
    return Status::IOError("safetensors file '" + path +
                           "': read of the data buffer failed (file changed while read?)");
  }
  return Materialise(header, buffer.data(), path);
}

StatusOr<std::map<std::string, at::Tensor>> ReadSafetensors(const std::string& path) {
  FLAP_ASSIGN_OR_RETURN(SafetensorsContents contents, ReadSafetensorsWithMetadata(path));
  return std::move(contents.tensors);
}

std::string ShapeText(at::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

StatusOr<std::string> EncodeSafetensors(const std::map<std::string, at::Tensor>& tensors,
                                        const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string buffer;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") return Status::InvalidArgument("a tensor cannot be named \"__metadata__\"");
    const std::string dtype = DtypeName(tensor.scalar_type());
    if (dtype.empty()) {
      return Status::InvalidArgument("tensor '" + name + "': only F64, F32, F16 and BF16 tensors are written, not " +
                                     std::string(c10::toString(tensor.scalar_type())));
    }
    at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    const uint64_t begin = buffer.size();
    if (t.numel() > 0) {
      buffer.append(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel() * t.element_size()));
    }
    header[name] = {{"dtype", dtype}, {"shape", t.sizes().vec()}, {"data_offsets", {begin, buffer.size()}}};
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the buffer starts 8-byte aligned
  std::string out(8, '\0');
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += text;
  out += buffer;
  return out;
}

Status WriteSafetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  FLAP_ASSIGN_OR_RETURN(std::string bytes, EncodeSafetensors(tensors, metadata));
  return flap::WriteFileAtomic(path, bytes);
}

}  // namespace flap::worker
