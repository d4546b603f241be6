// The coordinator's journal: group commit into RocksDB on disk.
#include "coordinator/journal.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "tests/test_util.h"

namespace flap::coordinator {
namespace {

TEST(Journal, CallbacksRunAfterTheirBatchIsCommittedAndDataSurvivesReopen) {
  flap::testing::TempDir dir("journal");
  {
    auto j = Journal::Open(dir / "db", JournalOptions());
    ASSERT_OK(j);
    std::atomic<int> done{0};
    std::vector<std::thread> writers;
    for (int w = 0; w < 4; ++w) {
      writers.emplace_back([&, w] {
        for (int i = 0; i < 50; ++i) {
          JournalBatch b;
          b.Put("k/" + std::to_string(w) + "/" + std::to_string(i), std::to_string(i));
          const uint64_t seq = (*j)->Append(std::move(b));
          (*j)->WhenDurable(seq, [&, w, i](const Status& s) {
            EXPECT_OK(s);
            // What the callback reveals is already readable from RocksDB.
            auto v = (*j)->Get("k/" + std::to_string(w) + "/" + std::to_string(i));
            EXPECT_OK(v);
            ++done;
          });
        }
      });
    }
    for (auto& t : writers) t.join();
    ASSERT_OK((*j)->Wait((*j)->appended()));
    EXPECT_EQ(done.load(), 200);
    JournalBatch del;
    del.Delete("k/0/0");
    ASSERT_OK((*j)->Wait((*j)->Append(std::move(del))));
  }
  auto j = Journal::Open(dir / "db", JournalOptions());
  ASSERT_OK(j);
  auto rows = (*j)->Scan("k/");
  ASSERT_OK(rows);
  EXPECT_EQ(rows->size(), 199u);
  EXPECT_EQ((*j)->Get("k/0/0").status().code(), Status::Code::kNotFound);
  // An empty batch waits for what was staged before it.
  EXPECT_EQ((*j)->Append(JournalBatch()), (*j)->appended());
}

TEST(Journal, ASecondOpenOfTheSameFolderIsRefused) {
  flap::testing::TempDir dir("journal_lock");
  auto a = Journal::Open(dir / "db", JournalOptions());
  ASSERT_OK(a);
  auto b = Journal::Open(dir / "db", JournalOptions());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), Status::Code::kIOError);
  EXPECT_NE(b.status().message().find(dir / "db"), std::string::npos);
}

}  // namespace
}  // namespace flap::coordinator
