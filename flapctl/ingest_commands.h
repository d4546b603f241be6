// flapctl's `data ingest` command: turns a Clotho / AudioCaps / WebDataset corpus into a
// dataset folder through sharding/ingest.h. The command line (see --help for every flag):
//
//   flapctl data ingest --format clotho|audiocaps|wds --out DIR
//       [--csv FILE]... [--audio DIR]... [--shards GLOB]... [--split NAME]...
//       [--val-fraction F --test-fraction F --seed S] [--shuffle-seed S] [--shard-size N]
//       [--min-seconds S --max-seconds S --crop]
//       [--on-error skip|fail] [--threads N] [--vocab-size N] [--train-split NAME] [--name NAME]
//
// Inputs pair up by position: the i-th --csv (or --shards) with the i-th --split, and with the
// i-th --audio (or the only one). A --split is a role (train, val, test), a corpus's own split
// name (Clotho's development, validation, evaluation: train, val, test) or any other name. An
// input without a --split is split by a seeded hash of each key (--val-fraction,
// --test-fraction, --seed; --eval-fraction is the old name of --val-fraction). The clips of each
// split are ordered by a seeded permutation (--shuffle-seed) before they are cut into shards.
//
// Exit codes as flapctl/cli.h: 0 done, 1 ingestion failed (including --on-error fail on a bad
// clip), 2 usage error.
//
// Thread-safety: as the other commands (runs on the calling thread, writes to std::cout/cerr).
#pragma once

#include <string>
#include <vector>

#include "flapctl/cli.h"

namespace flap::flapctl {

// `flapctl data ingest ARGS...` (args after "ingest"); returns the exit code.
int RunDataIngest(const std::vector<std::string>& args);

// The command, for adding to the "data" group.
Command DataIngestCommand();

}  // namespace flap::flapctl
