// flap_dist_probe: one rank of the distributed-equivalence test (tests/dist_integration_test.cc).
// Not a user tool. Run W times with the launcher's variables (RANK, WORLD_SIZE, MASTER_*);
// every rank builds the same tiny model and the same deterministic global batch of
// --global-batch samples, takes its contiguous slice (rank r: rows [r*B, (r+1)*B)), and:
//   1. computes this step's loss and averaged gradients and writes them to OUT.grads.<rank>
//      (loss averaged over ranks, then every parameter's gradient);
//   2. runs --steps optimizer steps on further batches and writes every parameter to
//      OUT.params.<rank>.
// File format: one "name numel\n" header per tensor followed by numel raw float32 values.
// Exit code 0 on success, 1 with the error on stderr.
#include <ATen/ATen.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include "worker/core/collectives.h"
#include "worker/core/synthetic_batch.h"
#include "worker/core/model.h"
#include "worker/core/train_step.h"
#include "worker/core/worker_group.h"

namespace {

using namespace flap;
using namespace flap::core;

struct Args {
  std::string out;
  int64_t global_batch = 12;
  int steps = 3;
  bool overlap = true;
  double bucket_mb = 25.0;
};

void Write(std::ofstream& out, const std::string& name, const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kFloat).contiguous();
  out << name << " " << c.numel() << "\n";
  out.write(reinterpret_cast<const char*>(c.data_ptr<float>()),
            static_cast<std::streamsize>(c.numel() * sizeof(float)));
}

Status Run(const Args& a) {
  FLAP_ASSIGN_OR_RETURN(Rendezvous rdv, DetectRendezvous(ProcessEnvironment()));
  GroupOptions go;
  go.timeout_s = 60;
  FLAP_ASSIGN_OR_RETURN(std::unique_ptr<WorkerGroup> group, WorkerGroup::Create(rdv, go));
  const int w = group->world_size(), r = group->rank();
  if (a.global_batch % w != 0) return Status::InvalidArgument("global batch not divisible by world size");
  const int64_t b = a.global_batch / w;

  FLAP_ASSIGN_OR_RETURN(ModelConfig c, ModelConfig::Preset("tiny"));
  c.target_frames = 64;
  c.vocab_size = 50;
  c.text_max_len = 12;
  MaskConfig mask;
  mask.ratio = 0.5;
  LossConfig loss;
  loss.recon_weight = 0.5;
  OptimConfig optim;
  optim.lr = 1e-3;
  optim.warmup_steps = 0;
  optim.total_steps = a.steps;
  at::manual_seed(1);
  FlapModel model(c, loss.logit_scale_init);
  GroupGather gather(group.get());
  GradSyncOptions so;
  so.overlap = a.overlap;
  so.bucket_mb = a.bucket_mb;
  GroupGradientSync sync(group.get(), so);
  TrainStep step(model, loss, optim, &gather, w > 1 ? &sync : nullptr);

  FLAP_ASSIGN_OR_RETURN(StepStats st, step.ComputeGradients(SyntheticBatch(c, mask, a.global_batch, r * b, b, 1000)));
  at::Tensor losses = at::tensor({st.loss, st.contrastive, st.recon}, at::kDouble);
  FLAP_RETURN_IF_ERROR(group->AllReduceSum(losses));
  losses.div_(w);
  {
    std::ofstream out(a.out + ".grads." + std::to_string(r), std::ios::binary | std::ios::trunc);
    Write(out, "loss", losses);
    for (const auto& p : model->named_parameters()) Write(out, p.key(), p.value().grad());
    if (!out) return Status::IOError("cannot write " + a.out);
  }
  for (int s = 0; s < a.steps; ++s) {
    FLAP_ASSIGN_OR_RETURN(StepStats ignored, step.Run(SyntheticBatch(c, mask, a.global_batch, r * b, b, 1001 + s), s));
    (void)ignored;
  }
  std::ofstream out(a.out + ".params." + std::to_string(r), std::ios::binary | std::ios::trunc);
  for (const auto& p : model->named_parameters()) Write(out, p.key(), p.value());
  if (!out) return Status::IOError("cannot write " + a.out);
  return group->Shutdown();
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--out")
      a.out = v;
    else if (k == "--global-batch")
      a.global_batch = std::atoll(v.c_str());
    else if (k == "--steps")
      a.steps = std::atoi(v.c_str());
    else if (k == "--overlap")
      a.overlap = v == "1";
    else if (k == "--bucket-mb")
      a.bucket_mb = std::atof(v.c_str());
    else {
      std::cerr << "flap_dist_probe: unknown flag " << k << "\n";
      return 2;
    }
  }
  at::set_num_threads(1);
  flap::Status s = Run(a);
  if (!s.ok()) {
    std::cerr << "flap_dist_probe: " << s.ToString() << std::endl;
    return 1;
  }
  return 0;
}
