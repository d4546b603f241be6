// The C interface of libflap_spm, the loadable module that holds SentencePiece.
//
// Why a module: Debian's libsentencepiece carries its own copy of protobuf-lite and exports
// its symbols; in a process that also loads libprotobuf (LibTorch, gRPC) the two copies
// interpose on each other and the process crashes at start-up. tokenizer.cc therefore never
// links SentencePiece: it dlopen()s this module with RTLD_LOCAL | RTLD_DEEPBIND, so
// SentencePiece binds to its own protobuf and nothing of it enters the global scope.
// Only plain C types cross the boundary.
#pragma once

#include <stddef.h>

extern "C" {

// Loads a serialized model. Returns a handle, or null with a message in err.
void* flap_spm_load(const char* data, size_t size, char* err, size_t err_cap);
void flap_spm_free(void* handle);
// Writes pad, unk, bos, eos ids into out[0..3].
void flap_spm_special_ids(void* handle, int* out);
int flap_spm_vocab_size(void* handle);
// Encodes text; returns the number of ids (only the first `cap` are written), -1 on error.
long flap_spm_encode(void* handle, const char* text, size_t len, int* out, size_t cap);
// Decodes ids; returns the text's length (only the first `cap` bytes are written), -1 on error.
long flap_spm_decode(void* handle, const int* ids, size_t n, char* out, size_t cap);
// Trains a model with trainer flags `args` on n texts; on success calls sink(ctx, bytes, size)
// once with the serialized model and returns 0; else returns -1 with a message in err.
int flap_spm_train(const char* args, const char* const* texts, const size_t* lens, size_t n,
                   void (*sink)(void* ctx, const char* data, size_t size), void* ctx, char* err, size_t err_cap);

}  // extern "C"
