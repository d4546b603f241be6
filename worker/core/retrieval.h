// Audio-text retrieval metrics exactly as DESIGN.md's "Evaluation" defines them.
//
// Ranks count from 0. Ties count against the query: a candidate with a similarity equal to
// the target's is ranked ahead of it (for audio->text, equal true captions are ordered by
// index among themselves), so a model whose embeddings are all equal scores as badly as
// possible, never perfectly.
//
// Thread-safety: pure functions.
#pragma once

#include <ATen/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace flap::core {

struct RetrievalMetrics {
  double t2a_r1 = 0, t2a_r5 = 0, t2a_r10 = 0;  // text->audio recall@k, over captions
  double a2t_r1 = 0, a2t_r5 = 0, a2t_r10 = 0;  // audio->text recall@k, over clips
  double t2a_map10 = 0, a2t_map10 = 0;
  double map10 = 0;  // mean of the two mAP@10
  int64_t num_clips = 0, num_captions = 0;
  // 95% percentile-bootstrap bounds over the evaluation's queries (BootstrapRetrieval): the
  // captions for text->audio, the clips for audio->text, both for map10. Recall bounds lie in
  // [0, 1]; every interval holds its point estimate. Equal to it without queries.
  double t2a_r1_lo = 0, t2a_r1_hi = 0, t2a_r5_lo = 0, t2a_r5_hi = 0, t2a_r10_lo = 0, t2a_r10_hi = 0;
  double a2t_r1_lo = 0, a2t_r1_hi = 0, a2t_r5_lo = 0, a2t_r5_hi = 0, a2t_r10_lo = 0, a2t_r10_hi = 0;
  double map10_lo = 0, map10_hi = 0;
  // Chance level of each recall (a ranking drawn uniformly at random): k / clips for
  // text->audio; for audio->text the mean over clips of 1 - C(N - m, k) / C(N, k), a clip with
  // m true captions among N.
  double chance_t2a_r1 = 0, chance_t2a_r5 = 0, chance_t2a_r10 = 0;
  double chance_a2t_r1 = 0, chance_a2t_r5 = 0, chance_a2t_r10 = 0;
};

// The bootstrap behind the bounds: kBootstrapResamples resamples of the queries (with
// replacement, as many as there are) drawn from a generator seeded with kBootstrapSeed, so that
// the same ranks always give the same bounds; the bounds are the 2.5% and 97.5% percentiles
// (linear between order statistics) of the resampled metric, widened to hold the point estimate
// where the percentiles miss it.
inline constexpr int kBootstrapResamples = 1000;
inline constexpr uint64_t kBootstrapSeed = 0x5eedb007;

// sim: num_captions x num_clips cosine similarities, row-major (caption i, clip j).
// caption_clip[i]: the clip that caption i describes. Every clip must have >= 1 caption.
RetrievalMetrics ComputeRetrieval(const std::vector<float>& sim, int64_t num_captions, int64_t num_clips,
                                  const std::vector<int64_t>& caption_clip);

// The ranks behind the metrics: t2a[i] is the rank of caption i's clip among all clips;
// a2t[c] the sorted ranks of clip c's true captions among all captions.
struct RetrievalRanks {
  std::vector<int64_t> t2a;
  std::vector<std::vector<int64_t>> a2t;
};
// Chance R@k of text->audio retrieval over `clips` clips: min(1, k / clips); 0 for no clips.
double ChanceT2aRecall(int64_t clips, int k);
// Chance R@k of audio->text retrieval: the mean over clips of 1 - C(N - m, k) / C(N, k), with
// N the sum of captions_per_clip and m the clip's count (the chance that at least one of its m
// captions is among k drawn from N); 0 for no clips.
double ChanceA2tRecall(const std::vector<int64_t>& captions_per_clip, int k);

// The metrics with their bootstrap bounds (BootstrapRetrieval) and chance levels.
RetrievalMetrics MetricsFromRanks(const RetrievalRanks& ranks);
// Sets m's _lo / _hi bounds from `ranks` (m holds their point estimates, as MetricsFromRanks
// makes them): `resamples` resamples seeded with `seed`.
void BootstrapRetrieval(const RetrievalRanks& ranks, int resamples, uint64_t seed, RetrievalMetrics* m);

// The same metrics from the embeddings themselves: text (captions, D) and audio (clips, D),
// normalised, on any device (computed there). The similarity matrix is never held whole:
// it is computed in blocks of at most about `max_block` elements, so a 10k x 50k evaluation
// fits a GPU. Ties are broken exactly as ComputeRetrieval breaks them.
RetrievalMetrics ComputeRetrievalBlocked(const at::Tensor& text, const at::Tensor& audio,
                                         const std::vector<int64_t>& caption_clip,
                                         int64_t max_block = int64_t{1} << 24);

}  // namespace flap::core
