// Implementation of sharding/audio.h: libsndfile over in-memory virtual I/O, libsoxr for rates.
#include "sharding/audio.h"

#include <sndfile.h>
#include <soxr.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/file_util.h"

namespace flap::sharding {
namespace {

// A growable in-memory file for libsndfile's virtual I/O. Reading uses a borrowed buffer;
// writing appends to / overwrites `out` (FLAC and WAV writers seek back to patch headers).
struct MemoryFile {
  const char* in = nullptr;
  sf_count_t in_size = 0;
  std::string* out = nullptr;
  sf_count_t pos = 0;

  sf_count_t Size() const { return out ? static_cast<sf_count_t>(out->size()) : in_size; }
};

sf_count_t VioLength(void* user) { return static_cast<MemoryFile*>(user)->Size(); }

sf_count_t VioSeek(sf_count_t offset, int whence, void* user) {
  auto* f = static_cast<MemoryFile*>(user);
  sf_count_t base = 0;
  switch (whence) {
    case SEEK_SET:
      base = 0;
      break;
    case SEEK_CUR:
      base = f->pos;
      break;
    case SEEK_END:
      base = f->Size();
      break;
    default:
      return -1;
  }
  sf_count_t target = base + offset;
  if (target < 0) return -1;
  f->pos = target;
  return f->pos;
}

sf_count_t VioRead(void* ptr, sf_count_t count, void* user) {
  auto* f = static_cast<MemoryFile*>(user);
  sf_count_t size = f->Size();
  if (f->pos >= size || count <= 0) return 0;
  sf_count_t n = std::min(count, size - f->pos);
  const char* src = f->out ? f->out->data() : f->in;
  std::memcpy(ptr, src + f->pos, static_cast<size_t>(n));
  f->pos += n;
  return n;
}

sf_count_t VioWrite(const void* ptr, sf_count_t count, void* user) {
  auto* f = static_cast<MemoryFile*>(user);
  if (f->out == nullptr || count <= 0) return 0;
  size_t end = static_cast<size_t>(f->pos + count);
  if (end > f->out->size()) f->out->resize(end, '\0');
  std::memcpy(&(*f->out)[static_cast<size_t>(f->pos)], ptr, static_cast<size_t>(count));
  f->pos += count;
  return count;
}

sf_count_t VioTell(void* user) { return static_cast<MemoryFile*>(user)->pos; }

SF_VIRTUAL_IO MakeVio() {
  SF_VIRTUAL_IO vio;
  vio.get_filelen = VioLength;
  vio.seek = VioSeek;
  vio.read = VioRead;
  vio.write = VioWrite;
  vio.tell = VioTell;
  return vio;
}

uint32_t LittleEndian32(const unsigned char* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

// For a RIFF/WAVE file: "" when its data chunk fits in the file, else what is missing.
// libsndfile shrinks the frame count of a WAV cut short and decodes what is there, so a
// truncated file would otherwise pass as a shorter clip. A data size of 0 or 0xFFFFFFFF
// (streamed WAVs, length unknown when the header was written) is not checked.
std::string WavTruncation(const unsigned char* bytes, size_t size) {
  if (size < 12 || std::memcmp(bytes, "RIFF", 4) != 0 || std::memcmp(bytes + 8, "WAVE", 4) != 0) {
    return "";
  }
  size_t pos = 12;
  while (pos + 8 <= size) {
    const uint32_t chunk = LittleEndian32(bytes + pos + 4);
    if (std::memcmp(bytes + pos, "data", 4) == 0) {
      const uint64_t have = size - (pos + 8);
      if (chunk == 0 || chunk == 0xFFFFFFFFu || chunk <= have) return "";
      return "truncated WAV: its data chunk declares " + std::to_string(chunk) + " bytes, the file holds " +
             std::to_string(have);
    }
    pos += 8 + static_cast<size_t>(chunk) + (chunk & 1);  // chunks are padded to even sizes
  }
  return "";  // no data chunk: libsndfile says what is wrong
}

}  // namespace

const char* AudioFormatExtension(AudioFormat format) { return format == AudioFormat::kFlac ? "flac" : "wav"; }

StatusOr<std::vector<float>> DecodeAudio(const void* data, size_t size, const std::string& what, int target_rate) {
  if (target_rate <= 0) {
    return Status::InvalidArgument(what + ": target sample rate must be positive, got " + std::to_string(target_rate));
  }
  if (data == nullptr || size == 0) return Status::Corruption(what + ": empty audio data");
  MemoryFile file;
  file.in = static_cast<const char*>(data);
  file.in_size = static_cast<sf_count_t>(size);
  SF_VIRTUAL_IO vio = MakeVio();
  SF_INFO info;
  std::memset(&info, 0, sizeof(info));
  SNDFILE* snd = sf_open_virtual(&vio, SFM_READ, &info, &file);
  if (snd == nullptr) {
    return Status::Corruption(what + ": cannot decode audio: " + sf_strerror(nullptr));
  }
  const int channels = info.channels;
  const int rate = info.samplerate;
  if (channels <= 0 || channels > 256 || rate <= 0) {
    sf_close(snd);
    return Status::Corruption(what + ": bad audio header (" + std::to_string(channels) + " channels, " +
                              std::to_string(rate) + " Hz)");
  }
  // A rate far from real audio makes the resampler's output (and memory) explode: 1 Hz to
  // 16 kHz multiplies the length by 16,000.
  if (rate < kMinSampleRate || rate > kMaxSampleRate) {
    sf_close(snd);
    return Status::Corruption(what + ": sample rate " + std::to_string(rate) + " Hz is outside " +
                              std::to_string(kMinSampleRate) + ".." + std::to_string(kMaxSampleRate) + " Hz");
  }
  if (std::string t = WavTruncation(static_cast<const unsigned char*>(data), size); !t.empty()) {
    sf_close(snd);
    return Status::Corruption(what + ": audio decoding failed: " + t);
  }
  // Read in chunks: some formats (MP3, Ogg) do not know their length up front, and a damaged
  // header must not make us allocate what it claims.
  std::vector<float> mono;
  if (info.frames > 0 && info.frames < (int64_t{1} << 28)) {
    mono.reserve(static_cast<size_t>(info.frames));
  }
  constexpr sf_count_t kChunkFrames = 8192;
  std::vector<float> chunk(static_cast<size_t>(kChunkFrames * channels));
  const float inv_channels = 1.0f / static_cast<float>(channels);
  const size_t max_frames = static_cast<size_t>(kMaxDecodeSeconds * rate);
  while (true) {
    sf_count_t got = sf_readf_float(snd, chunk.data(), kChunkFrames);
    if (got <= 0) break;
    if (mono.size() + static_cast<size_t>(got) > max_frames) {
      sf_close(snd);
      return Status::Corruption(what + ": the audio lasts more than the " +
                                std::to_string(std::lround(kMaxDecodeSeconds)) + " s a clip may last");
    }
    for (sf_count_t i = 0; i < got; ++i) {
      const float* frame = &chunk[static_cast<size_t>(i * channels)];
      float sum = 0.0f;
      for (int c = 0; c < channels; ++c) sum += frame[c];
      mono.push_back(channels == 1 ? sum : sum * inv_channels);
    }
  }
  int err = sf_error(snd);
  std::string err_text = err != SF_ERR_NO_ERROR ? sf_strerror(snd) : "";
  sf_close(snd);
  if (err != SF_ERR_NO_ERROR) {
    return Status::Corruption(what + ": audio decoding failed: " + err_text);
  }
  if (mono.empty()) return Status::Corruption(what + ": audio holds no frames");
  for (float& v : mono) {
    if (!std::isfinite(v)) v = 0.0f;
  }
  if (rate == target_rate) return mono;
  // Rate and duration are bounded (above): so is what resampling allocates.
  std::vector<float> out = Resample(mono, rate, target_rate);
  if (out.empty()) {
    return Status::Corruption(what + ": cannot resample from " + std::to_string(rate) + " Hz to " +
                              std::to_string(target_rate) + " Hz");
  }
  return out;
}

StatusOr<std::vector<float>> DecodeAudioFile(const std::string& path, int target_rate) {
  FLAP_ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
  return DecodeAudio(bytes.data(), bytes.size(), path, target_rate);
}

StatusOr<std::string> EncodeAudio(const std::vector<float>& mono, int sample_rate, AudioFormat format) {
  if (mono.empty()) return Status::InvalidArgument("EncodeAudio: empty signal");
  if (sample_rate <= 0) {
    return Status::InvalidArgument("EncodeAudio: sample rate must be positive, got " + std::to_string(sample_rate));
  }
  std::vector<int16_t> pcm(mono.size());
  for (size_t i = 0; i < mono.size(); ++i) {
    float v = mono[i];
    if (!std::isfinite(v)) v = 0.0f;
    long q = std::lround(static_cast<double>(v) * 32768.0);
    pcm[i] = static_cast<int16_t>(std::clamp<long>(q, -32768, 32767));
  }
  std::string out;
  MemoryFile file;
  file.out = &out;
  SF_VIRTUAL_IO vio = MakeVio();
  SF_INFO info;
  std::memset(&info, 0, sizeof(info));
  info.samplerate = sample_rate;
  info.channels = 1;
  info.format = (format == AudioFormat::kFlac ? SF_FORMAT_FLAC : SF_FORMAT_WAV) | SF_FORMAT_PCM_16;
  SNDFILE* snd = sf_open_virtual(&vio, SFM_WRITE, &info, &file);
  if (snd == nullptr) {
    return Status::Internal(std::string("EncodeAudio: libsndfile refused to open a ") + AudioFormatExtension(format) +
                            " writer: " + sf_strerror(nullptr));
  }
  sf_count_t written = sf_write_short(snd, pcm.data(), static_cast<sf_count_t>(pcm.size()));
  std::string err_text = written != static_cast<sf_count_t>(pcm.size()) ? sf_strerror(snd) : "";
  int close_rc = sf_close(snd);
  if (!err_text.empty() || close_rc != 0) {
    return Status::Internal(std::string("EncodeAudio: ") + AudioFormatExtension(format) +
                            " encoding failed: " + (err_text.empty() ? "close failed" : err_text));
  }
  return out;
}

std::vector<float> Resample(const std::vector<float>& in, int from_rate, int to_rate) {
  if (from_rate <= 0 || to_rate <= 0) return {};
  if (from_rate == to_rate || in.empty()) return in;
  const double ratio = static_cast<double>(to_rate) / static_cast<double>(from_rate);
  const size_t out_len = static_cast<size_t>(std::llround(static_cast<double>(in.size()) * ratio));
  std::vector<float> out(out_len + 16);
  size_t done = 0;
  soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
  soxr_quality_spec_t quality = soxr_quality_spec(SOXR_HQ, 0);
  soxr_runtime_spec_t runtime = soxr_runtime_spec(1);
  soxr_error_t error = soxr_oneshot(from_rate, to_rate, 1, in.data(), in.size(), nullptr, out.data(), out.size(), &done,
                                    &io, &quality, &runtime);
  if (error != nullptr) return {};
  out.resize(done);
  // soxr's flushed length can differ from the ideal by a sample; make the length contract exact.
  out.resize(out_len, 0.0f);
  return out;
}

}  // namespace flap::sharding
