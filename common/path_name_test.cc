// Path names (common/path_name.h): the check every part uses, and the one helper that makes a
// path name's characters out of any text (a host name, a coordinator and group id).
#include "common/path_name.h"

#include <gtest/gtest.h>

#include <string>

namespace flap {
namespace {

TEST(PathName, CleaningReplacesEachCharacterOutsideTheSetOneForOne) {
  EXPECT_EQ(CleanPathNameChars("node-01.cluster_a"), "node-01.cluster_a");
  EXPECT_EQ(CleanPathNameChars("127.0.0.1:7070-g/1 x"), "127.0.0.1_7070-g_1_x");
  EXPECT_EQ(CleanPathNameChars("host name:1", '-'), "host-name-1");
  EXPECT_EQ(CleanPathNameChars("caf\xc3\xa9"), "caf__");  // each byte of the UTF-8 character
  EXPECT_EQ(CleanPathNameChars(""), "");
}

TEST(PathName, ACleanedNameHasOnlyPathNameCharacters) {
  std::string all;
  for (int c = 1; c < 256; ++c) all += static_cast<char>(c);
  const std::string cleaned = CleanPathNameChars(all);
  ASSERT_EQ(cleaned.size(), all.size());
  for (size_t i = 0; i < cleaned.size(); ++i) {
    EXPECT_TRUE(IsPathNameChar(cleaned[i])) << "byte " << i + 1;
    if (IsPathNameChar(all[i])) {
      EXPECT_EQ(cleaned[i], all[i]) << "byte " << i + 1;
    }
  }
  EXPECT_EQ(PathNameProblem(cleaned.substr(0, kMaxPathNameLength)), "");  // starts with '_' (byte 1)
}

TEST(PathName, TheCheckNamesWhatIsWrong) {
  EXPECT_EQ(PathNameProblem("t0001"), "");
  EXPECT_EQ(PathNameProblem(""), "is empty");
  EXPECT_EQ(PathNameProblem("a/b"), "has characters outside [A-Za-z0-9_.-]");
  EXPECT_EQ(PathNameProblem(".hidden"), "starts with a dot (names become folders and files)");
  EXPECT_EQ(PathNameProblem(std::string(65, 'a')), "is 65 bytes; at most 64 allowed");
}

}  // namespace
}  // namespace flap
