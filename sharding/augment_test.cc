#include "sharding/augment.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "sharding/manifest.h"
#include "sharding/shard_writer.h"
#include "sharding/testing/test_util.h"
#include "tests/chat_test_server.h"
#include "common/testing/testing.h"

namespace flap::sharding {
namespace {

using testing::ScratchDir;

// A dataset of one training shard whose captions carry the test server's markers.
void WriteDataset(const std::string& dir, const std::vector<std::pair<std::string, std::vector<std::string>>>& clips) {
  auto w = ShardWriter::Create(dir + "/train-000000.tar");
  ASSERT_OK(w);
  for (const auto& [key, captions] : clips) {
    Sample s;
    s.key = key;
    s.audio.assign(1600, 0.1f);
    s.captions = captions;
    s.tags = {"dog_bark", "rain"};
    ASSERT_OK((*w)->Add(s));
  }
  ASSERT_OK((*w)->Close());
  auto info = DescribeShard(dir + "/train-000000.tar", "train", static_cast<int64_t>(clips.size()));
  ASSERT_OK(info);
  Manifest m;
  m.name = "augment-test";
  m.shards = {*info};
  ASSERT_OK(WriteManifest(dir, m));
}

const char kPrompt[] = "Rewrite the caption with the tags, one line.\nCaption: {caption}\nTags: {tags}\n";

TEST(ValidateReply, RefusesWhatMustNotBecomeACaption) {
  const std::string caption = "a dog barks";
  const std::string prompt = RenderPrompt(kPrompt, caption, {"dog_bark"});
  ReplyBounds b;
  b.min_chars = 8;
  b.max_chars = 60;
  auto ok = ValidateReply("  \"A dog barks twice while rain falls.\"  ", prompt, caption, b);
  ASSERT_OK(ok);
  EXPECT_EQ(*ok, "A dog barks twice while rain falls.");
  auto reason = [&](const std::string& reply) {
    auto r = ValidateReply(reply, prompt, caption, b);
    return r.ok() ? std::string("accepted") : r.status().message();
  };
  EXPECT_EQ(reason(""), "empty reply");
  EXPECT_EQ(reason("   \n "), "empty reply");
  EXPECT_EQ(reason("short"), "reply shorter than 8 characters");
  EXPECT_EQ(reason(std::string(61, 'x')), "reply longer than 60 characters");
  EXPECT_EQ(reason("first line\nsecond line"), "reply has several lines");
  EXPECT_EQ(reason("bad \xff\xfe bytes here"), "reply is not valid UTF-8");
  EXPECT_EQ(reason("A dog barks."), "reply repeats the caption unchanged");
  EXPECT_EQ(reason("Rewrite the caption with the tags, one line."), "reply copies the prompt");
  EXPECT_EQ(reason(prompt.substr(8, 30)), "reply copies the prompt") << "a fragment of the instructions";
  EXPECT_EQ(reason("Un chien aboie sous la pluie, \xc3\xa9videmment."), "accepted");
}

TEST(RenderPrompt, FillsCaptionAndTags) {
  EXPECT_EQ(RenderPrompt("C={caption} T={tags}", "a cat", {"cat_meow", "door"}), "C=a cat T=cat meow, door");
  EXPECT_EQ(RenderPrompt("{caption}/{tags}", "x", {}), "x/none");
}

TEST(TemplateAugmenter, DeterministicAndWeavesInTheTags) {
  auto a = MakeTemplateAugmenter();
  auto r1 = a->Rewrite("A dog barks.", {"dog_bark", "rain"});
  auto r2 = a->Rewrite("A dog barks.", {"dog_bark", "rain"});
  ASSERT_TRUE(r1.ok);
  EXPECT_EQ(r1.text, r2.text);
  EXPECT_NE(r1.text.find("dog bark, rain"), std::string::npos) << r1.text;
  EXPECT_OK(ValidateReply(r1.text, "", "A dog barks.", ReplyBounds{}));
  auto untagged = a->Rewrite("Wind blows", {});
  ASSERT_TRUE(untagged.ok);
  EXPECT_NE(untagged.text.find("wind blows"), std::string::npos) << untagged.text;
}

class AugmentServer : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.ok()); }
  std::unique_ptr<Augmenter> Chat(double timeout_s = 0.5) {
    ChatOptions o;
    o.url = server_.url();
    o.model = "test-model";
    o.timeout_s = timeout_s;
    ReplyBounds b;
    b.max_chars = 300;
    auto a = MakeChatAugmenter(o, kPrompt, b);
    EXPECT_OK(a);
    return std::move(*a);
  }
  static AugmentOptions Fast() {
    AugmentOptions o;
    o.max_attempts = 3;
    o.backoff_s = 0.01;
    o.concurrency = 4;
    return o;
  }
  flap::testing::ChatTestServer server_;
};

TEST_F(AugmentServer, EachFailureEndsAsThePolicySaysAndNothingInvalidIsWritten) {
  ScratchDir dir;
  WriteDataset(dir.path(), {{"normal", {"a dog barks", "rain on a roof"}},
                            {"slow", {"a car passes [slow]"}},
                            {"ratelimited", {"birds sing [429x2]"}},
                            {"flaky", {"a door slams [500x1]"}},
                            {"broken", {"thunder [500]"}},
                            {"malformed", {"a bell rings [malformed]"}},
                            {"empty", {"water drips [empty]"}},
                            {"long", {"a crowd cheers [long]"}},
                            {"echo", {"a clock ticks [echo]"}},
                            {"lines", {"wind howls [multiline]"}}});
  auto chat = Chat();
  auto report = RunAugmentation(dir.path(), *chat, Fast());
  ASSERT_OK(report);
  EXPECT_EQ(report->clips, 10);
  EXPECT_EQ(report->captions, 11);
  EXPECT_EQ(report->augmented, 4);  // normal x2, ratelimited (3rd try), flaky (2nd try)
  std::map<std::string, std::string> failed;
  for (const auto& f : report->failures) {
    failed[f.key] = f.reason;
    EXPECT_EQ(f.attempts, 3) << f.key;
  }
  EXPECT_EQ(failed, (std::map<std::string, std::string>{{"slow", "timeout"},
                                                        {"broken", "server_error"},
                                                        {"malformed", "malformed_reply"},
                                                        {"empty", "empty reply"},
                                                        {"long", "reply longer than 300 characters"},
                                                        {"echo", "reply copies the prompt"},
                                                        {"lines", "reply has several lines"}}));
  EXPECT_EQ(report->attempt_failures["rate_limited"], 2);
  EXPECT_EQ(report->attempt_failures["server_error"], 1 + 3);

  auto manifest = ReadManifest(dir.path());
  ASSERT_OK(manifest);
  ASSERT_TRUE(manifest->augment.is_object());
  EXPECT_EQ(manifest->augment["method"], "chat");
  EXPECT_EQ(manifest->augment["model"], "test-model");
  EXPECT_EQ(manifest->augment["endpoint"], server_.url());
  EXPECT_EQ(manifest->augment["counts"]["augmented"], 4);
  EXPECT_EQ(manifest->augment["counts"]["failed"], 7);
  EXPECT_EQ(manifest->augment["prompt_xxh64"].get<std::string>().size(), 16u);
  auto side = ReadAugmentFile(dir.path(), *manifest);
  ASSERT_OK(side);
  EXPECT_EQ(side->size(), 3u);
  EXPECT_EQ(side->at("normal").size(), 2u);
  EXPECT_EQ(side->at("normal")[0], "Richer: a dog barks with dog bark, rain.");
  for (const auto& [key, texts] : *side) {
    EXPECT_FALSE(failed.count(key)) << key << " failed but reached the side file";
    for (const auto& t : texts) EXPECT_OK(ValidateReply(t, "", "", ReplyBounds{8, 300})) << t;
  }
}

TEST_F(AugmentServer, FailPolicyWritesNothingAndNamesTheCaptions) {
  ScratchDir dir;
  WriteDataset(dir.path(), {{"normal", {"a dog barks"}}, {"broken", {"thunder [500]"}}});
  AugmentOptions o = Fast();
  o.fail_on_error = true;
  auto chat = Chat();
  auto report = RunAugmentation(dir.path(), *chat, o);
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.status().message().find("broken 'thunder [500]': server_error"), std::string::npos)
      << report.status().ToString();
  EXPECT_FALSE(std::filesystem::exists(dir.File(kAugmentFileName)));
  auto manifest = ReadManifest(dir.path());
  ASSERT_OK(manifest);
  EXPECT_TRUE(manifest->augment.is_null());
}

TEST_F(AugmentServer, ClientErrorStopsTheRunClearly) {
  ScratchDir dir;
  WriteDataset(dir.path(), {{"a", {"a dog barks [401]"}}});
  auto chat = Chat();
  auto report = RunAugmentation(dir.path(), *chat, Fast());
  ASSERT_FALSE(report.ok());
  EXPECT_NE(report.status().message().find("HTTP 401"), std::string::npos) << report.status().ToString();
  EXPECT_EQ(server_.requests(), 1);  // not retried
}

TEST_F(AugmentServer, RerunIsServedFromTheCache) {
  ScratchDir dir;
  WriteDataset(dir.path(), {{"a", {"a dog barks", "rain"}}, {"b", {"birds sing"}}});
  auto chat = Chat();
  auto first = RunAugmentation(dir.path(), *chat, Fast());
  ASSERT_OK(first);
  const std::string side = testing::ReadAll(dir.File(kAugmentFileName));
  const int requests = server_.requests();
  auto second = RunAugmentation(dir.path(), *chat, Fast());
  ASSERT_OK(second);
  EXPECT_EQ(server_.requests(), requests);
  EXPECT_EQ(second->from_cache, 3);
  EXPECT_EQ(testing::ReadAll(dir.File(kAugmentFileName)), side);
}

TEST(ReadAugmentFile, NamesTheDamagedLine) {
  ScratchDir dir;
  Manifest m;
  m.augment = {{"file", kAugmentFileName}};
  testing::WriteAll(dir.File(kAugmentFileName), "{\"key\": \"a\", \"text_augment\": [\"x y z\"]}\nnot json\n");
  auto r = ReadAugmentFile(dir.path(), m);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(std::string(kAugmentFileName) + ":2"), std::string::npos)
      << r.status().ToString();
  EXPECT_TRUE(ReadAugmentFile(dir.path(), Manifest{})->empty());
}

}  // namespace
}  // namespace flap::sharding
