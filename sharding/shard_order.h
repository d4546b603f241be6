// The order an epoch reads a list of shards in: a permutation drawn from (trial seed, epoch,
// the list's shard names), and nothing else. The coordinator hands out a trial's leases in this
// order (coordinator/lease.h) and the worker's fixed shard source reads its shards in it
// (worker/loader.h), so a standalone run of one rank and a coordinated run of the same seed
// read an epoch's shards in the same order.
//
// Why these inputs. The seed and the epoch: every epoch of every seed reads the shards in its
// own order, so the blocks of shards whose samples the loader shuffles together (and so the
// in-batch negatives) change from epoch to epoch and from seed to seed, and the spread over
// seeds of an ablation includes the data order. The shard names: the permutation belongs to the
// list it orders (another dataset or another rank's share draws its own). Nothing else (mask
// ratio, strategy, learning rate, ...): arms of a sweep with one seed read the same order, so
// comparisons between arms are paired.
//
// Thread-safety: a pure function; safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace flap::sharding {

// A permutation of [0, names.size()): position p of `epoch` reads shard names[order[p]]. Every
// index appears exactly once (an epoch reads every shard once). A pure function of (seed,
// epoch, names in their order): the same inputs give the same permutation in any process.
std::vector<size_t> EpochShardOrder(uint64_t seed, int64_t epoch, const std::vector<std::string>& names);

}  // namespace flap::sharding
