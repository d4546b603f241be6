// Tests for sharding/shard_writer.h and sharding/shard_reader.h: round trips, determinism,
// compatibility with GNU tar and LAION-style shards, and clear errors for damaged shards.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "sharding/audio.h"
#include "sharding/shard_reader.h"
#include "sharding/shard_writer.h"
#include "sharding/testing/test_util.h"
#include "common/testing/testing.h"

namespace flap::sharding {
namespace {

using testing::ReadAll;
using testing::ScratchDir;
using testing::WriteAll;

Sample MakeSample(const std::string& key, double freq, std::vector<std::string> captions) {
  Sample s;
  s.key = key;
  s.audio.resize(8000);
  for (size_t i = 0; i < s.audio.size(); ++i) {
    s.audio[i] = static_cast<float>(0.4 * std::sin(2 * 3.14159265358979 * freq * i / kSampleRate));
  }
  s.captions = std::move(captions);
  return s;
}

// Runs a shell command; returns its exit status and fills *output with its stdout.
int RunShell(const std::string& command, std::string* output) {
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) output->append(buf, n);
  return ::pclose(pipe);
}

Status WriteShard(const std::string& path, const std::vector<Sample>& samples,
                  AudioFormat format = AudioFormat::kFlac) {
  auto writer = ShardWriter::Create(path, format);
  if (!writer.ok()) return writer.status();
  for (const Sample& s : samples) FLAP_RETURN_IF_ERROR(writer.value()->Add(s));
  return writer.value()->Close();
}

std::vector<Sample> ThreeSamples() {
  std::vector<Sample> samples = {
      MakeSample("clip-0", 250.0, {"a low tone", "a low-pitched hum"}),
      MakeSample("clip-1", 900.0, {"a mid tone"}),
      MakeSample("clip_2 x", 3000.0, {"a high tone", "a shrill beep", "a whistle"}),
  };
  samples[0].captions_augment = {"A quiet low-pitched steady hum."};
  samples[0].tags = {"tone_low"};
  samples[2].tags = {"tone_high", "loud"};
  return samples;
}

// Makes a tar with GNU tar from `files` (name -> contents), members in the given order.
std::string MakeTarWithGnuTar(const ScratchDir& dir, const std::string& tar_name,
                              const std::vector<std::pair<std::string, std::string>>& files) {
  const std::string src = dir.File(tar_name + ".d");
  std::filesystem::create_directories(src);
  std::string names;
  for (const auto& [name, contents] : files) {
    std::filesystem::create_directories(std::filesystem::path(src + "/" + name).parent_path());
    WriteAll(src + "/" + name, contents);
    names += " '" + name + "'";
  }
  const std::string tar = dir.File(tar_name);
  std::string out;
  EXPECT_EQ(RunShell("/usr/bin/tar -cf '" + tar + "' -C '" + src + "'" + names, &out), 0);
  return tar;
}

std::string Flac(double freq) {
  return EncodeAudio(MakeSample("x", freq, {"x"}).audio, kSampleRate, AudioFormat::kFlac).value();
}

void ExpectCorruption(const StatusOr<std::vector<Sample>>& result, const std::string& path, const std::string& detail) {
  ASSERT_FALSE(result.ok()) << "expected an error mentioning " << detail;
  EXPECT_EQ(result.status().code(), Status::Code::kCorruption) << result.status().ToString();
  EXPECT_NE(result.status().message().find(path), std::string::npos) << result.status().ToString();
  EXPECT_NE(result.status().message().find(detail), std::string::npos) << result.status().ToString();
}

TEST(Shard, WriteThenReadRoundTripsEveryField) {
  ScratchDir dir;
  const std::string path = dir.File("s.tar");
  std::vector<Sample> in = ThreeSamples();
  ASSERT_OK(WriteShard(path, in));
  auto out = ReadShard(path);
  ASSERT_OK(out);
  ASSERT_EQ(out->size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    const Sample& a = in[i];
    const Sample& b = (*out)[i];
    EXPECT_EQ(b.key, a.key);
    EXPECT_EQ(b.captions, a.captions);
    EXPECT_EQ(b.captions_augment, a.captions_augment);
    EXPECT_EQ(b.tags, a.tags);
    ASSERT_EQ(b.audio.size(), a.audio.size());
    for (size_t j = 0; j < a.audio.size(); ++j) ASSERT_NEAR(b.audio[j], a.audio[j], 1e-4);
  }
}

TEST(Shard, WavMembersRoundTrip) {
  ScratchDir dir;
  const std::string path = dir.File("s.tar");
  ASSERT_OK(WriteShard(path, ThreeSamples(), AudioFormat::kWav));
  std::string listing;
  ASSERT_EQ(RunShell("/usr/bin/tar -tf '" + path + "'", &listing), 0);
  EXPECT_NE(listing.find("clip-0.wav\n"), std::string::npos);
  auto out = ReadShard(path);
  ASSERT_OK(out);
  EXPECT_EQ(out->size(), 3u);
}

TEST(Shard, GnuTarListsTheMembersInOrder) {
  ScratchDir dir;
  const std::string path = dir.File("s.tar");
  ASSERT_OK(WriteShard(path, ThreeSamples()));
  std::string listing;
  ASSERT_EQ(RunShell("/usr/bin/tar -tf '" + path + "'", &listing), 0);
  EXPECT_EQ(listing, "clip-0.flac\nclip-0.json\nclip-1.flac\nclip-1.json\nclip_2 x.flac\nclip_2 x.json\n");
  std::string verbose;
  ASSERT_EQ(RunShell("/usr/bin/tar -tvf '" + path + "' clip-0.json", &verbose), 0);
  EXPECT_EQ(verbose.substr(0, 10), "-rw-r--r--");
  EXPECT_NE(verbose.find("0/0"), std::string::npos) << verbose;
  EXPECT_NE(verbose.find("1970-01-01"), std::string::npos) << verbose;
  std::string json;
  ASSERT_EQ(RunShell("/usr/bin/tar -xOf '" + path + "' clip-0.json", &json), 0);
  EXPECT_EQ(json,
            "{\"duration\":0.5,\"tags\":[\"tone_low\"],\"text\":[\"a low tone\",\"a low-pitched "
            "hum\"],\"text_augment\":[\"A quiet low-pitched steady hum.\"]}");
}

TEST(Shard, SameSamplesGiveTheSameBytes) {
  ScratchDir dir;
  ASSERT_OK(WriteShard(dir.File("a.tar"), ThreeSamples()));
  ASSERT_OK(WriteShard(dir.File("b.tar"), ThreeSamples()));
  std::string a = ReadAll(dir.File("a.tar"));
  EXPECT_FALSE(a.empty());
  EXPECT_EQ(a, ReadAll(dir.File("b.tar")));
}

TEST(Shard, FileAppearsOnlyOnClose) {
  ScratchDir dir;
  const std::string path = dir.File("s.tar");
  auto writer = ShardWriter::Create(path);
  ASSERT_OK(writer);
  ASSERT_OK(writer.value()->Add(ThreeSamples()[0]));
  EXPECT_EQ(writer.value()->num_samples(), 1);
  EXPECT_FALSE(std::filesystem::exists(path));
  const std::string tmp = writer.value()->temp_path();
  EXPECT_EQ(std::filesystem::path(tmp).parent_path(), std::filesystem::path(path).parent_path());
  EXPECT_TRUE(std::filesystem::exists(tmp));
  ASSERT_OK(writer.value()->Close());
  EXPECT_TRUE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(tmp));
  EXPECT_EQ(writer.value()->Close().code(), Status::Code::kFailedPrecondition);
}

TEST(Shard, AbandonedWriterLeavesNoFile) {
  ScratchDir dir;
  const std::string path = dir.File("s.tar");
  std::string tmp;
  {
    auto writer = ShardWriter::Create(path);
    ASSERT_OK(writer);
    ASSERT_OK(writer.value()->Add(ThreeSamples()[0]));
    tmp = writer.value()->temp_path();
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(tmp));
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(Shard, AddRejectsBadSamples) {
  ScratchDir dir;
  auto writer = ShardWriter::Create(dir.File("s.tar"));
  ASSERT_OK(writer);
  ShardWriter& w = *writer.value();
  auto code = [&](Sample s) { return w.Add(s).code(); };
  const auto kInvalid = Status::Code::kInvalidArgument;
  EXPECT_EQ(code(MakeSample("", 440, {"x"})), kInvalid);
  EXPECT_EQ(code(MakeSample("a.b", 440, {"x"})), kInvalid);
  EXPECT_EQ(code(MakeSample("a/b", 440, {"x"})), kInvalid);
  EXPECT_EQ(code(MakeSample("a\nb", 440, {"x"})), kInvalid);
  EXPECT_EQ(code(MakeSample("k", 440, {})), kInvalid);
  EXPECT_EQ(code(MakeSample("k", 440, {"ok", ""})), kInvalid);
  Sample silent = MakeSample("k", 440, {"x"});
  silent.audio.clear();
  EXPECT_EQ(code(silent), kInvalid);
  EXPECT_OK(w.Add(MakeSample("k", 440, {"x"})));
  Status dup = w.Add(MakeSample("k", 440, {"x"}));
  EXPECT_EQ(dup.code(), kInvalid);
  EXPECT_NE(dup.message().find("twice"), std::string::npos);
  EXPECT_EQ(w.num_samples(), 1);
  ASSERT_OK(w.Close());
  auto out = ReadShard(dir.File("s.tar"));
  ASSERT_OK(out);
  EXPECT_EQ(out->size(), 1u);
}

TEST(Shard, ReaderStreamsAndStaysAtTheEnd) {
  ScratchDir dir;
  const std::string path = dir.File("s.tar");
  ASSERT_OK(WriteShard(path, ThreeSamples()));
  auto reader = ShardReader::Open(path);
  ASSERT_OK(reader);
  Sample s;
  std::vector<std::string> keys;
  while (true) {
    auto more = reader.value()->Next(&s);
    ASSERT_OK(more);
    if (!more.value()) break;
    keys.push_back(s.key);
  }
  EXPECT_EQ(keys, (std::vector<std::string>{"clip-0", "clip-1", "clip_2 x"}));
  auto again = reader.value()->Next(&s);
  ASSERT_OK(again);
  EXPECT_FALSE(again.value());
}

TEST(Shard, EmptyShardHasNoSamples) {
  ScratchDir dir;
  ASSERT_OK(WriteShard(dir.File("empty.tar"), {}));
  auto out = ReadShard(dir.File("empty.tar"));
  ASSERT_OK(out);
  EXPECT_TRUE(out->empty());
}

TEST(Shard, ReadsLaionStyleShardsWithTextAsAString) {
  ScratchDir dir;
  const std::string wav = EncodeAudio(MakeSample("x", 700.0, {"x"}).audio, 48000, AudioFormat::kWav).value();
  const std::string tar =
      MakeTarWithGnuTar(dir, "laion.tar",
                        {{"part/000001.json", R"({"text": "a dog barks", "tag": ["dog"], "original_data": {}})"},
                         {"part/000001.txt", "ignored"},
                         {"part/000001.wav", wav},
                         {"part/000002.flac", Flac(440.0)},
                         {"part/000002.json", R"({"text": ["one", "  ", "two"], "tags": "bird"})"},
                         {"README", "no extension: ignored"}});
  auto out = ReadShard(tar);
  ASSERT_OK(out);
  ASSERT_EQ(out->size(), 2u);
  EXPECT_EQ((*out)[0].key, "part/000001");
  EXPECT_EQ((*out)[0].captions, std::vector<std::string>{"a dog barks"});
  EXPECT_TRUE((*out)[0].captions_augment.empty());
  EXPECT_TRUE((*out)[0].tags.empty());
  // 0.5 s of 48 kHz audio becomes 1/6 s at 16 kHz.
  EXPECT_NEAR(static_cast<double>((*out)[0].audio.size()), 8000.0 / 3, 1.0);
  EXPECT_EQ((*out)[1].key, "part/000002");
  EXPECT_EQ((*out)[1].captions, (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ((*out)[1].tags, std::vector<std::string>{"bird"});
  EXPECT_EQ((*out)[1].audio.size(), 8000u);
}

TEST(Shard, ReadsGzipCompressedShards) {
  ScratchDir dir;
  const std::string path = dir.File("s.tar");
  ASSERT_OK(WriteShard(path, ThreeSamples()));
  std::string ignored;
  ASSERT_EQ(RunShell("gzip -k '" + path + "'", &ignored), 0);
  auto out = ReadShard(path + ".gz");
  ASSERT_OK(out);
  EXPECT_EQ(out->size(), 3u);
}

TEST(Shard, TruncatedTarIsCorruptionNamingShardAndMember) {
  ScratchDir dir;
  const std::string path = dir.File("s.tar");
  ASSERT_OK(WriteShard(path, ThreeSamples()));
  std::string bytes = ReadAll(path);
  // Cut inside the second sample's audio (member data starts 512 bytes after its header).
  const size_t cut = bytes.find("clip-1.flac") + 512 + 100;
  WriteAll(path, bytes.substr(0, cut));
  ExpectCorruption(ReadShard(path), path, "clip-1.flac");
}

TEST(Shard, KeyWithoutJsonIsCorruption) {
  ScratchDir dir;
  const std::string tar =
      MakeTarWithGnuTar(dir, "t.tar", {{"a.flac", Flac(440)}, {"a.json", R"({"text": "x"})"}, {"b.flac", Flac(440)}});
  ExpectCorruption(ReadShard(tar), tar, "key 'b' has no .json member");
}

// A member that is not a regular file is skipped with a warning, with its key where it was the
// audio or the caption, and the rest of the shard is read. Against commit a5e0d09 the symbolic
// link ended the shard ("key 'b' has no audio member"): c was lost.
TEST(Shard, MembersThatAreNotRegularFilesAreSkippedWithAWarningAndTheShardReadOn) {
  ScratchDir dir;
  const std::string src = dir.File("t.tar.d");
  std::filesystem::create_directories(src);
  for (const char* key : {"a", "b", "c"}) {
    if (std::string(key) != "b") WriteAll(src + "/" + key + ".flac", Flac(440));
    WriteAll(src + "/" + key + ".json", std::string(R"({"text": "clip )") + key + "\"}");
  }
  std::filesystem::create_symlink("/etc/passwd", src + "/b.flac");
  std::filesystem::create_symlink("a.flac", src + "/c.wav");  // c keeps its own audio
  const std::string tar = dir.File("t.tar");
  std::string out;
  ASSERT_EQ(
      RunShell("/usr/bin/tar -cf '" + tar + "' -C '" + src + "' a.flac a.json b.flac b.json c.flac c.wav c.json", &out),
      0)
      << out;
  auto reader = ShardReader::Open(tar);
  ASSERT_OK(reader);
  std::vector<std::string> keys;
  Sample sample;
  for (;;) {
    auto more = (*reader)->Next(&sample);
    ASSERT_OK(more);
    if (!*more) break;
    keys.push_back(sample.key);
    EXPECT_EQ(sample.captions, std::vector<std::string>{"clip " + sample.key});
  }
  EXPECT_EQ(keys, (std::vector<std::string>{"a", "c"}));
  const std::vector<std::string>& warnings = (*reader)->warnings();
  ASSERT_EQ(warnings.size(), 3u);
  EXPECT_NE(warnings[0].find("member b.flac is a symbolic link: skipped"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[1].find("key 'b' skipped"), std::string::npos) << warnings[1];
  EXPECT_NE(warnings[2].find("member c.wav is a symbolic link: skipped"), std::string::npos) << warnings[2];
}

TEST(Shard, KeyWithoutAudioIsCorruption) {
  ScratchDir dir;
  const std::string tar = MakeTarWithGnuTar(dir, "t.tar", {{"a.json", R"({"text": "x"})"}});
  ExpectCorruption(ReadShard(tar), tar, "key 'a' has no audio member");
}

TEST(Shard, BadJsonIsCorruptionNamingTheMember) {
  ScratchDir dir;
  const std::string tar = MakeTarWithGnuTar(dir, "t.tar", {{"a.flac", Flac(440)}, {"a.json", "{\"text\": [\"x\""}});
  ExpectCorruption(ReadShard(tar), tar, "a.json is not valid JSON");
}

TEST(Shard, MissingOrEmptyTextIsCorruption) {
  ScratchDir dir;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"caption": "x"})", "has no \"text\""},      {R"({"text": ""})", "no non-empty caption"},
      {R"({"text": []})", "no non-empty caption"},     {R"({"text": 7})", "neither a string nor a list"},
      {R"({"text": ["x", 3]})", "non-string element"}, {R"(["x"])", "not a JSON object"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string tar =
        MakeTarWithGnuTar(dir, "t" + std::to_string(i) + ".tar", {{"k.flac", Flac(440)}, {"k.json", cases[i].first}});
    SCOPED_TRACE(cases[i].first);
    ExpectCorruption(ReadShard(tar), "k.json", cases[i].second);
  }
}

TEST(Shard, UndecodableAudioIsCorruptionNamingTheMember) {
  ScratchDir dir;
  const std::string tar =
      MakeTarWithGnuTar(dir, "t.tar", {{"k.flac", "definitely not flac"}, {"k.json", R"({"text": "x"})"}});
  ExpectCorruption(ReadShard(tar), tar, "k.flac");
}

TEST(Shard, ErrorsAreSticky) {
  ScratchDir dir;
  const std::string tar = MakeTarWithGnuTar(
      dir, "t.tar", {{"a.json", R"({"text": "x"})"}, {"b.flac", Flac(440)}, {"b.json", R"({"text": "x"})"}});
  auto reader = ShardReader::Open(tar);
  ASSERT_OK(reader);
  Sample s;
  auto first = reader.value()->Next(&s);
  ASSERT_FALSE(first.ok());
  auto second = reader.value()->Next(&s);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().message(), first.status().message());
}

TEST(Shard, NotATarIsCorruptionAndMissingIsNotFound) {
  ScratchDir dir;
  WriteAll(dir.File("junk.tar"), std::string(3000, 'z'));
  auto junk = ReadShard(dir.File("junk.tar"));
  ASSERT_FALSE(junk.ok());
  EXPECT_EQ(junk.status().code(), Status::Code::kCorruption);
  EXPECT_NE(junk.status().message().find("junk.tar"), std::string::npos);
  EXPECT_EQ(ReadShard(dir.File("missing.tar")).status().code(), Status::Code::kNotFound);
}

}  // namespace
}  // namespace flap::sharding
