// Implementation of sharding/ingest.h: plan (CSV / source shards -> clips in seeded order ->
// chunks; the Planner's adapters), write (WriteChunk per chunk, in a pool of threads), finish
// (tokenizer, report, manifest). Resume state lives in ingest_state.json.
#include "sharding/ingest.h"

#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <tuple>
#include <utility>

#include "common/file_util.h"
#include "sharding/ingest_internal.h"
#include "sharding/manifest.h"
#include "sharding/tokenizer.h"

namespace flap::sharding {

using namespace ingest_internal;  // NOLINT: the ingestion's own internals

namespace {

json OptionsToJson(const IngestOptions& o) {
  json inputs = json::array();
  for (const IngestInput& in : o.inputs) {
    json j = {{"split", in.split.empty() ? in.split : SplitRole(in.split)}};
    if (SplitRole(in.split) != in.split) j["corpus_split"] = in.split;
    if (!in.csv.empty()) j["csv"] = in.csv;
    if (!in.audio_dir.empty()) j["audio_dir"] = in.audio_dir;
    if (!in.shards.empty()) j["shards"] = in.shards;
    inputs.push_back(j);
  }
  return {{"format", IngestFormatName(o.format)},
          {"inputs", inputs},
          {"val_fraction", o.val_fraction},
          {"test_fraction", o.test_fraction},
          {"seed", o.seed},
          {"shuffle_seed", o.shuffle_seed},
          {"samples_per_shard", o.samples_per_shard},
          {"min_seconds", o.min_seconds},
          {"max_seconds", o.max_seconds},
          {"crop", o.crop},
          {"vocab_size", o.vocab_size},
          {"train_split", o.train_split}};
}

Status WriteReport(const std::string& out_dir, const IngestReport& report) {
  json issues = json::array();
  for (const IngestIssue& i : report.issues) issues.push_back(IssueToJson(i));
  int64_t rejected = 0;
  for (const auto& [reason, n] : report.by_reason) rejected += n;
  json j = {{"accepted", report.accepted},          {"rejected", rejected}, {"per_split", report.per_split},
            {"by_reason", report.by_reason},        {"issues", issues},     {"shards_written", report.shards_written},
            {"shards_reused", report.shards_reused}};
  return WriteFileAtomic(JoinPath(out_dir, kIngestReportFileName), j.dump(2) + "\n");
}

}  // namespace

StatusOr<IngestFormat> ParseIngestFormat(const std::string& name) {
  if (name == "clotho") return IngestFormat::kClotho;
  if (name == "audiocaps") return IngestFormat::kAudioCaps;
  if (name == "wds" || name == "webdataset") return IngestFormat::kWebDataset;
  return Status::InvalidArgument("unknown format '" + name + "' (clotho, audiocaps or wds)");
}

std::string SplitRole(const std::string& corpus_split) {
  if (corpus_split == "development") return kTrainSplit;
  if (corpus_split == "validation") return kValSplit;
  if (corpus_split == "evaluation") return kTestSplit;
  return corpus_split;
}

const char* IngestFormatName(IngestFormat format) {
  switch (format) {
    case IngestFormat::kClotho:
      return "clotho";
    case IngestFormat::kAudioCaps:
      return "audiocaps";
    case IngestFormat::kWebDataset:
      return "wds";
  }
  return "unknown";
}

namespace {

Status CheckOptions(const IngestOptions& options) {
  if (options.inputs.empty()) return Status::InvalidArgument("ingest: no inputs");
  if (options.samples_per_shard < 1) return Status::InvalidArgument("ingest: samples_per_shard must be at least 1");
  for (const auto& [name, value] :
       {std::pair<const char*, double>{"val_fraction", options.val_fraction}, {"test_fraction", options.test_fraction}}) {
    if (!(value >= 0.0 && value < 1.0)) {
      return Status::InvalidArgument("ingest: " + std::string(name) + " is " + std::to_string(value) +
                                     ", it must lie in [0, 1)");
    }
  }
  if (!(options.val_fraction + options.test_fraction < 1.0)) {
    return Status::InvalidArgument("ingest: val_fraction " + std::to_string(options.val_fraction) +
                                   " + test_fraction " + std::to_string(options.test_fraction) +
                                   " must be below 1 (nothing would be left for training)");
  }
  if (!(options.min_seconds >= 0.0 && options.max_seconds > 0.0 && options.min_seconds <= options.max_seconds)) {
    return Status::InvalidArgument("ingest: need 0 <= min_seconds <= max_seconds and max_seconds > 0");
  }
  if (options.vocab_size < 8) return Status::InvalidArgument("ingest: vocab_size must be at least 8");
  for (const IngestInput& in : options.inputs) {
    if (in.split.find_first_of("/\\. ") != std::string::npos) {
      return Status::InvalidArgument("ingest: split name '" + in.split + "' may not hold '/', '\\', '.' or spaces");
    }
    if (options.format == IngestFormat::kWebDataset) {
      if (in.shards.empty()) return Status::InvalidArgument("ingest: a WebDataset input needs shards");
    } else if (in.csv.empty() || in.audio_dir.empty()) {
      return Status::InvalidArgument("ingest: a Clotho/AudioCaps input needs a CSV and an audio folder");
    }
  }
  return Status::OK();
}

// Every input through its format's adapter.
Status Plan(const IngestOptions& options, Planner* planner) {
  for (const IngestInput& in : options.inputs) {
    switch (options.format) {
      case IngestFormat::kClotho:
        FLAP_RETURN_IF_ERROR(planner->AddClotho(in));
        break;
      case IngestFormat::kAudioCaps:
        FLAP_RETURN_IF_ERROR(planner->AddAudioCaps(in));
        break;
      case IngestFormat::kWebDataset:
        FLAP_RETURN_IF_ERROR(planner->AddWebDataset(in));
        break;
    }
  }
  return Status::OK();
}

// Sorts the candidates into splits and each split into its seeded order, and cuts each split
// into chunks of samples_per_shard clips.
std::vector<Chunk> CutIntoChunks(const IngestOptions& options, std::vector<Candidate>* candidates) {
  std::vector<Candidate>& cands = *candidates;
  for (Candidate& c : cands) c.rank = ShuffleRank(options.shuffle_seed, c.key);
  std::sort(cands.begin(), cands.end(), [](const Candidate& a, const Candidate& b) {
    const int oa = SplitOrder(a.split), ob = SplitOrder(b.split);
    return std::tie(oa, a.split, a.rank, a.key) < std::tie(ob, b.split, b.rank, b.key);
  });
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < cands.size();) {
    size_t j = i;
    while (j < cands.size() && cands[j].split == cands[i].split) ++j;
    int index = 0;
    for (size_t first = i; first < j; first += static_cast<size_t>(options.samples_per_shard)) {
      Chunk chunk;
      chunk.split = cands[i].split;
      chunk.index = index++;
      char buf[32];
      std::snprintf(buf, sizeof(buf), "-%06d.tar", chunk.index);
      chunk.name = chunk.split + buf;
      chunk.first = first;
      chunk.count = std::min(j - first, static_cast<size_t>(options.samples_per_shard));
      chunks.push_back(chunk);
    }
    i = j;
  }
  return chunks;
}

// The plan's fingerprint: everything a shard's bytes depend on.
std::string Fingerprint(const IngestOptions& options, const Planner& planner, const std::vector<Candidate>& cands) {
  json content_options = OptionsToJson(options);
  content_options.erase("vocab_size");  // the tokenizer's options do not touch the shards
  content_options.erase("train_split");
  std::string fp = "flap ingest v" + std::to_string(kIngestVersion) + "\n" + content_options.dump() + "\n" +
                   planner.fingerprint_text();
  for (const Candidate& c : cands) {
    fp += c.split + "\t" + c.key + "\t" + c.audio_path + "\t" + std::to_string(c.file_size) + "\t" +
          std::to_string(c.file_mtime_ns) + "\t" + c.source_shard + "\t" + std::to_string(c.source_index) + "\t" +
          std::to_string(c.audio_xxh64);
    for (const auto* list : {&c.captions, &c.captions_augment, &c.tags}) {
      for (const std::string& s : *list) fp += "\t" + s;
      fp += "\t|";
    }
    fp += "\n";
  }
  return Hex64(XXH64(fp.data(), fp.size(), 0));
}

// Writes the chunks that an earlier run with the same fingerprint did not finish, in a pool of
// threads, recording each in the state file as it is done. `results` gets one entry per chunk;
// the status is the state file's (a chunk's own failure is in its result).
Status WriteChunks(const IngestOptions& options, const std::string& out_dir, const std::string& fingerprint,
                   const std::vector<Candidate>& cands, const std::vector<Chunk>& chunks,
                   std::vector<ChunkResult>* results, IngestReport* report) {
  const std::string state_path = JoinPath(out_dir, kIngestStateFileName);
  json state = {{"fingerprint", fingerprint}, {"shards", json::object()}};
  if (StatusOr<std::string> old = ReadFileToString(state_path); old.ok()) {
    json parsed = json::parse(old.value(), nullptr, /*allow_exceptions=*/false);
    if (parsed.is_object() && parsed.value("fingerprint", "") == fingerprint && parsed.contains("shards") &&
        parsed["shards"].is_object()) {
      state = parsed;
    }
  }
  results->assign(chunks.size(), ChunkResult());
  std::vector<size_t> todo;
  for (size_t k = 0; k < chunks.size(); ++k) {
    auto it = state["shards"].find(chunks[k].name);
    if (it != state["shards"].end() && ReuseChunk(out_dir, chunks[k], *it, &(*results)[k])) {
      ++report->shards_reused;
    } else {
      (*results)[k] = ChunkResult();
      state["shards"].erase(chunks[k].name);
      todo.push_back(k);
    }
  }
  FLAP_RETURN_IF_ERROR(WriteFileAtomic(state_path, state.dump(1) + "\n"));

  std::mutex mu;  // guards state, written_count and the state file
  int written_count = 0;
  std::atomic<bool> stop{false};
  std::atomic<size_t> next{0};
  auto work = [&]() {
    for (size_t t = next++; t < todo.size() && !stop.load(); t = next++) {
      const size_t k = todo[t];
      ChunkResult r = WriteChunk(options, cands, chunks[k], out_dir, &stop);
      std::lock_guard<std::mutex> lock(mu);
      if (r.done && !stop.load()) {
        state["shards"][chunks[k].name] = ChunkResultToJson(r);
        Status s = WriteFileAtomic(state_path, state.dump(1) + "\n");
        if (!s.ok()) r.status = s;
        ++written_count;
        if (options.stop_after_shards >= 0 && written_count >= options.stop_after_shards) stop = true;
      }
      if (!r.status.ok()) stop = true;
      (*results)[k] = std::move(r);
    }
  };
  const size_t hw =
      options.threads > 0 ? static_cast<size_t>(options.threads) : std::max(1u, std::thread::hardware_concurrency());
  const size_t num_threads = std::max<size_t>(1, std::min(hw, todo.size()));
  std::vector<std::thread> threads;
  for (size_t t = 1; t < num_threads; ++t) threads.emplace_back(work);
  work();
  for (std::thread& t : threads) t.join();
  report->shards_written = written_count;
  return Status::OK();
}

// The tokenizer (trained on the accepted training clips' captions), the report and, last, the
// manifest.
Status Finish(const IngestOptions& options, const std::string& out_dir, const std::string& fingerprint,
              const std::vector<Candidate>& cands, const std::vector<Chunk>& chunks,
              const std::vector<ChunkResult>& results, IngestReport* report) {
  std::set<std::string> rejected_keys;
  for (const ChunkResult& r : results) {
    for (const IngestIssue& i : r.issues) rejected_keys.insert(i.key);
  }
  Manifest manifest;
  manifest.name = options.name;
  std::vector<std::string> texts;
  for (size_t k = 0; k < chunks.size(); ++k) {
    const Chunk& chunk = chunks[k];
    if (results[k].num_samples > 0) {
      manifest.shards.push_back({chunk.name, chunk.split, results[k].num_samples, results[k].bytes, results[k].xxh64});
      report->accepted += results[k].num_samples;
      report->per_split[chunk.split] += results[k].num_samples;
    }
    if (chunk.split != options.train_split) continue;
    for (size_t i = chunk.first; i < chunk.first + chunk.count; ++i) {
      if (rejected_keys.count(cands[i].key)) continue;
      for (const std::string& c : cands[i].captions) texts.push_back(c);
      for (const std::string& c : cands[i].captions_augment) texts.push_back(c);
    }
  }
  if (texts.empty()) {
    FLAP_RETURN_IF_ERROR(WriteReport(out_dir, *report));
    return Status::InvalidArgument("ingest: no accepted clip in the training split '" + options.train_split +
                                   "' to train the tokenizer on");
  }
  FLAP_RETURN_IF_ERROR(TrainTokenizer(texts, JoinPath(out_dir, manifest.tokenizer), options.vocab_size));
  FLAP_RETURN_IF_ERROR(WriteReport(out_dir, *report));
  json provenance = OptionsToJson(options);
  provenance["generator"] = "flap ingest";
  provenance["generator_version"] = kIngestVersion;
  provenance["fingerprint"] = fingerprint;
  provenance["accepted"] = report->accepted;
  provenance["rejected_by_reason"] = report->by_reason;
  manifest.provenance = provenance;
  return WriteManifest(out_dir, manifest);
}

// Ingest's steps; `report` holds what they found, as far as they went.
Status RunIngest(const IngestOptions& options, const std::string& out_dir, IngestReport* report_ptr) {
  IngestReport& report = *report_ptr;
  FLAP_RETURN_IF_ERROR(CheckOptions(options));
  // 1. Plan.
  Planner planner(options);
  FLAP_RETURN_IF_ERROR(Plan(options, &planner));
  FLAP_RETURN_IF_ERROR(MakeDirs(out_dir));
  report.issues = planner.issues();
  if (options.on_error == OnError::kFail && !report.issues.empty()) {
    for (const IngestIssue& i : report.issues) ++report.by_reason[i.reason];
    FLAP_RETURN_IF_ERROR(WriteReport(out_dir, report));
    return IssueToStatus(report.issues.front());
  }
  std::vector<Candidate>& cands = planner.candidates();
  const std::vector<Chunk> chunks = CutIntoChunks(options, &cands);
  const std::string fingerprint = Fingerprint(options, planner, cands);

  // 2. Write, reusing what an earlier run with the same fingerprint finished.
  std::vector<ChunkResult> results;
  FLAP_RETURN_IF_ERROR(WriteChunks(options, out_dir, fingerprint, cands, chunks, &results, &report));
  for (const ChunkResult& r : results) FLAP_RETURN_IF_ERROR(r.status);
  for (const ChunkResult& r : results) report.issues.insert(report.issues.end(), r.issues.begin(), r.issues.end());
  for (const IngestIssue& i : report.issues) ++report.by_reason[i.reason];
  if (options.on_error == OnError::kFail) {
    for (const ChunkResult& r : results) {  // the first bad clip in plan order
      if (!r.issues.empty()) {
        FLAP_RETURN_IF_ERROR(WriteReport(out_dir, report));
        return IssueToStatus(r.issues.front());
      }
    }
  }
  for (const ChunkResult& r : results) {
    if (!r.done) {
      return Status::FailedPrecondition("ingest: stopped after " + std::to_string(report.shards_written) +
                                        " shards (stop_after_shards)");
    }
  }

  // 3. Tokenizer, report, manifest.
  return Finish(options, out_dir, fingerprint, cands, chunks, results, &report);
}

}  // namespace

Status Ingest(const IngestOptions& options, const std::string& out_dir, IngestReport* report_out) {
  IngestReport report;
  Status status = RunIngest(options, out_dir, &report);
  if (report_out) *report_out = std::move(report);
  return status;
}

}  // namespace flap::sharding
