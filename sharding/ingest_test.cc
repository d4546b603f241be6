// Tests for sharding/ingest.h: the CSV reader, Clotho / AudioCaps / WebDataset ingestion over
// small corpora written here (WAV, FLAC, OGG/Vorbis at 44.1/48/22.05 kHz, mono and stereo, with
// broken entries), the bad-input report, the fail policy, and kill-and-resume determinism.
#include "sharding/ingest.h"

#include <gtest/gtest.h>
#include <sndfile.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "common/testing/testing.h"
#include "sharding/audio.h"
#include "sharding/manifest.h"
#include "sharding/shard_reader.h"
#include "sharding/shard_writer.h"
#include "sharding/testing/test_util.h"

namespace flap::sharding {
namespace {

using testing::ReadAll;
using testing::ScratchDir;
using testing::WriteAll;

// Writes `seconds` of a sine at `rate` with `channels` channels in libsndfile `format`.
void WriteTone(const std::string& path, int rate, int channels, double seconds, int format) {
  SF_INFO info{};
  info.samplerate = rate;
  info.channels = channels;
  info.format = format;
  SNDFILE* snd = sf_open(path.c_str(), SFM_WRITE, &info);
  ASSERT_NE(snd, nullptr) << path << ": " << sf_strerror(nullptr);
  const size_t frames = static_cast<size_t>(std::lround(seconds * rate));
  std::vector<float> data(frames * static_cast<size_t>(channels));
  for (size_t i = 0; i < frames; ++i) {
    for (int c = 0; c < channels; ++c) {
      data[i * static_cast<size_t>(channels) + static_cast<size_t>(c)] =
          static_cast<float>(0.3 * std::sin(2 * 3.14159265 * (440.0 + 110 * c) * i / rate));
    }
  }
  ASSERT_EQ(sf_writef_float(snd, data.data(), static_cast<sf_count_t>(frames)), static_cast<sf_count_t>(frames));
  sf_close(snd);
}

constexpr int kWav = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
constexpr int kFlac = SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
constexpr int kOgg = SF_FORMAT_OGG | SF_FORMAT_VORBIS;

std::map<std::string, Sample> ReadAllSamples(const std::string& dir,
                                             std::map<std::string, std::string>* split_of = nullptr) {
  std::map<std::string, Sample> out;
  StatusOr<Manifest> m = ReadManifest(dir);
  EXPECT_OK(m);
  if (!m.ok()) return out;
  for (const ShardInfo& info : m->shards) {
    EXPECT_OK(VerifyShard(dir, info));
    auto samples = ReadShard(JoinPath(dir, info.name));
    EXPECT_OK(samples);
    if (!samples.ok()) continue;
    EXPECT_EQ(static_cast<int64_t>(samples->size()), info.num_samples);
    for (Sample& s : samples.value()) {
      if (split_of) (*split_of)[s.key] = info.split;
      out[s.key] = std::move(s);
    }
  }
  return out;
}

nlohmann::json ReadReport(const std::string& dir) {
  return nlohmann::json::parse(ReadAll(JoinPath(dir, kIngestReportFileName)));
}

// The issues of the report as "file name: reason".
std::multiset<std::string> IssueNames(const IngestReport& report) {
  std::multiset<std::string> out;
  for (const IngestIssue& i : report.issues) {
    out.insert(std::filesystem::path(i.file).filename().string() + ": " + i.reason);
  }
  return out;
}

void ExpectNear16k(const Sample& s, double seconds) {
  EXPECT_NEAR(static_cast<double>(s.audio.size()), seconds * kSampleRate, 2.0) << s.key;
}

// A Clotho-style corpus: a development CSV (with good clips in every format and one of each
// kind of bad entry), a validation CSV and an evaluation CSV.
struct ClothoCorpus {
  std::string dev_csv, val_csv, eval_csv, audio;
};

ClothoCorpus WriteClotho(const std::string& root) {
  ClothoCorpus c{root + "/dev.csv", root + "/val.csv", root + "/eval.csv", root + "/audio"};
  std::filesystem::create_directories(c.audio);
  WriteTone(c.audio + "/a dog.wav", 44100, 1, 1.0, kWav);
  WriteTone(c.audio + "/b.flac", 48000, 2, 1.5, kFlac);
  WriteTone(c.audio + "/c.ogg", 22050, 2, 2.0, kOgg);
  WriteTone(c.audio + "/d.v2.wav", 16000, 1, 0.8, kWav);
  WriteTone(c.audio + "/e.wav", 16000, 1, 0.5, kWav);
  WriteTone(c.audio + "/f.wav", 16000, 1, 0.5, kWav);
  WriteTone(c.audio + "/long.wav", 22050, 1, 5.0, kWav);
  WriteTone(c.audio + "/g.ogg", 44100, 1, 1.2, kOgg);
  WriteTone(c.audio + "/h.wav", 16000, 1, 0.7, kWav);
  WriteAll(c.audio + "/broken.wav", "RIFF this is not audio at all, just text pretending");
  WriteTone(c.audio + "/zero.wav", 16000, 1, 0.0, kWav);
  WriteTone(c.audio + "/trunc.flac", 44100, 1, 2.0, kFlac);
  std::string flac = ReadAll(c.audio + "/trunc.flac");
  WriteAll(c.audio + "/trunc.flac", flac.substr(0, flac.size() / 2));
  const std::string header = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n";
  WriteAll(c.dev_csv, header +
                          "a dog.wav,A dog barks,\"A dog, loudly, barks\",\"The \"\"dog\"\" barks\",dog,barking\n"
                          "b.flac,b one,b two,b three,b four,b five\r\n"
                          "c.ogg,\"multi\nline caption\",c2,c3,c4,c5\n"
                          "d.v2.wav,d1,d2,d3,d4,d5\n"
                          "e.wav,e1,   ,e3,e4,e5\n"
                          "f.wav,f1,f2,\xff\xfe bad,f4,f5\n"
                          "long.wav,l1,l2,l3,l4,l5\n"
                          "broken.wav,x1,x2,x3,x4,x5\n"
                          "zero.wav,z1,z2,z3,z4,z5\n"
                          "trunc.flac,t1,t2,t3,t4,t5\n"
                          "missing.wav,m1,m2,m3,m4,m5\n");
  WriteAll(c.val_csv, header + "h.wav,h1,h2,h3,h4,h5\n");
  WriteAll(c.eval_csv, header +
                           "g.ogg,g1,g2,g3,g4,g5\n"
                           "a dog.wav,again,again,again,again,again\n");
  return c;
}

IngestOptions ClothoOptions(const ClothoCorpus& c) {
  IngestOptions o;
  o.format = IngestFormat::kClotho;
  // The corpus's own split names, mapped to the roles train, val, test.
  o.inputs = {{c.dev_csv, c.audio, {}, "development"},
              {c.val_csv, c.audio, {}, "validation"},
              {c.eval_csv, c.audio, {}, "evaluation"}};
  o.samples_per_shard = 2;
  o.max_seconds = 3.0;
  o.vocab_size = 40;
  o.threads = 2;
  return o;
}

TEST(IngestCsv, ParsesQuotesCommasDoubledQuotesAndLineBreaks) {
  auto rows = ParseCsv("\xEF\xBB\xBFh1,h2\r\n\"a,b\",\"say \"\"hi\"\"\"\n\"x\ny\",\n", "t.csv");
  ASSERT_OK(rows);
  ASSERT_EQ(rows->size(), 3u);
  EXPECT_EQ(rows->at(0).fields, (std::vector<std::string>{"h1", "h2"}));
  EXPECT_EQ(rows->at(1).fields, (std::vector<std::string>{"a,b", "say \"hi\""}));
  EXPECT_EQ(rows->at(2).fields, (std::vector<std::string>{"x\ny", ""}));
  EXPECT_EQ(rows->at(2).line, 3);
  auto bad = ParseCsv("a,\"open\n", "t.csv");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("t.csv:1"), std::string::npos);
}

TEST(IngestUtf8, AcceptsUtf8AndRejectsMalformedBytes) {
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\xb6"));
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));      // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));  // surrogate
  EXPECT_FALSE(IsValidUtf8("\xe2\x82"));      // cut short
}

TEST(IngestClotho, WritesGoodClipsAndReportsEachBadOneByReason) {
  ScratchDir dir;
  ClothoCorpus corpus = WriteClotho(dir.File("corpus"));
  const std::string out = dir.File("out");
  IngestReport report;
  Status s = Ingest(ClothoOptions(corpus), out, &report);
  ASSERT_OK(s);

  std::map<std::string, std::string> split_of;
  auto samples = ReadAllSamples(out, &split_of);
  ASSERT_EQ(samples.size(), 6u);
  EXPECT_EQ(report.accepted, 6);
  EXPECT_EQ(report.per_split, (std::map<std::string, int64_t>{{"train", 4}, {"val", 1}, {"test", 1}}));
  EXPECT_EQ(split_of["g"], "test");
  EXPECT_EQ(split_of["h"], "val");
  EXPECT_EQ(split_of["a dog"], "train");
  EXPECT_EQ(samples["a dog"].captions,
            (std::vector<std::string>{"A dog barks", "A dog, loudly, barks", "The \"dog\" barks", "dog", "barking"}));
  EXPECT_EQ(samples["c"].captions[0], "multi\nline caption");
  ExpectNear16k(samples["a dog"], 1.0);  // 44.1 kHz mono WAV
  ExpectNear16k(samples["b"], 1.5);      // 48 kHz stereo FLAC
  ExpectNear16k(samples["c"], 2.0);      // 22.05 kHz stereo OGG
  ExpectNear16k(samples["d_v2"], 0.8);   // '.' in a key becomes '_'
  ExpectNear16k(samples["g"], 1.2);      // 44.1 kHz mono OGG

  EXPECT_EQ(IssueNames(report),
            (std::multiset<std::string>{"dev.csv:7: empty_caption", "dev.csv:8: invalid_utf8",
                                        "missing.wav: missing_file", "a dog.wav: duplicate_key", "long.wav: too_long",
                                        "broken.wav: undecodable", "zero.wav: zero_length", "trunc.flac: truncated"}));
  nlohmann::json j = ReadReport(out);
  EXPECT_EQ(j["accepted"], 6);
  EXPECT_EQ(j["rejected"], 8);
  for (const char* reason : {kReasonEmptyCaption, kReasonInvalidUtf8, kReasonMissingFile, kReasonDuplicateKey,
                             kReasonTooLong, kReasonUndecodable, kReasonZeroLength, kReasonTruncated}) {
    EXPECT_EQ(j["by_reason"][reason], 1) << reason;
  }
  EXPECT_EQ(j["issues"].size(), 8u);

  StatusOr<Manifest> m = ReadManifest(out);
  ASSERT_OK(m);
  EXPECT_EQ(m->provenance["format"], "clotho");
  ASSERT_EQ(m->provenance["inputs"].size(), 3u);
  EXPECT_EQ(m->provenance["inputs"][0]["split"], "train");
  EXPECT_EQ(m->provenance["inputs"][0]["corpus_split"], "development");
  EXPECT_EQ(m->provenance["inputs"][2]["split"], "test");
  EXPECT_EQ(m->provenance["shuffle_seed"], kDefaultShuffleSeed);
  EXPECT_EQ(m->Splits(), (std::vector<std::string>{"train", "val", "test"}));  // roles first, in order
  EXPECT_TRUE(std::filesystem::exists(JoinPath(out, m->tokenizer)));
}

TEST(IngestClotho, CropsOverLongClipsWhenAsked) {
  ScratchDir dir;
  ClothoCorpus corpus = WriteClotho(dir.File("corpus"));
  IngestOptions o = ClothoOptions(corpus);
  o.crop = true;
  IngestReport report;
  ASSERT_OK(Ingest(o, dir.File("out"), &report));
  auto samples = ReadAllSamples(dir.File("out"));
  ASSERT_EQ(samples.count("long"), 1u);
  EXPECT_EQ(samples["long"].audio.size(), 3u * kSampleRate);
  EXPECT_EQ(report.by_reason.count(kReasonTooLong), 0u);
}

TEST(IngestClotho, FailPolicyStopsAtTheFirstBadFileNamingIt) {
  ScratchDir dir;
  ClothoCorpus corpus = WriteClotho(dir.File("corpus"));
  IngestOptions o = ClothoOptions(corpus);
  o.on_error = OnError::kFail;
  Status s = Ingest(o, dir.File("out"));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("dev.csv:7: empty_caption"), std::string::npos) << s.ToString();
  EXPECT_FALSE(std::filesystem::exists(dir.File("out/manifest.json")));

  // Only an audio problem: found while decoding, named likewise.
  WriteAll(corpus.dev_csv, "file_name,caption_1\na dog.wav,fine\nbroken.wav,bad audio\n");
  o.inputs = {{corpus.dev_csv, corpus.audio, {}, "train"}};
  s = Ingest(o, dir.File("out2"));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("broken.wav: undecodable"), std::string::npos) << s.ToString();
  EXPECT_EQ(ReadReport(dir.File("out2"))["by_reason"]["undecodable"], 1);
}

TEST(IngestAudioCaps, GroupsRowsPerClipAndFindsFilesWithOrWithoutStartTime) {
  ScratchDir dir;
  const std::string audio = dir.File("audio");
  std::filesystem::create_directories(audio);
  WriteTone(audio + "/yt-AAA.wav", 48000, 2, 1.0, kWav);
  WriteTone(audio + "/ytBBB_30.flac", 44100, 1, 2.0, kFlac);
  WriteTone(audio + "/ytCCC_10.ogg", 22050, 1, 1.5, kOgg);
  WriteTone(audio + "/ytDDD.wav", 16000, 1, 1.0, kWav);
  const std::string csv = dir.File("train.csv");
  WriteAll(csv,
           "audiocap_id,youtube_id,start_time,caption\n"
           "1,yt-AAA,0,a first\n"
           "2,ytBBB,30,\"b, first\"\n"
           "3,yt-AAA,0,a second\n"
           "4,ytCCC,10.0,c only\n"
           "5,ytMISSING,0,nobody\n"
           "6,ytDDD,0,\n"
           "7,yt-AAA,0,a third\n");
  IngestOptions o;
  o.format = IngestFormat::kAudioCaps;
  o.inputs = {{csv, audio, {}, ""}};
  o.val_fraction = 0.34;
  o.seed = 3;
  o.vocab_size = 30;
  IngestReport report;
  const std::string out = dir.File("out");
  Status s = Ingest(o, out, &report);
  ASSERT_OK(s);
  auto samples = ReadAllSamples(out);
  ASSERT_EQ(samples.size(), 3u);
  EXPECT_EQ(samples["yt-AAA"].captions, (std::vector<std::string>{"a first", "a second", "a third"}));
  EXPECT_EQ(samples["ytBBB"].captions, (std::vector<std::string>{"b, first"}));
  ExpectNear16k(samples["yt-AAA"], 1.0);
  ExpectNear16k(samples["ytBBB"], 2.0);
  ExpectNear16k(samples["ytCCC"], 1.5);
  EXPECT_EQ(IssueNames(report),
            (std::multiset<std::string>{"train.csv:7: empty_caption", "ytMISSING_0.*: missing_file"}));
  int64_t total = 0;
  for (const auto& [split, n] : report.per_split) total += n;
  EXPECT_EQ(total, 3);
}

// Many small clips, so a run has several shards per split.
IngestOptions ManyClips(const std::string& root, int n) {
  const std::string audio = root + "/audio";
  std::filesystem::create_directories(audio);
  std::string csv = "file_name,caption_1,caption_2\n";
  for (int i = 0; i < n; ++i) {
    const std::string name = "clip" + std::to_string(i) + (i % 3 == 0 ? ".flac" : i % 3 == 1 ? ".ogg" : ".wav");
    const int rates[] = {44100, 48000, 22050};
    WriteTone(audio + "/" + name, rates[i % 3], 1 + i % 2, 0.3 + 0.05 * (i % 5),
              i % 3 == 0   ? kFlac
              : i % 3 == 1 ? kOgg
                           : kWav);
    csv += name + ",caption number " + std::to_string(i) + ",another " + std::to_string(i) + "\n";
  }
  csv += "nothere.wav,lost,lost\n";
  WriteAll(root + "/c.csv", csv);
  IngestOptions o;
  o.inputs = {{root + "/c.csv", audio, {}, ""}};
  o.val_fraction = 0.2;
  o.test_fraction = 0.2;
  o.seed = 7;
  o.samples_per_shard = 3;
  o.vocab_size = 40;
  return o;
}

std::map<std::string, std::string> ShardChecksums(const std::string& dir) {
  std::map<std::string, std::string> out;
  StatusOr<Manifest> m = ReadManifest(dir);
  EXPECT_OK(m);
  if (!m.ok()) return out;
  for (const ShardInfo& info : m->shards) {
    auto sum = FileXxh64(JoinPath(dir, info.name));
    EXPECT_OK(sum);
    EXPECT_EQ(sum.value(), info.xxh64);
    out[info.name] = sum.value();
  }
  return out;
}

TEST(IngestResume, KilledRunRerunMatchesAnUninterruptedRun) {
  ScratchDir dir;
  IngestOptions o = ManyClips(dir.path(), 20);
  o.threads = 1;
  ASSERT_OK(Ingest(o, dir.File("whole")));
  const auto whole = ShardChecksums(dir.File("whole"));
  ASSERT_GE(whole.size(), 5u);

  // Killed after 2 shards (2 threads: timing varies, contents must not).
  o.threads = 2;
  o.stop_after_shards = 2;
  IngestReport partial;
  Status s = Ingest(o, dir.File("resumed"), &partial);
  ASSERT_EQ(s.code(), Status::Code::kFailedPrecondition) << s.ToString();
  EXPECT_FALSE(std::filesystem::exists(dir.File("resumed/manifest.json")));
  // A stray temporary file, as a kill mid-shard leaves, does not matter.
  WriteAll(dir.File("resumed/train-000004.tar.tmp"), "half a shard");

  o.stop_after_shards = -1;
  IngestReport report;
  ASSERT_OK(Ingest(o, dir.File("resumed"), &report));
  EXPECT_GE(report.shards_reused, 2);
  EXPECT_EQ(ShardChecksums(dir.File("resumed")), whole);
  EXPECT_EQ(ReadAll(dir.File("resumed/manifest.json")), ReadAll(dir.File("whole/manifest.json")));
  EXPECT_EQ(ReadAll(dir.File("resumed/tokenizer.model")), ReadAll(dir.File("whole/tokenizer.model")));
  EXPECT_EQ(report.issues.size(), 1u);  // nothere.wav

  // A finished folder: everything is reused, nothing changes.
  IngestReport again;
  ASSERT_OK(Ingest(o, dir.File("resumed"), &again));
  EXPECT_EQ(again.shards_written, 0);
  EXPECT_EQ(ShardChecksums(dir.File("resumed")), whole);

  // A damaged shard is rewritten.
  const std::string victim = dir.File("resumed/" + whole.begin()->first);
  WriteAll(victim, ReadAll(victim).substr(0, 100));
  IngestReport repaired;
  ASSERT_OK(Ingest(o, dir.File("resumed"), &repaired));
  EXPECT_EQ(repaired.shards_written, 1);
  EXPECT_EQ(ShardChecksums(dir.File("resumed")), whole);
}

// The keys of each split in shard order (manifest order, then order within each shard).
std::map<std::string, std::vector<std::string>> KeysInShardOrder(const std::string& dir) {
  std::map<std::string, std::vector<std::string>> out;
  StatusOr<Manifest> m = ReadManifest(dir);
  EXPECT_OK(m);
  if (!m.ok()) return out;
  for (const ShardInfo& info : m->shards) {
    auto samples = ReadShard(JoinPath(dir, info.name));
    EXPECT_OK(samples);
    if (!samples.ok()) continue;
    for (const Sample& sample : samples.value()) out[info.split].push_back(sample.key);
  }
  return out;
}

std::vector<std::string> Sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

TEST(IngestSplits, CorpusSplitNamesMapToRoles) {
  EXPECT_EQ(SplitRole("development"), "train");  // Clotho
  EXPECT_EQ(SplitRole("validation"), "val");
  EXPECT_EQ(SplitRole("evaluation"), "test");
  for (const char* same : {"train", "val", "test", "eval", "extra"}) EXPECT_EQ(SplitRole(same), same);  // AudioCaps, ...
}

TEST(IngestSplits, SeededFractionsDrawValAndTestPerKey) {
  ScratchDir dir;
  IngestOptions o = ManyClips(dir.path(), 40);
  o.samples_per_shard = 100;
  o.val_fraction = 0.3;
  o.test_fraction = 0.0;
  ASSERT_OK(Ingest(o, dir.File("val_only")));
  o.test_fraction = 0.3;
  IngestReport report;
  ASSERT_OK(Ingest(o, dir.File("both"), &report));
  auto val_only = KeysInShardOrder(dir.File("val_only"));
  auto both = KeysInShardOrder(dir.File("both"));
  EXPECT_EQ(val_only.count("test"), 0u);
  ASSERT_EQ(both.size(), 3u);
  ASSERT_GE(both["val"].size(), 1u);
  ASSERT_GE(both["test"].size(), 1u);
  ASSERT_GE(both["train"].size(), 1u);
  EXPECT_EQ(both["val"].size() + both["test"].size() + both["train"].size(), 40u);
  EXPECT_EQ(report.per_split["test"], static_cast<int64_t>(both["test"].size()));
  // A key's draw does not depend on test_fraction: val is the same set; test comes out of train.
  EXPECT_EQ(Sorted(both["val"]), Sorted(val_only["val"]));
  std::vector<std::string> train_and_test = both["train"];
  train_and_test.insert(train_and_test.end(), both["test"].begin(), both["test"].end());
  EXPECT_EQ(Sorted(train_and_test), Sorted(val_only["train"]));
  // Another seed draws other clips.
  o.seed = 8;
  ASSERT_OK(Ingest(o, dir.File("seed8")));
  EXPECT_NE(Sorted(KeysInShardOrder(dir.File("seed8"))["val"]), Sorted(both["val"]));
  auto m = ReadManifest(dir.File("both"));
  ASSERT_OK(m);
  EXPECT_EQ(m->provenance["val_fraction"], 0.3);
  EXPECT_EQ(m->provenance["test_fraction"], 0.3);
}

TEST(IngestSplits, FractionsOutOfRangeAreRejectedByName) {
  ScratchDir dir;
  IngestOptions o = ManyClips(dir.path(), 1);
  auto message = [&](double val, double test) {
    o.val_fraction = val;
    o.test_fraction = test;
    Status s = Ingest(o, dir.File("out"));
    EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.ToString();
    return s.message();
  };
  EXPECT_NE(message(1.0, 0.0).find("val_fraction"), std::string::npos);
  EXPECT_NE(message(-0.1, 0.0).find("val_fraction"), std::string::npos);
  EXPECT_NE(message(0.0, 1.5).find("test_fraction"), std::string::npos);
  EXPECT_NE(message(std::nan(""), 0.0).find("val_fraction"), std::string::npos);
  const std::string sum = message(0.6, 0.5);
  EXPECT_NE(sum.find("val_fraction"), std::string::npos) << sum;
  EXPECT_NE(sum.find("test_fraction"), std::string::npos) << sum;
  EXPECT_NE(sum.find("below 1"), std::string::npos) << sum;
  EXPECT_FALSE(std::filesystem::exists(dir.File("out/manifest.json")));
}

TEST(IngestShuffle, ClipsAreShardedInASeededOrderNotInKeyOrder) {
  ScratchDir dir;
  IngestOptions o = ManyClips(dir.path(), 24);
  o.val_fraction = 0.0;
  o.test_fraction = 0.0;
  o.samples_per_shard = 5;
  ASSERT_OK(Ingest(o, dir.File("a")));
  ASSERT_OK(Ingest(o, dir.File("b")));
  // The same inputs and seed: the same shards, byte for byte.
  EXPECT_EQ(ShardChecksums(dir.File("a")), ShardChecksums(dir.File("b")));
  const std::vector<std::string> a = KeysInShardOrder(dir.File("a"))["train"];
  ASSERT_EQ(a.size(), 24u);
  EXPECT_NE(a, Sorted(a));  // not sorted by key

  o.shuffle_seed = 2;
  ASSERT_OK(Ingest(o, dir.File("c")));
  const std::vector<std::string> c = KeysInShardOrder(dir.File("c"))["train"];
  EXPECT_NE(c, a);                  // another order
  EXPECT_EQ(Sorted(c), Sorted(a));  // of the same clips
  EXPECT_NE(c, Sorted(c));
  auto m = ReadManifest(dir.File("c"));
  ASSERT_OK(m);
  EXPECT_EQ(m->provenance["shuffle_seed"], 2);
  auto ma = ReadManifest(dir.File("a"));
  ASSERT_OK(ma);
  EXPECT_EQ(ma->provenance["shuffle_seed"], kDefaultShuffleSeed);
}

TEST(IngestWebDataset, ReshardsExistingShardsKeepingSamples) {
  ScratchDir dir;
  std::vector<std::string> sources;
  for (int s = 0; s < 2; ++s) {
    const std::string path = dir.File("src-" + std::to_string(s) + ".tar");
    auto writer = ShardWriter::Create(path, s == 0 ? AudioFormat::kFlac : AudioFormat::kWav);
    ASSERT_OK(writer);
    for (int i = 0; i < 5; ++i) {
      Sample sample;
      sample.key = "s" + std::to_string(s) + "_" + std::to_string(i);
      sample.audio = std::vector<float>(static_cast<size_t>(8000 + 1600 * i), 0.1f);
      sample.captions = {"caption " + sample.key, "other " + sample.key};
      sample.tags = {"tag"};
      ASSERT_OK(writer.value()->Add(sample));
    }
    ASSERT_OK(writer.value()->Close());
    sources.push_back(path);
  }
  WriteAll(dir.File("src-bad.tar"), "not a tar");
  IngestOptions o;
  o.format = IngestFormat::kWebDataset;
  o.inputs = {{"", "", {sources[0], sources[1], dir.File("src-bad.tar")}, "train"}};
  o.samples_per_shard = 3;
  o.vocab_size = 40;
  IngestReport report;
  Status s = Ingest(o, dir.File("out"), &report);
  ASSERT_OK(s);
  auto m = ReadManifest(dir.File("out"));
  ASSERT_OK(m);
  EXPECT_EQ(m->shards.size(), 4u);  // 10 samples in shards of 3
  auto samples = ReadAllSamples(dir.File("out"));
  ASSERT_EQ(samples.size(), 10u);
  EXPECT_EQ(samples["s1_3"].captions, (std::vector<std::string>{"caption s1_3", "other s1_3"}));
  EXPECT_EQ(samples["s1_3"].tags, (std::vector<std::string>{"tag"}));
  EXPECT_EQ(samples["s0_4"].audio.size(), 8000u + 1600u * 4);
  EXPECT_EQ(IssueNames(report), (std::multiset<std::string>{"src-bad.tar: corrupt_shard"}));
}

TEST(IngestWebDataset, UndecodableMemberCostsOnlyItsClip) {
  // A LAION-style shard made by tar: the middle clip's audio is garbage.
  ScratchDir dir;
  std::filesystem::create_directories(dir.File("m"));
  auto wav = EncodeAudio(std::vector<float>(16000, 0.2f), 16000, AudioFormat::kWav);
  ASSERT_OK(wav);
  for (const char* k : {"a1", "a2", "a3"}) {
    WriteAll(dir.File(std::string("m/") + k + ".wav"), std::string(k) == "a2" ? "RIFF garbage" : *wav);
    WriteAll(dir.File(std::string("m/") + k + ".json"), std::string("{\"text\": [\"clip ") + k + "\"]}");
  }
  ASSERT_EQ(std::system(("tar -cf " + dir.File("src.tar") + " -C " + dir.File("m") +
                         " a1.wav a1.json a2.wav a2.json a3.wav a3.json")
                            .c_str()),
            0);
  IngestOptions o;
  o.format = IngestFormat::kWebDataset;
  o.inputs = {{"", "", {dir.File("src.tar")}, "train"}};
  o.vocab_size = 20;
  IngestReport report;
  ASSERT_OK(Ingest(o, dir.File("out"), &report));
  auto samples = ReadAllSamples(dir.File("out"));
  EXPECT_EQ(samples.size(), 2u);
  EXPECT_TRUE(samples.count("a1") && samples.count("a3"));
  EXPECT_EQ(IssueNames(report), (std::multiset<std::string>{"src.tar:a2: undecodable"}));
}

}  // namespace
}  // namespace flap::sharding
