#include "worker/core/collectives.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <chrono>
#include <cstring>

namespace flap::core {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Forward: all-gather; backward: all-reduce the gathered gradient, keep this rank's rows.
struct AllGatherFunction : public torch::autograd::Function<AllGatherFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& local, GroupGather* gather) {
    ctx->saved_data["gather"] = reinterpret_cast<int64_t>(gather);
    ctx->saved_data["rows"] = local.size(0);
    const auto t = Clock::now();
    at::Tensor out;
    Status s = gather->group()->AllGather(local, &out);
    gather->AddSeconds(Since(t));
    if (!s.ok()) throw CollectiveError(s);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* gather = reinterpret_cast<GroupGather*>(ctx->saved_data["gather"].toInt());
    const int64_t rows = ctx->saved_data["rows"].toInt();
    at::Tensor sum = grads[0].contiguous().clone();
    const auto t = Clock::now();
    Status s = gather->group()->AllReduceSum(sum);
    gather->AddSeconds(Since(t));
    if (!s.ok()) throw CollectiveError(s);
    return {sum.narrow(0, gather->rank() * rows, rows), at::Tensor()};
  }
};

}  // namespace

at::Tensor GroupGather::AllGather(const at::Tensor& local) {
  if (group_->world_size() == 1) return local;
  return AllGatherFunction::apply(local, this);
}

GroupGradientSync::GroupGradientSync(WorkerGroup* group, const GradSyncOptions& options)
    : group_(group), options_(options) {}

GroupGradientSync::~GroupGradientSync() {
  for (size_t i = 0; i < hooks_.size(); ++i) params_[i].remove_hook(hooks_[i]);
}

void GroupGradientSync::Attach(const std::vector<at::Tensor>& params) {
  for (const auto& p : params) {
    if (p.requires_grad()) params_.push_back(p);
  }
  const int64_t capacity = static_cast<int64_t>(options_.bucket_mb * 1024.0 * 1024.0);
  bucket_of_.assign(params_.size(), 0);
  offset_of_.assign(params_.size(), 0);
  copied_.assign(params_.size(), false);
  int64_t used = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const at::Tensor& p = params_[k];
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    const bool fits = !buckets_.empty() && used + bytes <= capacity &&
                      params_[buckets_.back().params.front()].options().type_equal(p.options());
    if (!fits) {
      buckets_.emplace_back();
      used = 0;
    }
    Bucket& b = buckets_.back();
    bucket_of_[k] = buckets_.size() - 1;
    offset_of_[k] = used / static_cast<int64_t>(p.element_size());
    b.params.push_back(k);
    used += bytes;
  }
  for (Bucket& b : buckets_) {
    int64_t numel = 0;
    for (size_t k : b.params) numel += params_[k].numel();
    b.flat = at::zeros({numel}, params_[b.params.front()].options().requires_grad(false));
  }
  if (options_.overlap && group_->world_size() > 1) {
    for (size_t k = 0; k < params_.size(); ++k) {
      hooks_.push_back(params_[k].register_hook([this, k](const at::Tensor& grad) { OnGradient(k, grad); }));
    }
  }
}

void GroupGradientSync::OnGradient(size_t index, const at::Tensor& grad) {
  if (copied_[index]) return;
  Bucket& b = buckets_[bucket_of_[index]];
  {
    at::NoGradGuard no_grad;
    b.flat.narrow(0, offset_of_[index], grad.numel()).copy_(grad.reshape(-1));
  }
  copied_[index] = true;
  ++b.ready;
  LaunchReady();
}

void GroupGradientSync::LaunchReady() {
  while (next_launch_ < buckets_.size() && error_.ok()) {
    Bucket& b = buckets_[next_launch_];
    if (b.ready < b.params.size()) return;
    auto pending = group_->StartAllReduceSum(b.flat);
    if (!pending.ok()) {
      error_ = pending.status();
      return;
    }
    b.pending = std::move(pending).value();
    ++next_launch_;
  }
}

Status GroupGradientSync::Finish() {
  const int world = group_->world_size();
  if (world > 1) {
    // Gradients that no hook delivered (the plain path, or parameters unused this step) are
    // copied now; unused ones count as zero, the same on every rank.
    {
      at::NoGradGuard no_grad;
      for (size_t k = 0; k < params_.size(); ++k) {
        if (copied_[k]) continue;
        Bucket& b = buckets_[bucket_of_[k]];
        at::Tensor slot = b.flat.narrow(0, offset_of_[k], params_[k].numel());
        const at::Tensor& g = params_[k].grad();
        if (g.defined())
          slot.copy_(g.reshape(-1));
        else
          slot.zero_();
        copied_[k] = true;
        ++b.ready;
      }
    }
    if (options_.overlap) {
      LaunchReady();
    } else {
      // Plain path: one bucket at a time, each waited for before the next starts.
      for (; next_launch_ < buckets_.size() && error_.ok(); ++next_launch_) {
        error_ = group_->AllReduceSum(buckets_[next_launch_].flat);
      }
    }
    for (Bucket& b : buckets_) {
      if (b.pending) {
        Status s = b.pending->Wait();
        if (error_.ok()) error_ = s;
        b.pending.reset();
      }
    }
    if (error_.ok()) {
      at::NoGradGuard no_grad;
      for (Bucket& b : buckets_) b.flat.div_(static_cast<double>(world));
      for (size_t k = 0; k < params_.size(); ++k) {
        at::Tensor g = params_[k].mutable_grad();
        if (!g.defined()) continue;
        Bucket& b = buckets_[bucket_of_[k]];
        g.copy_(b.flat.narrow(0, offset_of_[k], params_[k].numel()).view(g.sizes()));
      }
    }
  }
  Status result = error_;
  // Ready for the next step (a failed group fails every later call anyway).
  for (Bucket& b : buckets_) b.ready = 0;
  copied_.assign(params_.size(), false);
  next_launch_ = 0;
  error_ = Status::OK();
  return result;
}

Status BroadcastBytes(WorkerGroup& group, std::string* bytes, int root) {
  if (group.world_size() == 1) return Status::OK();
  at::Tensor n = at::tensor({static_cast<int64_t>(bytes->size())}, at::kLong);
  FLAP_RETURN_IF_ERROR(group.Broadcast(n, root));
  at::Tensor buf = at::empty({n.item<int64_t>()}, at::kByte);
  if (group.rank() == root) std::memcpy(buf.data_ptr<uint8_t>(), bytes->data(), bytes->size());
  FLAP_RETURN_IF_ERROR(group.Broadcast(buf, root));
  if (group.rank() != root)
    bytes->assign(reinterpret_cast<const char*>(buf.data_ptr<uint8_t>()), static_cast<size_t>(buf.numel()));
  return Status::OK();
}

StatusOr<std::vector<std::string>> AllGatherStrings(WorkerGroup& group, const std::string& mine, size_t max_bytes) {
  if (mine.size() > max_bytes) {
    return Status::InvalidArgument("'" + mine + "' is longer than " + std::to_string(max_bytes) + " bytes");
  }
  if (group.world_size() == 1) return std::vector<std::string>{mine};
  // Each rank's string, length first, in a fixed-size row.
  const int64_t row = static_cast<int64_t>(max_bytes) + 8;
  at::Tensor local = at::zeros({row}, at::kByte);
  const uint64_t len = mine.size();
  std::memcpy(local.data_ptr<uint8_t>(), &len, 8);
  std::memcpy(local.data_ptr<uint8_t>() + 8, mine.data(), mine.size());
  at::Tensor all;
  FLAP_RETURN_IF_ERROR(group.AllGather(local, &all));
  std::vector<std::string> out;
  const uint8_t* p = all.contiguous().data_ptr<uint8_t>();
  for (int r = 0; r < group.world_size(); ++r, p += row) {
    uint64_t n = 0;
    std::memcpy(&n, p, 8);
    if (n > max_bytes) return Status::Corruption("rank " + std::to_string(r) + " sent a malformed string");
    out.emplace_back(reinterpret_cast<const char*>(p + 8), n);
  }
  return out;
}

}  // namespace flap::core
