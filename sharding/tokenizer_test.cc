// Tests for sharding/tokenizer.h: training, loading, encoding, special ids, determinism.
#include "sharding/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "sharding/testing/test_util.h"
#include "common/testing/testing.h"

namespace flap::sharding {
namespace {

using testing::ReadAll;
using testing::ScratchDir;
using testing::WriteAll;

std::vector<std::string> Corpus() {
  const std::vector<std::string> first = {"a low tone",     "a high whistle",     "white noise",
                                          "a rising chirp", "a series of clicks", "a chord"};
  const std::vector<std::string> link = {" followed by ", " and then ", " before "};
  std::vector<std::string> texts;
  for (const auto& a : first) {
    for (const auto& l : link) {
      for (const auto& b : first) {
        if (a != b) texts.push_back(a + l + b);
      }
    }
  }
  return texts;
}

TEST(Tokenizer, TrainsLoadsAndEncodes) {
  ScratchDir dir;
  const std::string model = dir.File("tokenizer.model");
  ASSERT_OK(TrainTokenizer(Corpus(), model, 64));
  auto tok = Tokenizer::Load(model);
  ASSERT_OK(tok);
  EXPECT_GT(tok->vocab_size(), 4);
  EXPECT_LE(tok->vocab_size(), 64);
  const std::string text = "a low tone followed by white noise";
  std::vector<int> ids = tok->Encode(text);
  ASSERT_FALSE(ids.empty());
  for (int id : ids) {
    EXPECT_GE(id, Tokenizer::kUnkId);
    EXPECT_NE(id, Tokenizer::kPadId);
    EXPECT_NE(id, Tokenizer::kBosId);
    EXPECT_NE(id, Tokenizer::kEosId);
    EXPECT_LT(id, tok->vocab_size());
  }
  EXPECT_EQ(tok->Decode(ids), text);
  EXPECT_TRUE(tok->Encode("").empty());
}

TEST(Tokenizer, SpecialIdsArePadZeroUnkOneBosTwoEosThree) {
  EXPECT_EQ(Tokenizer::kPadId, 0);
  ScratchDir dir;
  ASSERT_OK(TrainTokenizer(Corpus(), dir.File("t.model"), 48));
  auto tok = Tokenizer::Load(dir.File("t.model"));
  ASSERT_OK(tok);
  // Characters never seen in training map to unk.
  std::vector<int> ids = tok->Encode("\xe6\xbc\xa2");
  ASSERT_FALSE(ids.empty());
  EXPECT_NE(std::find(ids.begin(), ids.end(), Tokenizer::kUnkId), ids.end());
  // Pad, bos and eos are dropped when decoding.
  std::vector<int> padded = tok->Encode("a chord");
  padded.insert(padded.begin(), Tokenizer::kBosId);
  padded.push_back(Tokenizer::kEosId);
  padded.push_back(Tokenizer::kPadId);
  EXPECT_EQ(tok->Decode(padded), "a chord");
}

TEST(Tokenizer, TrainingIsDeterministic) {
  ScratchDir dir;
  ASSERT_OK(TrainTokenizer(Corpus(), dir.File("a.model"), 64));
  ASSERT_OK(TrainTokenizer(Corpus(), dir.File("b.model"), 64));
  EXPECT_EQ(ReadAll(dir.File("a.model")), ReadAll(dir.File("b.model")));
}

TEST(Tokenizer, CopiesShareTheModel) {
  ScratchDir dir;
  ASSERT_OK(TrainTokenizer(Corpus(), dir.File("t.model"), 64));
  auto loaded = Tokenizer::Load(dir.File("t.model"));
  ASSERT_OK(loaded);
  Tokenizer copy = loaded.value();
  EXPECT_EQ(copy.Encode("a rising chirp"), loaded->Encode("a rising chirp"));
  EXPECT_EQ(copy.vocab_size(), loaded->vocab_size());
}

TEST(Tokenizer, LoadErrors) {
  ScratchDir dir;
  EXPECT_EQ(Tokenizer::Load(dir.File("missing.model")).status().code(), Status::Code::kNotFound);
  WriteAll(dir.File("junk.model"), "not a sentencepiece model");
  auto junk = Tokenizer::Load(dir.File("junk.model"));
  ASSERT_FALSE(junk.ok());
  EXPECT_EQ(junk.status().code(), Status::Code::kCorruption);
  EXPECT_NE(junk.status().message().find("junk.model"), std::string::npos);
}

TEST(Tokenizer, TrainRejectsBadArguments) {
  ScratchDir dir;
  EXPECT_EQ(TrainTokenizer({}, dir.File("t.model"), 64).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(TrainTokenizer({"", ""}, dir.File("t.model"), 64).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(TrainTokenizer(Corpus(), dir.File("t.model"), 4).code(), Status::Code::kInvalidArgument);
}

}  // namespace
}  // namespace flap::sharding
