// The agent's outbox: records leave in order, memory holds at most its bound (the rest is on
// disk), a record is offered again until acknowledged, and a reopened folder resends what was
// not acknowledged.
#include "worker/outbox.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "tests/test_util.h"

namespace flap::worker {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

std::unique_ptr<Outbox> OpenBox(const std::string& dir, size_t memory) {
  OutboxOptions o;
  o.dir = dir;
  o.memory_records = memory;
  auto box = Outbox::Open(o);
  EXPECT_OK(box);
  return box.ok() ? std::move(*box) : nullptr;
}

size_t SegmentFiles(const std::string& dir) {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += e.path().filename().string().rfind("outbox-", 0) == 0;
  return n;
}

// Acknowledges (pops) every record, returning them in the order they came.
std::vector<std::string> Drain(Outbox& box) {
  std::vector<std::string> out;
  uint64_t seq = 0;
  std::string record;
  while (box.Front(&seq, &record, milliseconds(0))) {
    out.push_back(record);
    EXPECT_OK(box.Pop());
  }
  return out;
}

std::vector<std::string> Numbered(int from, int to) {
  std::vector<std::string> v;
  for (int i = from; i <= to; ++i) v.push_back("record " + std::to_string(i));
  return v;
}

TEST(Outbox, KeepsItsBoundInMemorySpillsTheRestAndDeliversInOrder) {
  flap::testing::TempDir dir("outbox");
  auto box = OpenBox(dir / "box", 4);
  ASSERT_TRUE(box);
  for (const std::string& r : Numbered(1, 10)) {
    Status spill;
    box->Push(r, &spill);
    EXPECT_OK(spill);
  }
  EXPECT_EQ(box->in_memory(), 4u);
  EXPECT_EQ(box->size(), 10u);
  EXPECT_EQ(SegmentFiles(dir / "box"), 2u);  // records 5-8 and 9-10
  // A record pushed while others wait on disk goes behind them.
  EXPECT_EQ(Drain(*box), Numbered(1, 10));
  EXPECT_EQ(box->size(), 0u);
  EXPECT_EQ(SegmentFiles(dir / "box"), 0u);  // each segment removed once delivered
  box->Push("record 11");
  EXPECT_EQ(Drain(*box), Numbered(11, 11));
}

TEST(Outbox, OffersARecordAgainUntilItIsAcknowledged) {
  flap::testing::TempDir dir("outbox_ack");
  auto box = OpenBox(dir / "box", 2);
  ASSERT_TRUE(box);
  // A sender against a receiver that fails the first three tries of every record, as a
  // coordinator that is away would.
  std::vector<std::string> received;
  std::thread sender([&] {
    int failures = 0;
    while (received.size() < 6) {
      uint64_t seq = 0;
      std::string record;
      if (!box->Front(&seq, &record, milliseconds(5000))) break;
      if (++failures <= 3) continue;  // not acknowledged: offered again
      failures = 0;
      received.push_back(record);
      ASSERT_OK(box->Pop());
    }
  });
  uint64_t last = 0;
  for (const std::string& r : Numbered(1, 6)) last = box->Push(r);
  EXPECT_EQ(last, 6u);
  EXPECT_TRUE(box->WaitAcknowledged(last, milliseconds(10000)));
  sender.join();
  EXPECT_EQ(received, Numbered(1, 6));
  EXPECT_FALSE(box->WaitAcknowledged(last + 1, milliseconds(0)));
}

TEST(Outbox, AReopenedFolderResendsWhatWasNotAcknowledgedInOrder) {
  flap::testing::TempDir dir("outbox_reopen");
  {
    auto box = OpenBox(dir / "box", 3);
    ASSERT_TRUE(box);
    for (const std::string& r : Numbered(1, 8)) box->Push(r);
    uint64_t seq = 0;
    std::string record;
    for (int i = 0; i < 4; ++i) {  // 1-3 from memory, 4 from the first segment read back
      ASSERT_TRUE(box->Front(&seq, &record, milliseconds(0)));
      ASSERT_OK(box->Pop());
    }
    ASSERT_OK(box->Close());  // memory (5, 6) to disk
  }
  {
    auto box = OpenBox(dir / "box", 3);
    ASSERT_TRUE(box);
    EXPECT_EQ(box->size(), 4u);
    uint64_t seq = 0;
    std::string record;
    ASSERT_TRUE(box->Front(&seq, &record, milliseconds(0)));
    EXPECT_EQ(seq, 5u);
    EXPECT_EQ(box->Push("record 9"), 9u);  // numbering goes on
    EXPECT_EQ(Drain(*box), Numbered(5, 9));
  }
  auto box = OpenBox(dir / "box", 3);
  ASSERT_TRUE(box);
  EXPECT_EQ(box->size(), 0u);
  EXPECT_EQ(SegmentFiles(dir / "box"), 0u);
}

TEST(Outbox, ATornRecordEndsItsSegmentAndTheRecordsBeforeItAreKept) {
  flap::testing::TempDir dir("outbox_torn");
  {
    auto box = OpenBox(dir / "box", 1);
    ASSERT_TRUE(box);
    for (const std::string& r : Numbered(1, 3)) box->Push(r);
    ASSERT_OK(box->Close());
  }
  // A record half-written by a process that died mid-append.
  std::string last;
  for (const auto& e : fs::directory_iterator(dir / "box")) last = std::max(last, e.path().string());
  std::ofstream(last, std::ios::binary | std::ios::app) << std::string("\x04\x00\x00\x00\x00\x00\x00\x00\x30", 9);
  auto box = OpenBox(dir / "box", 1);
  ASSERT_TRUE(box);
  EXPECT_EQ(Drain(*box), Numbered(1, 3));
}

}  // namespace
}  // namespace flap::worker
