// The folder of a `flapctl sweep run` (--dir) and its coordinator as a child process.
//
// Layout (flapctl/sweep_run.cc has the whole of it):
//   state/        flap-coordinator's RocksDB state (state/db) and its token (state/token)
//   logs/         the children's logs
//   run.json      what the run publishes while it runs and keeps when it ends: the
//                 coordinator's address and pid, the token file, the sweep, the data folder
//                 of its workers, the worker groups' pids
//
// LocalCoordinator is flap-coordinator on such a folder's state, listening on 127.0.0.1, with a
// client once it answers: `sweep run` supervises one for the whole sweep (restarted on the
// same port when it dies); `sweep best --dir` starts one on a finished or stopped run's state to
// ask it, and stops it. RocksDB locks the state: while one coordinator has it, another started
// on it exits at once (LocalCoordinator::Start says so).
//
// Thread-safety: as Process (process.h): one owner thread.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/client.h"
#include "flapctl/process.h"

namespace flap::flapctl {

// The paths of a `sweep run` folder.
class RunFolder {
 public:
  explicit RunFolder(std::string dir) : dir_(std::move(dir)) {}
  const std::string& dir() const { return dir_; }
  // dir/rel.
  std::string Path(const std::string& rel) const;
  std::string state_dir() const { return Path("state"); }
  std::string token_file() const { return Path("state/token"); }
  std::string run_file() const { return Path("run.json"); }

 private:
  std::string dir_;
};

// What a run's run.json says; a field the file lacks is empty.
struct RunFileInfo {
  std::string coordinator_address;  // HOST:PORT of the run's coordinator (the last one started)
  std::string sweep;                // the sweep the run submitted
  std::string data;                 // its workers' data.path, absolute
};
// NotFound when the file is absent; InvalidArgument naming the file when it is not a run file.
StatusOr<RunFileInfo> ReadRunFile(const RunFolder& run);

// A client of the coordinator at `address` with `run`'s token, once it has answered ListSweeps
// within `deadline_ms`; the error of the connection or the call otherwise.
StatusOr<std::unique_ptr<coordinator::CoordinatorClient>> ConnectRunCoordinator(const RunFolder& run,
                                                                                const std::string& address,
                                                                                int64_t deadline_ms);

class LocalCoordinator {
 public:
  struct Options {
    std::string bin;                      // flap-coordinator
    int port = 0;                         // listens on 127.0.0.1:port
    std::string log;                      // its stdout and stderr, appended
    std::vector<std::string> extra_args;  // more flags (heartbeats, metrics, ...)
    double start_timeout_s = 30;          // to answer ListSweeps
    int64_t call_deadline_ms = 5000;      // of each call of client()
  };

  // Starts `o.bin --state-dir RUN/state --listen 127.0.0.1:PORT [extra_args]` and waits until
  // it answers with the state's token (made by the coordinator on first start). Errors: it could
  // not be started; it exited at start (Internal, with the end of its log; the log naming a lock
  // means the state is another coordinator's: FailedPrecondition saying so); it did not answer
  // in time (DeadlineExceeded; it is stopped).
  Status Start(const RunFolder& run, const Options& o);

  // The client of the coordinator last started (valid after a successful Start).
  coordinator::CoordinatorClient& client() { return *client_; }
  std::string address() const { return address_; }
  pid_t pid() const { return process_.pid(); }
  // Reaps it if it ended (non-blocking); true when it has. exit_code() then says how.
  bool Poll() { return process_.Poll(); }
  int exit_code() const { return process_.exit_code(); }
  // SIGTERM, then SIGKILL after grace_s; waits for it. Nothing when it is not running.
  void Stop(double grace_s);

 private:
  Process process_;
  std::unique_ptr<coordinator::CoordinatorClient> client_;
  std::string address_;
};

}  // namespace flap::flapctl
