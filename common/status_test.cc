// Status and StatusOr (common/status.h): each code's name says that code, and a StatusOr never
// reads as ok() without a value. Against the header before the I/O code had a number of its
// own, ACodeIsNamedByItsOwnName failed (kUnavailable read "I/O error: ..."), and before a
// StatusOr refused an OK status, AnOkStatusWithoutAValueIsAnInternalError failed (ok() held).
#include "common/status.h"

#include <gtest/gtest.h>

#include <string>

namespace flap {
namespace {

TEST(Status, ACodeIsNamedByItsOwnName) {
  EXPECT_EQ(Status::Unavailable("the coordinator is down").ToString(), "unavailable: the coordinator is down");
  EXPECT_EQ(Status::IOError("cannot write x: No space left on device").ToString(),
            "I/O error: cannot write x: No space left on device");
  EXPECT_NE(Status::IOError("x").code(), Status::Code::kUnavailable);
  EXPECT_EQ(Status::Corruption("bad crc").ToString(), "corruption: bad crc");
  EXPECT_EQ(Status::FromCode(Status::Code::kCancelled, "gone").ToString(), "cancelled: gone");
  EXPECT_EQ(Status::OK().ToString(), "OK");
}

TEST(StatusOr, AnOkStatusWithoutAValueIsAnInternalError) {
  StatusOr<int> none(Status::OK());
  EXPECT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), Status::Code::kInternal);
  EXPECT_NE(none.status().message().find("without a value"), std::string::npos);
  StatusOr<int> value(7);
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, 7);
  StatusOr<int> failed(Status::NotFound("no such key"));
  EXPECT_EQ(failed.status().code(), Status::Code::kNotFound);
}

}  // namespace
}  // namespace flap
