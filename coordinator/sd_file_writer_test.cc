// SdFileWriter (coordinator/sd_file_writer.h): writes the file_sd file (making its folder),
// rewrites it only when the targets change, reports a failed write as a Status naming the file
// and, through Update, prints each distinct error once.
#include "coordinator/sd_file_writer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "common/testing/testing.h"

namespace flap::coordinator {
namespace {

using flap::testing::ReadFile;
using flap::testing::TempDir;
using flap::testing::WriteFile;

const std::vector<metrics::ScrapeTarget> kOne = {{"node1:9400", {{"group", "g1"}, {"rank", "0"}}}};
const std::vector<metrics::ScrapeTarget> kTwo = {{"node1:9400", {{"group", "g1"}, {"rank", "0"}}},
                                                 {"node2:9400", {{"group", "g1"}, {"rank", "1"}}}};

TEST(SdFileWriter, WritesTheTargetsIntoANewFolder) {
  TempDir dir;
  SdFileWriter writer(dir / "sd/deeper/targets.json");
  ASSERT_OK(writer.Write(kOne));
  const std::string text = ReadFile(dir / "sd/deeper/targets.json");
  EXPECT_NE(text.find("\"node1:9400\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"group\": \"g1\""), std::string::npos) << text;
  ASSERT_OK(writer.Write({}));
  EXPECT_EQ(ReadFile(dir / "sd/deeper/targets.json"), "[]\n");
}

TEST(SdFileWriter, RewritesOnlyWhenTheTargetsChange) {
  TempDir dir;
  const std::string path = dir / "targets.json";
  SdFileWriter writer(path);
  ASSERT_OK(writer.Write(kOne));
  ASSERT_TRUE(WriteFile(path, "marker"));  // shows whether the next Write touches the file
  ASSERT_OK(writer.Write(kOne));
  EXPECT_EQ(ReadFile(path), "marker");
  ASSERT_OK(writer.Write(kTwo));
  EXPECT_NE(ReadFile(path).find("\"node2:9400\""), std::string::npos) << ReadFile(path);
}

TEST(SdFileWriter, AFailedWriteNamesTheFileAndIsTriedAgain) {
  TempDir dir;
  ASSERT_TRUE(WriteFile(dir / "blocker", "a file where the folder should be"));
  SdFileWriter writer(dir / "blocker/targets.json");
  Status s = writer.Write(kOne);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("--sd-file"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find(dir / "blocker/"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("targets.json"), std::string::npos) << s.ToString();
  // Once the folder can be made, the same targets are written (a failed write holds nothing).
  std::filesystem::remove(dir / "blocker");
  ASSERT_OK(writer.Write(kOne));
  EXPECT_NE(ReadFile(dir / "blocker/targets.json").find("\"node1:9400\""), std::string::npos);
}

// The reaper retries every reap interval: a failure that lasts is said once, not at every
// retry. With the comparison the service made before (the messages had to be equal), this
// printed at every retry, since each message names a fresh temporary file.
TEST(SdFileWriter, UpdateSaysALastingFailureOnce) {
  TempDir dir;
  ASSERT_TRUE(WriteFile(dir / "blocker", "x"));
  SdFileWriter writer(dir / "blocker/targets.json");
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(writer.Update(kOne).ok());
  EXPECT_FALSE(writer.Update(kOne).ok());
  EXPECT_FALSE(writer.Update(kTwo).ok());
  std::string said = ::testing::internal::GetCapturedStderr();
  size_t lines = 0;
  for (size_t at = said.find("flap-coordinator: "); at != std::string::npos;
       at = said.find("flap-coordinator: ", at + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 1u) << said;
  // A success clears it: the same error, later, is said again.
  std::filesystem::remove(dir / "blocker");
  ::testing::internal::CaptureStderr();
  EXPECT_OK(writer.Update(kOne));
  std::filesystem::remove_all(dir / "blocker");
  ASSERT_TRUE(WriteFile(dir / "blocker", "x"));
  EXPECT_FALSE(writer.Update(kTwo).ok());
  said = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(said.find("flap-coordinator: "), std::string::npos) << said;
}

}  // namespace
}  // namespace flap::coordinator
