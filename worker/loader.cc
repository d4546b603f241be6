#include "worker/loader.h"

#include <time.h>

#include <chrono>
#include <deque>
#include <thread>
#include <nlohmann/json.hpp>

#include "common/mutex.h"
#include "sharding/shard_order.h"
#include "worker/batcher.h"
#include "worker/core/draw.h"

namespace flap::worker {

// ---------------------------------------------------------------------------------------------
// FixedShardSource

StatusOr<std::unique_ptr<FixedShardSource>> FixedShardSource::Create(const std::vector<sharding::ShardInfo>& shards,
                                                                     int rank, int world_size, int64_t batch_size,
                                                                     uint64_t seed) {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return Status::InvalidArgument("rank " + std::to_string(rank) + " is not in a group of " +
                                   std::to_string(world_size));
  }
  if (batch_size < 1) return Status::InvalidArgument("batch size must be >= 1");
  if (static_cast<int64_t>(shards.size()) < world_size) {
    return Status::InvalidArgument("the split has " + std::to_string(shards.size()) + " shards, fewer than the " +
                                   std::to_string(world_size) + " ranks that must share them (re-shard it smaller)");
  }
  std::unique_ptr<FixedShardSource> src(new FixedShardSource());
  src->seed_ = seed;
  int64_t steps = -1;
  for (int r = 0; r < world_size; ++r) {
    int64_t samples = 0;
    for (size_t i = static_cast<size_t>(r); i < shards.size(); i += static_cast<size_t>(world_size)) {
      samples += shards[i].num_samples;
      if (r == rank) src->mine_.push_back(shards[i]);
    }
    if (samples < batch_size) {
      return Status::InvalidArgument("rank " + std::to_string(r) + " of " + std::to_string(world_size) + " gets " +
                                     std::to_string(samples) + " samples, fewer than one batch of " +
                                     std::to_string(batch_size));
    }
    const int64_t s = samples / batch_size;
    steps = steps < 0 ? s : std::min(steps, s);
  }
  src->steps_per_epoch_ = steps;
  return src;
}

StatusOr<std::optional<sharding::ShardInfo>> FixedShardSource::ShardAt(int64_t epoch, int64_t index) {
  if (epoch != order_epoch_) {
    std::vector<std::string> names;
    names.reserve(mine_.size());
    for (const auto& s : mine_) names.push_back(s.name);
    order_ = sharding::EpochShardOrder(seed_, epoch, names);
    order_epoch_ = epoch;
  }
  if (index < 0 || index >= static_cast<int64_t>(order_.size())) return std::optional<sharding::ShardInfo>();
  return std::optional<sharding::ShardInfo>(mine_[order_[static_cast<size_t>(index)]]);
}

StatusOr<LoaderCursor> PlaceStep(ShardSource& source, int64_t epoch, int64_t step_in_epoch, int64_t batch,
                                 int shuffle_shards) {
  const int64_t target = step_in_epoch * batch;
  int64_t index = 0, before = 0;
  for (;;) {
    int64_t count = 0;
    std::vector<std::string> names;
    for (int k = 0; k < shuffle_shards; ++k) {
      FLAP_ASSIGN_OR_RETURN(auto info, source.PeekShard(epoch, index + k));
      if (!info) break;
      count += info->num_samples;
      names.push_back(info->name);
    }
    if (names.empty()) {
      return Status::Internal("cannot place step " + std::to_string(step_in_epoch) + " in the epoch's shards");
    }
    if (before + count > target) return LoaderCursor{epoch, index, target - before, step_in_epoch, names};
    before += count;
    index += static_cast<int64_t>(names.size());
  }
}

// ---------------------------------------------------------------------------------------------
// LoaderCursor

nlohmann::json LoaderCursor::ToJson() const {
  return {{"epoch", epoch},
          {"shards_done", shards_done},
          {"position", position},
          {"step_in_epoch", step_in_epoch},
          {"block", block}};
}

StatusOr<LoaderCursor> LoaderCursor::FromJson(const nlohmann::json& j, const std::string& what) {
  if (!j.is_object()) return Status::Corruption(what + ": the data cursor is not an object");
  LoaderCursor c;
  for (auto [name, field, min] : {std::tuple<const char*, int64_t*, int64_t>{"epoch", &c.epoch, 0},
                                  {"shards_done", &c.shards_done, -1},
                                  {"position", &c.position, 0},
                                  {"step_in_epoch", &c.step_in_epoch, 0}}) {
    if (!j.contains(name) || !j[name].is_number_integer() || j[name].get<int64_t>() < min) {
      return Status::Corruption(what + ": data cursor field '" + name + "' is missing or out of range");
    }
    *field = j[name].get<int64_t>();
  }
  if (j.contains("block")) {
    if (!j["block"].is_array()) return Status::Corruption(what + ": data cursor field 'block' is not a list");
    for (const auto& n : j["block"]) {
      if (!n.is_string()) return Status::Corruption(what + ": data cursor field 'block' holds a non-string");
      c.block.push_back(n.get<std::string>());
    }
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// StreamingLoader

namespace {

struct Job {
  sharding::ShardInfo info;
  bool done = false;
  Status status;
  std::shared_ptr<const ShardFeatures> features;
};

struct Block {
  int64_t epoch = 0;
  int64_t first_shard = 0;  // index in the epoch's shard order
  std::vector<std::shared_ptr<Job>> jobs;
  std::vector<std::string> Names() const {
    std::vector<std::string> n;
    for (const auto& j : jobs) n.push_back(j->info.name);
    return n;
  }
};

struct SampleRef {
  std::shared_ptr<const ShardFeatures> shard;
  int64_t index = 0;
};

// CPU time of the calling thread.
double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ",") + n;
  return s;
}

}  // namespace

struct StreamingLoader::Impl {
  LoaderOptions options;
  TrialConfig config;
  const sharding::TextTokenizer* tokenizer = nullptr;
  std::unique_ptr<ShardSource> source;  // used by the assembler thread only
  LoaderCursor start;
  int64_t steps = 0, batch = 0;  // steps per epoch; samples per step cut from the order (all slices)
  int64_t keep_from = 0, keep = 0;  // the slice of each step's samples this loader assembles

  // Block generator state (assembler thread only).
  int64_t gen_epoch = 0, gen_next_shard = 0, gen_planned = 0;

  Mutex mu;
  CondVar work_cv;   // feature threads: a job is queued or stop
  CondVar done_cv;   // assembler: a job finished or stop
  CondVar ready_cv;  // consumer: a batch is ready; assembler: room in the queue
  bool stop GUARDED_BY(mu) = false;
  std::deque<std::shared_ptr<Job>> queued GUARDED_BY(mu);
  std::deque<LoadedBatch> ready GUARDED_BY(mu);
  Status error GUARDED_BY(mu);  // sticky
  LoaderStats stats GUARDED_BY(mu);
  std::vector<std::thread> threads;

  // The next block in reading order; its jobs are queued for the feature threads.
  StatusOr<Block> NextBlock() {
    const int64_t need = steps * batch;
    if (gen_planned >= need) {
      ++gen_epoch;
      gen_next_shard = 0;
      gen_planned = 0;
    }
    Block b;
    b.epoch = gen_epoch;
    b.first_shard = gen_next_shard;
    for (int k = 0; k < options.shuffle_shards; ++k) {
      FLAP_ASSIGN_OR_RETURN(std::optional<sharding::ShardInfo> info, source->ShardAt(gen_epoch, gen_next_shard));
      if (!info) break;
      auto job = std::make_shared<Job>();
      job->info = *info;
      gen_planned += info->num_samples;
      ++gen_next_shard;
      b.jobs.push_back(std::move(job));
    }
    if (b.jobs.empty()) {
      return Status::Internal("epoch " + std::to_string(gen_epoch) + ": this rank's shards ran out after " +
                              std::to_string(gen_planned) + " samples, short of " + std::to_string(steps) +
                              " steps of " + std::to_string(batch));
    }
    {
      MutexLock lock(&mu);
      for (const auto& j : b.jobs) queued.push_back(j);
    }
    work_cv.SignalAll();
    return b;
  }

  void FeatureThread() {
    FeatureOptions fo = options.features;
    fo.threads = 1;
    for (;;) {
      std::shared_ptr<Job> job;
      {
        MutexLock lock(&mu);
        while (!stop && queued.empty()) work_cv.Wait(&mu);
        if (stop) return;
        job = queued.front();
        queued.pop_front();
      }
      const double cpu0 = ThreadCpuSeconds();
      bool from_memory = false;
      auto f = FetchShardFeatures(options.dataset_dir, job->info, *tokenizer, fo, &from_memory);
      {
        MutexLock lock(&mu);
        const double cpu = ThreadCpuSeconds() - cpu0;
        stats.busy_seconds += cpu;
        stats.feature_seconds += cpu;
        job->done = true;
        if (f.ok()) {
          if (from_memory)
            ++stats.shards_from_memory;
          else if ((*f)->from_cache)
            ++stats.shards_cached;
          else
            ++stats.shards_computed;
          if (!from_memory && !(*f)->cache_note.empty()) stats.notes.push_back((*f)->cache_note);
          job->features = std::move(*f);
        } else {
          job->status = f.status();
        }
      }
      done_cv.SignalAll();
    }
  }

  // false: stopping.
  bool WaitForBlock(const Block& b, Status* status) {
    MutexLock lock(&mu);
    for (const auto& j : b.jobs) {
      while (!stop && !j->done) done_cv.Wait(&mu);
      if (stop) return false;
      if (!j->status.ok()) {
        *status = j->status;
        return true;
      }
    }
    return true;
  }

  bool Emit(LoadedBatch&& b) {
    MutexLock lock(&mu);
    while (!stop && static_cast<int>(ready.size()) >= options.prefetch_batches) ready_cv.Wait(&mu);
    if (stop) return false;
    ready.push_back(std::move(b));
    ready_cv.SignalAll();
    return true;
  }

  Status Assemble() {
    gen_epoch = start.epoch;
    gen_next_shard = start.shards_done;
    gen_planned = start.step_in_epoch * batch - start.position;
    std::deque<Block> window;
    FLAP_ASSIGN_OR_RETURN(Block first, NextBlock());
    if (!start.block.empty() && start.block != first.Names()) {
      return Status::InvalidArgument("the data cursor's block [" + JoinNames(start.block) +
                                     "] differs from this rank's shards at that point [" + JoinNames(first.Names()) +
                                     "]: the dataset, the seed or the group size changed");
    }
    window.push_back(std::move(first));
    FLAP_ASSIGN_OR_RETURN(Block ahead, NextBlock());
    window.push_back(std::move(ahead));

    int64_t epoch = start.epoch, step = start.step_in_epoch, position = start.position;
    std::vector<SampleRef> pending;
    for (;;) {
      const Block& cur = window.front();
      Status status;
      if (!WaitForBlock(cur, &status)) return Status::OK();
      FLAP_RETURN_IF_ERROR(status);
      std::vector<SampleRef> refs;
      for (const auto& j : cur.jobs) {
        for (int64_t i = 0; i < j->features->size(); ++i) refs.push_back({j->features, i});
      }
      const int64_t n = static_cast<int64_t>(refs.size());
      if (position > n) {
        return Status::InvalidArgument("the data cursor's position " + std::to_string(position) +
                                       " is past the end of its block of " + std::to_string(n) + " samples");
      }
      std::vector<int64_t> perm(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = i;
      core::DrawRng rng(core::DrawPurpose::kOrder, config.train.seed, "block:" + JoinNames(cur.Names()), epoch);
      for (size_t i = perm.size(); i > 1; --i) std::swap(perm[i - 1], perm[rng.Below(i)]);

      bool epoch_done = false;
      for (int64_t p = position; p < n; ++p) {
        pending.push_back(refs[static_cast<size_t>(perm[static_cast<size_t>(p)])]);
        if (static_cast<int64_t>(pending.size()) < batch) continue;
        LoadedBatch out;
        out.epoch = epoch;
        out.step_in_epoch = step;
        std::vector<SampleView> views;
        for (int64_t k = keep_from; k < keep_from + keep; ++k) {
          const SampleRef& r = pending[static_cast<size_t>(k)];
          const Clip& clip = r.shard->clips[static_cast<size_t>(r.index)];
          views.push_back({&clip, r.shard->spec(r.index), r.shard->num_frames(r.index)});
          out.keys.push_back(clip.key);
        }
        const double cpu0 = ThreadCpuSeconds();
        out.batch = AssembleBatch(views, epoch, config, options.pin_memory);
        {
          MutexLock lock(&mu);
          const double cpu = ThreadCpuSeconds() - cpu0;
          stats.busy_seconds += cpu;
          stats.assembly_seconds += cpu;
        }
        pending.clear();
        ++step;
        if (step == steps) {
          out.after = LoaderCursor{epoch + 1, 0, 0, 0, {}};
          epoch_done = true;
        } else if (p + 1 == n) {
          out.after =
              LoaderCursor{epoch, cur.first_shard + static_cast<int64_t>(cur.jobs.size()), 0, step, window[1].Names()};
        } else {
          out.after = LoaderCursor{epoch, cur.first_shard, p + 1, step, cur.Names()};
        }
        if (!Emit(std::move(out))) return Status::OK();
        if (epoch_done) break;
      }
      for (const auto& j : cur.jobs) FLAP_RETURN_IF_ERROR(source->Done(epoch, j->info));
      window.pop_front();
      FLAP_ASSIGN_OR_RETURN(Block next, NextBlock());
      window.push_back(std::move(next));
      position = 0;
      if (epoch_done) {
        ++epoch;
        step = 0;
      }
      if (window.front().epoch != epoch) {
        return Status::Internal("loader out of step: block of epoch " + std::to_string(window.front().epoch) +
                                " while assembling epoch " + std::to_string(epoch));
      }
    }
  }

  void AssemblerThread() {
    Status s = Assemble();
    MutexLock lock(&mu);
    if (!s.ok())
      error = s;
    else if (!stop)
      error = Status::Internal("the loader stopped unexpectedly");
    ready_cv.SignalAll();
  }
};

StreamingLoader::StreamingLoader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

StreamingLoader::~StreamingLoader() {
  {
    MutexLock lock(&impl_->mu);
    impl_->stop = true;
  }
  impl_->work_cv.SignalAll();
  impl_->done_cv.SignalAll();
  impl_->ready_cv.SignalAll();
  for (auto& t : impl_->threads) t.join();
}

StatusOr<std::unique_ptr<StreamingLoader>> StreamingLoader::Start(const LoaderOptions& options,
                                                                  const TrialConfig& config,
                                                                  const sharding::TextTokenizer& tokenizer,
                                                                  std::unique_ptr<ShardSource> source,
                                                                  const LoaderCursor& start) {
  if (options.threads < 1) return Status::InvalidArgument("loader threads must be >= 1");
  if (options.shuffle_shards < 1) return Status::InvalidArgument("data.shuffle_shards must be >= 1");
  if (options.prefetch_batches < 1) return Status::InvalidArgument("data.prefetch_batches must be >= 1");
  if (!source) return Status::InvalidArgument("no shard source");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->config = config;
  impl->tokenizer = &tokenizer;
  impl->steps = source->StepsPerEpoch();
  if (options.slices < 1 || options.slice < 0 || options.slice >= options.slices) {
    return Status::InvalidArgument("loader slice " + std::to_string(options.slice) + " of " +
                                   std::to_string(options.slices));
  }
  impl->keep = config.train.batch_size;
  impl->keep_from = options.slice * impl->keep;
  impl->batch = impl->keep * options.slices;
  impl->source = std::move(source);
  impl->start = start;
  if (impl->steps < 1) return Status::InvalidArgument("the shard source gives no step per epoch");
  if (start.epoch < 0 || start.step_in_epoch < 0 || start.step_in_epoch >= impl->steps || start.position < 0 ||
      start.shards_done < -1) {
    return Status::InvalidArgument("data cursor (epoch " + std::to_string(start.epoch) + ", step " +
                                   std::to_string(start.step_in_epoch) + ") does not fit " +
                                   std::to_string(impl->steps) + " steps per epoch");
  }
  if (start.shards_done < 0) {
    // Derive the block and position of step_in_epoch from the shard counts.
    FLAP_ASSIGN_OR_RETURN(impl->start, PlaceStep(*impl->source, start.epoch, start.step_in_epoch, impl->batch,
                                                 options.shuffle_shards));
  }
  Impl* p = impl.get();
  for (int t = 0; t < options.threads; ++t) p->threads.emplace_back([p] { p->FeatureThread(); });
  p->threads.emplace_back([p] { p->AssemblerThread(); });
  return std::unique_ptr<StreamingLoader>(new StreamingLoader(std::move(impl)));
}

int64_t StreamingLoader::steps_per_epoch() const { return impl_->steps; }

StatusOr<LoadedBatch> StreamingLoader::Next() {
  const auto t0 = std::chrono::steady_clock::now();
  MutexLock lock(&impl_->mu);
  while (impl_->ready.empty() && impl_->error.ok()) impl_->ready_cv.Wait(&impl_->mu);
  if (impl_->ready.empty()) return impl_->error;
  LoadedBatch b = std::move(impl_->ready.front());
  impl_->ready.pop_front();
  impl_->stats.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++impl_->stats.batches;
  impl_->ready_cv.SignalAll();
  return b;
}

LoaderStats StreamingLoader::stats() const {
  MutexLock lock(&impl_->mu);
  return impl_->stats;
}

}  // namespace flap::worker
