#include "worker/evaluator.h"

#include <ATen/ATen.h>
#include <torch/utils.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <utility>
#include <nlohmann/json.hpp>

#include "worker/batcher.h"

namespace flap::worker {

c10::Device ModelDevice(core::FlapModel& model) {
  const auto params = model->parameters();
  return params.empty() ? c10::Device(c10::DeviceType::CPU) : params.front().device();
}

StatusOr<EvalCrop> ParseEvalCrop(const std::string& name) {
  if (name == "first") return EvalCrop::kFirst;
  if (name == "center") return EvalCrop::kCenter;
  if (name == "chunks") return EvalCrop::kChunks;
  return Status::InvalidArgument("eval.crop must be first, center or chunks, got '" + name + "'");
}

std::vector<int64_t> EvalWindows(EvalCrop crop, int64_t frames, int64_t window) {
  const int64_t spare = std::max<int64_t>(0, frames - window);
  if (crop == EvalCrop::kFirst || spare == 0) return {0};
  if (crop == EvalCrop::kCenter) return {spare / 2};
  std::vector<int64_t> starts;
  for (int64_t s = 0; s < spare; s += window) starts.push_back(s);
  starts.push_back(spare);  // the last window ends at the clip's end
  return starts;
}

at::Tensor EmbedClips(core::FlapModel& model, const Dataset& dataset, int64_t batch_size, core::Precision precision,
                      EvalCrop crop) {
  at::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const c10::Device device = ModelDevice(model);
  const int64_t n = dataset.size();
  const int64_t frames = dataset.target_frames(), bins = dataset.num_mel_bins();
  // Every window as (clip, first frame), clip after clip.
  std::vector<std::pair<int64_t, int64_t>> windows;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t s : EvalWindows(crop, dataset.num_frames(i), frames)) windows.emplace_back(i, s);
  }
  const int64_t w = static_cast<int64_t>(windows.size());
  std::vector<at::Tensor> audio_parts;
  at::Tensor spec = at::empty({std::min(batch_size, w), frames, bins}, at::kFloat);
  for (int64_t start = 0; start < w; start += batch_size) {
    const int64_t b = std::min(batch_size, w - start);
    float* out = spec.data_ptr<float>();
    for (int64_t k = 0; k < b; ++k) {
      const auto [clip, first] = windows[static_cast<size_t>(start + k)];
      std::memcpy(out + k * frames * bins, dataset.spec(clip) + first * bins, sizeof(float) * frames * bins);
    }
    at::Tensor part = spec.narrow(0, 0, b);
    if (!device.is_cpu()) part = part.to(device);  // a synchronous copy: the buffer is reused
    core::AutocastGuard autocast(device, precision);
    audio_parts.push_back(model->EncodeAudio(part).embedding.to(at::kFloat));
  }
  if (was_training) model->train();
  at::Tensor emb = at::cat(audio_parts, 0);
  if (w == n) return emb;  // one window per clip
  std::vector<int64_t> owner(static_cast<size_t>(w));
  for (int64_t k = 0; k < w; ++k) owner[static_cast<size_t>(k)] = windows[static_cast<size_t>(k)].first;
  const at::Tensor index = at::tensor(owner, at::kLong).to(emb.device());
  at::Tensor mean = at::zeros({n, emb.size(1)}, emb.options()).index_add_(0, index, emb);
  return mean / mean.norm(2, {1}, /*keepdim=*/true).clamp_min(1e-12);
}

core::RetrievalMetrics Evaluate(core::FlapModel& model, const Dataset& dataset, int64_t batch_size,
                                core::Precision precision, EvalCrop crop) {
  at::Tensor audio = EmbedClips(model, dataset, batch_size, precision, crop);
  const int64_t n = dataset.size();
  std::vector<const std::vector<int>*> captions;
  std::vector<int64_t> caption_clip;
  for (int64_t i = 0; i < n; ++i) {
    for (const auto& c : dataset.clip(i).captions) {
      captions.push_back(&c);
      caption_clip.push_back(i);
    }
  }
  if (captions.empty()) return core::ComputeRetrieval({}, 0, n, caption_clip);
  return core::ComputeRetrievalBlocked(EmbedTexts(model, captions, batch_size, precision), audio, caption_clip);
}

at::Tensor EmbedTexts(core::FlapModel& model, const std::vector<const std::vector<int>*>& texts, int64_t batch_size,
                      core::Precision precision) {
  at::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const c10::Device device = ModelDevice(model);
  const int max_len = model->config().text_max_len;
  std::vector<at::Tensor> parts;
  for (size_t start = 0; start < texts.size(); start += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(texts.size(), start + static_cast<size_t>(batch_size));
    std::vector<const std::vector<int>*> part(texts.begin() + start, texts.begin() + end);
    at::Tensor tokens = PadTokens(part, max_len, model->config().text_pad_id, model->config().text_end_id);
    if (!device.is_cpu()) tokens = tokens.to(device);
    core::AutocastGuard autocast(device, precision);
    parts.push_back(model->EncodeText(tokens).to(at::kFloat));
  }
  if (was_training) model->train();
  if (parts.empty()) return at::empty({0, model->config().embed_dim}, at::TensorOptions().device(device).dtype(at::kFloat));
  return at::cat(parts, 0);
}

nlohmann::json MetricsToJson(const core::RetrievalMetrics& m) {
  return {{"t2a_r1", m.t2a_r1},
          {"t2a_r5", m.t2a_r5},
          {"t2a_r10", m.t2a_r10},
          {"a2t_r1", m.a2t_r1},
          {"a2t_r5", m.a2t_r5},
          {"a2t_r10", m.a2t_r10},
          {"t2a_map10", m.t2a_map10},
          {"a2t_map10", m.a2t_map10},
          {"map10", m.map10},
          {"num_clips", m.num_clips},
          {"num_captions", m.num_captions},
          {"t2a_r1_lo", m.t2a_r1_lo},
          {"t2a_r1_hi", m.t2a_r1_hi},
          {"t2a_r5_lo", m.t2a_r5_lo},
          {"t2a_r5_hi", m.t2a_r5_hi},
          {"t2a_r10_lo", m.t2a_r10_lo},
          {"t2a_r10_hi", m.t2a_r10_hi},
          {"a2t_r1_lo", m.a2t_r1_lo},
          {"a2t_r1_hi", m.a2t_r1_hi},
          {"a2t_r5_lo", m.a2t_r5_lo},
          {"a2t_r5_hi", m.a2t_r5_hi},
          {"a2t_r10_lo", m.a2t_r10_lo},
          {"a2t_r10_hi", m.a2t_r10_hi},
          {"map10_lo", m.map10_lo},
          {"map10_hi", m.map10_hi},
          {"chance_t2a_r1", m.chance_t2a_r1},
          {"chance_t2a_r5", m.chance_t2a_r5},
          {"chance_t2a_r10", m.chance_t2a_r10},
          {"chance_a2t_r1", m.chance_a2t_r1},
          {"chance_a2t_r5", m.chance_a2t_r5},
          {"chance_a2t_r10", m.chance_a2t_r10}};
}

std::string FormatMetricsTable(const core::RetrievalMetrics& m) {
  char buf[512];
  std::snprintf(buf, sizeof(buf),
                "retrieval on %lld clips, %lld captions (chance R@1 text->audio %.2f%%)\n"
                "  direction      R@1     R@5    R@10  mAP@10\n"
                "  text->audio  %6.2f  %6.2f  %6.2f  %6.2f\n"
                "  audio->text  %6.2f  %6.2f  %6.2f  %6.2f\n"
                "  mean mAP@10  %6.2f\n",
                static_cast<long long>(m.num_clips), static_cast<long long>(m.num_captions),
                100.0 * core::ChanceT2aRecall(m.num_clips, 1), 100 * m.t2a_r1, 100 * m.t2a_r5, 100 * m.t2a_r10,
                100 * m.t2a_map10, 100 * m.a2t_r1, 100 * m.a2t_r5, 100 * m.a2t_r10, 100 * m.a2t_map10, 100 * m.map10);
  return buf;
}

}  // namespace flap::worker
