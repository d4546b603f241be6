// Outbox benchmark: what making every record durable costs the agent (worker/outbox.h).
//  1. Push alone (the coordinator away: records pile up), N records of --bytes bytes: the
//     outbox against an in-memory push (a deque under a mutex, what Push cost for the records
//     an outbox held in memory before it became a write-ahead log) and against a raw append +
//     fdatasync of the same bytes to one file on the same disk.
//  2. Push, Front and Pop of each record in turn (the coordinator answering at once: the
//     acknowledgement mark written on every Pop).
// Figures: records/s, p50 and p99 latency per record; ratios against the baselines of the same
// run.
//
//   build/bench/outbox_bench [--dir DIR] [--records N] [--bytes N]
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <string>
#include <vector>

#include "common/mutex.h"
#include "worker/outbox.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Figures {
  double per_s = 0;
  double p50_us = 0;
  double p99_us = 0;
};

// Times `op` once per record.
template <typename Op>
Figures Time(int records, Op op) {
  std::vector<double> us(records);
  const auto start = Clock::now();
  for (int i = 0; i < records; ++i) {
    const auto t = Clock::now();
    op(i);
    us[i] = std::chrono::duration<double, std::micro>(Clock::now() - t).count();
  }
  const double total = std::chrono::duration<double>(Clock::now() - start).count();
  std::sort(us.begin(), us.end());
  return {records / total, us[records / 2], us[std::min(records - 1, records * 99 / 100)]};
}

void Print(const char* what, const Figures& f) {
  std::printf("  %-44s %10.0f records/s   p50 %8.1f us   p99 %8.1f us\n", what, f.per_s, f.p50_us, f.p99_us);
}

int Fail(const std::string& why) {
  std::fprintf(stderr, "outbox_bench: %s\n", why.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = (std::filesystem::temp_directory_path() / "flap_outbox_bench").string();
  int records = 2000;
  size_t bytes = 300;  // about a metrics record's JSON
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::printf("usage: outbox_bench [--dir DIR] [--records N] [--bytes N]\n");
      return 0;
    }
    if (i + 1 >= argc) return Fail("missing value after " + a);
    if (a == "--dir") {
      dir = argv[++i];
    } else if (a == "--records") {
      records = std::atoi(argv[++i]);
    } else if (a == "--bytes") {
      bytes = static_cast<size_t>(std::atoll(argv[++i]));
    } else {
      return Fail("unknown option " + a + " (--help)");
    }
  }
  if (records < 1) return Fail("--records must be >= 1");
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir, ec);
  if (ec) return Fail("cannot create " + dir + ": " + ec.message());
  const std::string record(bytes, 'r');
  std::printf("outbox_bench: %d records of %zu bytes in %s\n", records, bytes, dir.c_str());

  // Baseline 1: the in-memory push.
  flap::Mutex mu;
  std::deque<std::pair<uint64_t, std::string>> memory;
  uint64_t seq = 0;
  const Figures in_memory = Time(records, [&](int) {
    flap::MutexLock lock(&mu);
    memory.emplace_back(++seq, record);
  });

  // Baseline 2: a raw append + fdatasync per record, one file.
  const std::string raw_path = dir + "/raw";
  const int fd = ::open(raw_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return Fail("cannot open " + raw_path + ": " + std::strerror(errno));
  bool raw_ok = true;
  const Figures raw = Time(records, [&](int) {
    raw_ok &= ::write(fd, record.data(), record.size()) == static_cast<ssize_t>(record.size());
    raw_ok &= ::fdatasync(fd) == 0;
  });
  ::close(fd);
  if (!raw_ok) return Fail("the raw append to " + raw_path + " failed");

  // 1. Outbox Push alone (memory bound as flap-worker's agent: 1,024).
  flap::worker::OutboxOptions o;
  o.dir = dir + "/box";
  auto box = flap::worker::Outbox::Open(o);
  if (!box.ok()) return Fail(box.status().ToString());
  flap::Status failed;
  const Figures push = Time(records, [&](int) {
    flap::Status spill;
    (*box)->Push(record, &spill);
    if (!spill.ok()) failed = spill;
  });
  if (!failed.ok()) return Fail(failed.ToString());
  // Drain it (not timed), then 2. Push + Front + Pop per record.
  uint64_t s = 0;
  std::string r;
  while ((*box)->Front(&s, &r, std::chrono::milliseconds(0))) {
    if (!(*box)->Pop().ok()) return Fail("Pop failed");
  }
  const Figures cycle = Time(records, [&](int) {
    (*box)->Push(record, &failed);
    (*box)->Front(&s, &r, std::chrono::milliseconds(0));
    const flap::Status popped = (*box)->Pop();
    if (!popped.ok()) failed = popped;
  });
  if (!failed.ok()) return Fail(failed.ToString());
  box->reset();

  std::printf("1. Push alone\n");
  Print("in-memory push (baseline)", in_memory);
  Print("raw append + fdatasync (baseline)", raw);
  Print("Outbox::Push (durable)", push);
  std::printf("  Push: %.1fx the in-memory push's time per record, %.2fx the raw append + fdatasync's\n",
              in_memory.per_s / push.per_s, raw.per_s / push.per_s);
  std::printf("2. Push + Front + Pop per record (acknowledgement mark written on every Pop)\n");
  Print("Outbox Push + Front + Pop", cycle);
  std::printf("  %.2fx the time of a Push alone\n", push.per_s / cycle.per_s);
  std::filesystem::remove_all(dir, ec);
  return 0;
}
