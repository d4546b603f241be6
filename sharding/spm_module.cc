// libflap_spm: SentencePiece behind the C interface of spm_module.h (see there for why).
#include "sharding/spm_module.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstring>
#include <string>
#include <vector>

// Exported by libsentencepiece but not declared in its public headers. Without it the trainer
// logs its whole command line before it reads --minloglevel.
namespace sentencepiece::logging {
void SetMinLogLevel(int v);
}  // namespace sentencepiece::logging

namespace {

void SetError(const std::string& msg, char* err, size_t cap) {
  if (err == nullptr || cap == 0) return;
  std::strncpy(err, msg.c_str(), cap - 1);
  err[cap - 1] = '\0';
}

// Feeds the sentences to the trainer from memory (no temporary corpus file); skips empty ones.
class ArraySentenceIterator : public sentencepiece::SentenceIterator {
 public:
  ArraySentenceIterator(const char* const* texts, const size_t* lens, size_t n) : texts_(texts), lens_(lens), n_(n) {
    Skip();
  }
  bool done() const override { return index_ >= n_; }
  void Next() override {
    ++index_;
    Skip();
  }
  const std::string& value() const override { return current_; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

 private:
  void Skip() {
    while (index_ < n_ && lens_[index_] == 0) ++index_;
    if (index_ < n_) current_.assign(texts_[index_], lens_[index_]);
  }
  const char* const* texts_;
  const size_t* lens_;
  size_t n_;
  size_t index_ = 0;
  std::string current_;
};

sentencepiece::SentencePieceProcessor* P(void* h) { return static_cast<sentencepiece::SentencePieceProcessor*>(h); }

}  // namespace

extern "C" {

void* flap_spm_load(const char* data, size_t size, char* err, size_t err_cap) {
  auto* p = new sentencepiece::SentencePieceProcessor();
  auto status = p->LoadFromSerializedProto(std::string(data, size));
  if (!status.ok()) {
    SetError(status.ToString(), err, err_cap);
    delete p;
    return nullptr;
  }
  return p;
}

void flap_spm_free(void* handle) { delete P(handle); }

void flap_spm_special_ids(void* handle, int* out) {
  out[0] = P(handle)->pad_id();
  out[1] = P(handle)->unk_id();
  out[2] = P(handle)->bos_id();
  out[3] = P(handle)->eos_id();
}

int flap_spm_vocab_size(void* handle) { return P(handle)->GetPieceSize(); }

long flap_spm_encode(void* handle, const char* text, size_t len, int* out, size_t cap) {
  std::vector<int> ids;
  if (!P(handle)->Encode(std::string(text, len), &ids).ok()) return -1;
  for (size_t i = 0; i < ids.size() && i < cap; ++i) out[i] = ids[i];
  return static_cast<long>(ids.size());
}

long flap_spm_decode(void* handle, const int* ids, size_t n, char* out, size_t cap) {
  std::string text;
  if (!P(handle)->Decode(std::vector<int>(ids, ids + n), &text).ok()) return -1;
  std::memcpy(out, text.data(), std::min(cap, text.size()));
  return static_cast<long>(text.size());
}

int flap_spm_train(const char* args, const char* const* texts, const size_t* lens, size_t n,
                   void (*sink)(void* ctx, const char* data, size_t size), void* ctx, char* err, size_t err_cap) {
  sentencepiece::logging::SetMinLogLevel(2);  // warnings and errors only
  ArraySentenceIterator iterator(texts, lens, n);
  std::string serialized;
  auto status = sentencepiece::SentencePieceTrainer::Train(args, &iterator, &serialized);
  if (!status.ok()) {
    SetError(status.ToString(), err, err_cap);
    return -1;
  }
  sink(ctx, serialized.data(), serialized.size());
  return 0;
}

}  // extern "C"
