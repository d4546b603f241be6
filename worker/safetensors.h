// The safetensors format (the format public checkpoints are distributed in), read into float32
// CPU tensors, and written (tests, exports).
//
// A file is: an 8-byte little-endian unsigned header length N; N bytes of UTF-8 JSON, an object
// mapping each tensor name to {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}
// (offsets relative to the start of the byte buffer), plus an optional "__metadata__" object of
// strings; then the byte buffer, every tensor's values in row-major little-endian order.
//
// The reader checks everything before it trusts it: N within the file and at most 100 MB, the
// JSON well formed with no duplicate names, each entry's fields and types, the byte count of
// each tensor against its dtype and shape, offsets inside the buffer, no two tensors
// overlapping and no unindexed bytes. Bad input is a Status naming the file and the tensor.
// Dtypes read: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL (all converted to float32);
// the F8 types are named as unsupported.
//
// Thread-safety: free functions without shared state.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace flap::worker {

struct SafetensorsContents {
  std::map<std::string, at::Tensor> tensors;    // float32, CPU, contiguous
  std::map<std::string, std::string> metadata;  // "__metadata__", empty when absent
};

// Reads every tensor of the file at `path` as float32 on the CPU.
// NotFound if the file does not exist; IOError if it cannot be read; Corruption for anything
// malformed; InvalidArgument for a dtype this reader does not convert.
StatusOr<std::map<std::string, at::Tensor>> ReadSafetensors(const std::string& path);
StatusOr<SafetensorsContents> ReadSafetensorsWithMetadata(const std::string& path);

// The header alone: each tensor's dtype (as the file names it: "F32", "BF16", ...) and shape,
// and the metadata, with every check of ReadSafetensors but the reading of the data (so a
// model's shape can be read from a large file cheaply). Errors as ReadSafetensors.
struct SafetensorsTensorInfo {
  std::string dtype;
  std::vector<int64_t> shape;
};
struct SafetensorsIndex {
  std::map<std::string, SafetensorsTensorInfo> tensors;
  std::map<std::string, std::string> metadata;
};
StatusOr<SafetensorsIndex> ReadSafetensorsIndex(const std::string& path);

// Parses a whole file held in memory; `name` stands for the file in error messages.
StatusOr<SafetensorsContents> ParseSafetensors(const std::string& bytes, const std::string& name);

// "[2, 3]": a shape as messages about tensors print it.
std::string ShapeText(at::IntArrayRef shape);

// Serialises tensors (F64, F32, F16 or BF16; any device, copied to the CPU) in name order.
StatusOr<std::string> EncodeSafetensors(const std::map<std::string, at::Tensor>& tensors,
                                        const std::map<std::string, std::string>& metadata = {});
// EncodeSafetensors, written atomically to `path`.
Status WriteSafetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                        const std::map<std::string, std::string>& metadata = {});

}  // namespace flap::worker
