// Stop requests from the launcher: SIGTERM (Slurm's preemption and scancel), SIGUSR1 / SIGUSR2
// (what `sbatch --signal` sends ahead of the kill) and SIGINT. The handler only records the
// signal; the training loop looks at it between steps, finishes the save in flight, takes a
// last checkpoint and exits with kExitStopped, which a launcher tells apart from success (0),
// failure (1), bad usage (2) and a crash (128 + signal).
#pragma once

namespace flap::worker {

inline constexpr int kExitStopped = 75;  // EX_TEMPFAIL: stopped on request, checkpoint taken, resume me

// Installs the handlers (idempotent).
void InstallStopSignalHandlers();
// The signal that asked to stop, or 0.
int StopRequested();

}  // namespace flap::worker
