// Implementation of sharding/tokenizer.h. SentencePiece is never linked into the process: it
// lives in the loadable module libflap_spm (spm_module.h says why), which is dlopen()ed once,
// with RTLD_LOCAL | RTLD_DEEPBIND, on first use. The module is looked for at
//   $FLAP_SPM_MODULE (a file path), then next to the running executable, then in ../lib
//   relative to it, then where the build tree put it (FLAP_SPM_MODULE_BUILD_PATH).
#include "sharding/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "common/file_util.h"
#include "sharding/spm_module.h"

namespace flap::sharding {
namespace {

// The module's entry points.
struct SpmApi {
  decltype(&flap_spm_load) load = nullptr;
  decltype(&flap_spm_free) free = nullptr;
  decltype(&flap_spm_special_ids) special_ids = nullptr;
  decltype(&flap_spm_vocab_size) vocab_size = nullptr;
  decltype(&flap_spm_encode) encode = nullptr;
  decltype(&flap_spm_decode) decode = nullptr;
  decltype(&flap_spm_train) train = nullptr;
};

std::vector<std::string> ModuleCandidates() {
  constexpr char kName[] = "libflap_spm.so";
  std::vector<std::string> out;
  if (const char* env = std::getenv("FLAP_SPM_MODULE"); env != nullptr && *env != '\0') {
    out.push_back(env);
  }
  char exe[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    exe[n] = '\0';
    std::filesystem::path dir = std::filesystem::path(exe).parent_path();
    out.push_back((dir / kName).string());
    out.push_back((dir.parent_path() / "lib" / kName).string());
  }
#ifdef FLAP_SPM_MODULE_BUILD_PATH
  out.push_back(FLAP_SPM_MODULE_BUILD_PATH);
#endif
  return out;
}

// Loads the module once per process; later calls return the same result.
StatusOr<const SpmApi*> Spm() {
  static std::once_flag once;
  static SpmApi api;
  static Status status;
  std::call_once(once, [] {
    std::string tried;
    void* lib = nullptr;
    for (const std::string& path : ModuleCandidates()) {
      std::error_code ec;
      if (!std::filesystem::exists(path, ec)) {
        tried += "\n  " + path + ": missing";
        continue;
      }
      lib = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (lib != nullptr) break;
      const char* err = ::dlerror();
      tried += "\n  " + path + ": " + (err ? err : "dlopen failed");
    }
    if (lib == nullptr) {
      status = Status::FailedPrecondition(
          "cannot load the SentencePiece module libflap_spm.so (set FLAP_SPM_MODULE to its "
          "path); tried:" +
          tried);
      return;
    }
    bool ok = true;
    auto bind = [&](auto* fn, const char* name) {
      *fn = reinterpret_cast<std::remove_pointer_t<decltype(fn)>>(::dlsym(lib, name));
      ok = ok && *fn != nullptr;
    };
    bind(&api.load, "flap_spm_load");
    bind(&api.free, "flap_spm_free");
    bind(&api.special_ids, "flap_spm_special_ids");
    bind(&api.vocab_size, "flap_spm_vocab_size");
    bind(&api.encode, "flap_spm_encode");
    bind(&api.decode, "flap_spm_decode");
    bind(&api.train, "flap_spm_train");
    if (!ok) status = Status::FailedPrecondition("libflap_spm.so lacks an expected entry point");
    // The module stays loaded for the life of the process.
  });
  if (!status.ok()) return status;
  return &api;
}

}  // namespace

// Owns one loaded SentencePiece processor inside the module.
class Tokenizer::Model {
 public:
  Model(const SpmApi* api, void* handle) : api_(api), handle_(handle) {}
  ~Model() { api_->free(handle_); }
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
  const SpmApi* api() const { return api_; }
  void* handle() const { return handle_; }

 private:
  const SpmApi* api_;
  void* handle_;
};

StatusOr<Tokenizer> Tokenizer::Load(const std::string& model_path) {
  FLAP_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(model_path));
  FLAP_ASSIGN_OR_RETURN(const SpmApi* api, Spm());
  char err[512] = {0};
  void* handle = api->load(bytes.data(), bytes.size(), err, sizeof(err));
  if (handle == nullptr) {
    return Status::Corruption(model_path + ": not a SentencePiece model: " + err);
  }
  auto model = std::make_shared<const Model>(api, handle);
  int ids[4];
  api->special_ids(handle, ids);
  if (ids[0] != kPadId || ids[1] != kUnkId || ids[2] != kBosId || ids[3] != kEosId) {
    return Status::Corruption(model_path + ": special ids pad/unk/bos/eos are " + std::to_string(ids[0]) + "/" +
                              std::to_string(ids[1]) + "/" + std::to_string(ids[2]) + "/" + std::to_string(ids[3]) +
                              ", expected 0/1/2/3");
  }
  return Tokenizer(std::move(model));
}

std::vector<int> Tokenizer::Encode(const std::string& text) const {
  std::vector<int> ids(text.size() + 16);
  long n = model_->api()->encode(model_->handle(), text.data(), text.size(), ids.data(), ids.size());
  if (n < 0) return {};
  if (static_cast<size_t>(n) > ids.size()) {  // cannot happen for SentencePiece; be safe
    ids.resize(static_cast<size_t>(n));
    n = model_->api()->encode(model_->handle(), text.data(), text.size(), ids.data(), ids.size());
    if (n < 0) return {};
  }
  ids.resize(static_cast<size_t>(n));
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int>& ids) const {
  std::vector<int> kept;
  const int size = vocab_size();
  for (int id : ids) {
    if (id != kPadId && id != kBosId && id != kEosId && id >= 0 && id < size) kept.push_back(id);
  }
  std::string text(kept.size() * 8 + 16, '\0');
  long n = model_->api()->decode(model_->handle(), kept.data(), kept.size(), text.data(), text.size());
  if (n < 0) return "";
  if (static_cast<size_t>(n) > text.size()) {
    text.resize(static_cast<size_t>(n));
    n = model_->api()->decode(model_->handle(), kept.data(), kept.size(), text.data(), text.size());
    if (n < 0) return "";
  }
  text.resize(static_cast<size_t>(n));
  return text;
}

int Tokenizer::vocab_size() const { return model_->api()->vocab_size(model_->handle()); }

Status TrainTokenizer(const std::vector<std::string>& texts, const std::string& model_path, int vocab_size) {
  if (vocab_size < 8) {
    return Status::InvalidArgument("tokenizer vocab_size must be at least 8, got " + std::to_string(vocab_size));
  }
  std::vector<const char*> data;
  std::vector<size_t> lens;
  for (const std::string& t : texts) {
    if (t.empty()) continue;
    data.push_back(t.data());
    lens.push_back(t.size());
  }
  if (data.empty()) return Status::InvalidArgument("no text to train the tokenizer on");
  FLAP_ASSIGN_OR_RETURN(const SpmApi* api, Spm());

  // Single-threaded and without sampling so that the model is a pure function of the texts.
  const std::string args = "--model_type=unigram --vocab_size=" + std::to_string(vocab_size) +
                           " --character_coverage=1.0 --hard_vocab_limit=false --pad_id=0 --unk_id=1 --bos_id=2"
                           " --eos_id=3 --num_threads=1 --input_sentence_size=0 --shuffle_input_sentence=false"
                           " --minloglevel=2";
  std::string serialized;
  auto sink = [](void* ctx, const char* bytes, size_t size) { static_cast<std::string*>(ctx)->assign(bytes, size); };
  char err[1024] = {0};
  if (api->train(args.c_str(), data.data(), lens.data(), data.size(), sink, &serialized, err, sizeof(err)) != 0) {
    return Status::Internal("training the tokenizer for " + model_path + " failed: " + err);
  }
  return WriteFileAtomic(model_path, serialized);
}

}  // namespace flap::sharding
