// Writing one chunk of the plan into its shard: decode, check and crop each clip, then write the
// shard atomically (sharding/ingest_internal.h).
#include <sndfile.h>

#include <filesystem>
#include <map>

#include "common/file_util.h"
#include "sharding/audio.h"
#include "sharding/ingest_internal.h"
#include "sharding/manifest.h"
#include "sharding/shard_reader.h"
#include "sharding/shard_writer.h"

namespace flap::sharding::ingest_internal {

namespace {

// Declared frames and rate of an audio file, from its header; false if it cannot be opened.
bool ProbeAudio(const std::string& path, int64_t* frames, int* rate) {
  SF_INFO info{};
  SNDFILE* snd = sf_open(path.c_str(), SFM_READ, &info);
  if (snd == nullptr) return false;
  *frames = static_cast<int64_t>(info.frames);
  *rate = info.samplerate;
  sf_close(snd);
  return true;
}

// Decodes and checks one clip; true with *sample filled, or false with *issue filled.
// WebDataset clips come decoded already (`wds_audio`, from DecodeSourceClips).
bool PrepareClip(const IngestOptions& options, const Candidate& c, StatusOr<std::vector<float>>* wds_audio,
                 Sample* sample, IngestIssue* issue) {
  *issue = IngestIssue{c.audio_path.empty() ? c.origin : c.audio_path, c.key, "", ""};
  std::vector<float> audio;
  if (c.audio_path.empty()) {
    if (wds_audio == nullptr || !wds_audio->ok()) {
      issue->reason = kReasonUndecodable;
      issue->detail = wds_audio == nullptr ? "not read" : wds_audio->status().ToString();
      return false;
    }
    audio = std::move(*wds_audio).value();
  } else {
    int64_t frames = 0;
    int rate = 0;
    if (!ProbeAudio(c.audio_path, &frames, &rate)) {
      issue->reason = kReasonUndecodable;
      issue->detail = std::string("libsndfile cannot open it: ") + sf_strerror(nullptr);
      return false;
    }
    if (frames == 0) {
      issue->reason = kReasonZeroLength;
      issue->detail = "the file holds no audio frames";
      return false;
    }
    StatusOr<std::vector<float>> decoded = DecodeAudioFile(c.audio_path);
    if (!decoded.ok()) {
      const bool truncated = frames > 0 && decoded.status().code() == Status::Code::kCorruption &&
                             decoded.status().message().find("decoding failed") != std::string::npos;
      issue->reason = truncated ? kReasonTruncated : kReasonUndecodable;
      issue->detail = decoded.status().ToString();
      return false;
    }
    audio = std::move(decoded).value();
    if (frames > 0 && rate > 0) {
      const double expected = static_cast<double>(frames) * kSampleRate / rate;
      if (static_cast<double>(audio.size()) < expected - std::max(2.0, expected * 0.001)) {
        issue->reason = kReasonTruncated;
        issue->detail = "decoded " + std::to_string(audio.size()) + " samples, the header promises " +
                        std::to_string(std::llround(expected));
        return false;
      }
    }
  }
  const double seconds = static_cast<double>(audio.size()) / kSampleRate;
  if (audio.empty()) {
    issue->reason = kReasonZeroLength;
    issue->detail = "no audio";
    return false;
  }
  if (seconds < options.min_seconds) {
    issue->reason = kReasonTooShort;
    issue->detail = std::to_string(seconds) + " s < --min-seconds " + std::to_string(options.min_seconds);
    return false;
  }
  if (seconds > options.max_seconds) {
    if (!options.crop) {
      issue->reason = kReasonTooLong;
      issue->detail = std::to_string(seconds) + " s > --max-seconds " + std::to_string(options.max_seconds);
      return false;
    }
    audio.resize(static_cast<size_t>(std::llround(options.max_seconds * kSampleRate)));
  }
  sample->key = c.key;
  sample->audio = std::move(audio);
  sample->captions = c.captions;
  sample->captions_augment = c.captions_augment;
  sample->tags = c.tags;
  return true;
}

// Decodes the audio of the chunk's WebDataset clips: each source shard they come from is read
// once, in order, decoding only the members the chunk needs (memory: one chunk's audio).
std::map<size_t, StatusOr<std::vector<float>>> DecodeSourceClips(const std::vector<Candidate>& candidates,
                                                                 const Chunk& chunk) {
  std::map<std::string, std::map<int64_t, size_t>> by_source;  // source -> ordinal -> candidate
  for (size_t i = chunk.first; i < chunk.first + chunk.count; ++i) {
    if (candidates[i].audio_path.empty()) by_source[candidates[i].source_shard][candidates[i].source_index] = i;
  }
  std::map<size_t, StatusOr<std::vector<float>>> out;
  for (const auto& [source, wanted] : by_source) {
    auto reader = ShardReader::Open(source, /*decode_audio=*/false);
    Status failure = reader.ok() ? Status::OK() : reader.status();
    Sample sample;
    auto it = wanted.begin();
    for (int64_t ordinal = 0; failure.ok() && it != wanted.end(); ++ordinal) {
      StatusOr<bool> more = reader.value()->Next(&sample);
      if (!more.ok() || !more.value()) {
        failure = more.ok() ? Status::Corruption(source + ": ended before sample " + std::to_string(it->first) +
                                                 " (changed during ingestion?)")
                            : more.status();
        break;
      }
      if (ordinal != it->first) continue;
      const Candidate& c = candidates[it->second];
      if (SanitizeKey(sample.key) != c.key) {
        out.emplace(it->second,
                    Status::Corruption(source + ": sample " + std::to_string(ordinal) + " is '" + sample.key +
                                       "', planned '" + c.key + "' (changed during ingestion?)"));
      } else {
        const std::string& raw = reader.value()->raw_audio();
        out.emplace(it->second,
                    DecodeAudio(raw.data(), raw.size(), source + ": member " + reader.value()->raw_audio_name()));
      }
      ++it;
    }
    for (; it != wanted.end(); ++it) out.emplace(it->second, failure);
  }
  return out;
}

}  // namespace

ChunkResult WriteChunk(const IngestOptions& options, const std::vector<Candidate>& candidates, const Chunk& chunk,
                       const std::string& out_dir, std::atomic<bool>* stop) {
  ChunkResult result;
  const std::string path = JoinPath(out_dir, chunk.name);
  std::unique_ptr<ShardWriter> writer;
  std::map<size_t, StatusOr<std::vector<float>>> wds = DecodeSourceClips(candidates, chunk);
  for (size_t i = chunk.first; i < chunk.first + chunk.count; ++i) {
    if (stop->load()) return result;
    Sample sample;
    IngestIssue issue;
    auto audio = wds.find(i);
    if (!PrepareClip(options, candidates[i], audio == wds.end() ? nullptr : &audio->second, &sample, &issue)) {
      result.issues.push_back(issue);
      if (options.on_error == OnError::kFail) {
        stop->store(true);
        return result;
      }
      continue;
    }
    if (!writer) {
      auto created = ShardWriter::Create(path, AudioFormat::kFlac);
      if (!created.ok()) {
        result.status = created.status();
        return result;
      }
      writer = std::move(created).value();
    }
    Status s = writer->Add(sample);
    if (!s.ok()) {
      result.status = s.WithContext(chunk.name);
      return result;
    }
  }
  if (writer) {
    result.status = writer->Close();
    if (!result.status.ok()) return result;
    result.num_samples = writer->num_samples();
    auto info = DescribeShard(path, chunk.split, result.num_samples);
    if (!info.ok()) {
      result.status = info.status();
      return result;
    }
    result.bytes = info->bytes;
    result.xxh64 = info->xxh64;
  } else {
    std::error_code ec;
    std::filesystem::remove(path, ec);  // a chunk with no good clip has no shard
  }
  result.done = true;
  return result;
}

json ChunkResultToJson(const ChunkResult& r) {
  json issues = json::array();
  for (const IngestIssue& i : r.issues) issues.push_back(IssueToJson(i));
  return {{"num_samples", r.num_samples}, {"bytes", r.bytes}, {"xxh64", r.xxh64}, {"issues", issues}};
}

bool ReuseChunk(const std::string& out_dir, const Chunk& chunk, const json& entry, ChunkResult* r) {
  try {
    r->num_samples = entry.at("num_samples").get<int64_t>();
    r->bytes = entry.at("bytes").get<int64_t>();
    r->xxh64 = entry.at("xxh64").get<std::string>();
    for (const json& i : entry.at("issues")) r->issues.push_back(IssueFromJson(i));
  } catch (const json::exception&) {
    return false;
  }
  if (r->num_samples > 0) {
    ShardInfo info{chunk.name, chunk.split, r->num_samples, r->bytes, r->xxh64};
    if (!VerifyShard(out_dir, info).ok()) return false;
  } else if (std::filesystem::exists(JoinPath(out_dir, chunk.name))) {
    return false;
  }
  r->done = true;
  return true;
}

}  // namespace flap::sharding::ingest_internal
