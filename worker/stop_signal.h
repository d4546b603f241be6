// Stop requests from the launcher: SIGTERM (Slurm's preemption and scancel), SIGUSR1 / SIGUSR2
// (what `sbatch --signal` sends ahead of the kill) and SIGINT. The handler only records the
// signal; the training loop looks at it between steps, finishes the save in flight, takes a
// last checkpoint and exits with kExitStopped, which a launcher tells apart from success (0),
// failure (1), bad usage (2) and a crash (128 + signal).
//
// flap-worker catches the signals first thing in main (CatchStopSignals), so a stop that comes
// while the config is read or the data loaded is a stop (75), never a crash (138 for SIGUSR1).
//
// A step can outlast the launcher's grace time, so a watchdog bounds the whole stop: if the
// process is still running `deadline_seconds` after the signal, it exits with kExitStopped at
// once. That is safe at any point: a save cut short is never visible (checkpoint/store.h), so
// the newest committed checkpoint is what a resume uses. Before exiting it runs the stop hook,
// if one is set (the agent reports the trial as preempted there, so that the coordinator does
// not count the stop as a node fault), for at most kStopHookSeconds.
#pragma once

#include <functional>

namespace flap::worker {

inline constexpr int kExitStopped = 75;  // EX_TEMPFAIL: stopped on request, resume me
inline constexpr double kStopHookSeconds = 5.0;

// Installs the handlers only (idempotent): from then on a stop signal is recorded.
void CatchStopSignals();
// Installs the handlers and the watchdog (idempotent; the first deadline wins).
void InstallStopSignalHandlers(double deadline_seconds);
// The signal that asked to stop, or 0.
int StopRequested();
// What the watchdog runs before it exits (receives the signal); empty: nothing. Replaces the
// previous hook. Thread-safe.
void SetStopDeadlineHook(std::function<void(int signal)> hook);

}  // namespace flap::worker
