// flapctl's "sweep" commands: talk to a running flap-coordinator (coordinator/service.h) through
// the client library (coordinator/client.h).
//
//   flapctl sweep submit SWEEP.ini [--base-config FILE]   validate locally, then submit
//   flapctl sweep status [SWEEP]      the trial table (or, without SWEEP, every sweep)
//   flapctl sweep watch SWEEP [--interval S] [--count N]  the table, refreshed until it ends
//   flapctl sweep cancel SWEEP
//   flapctl sweep report SWEEP --out DIR [--target X] [--no-plots]   Markdown, CSV, SVG plots
//   flapctl sweep best SWEEP [--cell N] [--export DIR [--worker PATH] [-- --KEY VALUE ...]]
//                                     validation's choice per cell: trial, step, checkpoint,
//                                     figures; --export writes each model (flapctl/sweep_best.cc)
//   flapctl sweep best --dir RUN [SWEEP] ...   the same for a `sweep run` folder
//   flapctl sweep run SWEEP.ini --dir DIR [--groups N] [--ranks W] [--export-best DIR] ...
//                                     the whole sweep on this machine (flapctl/sweep_run.cc)
//
// Every command takes --coordinator HOST:PORT (default $FLAP_COORDINATOR, else
// 127.0.0.1:7070), --token-file FILE (default $FLAP_COORDINATOR_TOKEN or
// $FLAP_COORDINATOR_TOKEN_FILE), --tls-ca FILE (TLS, trusting that CA; default
// $FLAP_COORDINATOR_TLS_CA) and --timeout-ms
// (deadline of each call, default 10000). Exit codes as in flapctl/cli.h: 0 success, 1 the
// coordinator refused or could not be reached (the message says why), 2 usage error or an
// invalid sweep file (every error listed).
//
// Thread-safety: as the other command groups (calling thread, std::cout / std::cerr).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "flapctl/cli.h"
#include "common/status.h"
#include "coordinator/client.h"
#include "proto/coordinator.pb.h"

namespace flap::flapctl {

// The "sweep" group.
CommandGroup SweepCommandGroup();

// A sweep file as submitted: its text, its name, and the base config's text (from
// --base-config, else the file's [sweep] base_config, looked up beside the sweep file first).
// An invalid sweep file is refused with every error listed (InvalidArgument; NotFound when
// it does not exist), and so is a sweep whose trials' configs do not validate against the base
// config (coordinator::CheckTrialConfigs, the coordinator's own check at submission), which
// refuses a base config setting a key local to each worker (ConfigKey::local_only).
//
// `local_keys_to_workers` (sweep run, whose workers are this machine's): those keys are taken
// out of the base config instead, into worker_values, for the workers' own config (their
// `--KEY VALUE` flags); the base config is then submitted as ConfigText of the rest (unchanged
// when it sets none).
struct LocalSweepFiles {
  std::string path, name, text, base_config;
  std::map<std::string, std::string> worker_values;  // local keys taken out of the base config
};
StatusOr<LocalSweepFiles> ReadSweepFiles(const std::string& file, std::string base_config = "",
                                         bool local_keys_to_workers = false);

// Fetches a sweep's report and writes it into `out` (coordinator/report.h WriteReport; plots
// through gnuplot unless `plots` is false); *written gets the file names.
Status FetchReport(coordinator::CoordinatorClient& client, const std::string& sweep, const std::string& out,
                   double target, bool plots, std::vector<std::string>* written = nullptr);

// `flapctl sweep run` (flapctl/sweep_run.cc).
int RunSweepRun(const std::vector<std::string>& args);

// `flapctl sweep best` (flapctl/sweep_best.cc): the coordinator's GetBest (coordinator/report.h
// SelectBest: per cell, the completed trial whose checkpoint validation selected scores best on
// the sweep's objective at that checkpoint), printed per cell (or for --cell, a cell's number or
// label): trial, seed, selected step, checkpoint reference, validation figures and, marked as
// such, test figures. Exit 1 when no printed cell has a choice (each says why).
// --export DIR: for each printed cell with a choice, first checks that DIR/<cell-name> does not
// exist and that the checkpoint's folder does (nothing runs otherwise), then runs
//   WORKER export --model <checkpoint>/model.pt --out DIR/<cell-name> --config <TRIAL.ini>
//       --card-extra <CARD.json> [the --KEY VALUE pairs given after "--"]
// WORKER: --worker, else flap-worker found as `sweep run` finds it (FindFlapProgram).
// <cell-name>: "cell<N>-<key>-<value>_<key>-<value>..." (characters outside [A-Za-z0-9_.-] as
// "_", at most 64). TRIAL.ini: the sweep's base config with the trial's TrialOverrides
// (coordinator/sweep.h), validated; CARD.json: {"sweep", "cell" (label), "factors", "trial",
// "seed", "selected_step", "checkpoint", "objective": {"metric", "value", "higher_is_better"},
// "validation": {EVAL record}, "test": {TEST record} or null} (NaN as null). Both are written to
// a temporary folder removed after the run. A worker exiting non-zero stops the exports: exit 1
// naming the cell, the worker's exit status and the end of its output.
// --dir RUN (a `sweep run` folder, flapctl/run_folder.h) instead of the connection options:
// the coordinator answering at RUN/run.json's address with RUN/state/token (the run still
// runs), else flap-coordinator (--coordinator-bin, else found as `sweep run` finds it) started
// on RUN/state on a free 127.0.0.1 port for this command (log RUN/logs/best-coordinator.log)
// and stopped after it; a state another process holds is refused (exit 1, saying RUN is in
// use). SWEEP defaults to run.json's sweep, else the state's only one; with --export, run.json's
// data folder is passed as --data.path unless one follows "--". A missing or foreign folder:
// exit 2; --coordinator, --token-file, --tls-ca or --insecure with --dir: exit 2.
int RunSweepBest(const std::vector<std::string>& args);

// The status table of a sweep: a header line, then one row per trial with its factors, seed,
// state, step / step budget with a progress bar (with a time budget: the step the budget is
// expected to run out at), training seconds / time budget, latest loss and evaluation metric
// (retrieval metrics as percentages with one decimal: "62.3%"), samples/s, ETA and, for
// failed trials, the error.
std::string FormatSweepStatus(const coordinator::v1::SweepStatus& status);
// Its first words: "sweep NAME: STATE, N trials (n1 state1, n2 state2, ...), D/N done", D the
// trials that ended (completed, stopped, failed, cancelled).
std::string SweepHeadline(const coordinator::v1::SweepStatus& status);

}  // namespace flap::flapctl
