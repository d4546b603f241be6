// flapctl's "ckpt" commands: inspect, verify and clean a checkpoint root (checkpoint/store.h).
//
//   flapctl ckpt list ROOT [--trial T]          table: trial, step, epoch, size, metrics, verified
//   flapctl ckpt verify ROOT [--trial T]        exit 1 naming each damaged checkpoint and file
//   flapctl ckpt gc ROOT --trial T --keep-last N [--keep-best K --metric M --mode max|min]
//   flapctl ckpt reindex ROOT --trial T   recreate a lost or corrupt index from manifests
//
// list and verify open the root read-only (no lock: they work while a worker is saving); gc and
// reindex take the trial's index lock and fail if a worker holds it. Exit codes as in
// flapctl/cli.h: 0 success, 1 failure or damage found, 2 usage error.
//
// Thread-safety: as the other command groups (calling thread, std::cout / std::cerr).
#pragma once

#include <string>
#include <vector>

#include "flapctl/cli.h"

namespace flap::flapctl {

// The "ckpt" group.
CommandGroup CkptCommandGroup();

int RunCkptList(const std::vector<std::string>& args);
int RunCkptVerify(const std::vector<std::string>& args);
int RunCkptGc(const std::vector<std::string>& args);
int RunCkptRebuildIndex(const std::vector<std::string>& args);

}  // namespace flap::flapctl
