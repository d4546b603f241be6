#include "worker/evaluator.h"

#include <ATen/ATen.h>
#include <torch/utils.h>

#include <cstdio>

#include "worker/batcher.h"

namespace flap::worker {

c10::Device ModelDevice(core::FlapModel& model) {
  const auto params = model->parameters();
  return params.empty() ? c10::Device(c10::DeviceType::CPU) : params.front().device();
}

at::Tensor EmbedClips(core::FlapModel& model, const Dataset& dataset, int64_t batch_size, core::Precision precision) {
  at::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const c10::Device device = ModelDevice(model);
  const int64_t n = dataset.size();
  const int64_t frames = dataset.target_frames(), bins = dataset.num_mel_bins();
  std::vector<at::Tensor> audio_parts;
  for (int64_t start = 0; start < n; start += batch_size) {
    const int64_t b = std::min(batch_size, n - start);
    at::Tensor spec = at::from_blob(const_cast<float*>(dataset.spec(start)), {b, frames, bins}, at::kFloat);
    if (!device.is_cpu()) spec = spec.to(device);  // a synchronous copy: the buffer is borrowed
    core::AutocastGuard autocast(device, precision);
    audio_parts.push_back(model->EncodeAudio(spec).embedding.to(at::kFloat));
  }
  if (was_training) model->train();
  return at::cat(audio_parts, 0);
}

core::RetrievalMetrics Evaluate(core::FlapModel& model, const Dataset& dataset, int64_t batch_size,
                                core::Precision precision) {
  at::Tensor audio = EmbedClips(model, dataset, batch_size, precision);
  at::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const c10::Device device = ModelDevice(model);
  const int64_t n = dataset.size();
  const int max_len = model->config().text_max_len;
  std::vector<const std::vector<int>*> captions;
  std::vector<int64_t> caption_clip;
  for (int64_t i = 0; i < n; ++i) {
    for (const auto& c : dataset.clip(i).captions) {
      captions.push_back(&c);
      caption_clip.push_back(i);
    }
  }
  std::vector<at::Tensor> text_parts;
  for (size_t start = 0; start < captions.size(); start += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(captions.size(), start + static_cast<size_t>(batch_size));
    std::vector<const std::vector<int>*> part(captions.begin() + start, captions.begin() + end);
    at::Tensor tokens = PadTokens(part, max_len);
    if (!device.is_cpu()) tokens = tokens.to(device);
    core::AutocastGuard autocast(device, precision);
    text_parts.push_back(model->EncodeText(tokens).to(at::kFloat));
  }
  if (was_training) model->train();
  if (text_parts.empty()) return core::ComputeRetrieval({}, 0, n, caption_clip);
  return core::ComputeRetrievalBlocked(at::cat(text_parts, 0), audio, caption_clip);
}

nlohmann::json MetricsToJson(const core::RetrievalMetrics& m) {
  return {{"t2a_r1", m.t2a_r1},       {"t2a_r5", m.t2a_r5},       {"t2a_r10", m.t2a_r10},
          {"a2t_r1", m.a2t_r1},       {"a2t_r5", m.a2t_r5},       {"a2t_r10", m.a2t_r10},
          {"t2a_map10", m.t2a_map10}, {"a2t_map10", m.a2t_map10}, {"map10", m.map10},
          {"num_clips", m.num_clips}, {"num_captions", m.num_captions}};
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
                100.0 * core::ChanceRecall(1, m.num_clips), 100 * m.t2a_r1, 100 * m.t2a_r5,
                100 * m.t2a_r10, 100 * m.t2a_map10, 100 * m.a2t_r1, 100 * m.a2t_r5,
                100 * m.a2t_r10, 100 * m.a2t_map10, 100 * m.map10);
  return buf;
}

}  // namespace flap::worker
