// EpochShardOrder (shard_order.h): a Fisher-Yates shuffle driven by a DrawRng (common/draw.h)
// keyed by the shard names.
#include "sharding/shard_order.h"

#include <utility>

#include "common/draw.h"

namespace flap::sharding {

std::vector<size_t> EpochShardOrder(uint64_t seed, int64_t epoch, const std::vector<std::string>& names) {
  // The key: the names, each ended by a NUL (a name never holds one), so that no two lists
  // share a key by regrouping their bytes.
  std::string key;
  for (const std::string& n : names) {
    key += n;
    key += '\0';
  }
  std::vector<size_t> order(names.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  DrawRng rng(DrawPurpose::kShardOrder, seed, key, epoch);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.Below(i)]);
  return order;
}

}  // namespace flap::sharding
