#include "worker/core/retrieval.h"

#include <algorithm>

namespace flap::core {

RetrievalMetrics ComputeRetrieval(const std::vector<float>& sim, int64_t num_captions,
                                  int64_t num_clips, const std::vector<int64_t>& caption_clip) {
  RetrievalMetrics m;
  m.num_clips = num_clips;
  m.num_captions = num_captions;
  if (num_captions == 0 || num_clips == 0) return m;
  auto s = [&](int64_t cap, int64_t clip) { return sim[static_cast<size_t>(cap * num_clips + clip)]; };

  // text -> audio: each caption queries all clips.
  for (int64_t i = 0; i < num_captions; ++i) {
    const int64_t target = caption_clip[i];
    const float st = s(i, target);
    int64_t rank = 0;
    for (int64_t j = 0; j < num_clips; ++j) rank += (j != target && s(i, j) >= st);
    m.t2a_r1 += rank < 1;
    m.t2a_r5 += rank < 5;
    m.t2a_r10 += rank < 10;
    if (rank < 10) m.t2a_map10 += 1.0 / static_cast<double>(rank + 1);
  }
  m.t2a_r1 /= num_captions;
  m.t2a_r5 /= num_captions;
  m.t2a_r10 /= num_captions;
  m.t2a_map10 /= num_captions;

  // audio -> text: each clip queries all captions; its rank is the best of its true captions'.
  std::vector<std::vector<int64_t>> captions_of(static_cast<size_t>(num_clips));
  for (int64_t i = 0; i < num_captions; ++i) captions_of[caption_clip[i]].push_back(i);
  for (int64_t c = 0; c < num_clips; ++c) {
    // Position of each true caption in the list sorted by similarity, ties broken against
    // the query: equal false captions come first, equal true captions by index.
    std::vector<int64_t> ranks;
    for (int64_t i : captions_of[c]) {
      const float st = s(i, c);
      int64_t rank = 0;
      for (int64_t j = 0; j < num_captions; ++j) {
        if (j == i) continue;
        const float sj = s(j, c);
        const bool is_true = caption_clip[j] == c;
        rank += sj > st || (sj == st && (!is_true || j < i));
      }
      ranks.push_back(rank);
    }
    if (ranks.empty()) continue;
    std::sort(ranks.begin(), ranks.end());
    m.a2t_r1 += ranks[0] < 1;
    m.a2t_r5 += ranks[0] < 5;
    m.a2t_r10 += ranks[0] < 10;
    double ap = 0;
    for (size_t k = 0; k < ranks.size() && ranks[k] < 10; ++k) {
      ap += static_cast<double>(k + 1) / static_cast<double>(ranks[k] + 1);
    }
    m.a2t_map10 += ap / static_cast<double>(ranks.size());
  }
  m.a2t_r1 /= num_clips;
  m.a2t_r5 /= num_clips;
  m.a2t_r10 /= num_clips;
  m.a2t_map10 /= num_clips;
  m.map10 = 0.5 * (m.t2a_map10 + m.a2t_map10);
  return m;
}

}  // namespace flap::core
