// NumPy's .npy format (version 1.0) for the embeddings flap-worker writes and searches: a
// two-dimensional little-endian float32 array in C order.
//
// A file is the magic "\x93NUMPY", the version bytes 1 0, a 2-byte little-endian header length
// H, H bytes of a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (R, C), }
// padded with spaces and ended by '\n' so that the data starts at a multiple of 64 bytes, then
// R x C float32 values row after row. numpy.load reads what WriteNpy writes; ReadNpy reads
// exactly this kind of array (other dtypes, Fortran order or other ranks are refused, named)
// and checks that the file holds R x C values, no more and no fewer.
//
// Thread-safety: free functions without shared state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace flap::worker {

struct NpyMatrix {
  int64_t rows = 0, cols = 0;
  std::vector<float> values;  // rows x cols, row-major
};

// The bytes of a .npy file holding `rows` x `cols` values (row-major).
std::string EncodeNpy(const float* values, int64_t rows, int64_t cols);
// Parses a .npy file's bytes; `name` stands for the file in errors (Corruption for anything
// malformed, InvalidArgument for an array of another kind).
StatusOr<NpyMatrix> ParseNpy(const std::string& bytes, const std::string& name);
// Reads and parses the file at `path` (NotFound / IOError when it cannot be read).
StatusOr<NpyMatrix> ReadNpy(const std::string& path);

}  // namespace flap::worker
