// The audio->text / text->audio gap as the evaluation measures it, taken apart
// (docs/benchmarks.md, "The a2t / t2a asymmetry"). For each model given, the split's clips and
// captions are embedded once (the evaluator's EmbedClips / EmbedTexts) and scored four ways,
// every one by core/retrieval.h:
//
//   as evaluated     every caption (ComputeRetrievalBlocked): text->audio over captions, each
//                    against the clips; audio->text over clips, each against every caption,
//                    a hit when any of its own captions is in the top k.
//   a2t over clips   audio->text with each other clip counted once: clip c's candidates are the
//                    clips, clip d scoring the best of d's captions against c. A clip's m
//                    captions are paraphrases that rank together, so in the caption gallery every
//                    competing clip takes about m of the k places; here it takes one.
//   caption j        one caption per clip, the clip's j-th (j = 1, 2): a square set with one
//                    positive each way, where the two directions differ only by what the model
//                    learnt; "hubs" gives, for caption 1's set, the most queries that share one
//                    top-1 answer each way (an embedding side that is bunched up makes a few of
//                    its items the first answer to many queries of the other side).
//   partition G      no model: what a model scores that tells the clips apart up to groups of G
//                    (the split's clips in consecutive groups, with their caption counts) and
//                    ranks within a group at random, i.e. the chance levels of one group
//                    (ChanceT2aRecall, ChanceA2tRecall). Equal at R@1 both ways; at k > 1 the
//                    audio->text figure is below text->audio's, by the paraphrases' crowding alone.
//
//   build/bench/retrieval_views_bench --data DIR [--split val] --model PATH [--model PATH ...]
//
// PATH: a training run's model.pt (its config read beside it, as flap-worker embed reads it; the
// dataset's tokenizer) or an export folder. Runs on the CPU.
#include <ATen/ATen.h>
#include <torch/utils.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "config/trial_config.h"
#include "worker/core/retrieval.h"
#include "worker/dataset.h"
#include "worker/evaluator.h"
#include "worker/export.h"
#include "worker/trainer.h"

namespace {

void Check(const flap::Status& s, const std::string& what) {
  if (!s.ok()) {
    std::fprintf(stderr, "retrieval_views_bench: %s: %s\n", what.c_str(), s.ToString().c_str());
    std::exit(1);
  }
}

std::string Pct(double x) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%5.1f", 100.0 * x);
  return buf;
}

std::string T2a(const flap::core::RetrievalMetrics& m) {
  return Pct(m.t2a_r1) + " " + Pct(m.t2a_r5) + " " + Pct(m.t2a_r10);
}
std::string A2t(const flap::core::RetrievalMetrics& m) {
  return Pct(m.a2t_r1) + " " + Pct(m.a2t_r5) + " " + Pct(m.a2t_r10);
}

}  // namespace

int main(int argc, char** argv) {
  std::string data, split = "val";
  std::vector<std::string> models;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--data") {
      data = argv[i + 1];
    } else if (a == "--split") {
      split = argv[i + 1];
    } else if (a == "--model") {
      models.push_back(argv[i + 1]);
    } else {
      models.clear();
      break;
    }
  }
  if (data.empty() || models.empty() || argc % 2 == 0) {
    std::fprintf(stderr, "usage: retrieval_views_bench --data DIR [--split val] --model PATH [--model PATH ...]\n");
    return 2;
  }
  at::set_num_threads(1);  // as flap-worker sets it on the CPU (docs/benchmarks.md, "CPU threading")
  const c10::Device cpu(c10::DeviceType::CPU);

  std::vector<int64_t> caption_clip, captions_per_clip;
  bool header = false;
  for (const std::string& path : models) {
    auto config = flap::worker::RunConfigOf(path, {"--data.path", data});
    Check(config.status(), path);
    auto loaded = flap::worker::LoadInferenceModel(path, *config, cpu);
    Check(loaded.status(), path);
    flap::worker::FeatureOptions fo = flap::worker::DataOptions(*config);
    fo.target_frames = loaded->config.model.target_frames;
    fo.max_frames = loaded->config.data.max_frames;
    fo.num_mel_bins = loaded->config.model.num_mel_bins;
    auto set = flap::worker::Dataset::Load(data, split, fo);
    Check(set.status(), data);

    std::vector<const std::vector<int>*> texts;
    std::vector<std::vector<int64_t>> rows_of(static_cast<size_t>(set->size()));
    caption_clip.clear();
    captions_per_clip.clear();
    for (int64_t c = 0; c < set->size(); ++c) {
      for (const auto& tokens : set->clip(c).captions) {
        rows_of[static_cast<size_t>(c)].push_back(static_cast<int64_t>(texts.size()));
        texts.push_back(&tokens);
        caption_clip.push_back(c);
      }
      captions_per_clip.push_back(static_cast<int64_t>(rows_of[static_cast<size_t>(c)].size()));
    }
    const int64_t clips = set->size();
    if (!header) {
      std::printf("%s\n", set->identity().Describe().c_str());
      std::printf("R@1 R@5 R@10 in %%; t2a: text->audio, a2t: audio->text; hubs: the most queries sharing one\n"
                  "top-1 answer in the caption-1 set, t2a / a2t\n\n");
      std::printf("%-60s | %-17s | %-17s | %-17s | %-17s %-17s | %-17s %-17s | %9s\n", "model", "as evaluated: t2a",
                  "a2t", "a2t over clips", "caption 1: t2a", "a2t", "caption 2: t2a", "a2t", "hubs");
      header = true;
    }
    const at::Tensor audio = flap::worker::EmbedClips(loaded->model, *set, 64);
    const at::Tensor text = flap::worker::EmbedTexts(loaded->model, texts, 64);
    const flap::core::RetrievalMetrics all = flap::core::ComputeRetrievalBlocked(text, audio, caption_clip);

    // a2t over clips: best[d][c] = the best of clip d's captions against clip c.
    const at::Tensor sim = at::matmul(text, audio.t());  // (captions, clips)
    std::vector<float> best(static_cast<size_t>(clips * clips));
    for (int64_t d = 0; d < clips; ++d) {
      const at::Tensor rows = at::tensor(rows_of[static_cast<size_t>(d)], at::kLong);
      const at::Tensor m = std::get<0>(sim.index_select(0, rows).max(0)).contiguous();
      std::copy(m.data_ptr<float>(), m.data_ptr<float>() + clips, best.begin() + d * clips);
    }
    std::vector<int64_t> identity(static_cast<size_t>(clips));
    for (int64_t c = 0; c < clips; ++c) identity[static_cast<size_t>(c)] = c;
    const flap::core::RetrievalMetrics by_clip = flap::core::ComputeRetrieval(best, clips, clips, identity);

    // One caption per clip, the j-th (clips with fewer are left out with their audio).
    std::string square, hubs;
    for (size_t j = 0; j < 2; ++j) {
      std::vector<int64_t> rows, kept;
      for (int64_t c = 0; c < clips; ++c) {
        if (rows_of[static_cast<size_t>(c)].size() > j) {
          rows.push_back(rows_of[static_cast<size_t>(c)][j]);
          kept.push_back(c);
        }
      }
      std::vector<int64_t> own(rows.size());
      for (size_t i = 0; i < own.size(); ++i) own[i] = static_cast<int64_t>(i);
      const at::Tensor t = text.index_select(0, at::tensor(rows, at::kLong));
      const at::Tensor a = audio.index_select(0, at::tensor(kept, at::kLong));
      const flap::core::RetrievalMetrics one = flap::core::ComputeRetrievalBlocked(t, a, own);
      square += " | " + T2a(one) + " " + A2t(one);
      if (j == 0) {
        // Hubs: the most queries that share one top-1 answer, each way.
        const at::Tensor s = at::matmul(t, a.t());
        auto most = [](const at::Tensor& top1) {
          return at::bincount(top1).max().item<int64_t>();
        };
        hubs = std::to_string(most(s.argmax(1))) + " / " + std::to_string(most(s.argmax(0)));
      }
    }
    std::string name = path.size() > 60 ? "..." + path.substr(path.size() - 57) : path;
    std::printf("%-60s | %s | %s | %s%s | %9s\n", name.c_str(), T2a(all).c_str(), A2t(all).c_str(),
                A2t(by_clip).c_str(), square.c_str(), hubs.c_str());
  }

  // The partition model: the split's clips in consecutive groups of G, chance within a group.
  std::printf("\nA model that tells clips apart up to groups of G and ranks within a group at random:\n");
  std::printf("%6s | %-17s | %-17s\n", "G", "t2a", "a2t");
  for (int64_t g : {5, 10, 20, 40}) {
    const int64_t clips = static_cast<int64_t>(captions_per_clip.size());
    double t[3] = {0, 0, 0}, a[3] = {0, 0, 0};
    int64_t groups = 0;
    for (int64_t first = 0; first + g <= clips; first += g, ++groups) {
      const std::vector<int64_t> counts(captions_per_clip.begin() + first, captions_per_clip.begin() + first + g);
      const int ks[3] = {1, 5, 10};
      for (int i = 0; i < 3; ++i) {
        t[i] += flap::core::ChanceT2aRecall(g, ks[i]);
        a[i] += flap::core::ChanceA2tRecall(counts, ks[i]);
      }
    }
    if (groups == 0) continue;
    std::printf("%6lld | %s %s %s | %s %s %s\n", static_cast<long long>(g), Pct(t[0] / groups).c_str(),
                Pct(t[1] / groups).c_str(), Pct(t[2] / groups).c_str(), Pct(a[0] / groups).c_str(),
                Pct(a[1] / groups).c_str(), Pct(a[2] / groups).c_str());
  }
  return 0;
}
