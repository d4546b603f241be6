#include "worker/core/retrieval.h"

#include <ATen/ATen.h>
#include <torch/utils.h>

#include <algorithm>
#include <random>

namespace flap::core {
namespace {

// The p-quantile of sorted values, linear between order statistics.
double Quantile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double pos = p * static_cast<double>(sorted.size() - 1);
  const size_t i = static_cast<size_t>(pos);
  if (i + 1 >= sorted.size()) return sorted.back();
  return sorted[i] + (pos - static_cast<double>(i)) * (sorted[i + 1] - sorted[i]);
}

// A uniform index in [0, n) from 64 random bits (multiply-shift: the same on every platform,
// unlike std::uniform_int_distribution).
size_t Draw(std::mt19937_64& rng, size_t n) {
  return static_cast<size_t>((static_cast<unsigned __int128>(rng()) * n) >> 64);
}

}  // namespace

double ChanceT2aRecall(int64_t clips, int k) {
  if (clips <= 0) return 0.0;
  return std::min(1.0, static_cast<double>(k) / static_cast<double>(clips));
}

double ChanceA2tRecall(const std::vector<int64_t>& captions_per_clip, int k) {
  if (captions_per_clip.empty()) return 0.0;
  int64_t n = 0;
  for (int64_t m : captions_per_clip) n += m;
  double sum = 0.0;
  for (int64_t m : captions_per_clip) {
    // C(N - m, k) / C(N, k) = prod_{i < k} (N - m - i) / (N - i): the chance that k captions
    // drawn from N miss all m of the clip's. k >= N draws every caption.
    double miss = 1.0;
    if (static_cast<int64_t>(k) >= n) {
      miss = m > 0 ? 0.0 : 1.0;
    } else {
      for (int i = 0; i < k && miss > 0.0; ++i) {
        miss *= std::max<double>(0.0, static_cast<double>(n - m - i)) / static_cast<double>(n - i);
      }
    }
    sum += 1.0 - miss;
  }
  return sum / static_cast<double>(captions_per_clip.size());
}

void BootstrapRetrieval(const RetrievalRanks& ranks, int resamples, uint64_t seed, RetrievalMetrics* m) {
  // Per-query values: hits at 1, 5, 10 and the query's mAP@10 term.
  struct Query {
    uint8_t r1, r5, r10;
    double ap;
  };
  std::vector<Query> t2a, a2t;
  t2a.reserve(ranks.t2a.size());
  for (int64_t rank : ranks.t2a) {
    t2a.push_back({rank < 1, rank < 5, rank < 10, rank < 10 ? 1.0 / static_cast<double>(rank + 1) : 0.0});
  }
  a2t.reserve(ranks.a2t.size());
  for (const auto& r : ranks.a2t) {
    double ap = 0;
    for (size_t k = 0; k < r.size() && r[k] < 10; ++k) ap += static_cast<double>(k + 1) / static_cast<double>(r[k] + 1);
    if (r.empty()) {
      a2t.push_back({0, 0, 0, 0.0});  // a clip without captions is a miss
    } else {
      a2t.push_back({r[0] < 1, r[0] < 5, r[0] < 10, ap / static_cast<double>(r.size())});
    }
  }
  struct Bound {
    double point;
    double *lo, *hi;
    std::vector<double> v;
  };
  Bound b[7] = {{m->t2a_r1, &m->t2a_r1_lo, &m->t2a_r1_hi, {}},    {m->t2a_r5, &m->t2a_r5_lo, &m->t2a_r5_hi, {}},
                {m->t2a_r10, &m->t2a_r10_lo, &m->t2a_r10_hi, {}}, {m->a2t_r1, &m->a2t_r1_lo, &m->a2t_r1_hi, {}},
                {m->a2t_r5, &m->a2t_r5_lo, &m->a2t_r5_hi, {}},    {m->a2t_r10, &m->a2t_r10_lo, &m->a2t_r10_hi, {}},
                {m->map10, &m->map10_lo, &m->map10_hi, {}}};
  if (t2a.empty() || a2t.empty() || resamples < 1) {
    for (Bound& x : b) *x.lo = *x.hi = x.point;
    return;
  }
  for (Bound& x : b) x.v.reserve(static_cast<size_t>(resamples));
  std::mt19937_64 rng(seed);
  for (int s = 0; s < resamples; ++s) {
    int64_t t1 = 0, t5 = 0, t10 = 0, a1 = 0, a5 = 0, a10 = 0;
    double tap = 0, aap = 0;
    for (size_t i = 0; i < t2a.size(); ++i) {
      const Query& q = t2a[Draw(rng, t2a.size())];
      t1 += q.r1;
      t5 += q.r5;
      t10 += q.r10;
      tap += q.ap;
    }
    for (size_t i = 0; i < a2t.size(); ++i) {
      const Query& q = a2t[Draw(rng, a2t.size())];
      a1 += q.r1;
      a5 += q.r5;
      a10 += q.r10;
      aap += q.ap;
    }
    const double nt = static_cast<double>(t2a.size()), na = static_cast<double>(a2t.size());
    b[0].v.push_back(static_cast<double>(t1) / nt);
    b[1].v.push_back(static_cast<double>(t5) / nt);
    b[2].v.push_back(static_cast<double>(t10) / nt);
    b[3].v.push_back(static_cast<double>(a1) / na);
    b[4].v.push_back(static_cast<double>(a5) / na);
    b[5].v.push_back(static_cast<double>(a10) / na);
    b[6].v.push_back(0.5 * (tap / nt + aap / na));
  }
  for (Bound& x : b) {
    std::sort(x.v.begin(), x.v.end());
    *x.lo = std::min(x.point, Quantile(x.v, 0.025));
    *x.hi = std::max(x.point, Quantile(x.v, 0.975));
  }
}

RetrievalMetrics MetricsFromRanks(const RetrievalRanks& ranks) {
  RetrievalMetrics m;
  const int64_t num_captions = static_cast<int64_t>(ranks.t2a.size());
  const int64_t num_clips = static_cast<int64_t>(ranks.a2t.size());
  m.num_clips = num_clips;
  m.num_captions = num_captions;
  if (num_captions == 0 || num_clips == 0) return m;
  for (int64_t rank : ranks.t2a) {
    m.t2a_r1 += rank < 1;
    m.t2a_r5 += rank < 5;
    m.t2a_r10 += rank < 10;
    if (rank < 10) m.t2a_map10 += 1.0 / static_cast<double>(rank + 1);
  }
  m.t2a_r1 /= num_captions;
  m.t2a_r5 /= num_captions;
  m.t2a_r10 /= num_captions;
  m.t2a_map10 /= num_captions;
  for (const auto& r : ranks.a2t) {
    if (r.empty()) continue;
    m.a2t_r1 += r[0] < 1;
    m.a2t_r5 += r[0] < 5;
    m.a2t_r10 += r[0] < 10;
    double ap = 0;
    for (size_t k = 0; k < r.size() && r[k] < 10; ++k) {
      ap += static_cast<double>(k + 1) / static_cast<double>(r[k] + 1);
    }
    m.a2t_map10 += ap / static_cast<double>(r.size());
  }
  m.a2t_r1 /= num_clips;
  m.a2t_r5 /= num_clips;
  m.a2t_r10 /= num_clips;
  m.a2t_map10 /= num_clips;
  m.map10 = 0.5 * (m.t2a_map10 + m.a2t_map10);
  std::vector<int64_t> captions_per_clip;
  for (const auto& r : ranks.a2t) captions_per_clip.push_back(static_cast<int64_t>(r.size()));
  m.chance_t2a_r1 = ChanceT2aRecall(num_clips, 1);
  m.chance_t2a_r5 = ChanceT2aRecall(num_clips, 5);
  m.chance_t2a_r10 = ChanceT2aRecall(num_clips, 10);
  m.chance_a2t_r1 = ChanceA2tRecall(captions_per_clip, 1);
  m.chance_a2t_r5 = ChanceA2tRecall(captions_per_clip, 5);
  m.chance_a2t_r10 = ChanceA2tRecall(captions_per_clip, 10);
  BootstrapRetrieval(ranks, kBootstrapResamples, kBootstrapSeed, &m);
  return m;
}

RetrievalMetrics ComputeRetrieval(const std::vector<float>& sim, int64_t num_captions, int64_t num_clips,
                                  const std::vector<int64_t>& caption_clip) {
  RetrievalRanks ranks;
  if (num_captions == 0 || num_clips == 0) {
    RetrievalMetrics m;
    m.num_clips = num_clips;
    m.num_captions = num_captions;
    return m;
  }
  auto s = [&](int64_t cap, int64_t clip) { return sim[static_cast<size_t>(cap * num_clips + clip)]; };

  // text -> audio: each caption queries all clips.
  for (int64_t i = 0; i < num_captions; ++i) {
    const int64_t target = caption_clip[i];
    const float st = s(i, target);
    int64_t rank = 0;
    for (int64_t j = 0; j < num_clips; ++j) rank += (j != target && s(i, j) >= st);
    ranks.t2a.push_back(rank);
  }

  // audio -> text: each clip queries all captions; its rank is the best of its true captions'.
  std::vector<std::vector<int64_t>> captions_of(static_cast<size_t>(num_clips));
  for (int64_t i = 0; i < num_captions; ++i) captions_of[caption_clip[i]].push_back(i);
  ranks.a2t.resize(static_cast<size_t>(num_clips));
  for (int64_t c = 0; c < num_clips; ++c) {
    // Position of each true caption in the list sorted by similarity, ties broken against
    // the query: equal false captions come first, equal true captions by index.
    std::vector<int64_t>& r = ranks.a2t[c];
    for (int64_t i : captions_of[c]) {
      const float st = s(i, c);
      int64_t rank = 0;
      for (int64_t j = 0; j < num_captions; ++j) {
        if (j == i) continue;
        const float sj = s(j, c);
        const bool is_true = caption_clip[j] == c;
        rank += sj > st || (sj == st && (!is_true || j < i));
      }
      r.push_back(rank);
    }
    std::sort(r.begin(), r.end());
  }
  return MetricsFromRanks(ranks);
}

RetrievalMetrics ComputeRetrievalBlocked(const at::Tensor& text_in, const at::Tensor& audio_in,
                                         const std::vector<int64_t>& caption_clip, int64_t max_block) {
  at::NoGradGuard no_grad;
  const at::Tensor text = text_in.to(at::kFloat).contiguous();
  const at::Tensor audio = audio_in.to(at::kFloat).contiguous();
  const int64_t num_captions = text.size(0), num_clips = audio.size(0);
  RetrievalRanks ranks;
  if (num_captions == 0 || num_clips == 0) {
    RetrievalMetrics m;
    m.num_clips = num_clips;
    m.num_captions = num_captions;
    return m;
  }
  const auto dev = text.device();
  const auto long_opts = at::TensorOptions().dtype(at::kLong);

  // text -> audio, by blocks of captions: rank = #{clips scoring >= the true one} - itself.
  const int64_t rows = std::max<int64_t>(1, max_block / num_clips);
  ranks.t2a.reserve(static_cast<size_t>(num_captions));
  for (int64_t r0 = 0; r0 < num_captions; r0 += rows) {
    const int64_t n = std::min(rows, num_captions - r0);
    const at::Tensor s = at::matmul(text.narrow(0, r0, n), audio.t());  // (n, clips)
    const at::Tensor target =
        at::tensor(std::vector<int64_t>(caption_clip.begin() + r0, caption_clip.begin() + r0 + n), long_opts).to(dev);
    const at::Tensor st = s.gather(1, target.unsqueeze(1));
    const at::Tensor rank = (s.ge(st).sum(1) - 1).clamp_min(0).to(at::kCPU).contiguous();
    const int64_t* p = rank.data_ptr<int64_t>();
    ranks.t2a.insert(ranks.t2a.end(), p, p + n);
  }

  // audio -> text, by blocks of clips. For each (clip c, true caption i) with score st:
  // rank = #{captions > st} + #{false captions == st} + #{true captions j < i == st}.
  std::vector<std::vector<int64_t>> captions_of(static_cast<size_t>(num_clips));
  size_t most = 1;
  for (int64_t i = 0; i < num_captions; ++i) {
    captions_of[caption_clip[i]].push_back(i);
    most = std::max(most, captions_of[caption_clip[i]].size());
  }
  ranks.a2t.resize(static_cast<size_t>(num_clips));
  const int64_t clips_per_block = std::max<int64_t>(1, max_block / (num_captions * static_cast<int64_t>(1 + most)));
  for (int64_t c0 = 0; c0 < num_clips; c0 += clips_per_block) {
    const int64_t n = std::min(clips_per_block, num_clips - c0);
    std::vector<int64_t> pair_clip, pair_caption;
    for (int64_t c = c0; c < c0 + n; ++c) {
      for (int64_t i : captions_of[c]) {
        pair_clip.push_back(c - c0);
        pair_caption.push_back(i);
      }
    }
    if (pair_clip.empty()) continue;
    const at::Tensor s = at::matmul(audio.narrow(0, c0, n), text.t());                       // (n, captions)
    const at::Tensor rows_of = s.index_select(0, at::tensor(pair_clip, long_opts).to(dev));  // (P, captions)
    const at::Tensor st = rows_of.gather(1, at::tensor(pair_caption, long_opts).to(dev).unsqueeze(1));
    const at::Tensor greater = rows_of.gt(st).sum(1).to(at::kCPU).contiguous();
    const at::Tensor equal = rows_of.eq(st).sum(1).to(at::kCPU).contiguous();
    const at::Tensor scores = st.squeeze(1).to(at::kCPU).contiguous();
    const int64_t* g = greater.data_ptr<int64_t>();
    const int64_t* e = equal.data_ptr<int64_t>();
    const float* v = scores.data_ptr<float>();
    // The pairs of one clip are consecutive: its true captions' scores are v[begin, end).
    for (size_t begin = 0; begin < pair_clip.size();) {
      size_t end = begin;
      while (end < pair_clip.size() && pair_clip[end] == pair_clip[begin]) ++end;
      std::vector<int64_t>& out = ranks.a2t[static_cast<size_t>(c0 + pair_clip[begin])];
      for (size_t p = begin; p < end; ++p) {
        int64_t equal_true = 0, equal_true_before = 0;
        for (size_t q = begin; q < end; ++q) {
          if (v[q] != v[p]) continue;
          ++equal_true;
          if (pair_caption[q] < pair_caption[p]) ++equal_true_before;
        }
        out.push_back(g[p] + e[p] - equal_true + equal_true_before);
      }
      std::sort(out.begin(), out.end());
      begin = end;
    }
  }
  return MetricsFromRanks(ranks);
}

}  // namespace flap::core
