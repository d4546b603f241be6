#include "worker/npy.h"

#include <cstring>
#include <regex>

#include "common/file_util.h"

namespace flap::worker {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;

}  // namespace

std::string EncodeNpy(const float* values, int64_t rows, int64_t cols) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                       std::to_string(cols) + "), }";
  const size_t prefix = kMagicLen + 2 + 2;
  const size_t total = (prefix + header.size() + 1 + 63) / 64 * 64;  // data aligned to 64 bytes
  header.append(total - prefix - header.size() - 1, ' ');
  header += '\n';
  std::string out(kMagic, kMagicLen);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  const size_t n = static_cast<size_t>(rows * cols);
  const size_t at = out.size();
  out.resize(at + n * sizeof(float));
  // float32 little-endian: the host's layout on every platform LibTorch supports here.
  if (n > 0) std::memcpy(&out[at], values, n * sizeof(float));
  return out;
}

StatusOr<NpyMatrix> ParseNpy(const std::string& bytes, const std::string& name) {
  if (bytes.size() < kMagicLen + 4 || bytes.compare(0, kMagicLen, kMagic, kMagicLen) != 0) {
    return Status::Corruption("'" + name + "' is not a .npy file (no \\x93NUMPY magic)");
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0, prefix = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8);
    prefix = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return Status::Corruption("'" + name + "': truncated .npy header");
    header_len = 0;
    for (int i = 3; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[8 + i]);
    prefix = 12;
  } else {
    return Status::Corruption("'" + name + "': unknown .npy version " + std::to_string(major));
  }
  if (header_len > bytes.size() - prefix) return Status::Corruption("'" + name + "': truncated .npy header");
  const std::string header = bytes.substr(prefix, header_len);
  static const std::regex descr(R"('descr'\s*:\s*'([^']*)')"), fortran(R"('fortran_order'\s*:\s*(True|False))"),
      shape(R"('shape'\s*:\s*\(([^)]*)\))");
  std::smatch m;
  if (!std::regex_search(header, m, descr)) return Status::Corruption("'" + name + "': .npy header has no 'descr'");
  if (m[1] != "<f4") {
    return Status::InvalidArgument("'" + name + "' holds dtype '" + m[1].str() +
                                   "'; embeddings are little-endian float32 ('<f4')");
  }
  if (!std::regex_search(header, m, fortran)) return Status::Corruption("'" + name + "': no 'fortran_order'");
  if (m[1] == "True") return Status::InvalidArgument("'" + name + "' is in Fortran order; expected C order");
  if (!std::regex_search(header, m, shape)) return Status::Corruption("'" + name + "': .npy header has no 'shape'");
  std::vector<int64_t> dims;
  static const std::regex dim(R"(\s*(\d+)\s*)");
  const std::string dims_text = m[1];
  size_t start = 0;
  while (start < dims_text.size()) {
    size_t comma = dims_text.find(',', start);
    if (comma == std::string::npos) comma = dims_text.size();
    const std::string part = dims_text.substr(start, comma - start);
    std::smatch d;
    if (std::regex_match(part, d, dim)) {
      if (d[1].str().size() > 12) return Status::Corruption("'" + name + "': shape out of range");
      dims.push_back(std::stoll(d[1]));
    } else if (part.find_first_not_of(" \t") != std::string::npos) {
      return Status::Corruption("'" + name + "': malformed shape (" + dims_text + ")");
    }
    start = comma + 1;
  }
  if (dims.size() != 2) {
    return Status::InvalidArgument("'" + name + "' holds a " + std::to_string(dims.size()) +
                                   "-dimensional array; embeddings are (rows, dim)");
  }
  NpyMatrix out;
  out.rows = dims[0];
  out.cols = dims[1];
  const size_t n = static_cast<size_t>(out.rows) * static_cast<size_t>(out.cols);
  const size_t have = bytes.size() - prefix - header_len;
  if (have != n * sizeof(float)) {
    return Status::Corruption("'" + name + "' holds " + std::to_string(have) + " data bytes; shape (" +
                              std::to_string(out.rows) + ", " + std::to_string(out.cols) + ") needs " +
                              std::to_string(n * sizeof(float)));
  }
  out.values.resize(n);
  if (n > 0) std::memcpy(out.values.data(), bytes.data() + prefix + header_len, n * sizeof(float));
  return out;
}

StatusOr<NpyMatrix> ReadNpy(const std::string& path) {
  FLAP_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
  return ParseNpy(bytes, path);
}

}  // namespace flap::worker
