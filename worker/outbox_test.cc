// The agent's outbox: records leave in order, memory holds at most its bound (the rest is on
// disk), a record is offered again until acknowledged, and a reopened folder resends what was
// not acknowledged.
#include "worker/outbox.h"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
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

// Runs `body` in a child process that then kills itself with SIGKILL (no Close, no destructor
// runs); the child's exit code is 2 when `body` returns false.
void InAChildKilledBySigkill(const std::function<bool()>& body) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (!body()) ::_exit(2);
    ::kill(::getpid(), SIGKILL);
    ::_exit(3);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the child failed before its kill: " << status;
}

// Pushes the records; whether the disk took every one.
bool PushedDurably(Outbox& box, const std::vector<std::string>& records) {
  bool all = true;
  for (const std::string& r : records) {
    Status spill;
    box.Push(r, &spill);
    all &= spill.ok();
  }
  return all;
}

// In a child: the folder's outbox with the records pushed, or null when the open or a push
// failed (the failure printed, and the parent's check of the child's exit fails).
std::unique_ptr<Outbox> OpenAndPush(const std::string& dir, size_t memory, const std::vector<std::string>& records) {
  auto box = OpenBox(dir, memory);
  return box && PushedDurably(*box, records) ? std::move(box) : nullptr;
}

TEST(Outbox, KeepsItsBoundInMemorySpillsTheRestAndDeliversInOrder) {
  flap::testing::TempDir dir("outbox");
  auto box = OpenBox(dir / "box", 4);
  ASSERT_TRUE(box);
  EXPECT_TRUE(PushedDurably(*box, Numbered(1, 10)));
  EXPECT_EQ(box->in_memory(), 4u);
  EXPECT_EQ(box->size(), 10u);
  EXPECT_EQ(SegmentFiles(dir / "box"), 3u);  // every record on disk: 1-4, 5-8 and 9-10
  // A record pushed while others wait on disk goes behind them.
  EXPECT_EQ(Drain(*box), Numbered(1, 10));
  EXPECT_EQ(box->size(), 0u);
  // Each full segment removed once delivered; the one being appended to (9-10) stays.
  EXPECT_EQ(SegmentFiles(dir / "box"), 1u);
  box->Push("record 11");
  EXPECT_EQ(Drain(*box), Numbered(11, 11));
  box->Push("record 12");  // the segment 9-12 is full now, and all delivered once 12 is
  EXPECT_EQ(Drain(*box), Numbered(12, 12));
  EXPECT_EQ(SegmentFiles(dir / "box"), 0u);
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

// Every record pushed and not acknowledged survives the process being killed by SIGKILL (no
// Close, no destructor), and the acknowledged ones are not offered again. A child opens the
// outbox (memory bound 4), pushes 10 records, acknowledges 2 and kills itself: records 3-4 are
// then in memory and in a segment whose first records are acknowledged, 5-10 on disk only. The
// parent opens the folder and must get exactly records 3-10, in order, numbered on from 11.
// Against the outbox that kept its oldest records only in memory this failed: the reopened
// folder held 6 records, 5-10, and records 3 and 4 were lost.
TEST(Outbox, ARecordNotAcknowledgedSurvivesSigkillAndAnAcknowledgedOneIsNotResent) {
  flap::testing::TempDir dir("outbox_kill");
  const std::string folder = dir / "box";
  InAChildKilledBySigkill([&] {
    auto box = OpenAndPush(folder, 4, Numbered(1, 10));
    if (!box) return false;
    uint64_t seq = 0;
    std::string record;
    for (int i = 0; i < 2; ++i) {
      if (!box->Front(&seq, &record, milliseconds(0)) || !box->Pop().ok()) return false;
    }
    return true;
  });
  if (HasFatalFailure()) return;
  auto box = OpenBox(folder, 4);
  ASSERT_TRUE(box);
  EXPECT_EQ(box->size(), 8u);
  EXPECT_EQ(box->Push("record 11"), 11u);
  EXPECT_EQ(Drain(*box), Numbered(3, 11));
}

// A record the disk refuses is kept in memory, in order, with the error reported, and written
// with the next record the disk takes: after that, a SIGKILL loses none of them. The disk
// refuses through a folder standing where the next segment file goes.
TEST(Outbox, ARecordTheDiskRefusedIsKeptAndWrittenWithTheNextOneItTakes) {
  flap::testing::TempDir dir("outbox_refused");
  const std::string folder = dir / "box";
  InAChildKilledBySigkill([&] {
    auto box = OpenAndPush(folder, 2, Numbered(1, 2));
    if (!box) return false;
    const fs::path blocked = fs::path(folder) / "outbox-00000000000000000003.rec";  // records 3-4
    fs::create_directory(blocked);
    for (const std::string& r : Numbered(3, 4)) {
      Status refused;
      box->Push(r, &refused);
      if (refused.code() != Status::Code::kIOError) return false;
    }
    if (box->size() != 4) return false;
    fs::remove(blocked);
    return PushedDurably(*box, Numbered(5, 5));
  });
  if (HasFatalFailure()) return;
  auto box = OpenBox(folder, 2);
  ASSERT_TRUE(box);
  EXPECT_EQ(Drain(*box), Numbered(1, 5));
}

}  // namespace
}  // namespace flap::worker
