// The worker group over c10d: TCPStore rendezvous, Gloo (and NCCL when compiled in), the
// heartbeat and the diagnosis of a missing rank. The only file that includes c10d.
#include "worker/core/worker_group.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#define FLAP_COMPAT_C10D
#include "common/mutex.h"
#include "worker/core/torch_compat.h"
#include "worker/core/route.h"
#ifdef FLAP_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <thread>
#include <vector>

namespace flap::core {
namespace {

using compat::Comm;

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

std::vector<uint8_t> Bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }
std::string Text(const std::vector<uint8_t>& b) { return std::string(b.begin(), b.end()); }

// c10 messages without the C++ backtrace.
std::string What(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

std::string Fixed(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", v);
  return buf;
}

bool IsLoopback(const std::string& host) { return host == "localhost" || host.rfind("127.", 0) == 0; }

}  // namespace

bool NcclCompiledIn() {
#ifdef FLAP_WITH_NCCL
  return true;
#else
  return false;
#endif
}

struct WorkerGroup::Impl {
  Rendezvous rdv;
  GroupOptions options;
  std::string backend = "none";
  Millis timeout{0};
  double beat_s = 1.0;
  c10::intrusive_ptr<c10d::Store> store;  // the main client (rank 0: also the server)
  c10::intrusive_ptr<Comm> comm;

  Mutex issue_mu;                // orders the issue of collectives
  std::atomic<uint64_t> seq{0};  // collectives started

  Mutex fail_mu;  // one diagnosis at a time
  Status failure GUARDED_BY(fail_mu);
  std::vector<int> missing GUARDED_BY(fail_mu);  // ranks the diagnosis named

  Mutex beat_mu;
  CondVar beat_cv;
  bool beat_stop GUARDED_BY(beat_mu) = false;
  std::thread beat_thread;
  bool shut_down = false;  // main thread only

  std::string Where() const {
    return "worker group (rank " + std::to_string(rdv.rank) + " of " + std::to_string(rdv.world_size) + ")";
  }
  std::string StoreAddress() const { return rdv.master_addr + ":" + std::to_string(rdv.master_port); }

  Status Current() {
    MutexLock l(&fail_mu);
    return failure;
  }

  // The address this rank's collectives bind to, "" to leave it to the library: the source of
  // the route toward rank 0 (route.h), not the host name's address. On rank 0's own node that
  // source is a loopback address when rank 0's name resolves there to 127.0.1.1 (Debian's
  // /etc/hosts); then it is the address at which the ranks of other nodes reached rank 0
  // (their join records), which this node holds. Called once every rank has joined.
  std::string BindAddress(const StatusOr<Route>& route) {
    if (!route.ok()) return "";
    if (!IsLoopbackAddress(route->address)) return route->address;
    for (int r = 0; r < rdv.world_size; ++r) {
      const std::string seen = Text(store->get("join/" + std::to_string(r)));
      if (seen != "?" && !IsLoopbackAddress(seen) && !InterfaceHolding(seen).empty()) return seen;
    }
    return route->address;  // every rank is on this node
  }

  void Beat() {
    c10::intrusive_ptr<c10d::TCPStore> client;
    try {
      client = compat::MakeStore(rdv.master_addr, rdv.master_port, false, 0, timeout);
    } catch (const std::exception&) {
      return;  // the store is gone: nothing to beat into; diagnosis will say so
    }
    const std::string key = "hb/" + std::to_string(rdv.rank);
    for (long long beat = 0;; ++beat) {
      try {
        client->set(key, Bytes(std::to_string(beat) + " " + std::to_string(seq.load())));
      } catch (const std::exception&) {
        return;
      }
      MutexLock l(&beat_mu);
      const auto next = std::chrono::steady_clock::now() + std::chrono::duration<double>(beat_s);
      while (!beat_stop) {
        if (beat_cv.WaitUntil(&beat_mu, next)) break;  // time for the next beat
      }
      if (beat_stop) return;
    }
  }

  void StopBeat() {
    {
      MutexLock l(&beat_mu);
      beat_stop = true;
    }
    beat_cv.SignalAll();
    if (beat_thread.joinable()) beat_thread.join();
  }

  // Which ranks are missing from collective #n, in words, and their numbers.
  struct Diagnosis {
    std::string text;
    std::vector<int> missing;
  };

  // Heartbeats of every rank in `store`: (beat, collectives started), (-1, -1) when absent.
  static std::vector<std::pair<long long, long long>> ReadBeats(c10d::Store& store, int world_size) {
    std::vector<std::pair<long long, long long>> v(static_cast<size_t>(world_size), {-1, -1});
    for (int r = 0; r < world_size; ++r) {
      const std::string key = "hb/" + std::to_string(r);
      if (!store.check({key})) continue;
      long long beat = -1, n = -1;
      std::sscanf(Text(store.get(key)).c_str(), "%lld %lld", &beat, &n);
      v[static_cast<size_t>(r)] = {beat, n};
    }
    return v;
  }

  // The diagnosis of collective #n from the heartbeats in the store (two reads 3 beats apart).
  // Self-contained (copies in, result out), so that it can run on a thread of its own.
  static Diagnosis DiagnoseFromStore(c10::intrusive_ptr<c10d::Store> store, int rank, int world_size, double beat_s,
                                     uint64_t n, const std::string& store_address) {
    Diagnosis d;
    try {
      const auto first = ReadBeats(*store, world_size);
      const double wait_s = 3.0 * beat_s;
      std::this_thread::sleep_for(std::chrono::duration<double>(wait_s));
      const auto second = ReadBeats(*store, world_size);
      std::vector<std::string> reasons, left;
      for (int r = 0; r < world_size; ++r) {
        if (r == rank) continue;
        const auto& a = first[static_cast<size_t>(r)];
        const auto& b = second[static_cast<size_t>(r)];
        const std::string name = "rank " + std::to_string(r);
        std::string why;
        if (store->check({"exit/" + std::to_string(r)})) {
          left.push_back(name + " has left the group");
        } else if (b.first < 0) {
          why = name + " never sent a heartbeat";
        } else if (a.first == b.first) {
          why = name + " is not responding (no heartbeat for " + Fixed(wait_s) + " s: dead or stopped)";
        } else if (b.second < static_cast<long long>(n)) {
          why = name + " is alive but has not reached collective #" + std::to_string(n) + " (it is at #" +
                std::to_string(b.second) + ")";
        }
        if (!why.empty()) {
          reasons.push_back(why);
          d.missing.push_back(r);
        }
      }
      if (reasons.empty()) reasons = left;
      if (reasons.empty()) {
        d.text = "no rank is missing";
        return d;
      }
      for (const auto& m : reasons) d.text += (d.text.empty() ? "" : "; ") + m;
      return d;
    } catch (const std::exception&) {
      return {"rank 0 is gone: its rendezvous store at " + store_address + " is unreachable", {0}};
    }
  }

  // Which rank is missing from collective #n, in words (and recorded in `missing`). The store
  // is read on a thread of its own, waited for at most the diagnosis's own time plus the
  // collective timeout: a store client whose peer's node became unreachable (a network
  // partition: no reset ever arrives) can wait in a read far longer than that (LibTorch 2.x's
  // client sets no receive timeout). The thread holds its own references, so it may outlive
  // the group.
  std::string Diagnose(uint64_t n) REQUIRES(fail_mu) {
    auto promise = std::make_shared<std::promise<Diagnosis>>();
    std::future<Diagnosis> result = promise->get_future();
    const std::string address = StoreAddress();
    std::thread([promise, store = store, rank = rdv.rank, world = rdv.world_size, beat = beat_s, n, address] {
      promise->set_value(DiagnoseFromStore(store, rank, world, beat, n, address));
    }).detach();
    const auto limit = std::chrono::duration<double>(3.0 * beat_s + 2.0) + timeout;
    Diagnosis d;
    if (result.wait_for(limit) == std::future_status::ready) {
      d = result.get();
    } else {
      d = {"rank 0 is gone: its rendezvous store at " + address + " did not answer within " +
               Fixed(std::chrono::duration<double>(limit).count()) + " s (its node unreachable: a network partition?)",
           {0}};
    }
    missing.insert(missing.end(), d.missing.begin(), d.missing.end());
    return d.text;
  }

  // Records the failure of collective #n (the first one wins) and returns it.
  Status Fail(const std::string& op, uint64_t n, const std::string& detail) {
    MutexLock l(&fail_mu);
    if (!failure.ok()) return failure;
    const std::string who = Diagnose(n);
    failure = Status::DeadlineExceeded(Where() + ": " + op + " (collective #" + std::to_string(n) + ") failed: " + who +
                                       " [" + backend + ": " + detail + "; collectives time out after " +
                                       Fixed(timeout.count() / 1000.0) + " s]");
    // The exit mark is sent from a thread of its own too: never waited for.
    std::thread([store = store, key = "exit/" + std::to_string(rdv.rank)] {
      try {
        store->set(key, Bytes("failed"));
      } catch (const std::exception&) {
      }
    }).detach();
    return failure;
  }

  Status WaitWork(const std::string& op, uint64_t n, const c10::intrusive_ptr<c10d::Work>& work) {
    try {
      // Gloo's own timeout is the same; the margin lets its more precise message come first.
      if (!work->wait(timeout + Millis(2000))) return Fail(op, n, "timed out");
    } catch (const std::exception& e) {
      return Fail(op, n, What(e));
    }
    return Status::OK();
  }

  // Issues one collective (under the issue mutex); its number and work, or the failure.
  template <typename StartFn>
  Status Issue(const std::string& op, StartFn start, uint64_t* n, c10::intrusive_ptr<c10d::Work>* work) {
    FLAP_RETURN_IF_ERROR(Current());
    MutexLock l(&issue_mu);
    *n = ++seq;
    try {
      *work = start();
    } catch (const std::exception& e) {
      return Fail(op, *n, What(e));
    }
    return Status::OK();
  }

  template <typename StartFn>
  Status Run(const std::string& op, StartFn start) {
    uint64_t n = 0;
    c10::intrusive_ptr<c10d::Work> work;
    FLAP_RETURN_IF_ERROR(Issue(op, start, &n, &work));
    return WaitWork(op, n, work);
  }

  // A world of 1 without a communicator: every collective is the identity.
  bool Identity() const { return rdv.world_size <= 1 && !comm; }
  // With NCCL a CPU tensor goes through the device (see worker_group.h).
  bool Staged(const at::Tensor& t) const { return backend == "nccl" && !t.is_cuda(); }

  Status Join() {
    timeout = Millis(static_cast<long long>(options.timeout_s * 1000.0));
    beat_s = options.heartbeat_s > 0 ? options.heartbeat_s : std::min(1.0, options.timeout_s / 4.0);
    std::string b = options.backend;
    if (b == "auto") b = options.device.is_cuda() && NcclCompiledIn() ? "nccl" : "gloo";
    if (b == "nccl" && !NcclCompiledIn()) {
      return Status::InvalidArgument("dist.backend nccl: this LibTorch build has no NCCL (FLAP_WITH_NCCL is off)");
    }
    if (b != "gloo" && b != "nccl") {
      return Status::InvalidArgument("dist.backend must be auto, gloo or nccl, got '" + options.backend + "'");
    }
    if (b == "nccl" && !options.device.is_cuda()) {
      return Status::InvalidArgument("dist.backend nccl needs the tensors on a GPU, but train.device resolved to " +
                                     options.device.str() + " (dist.backend gloo or auto for the CPU)");
    }
    backend = b;
    const StatusOr<Route> route =
        IsLoopback(rdv.master_addr) ? StatusOr<Route>(Status::NotFound("loopback")) : RouteToward(rdv.master_addr);

    try {
      // waitWorkers is off: we wait below, naming the ranks that do not come.
      store = compat::MakeStore(rdv.master_addr, rdv.master_port, rdv.rank == 0, static_cast<size_t>(rdv.world_size),
                                timeout);
      // Each rank records the address it reached rank 0 at (bind_address below).
      store->set("join/" + std::to_string(rdv.rank), Bytes(route.ok() ? route->toward : std::string("?")));
    } catch (const std::exception& e) {
      return Status::DeadlineExceeded(Where() + ": cannot " + (rdv.rank == 0 ? "host" : "reach") +
                                      " the rendezvous store at " + StoreAddress() + " within " +
                                      Fixed(options.timeout_s) + " s: " + What(e));
    }
    // Wait for every rank, naming those that do not come.
    const auto deadline = Clock::now() + timeout;
    std::vector<int> absent;
    try {
      for (;;) {
        absent.clear();
        for (int r = 0; r < rdv.world_size; ++r) {
          if (!store->check({"join/" + std::to_string(r)})) absent.push_back(r);
        }
        if (absent.empty() || Clock::now() > deadline) break;
        std::this_thread::sleep_for(Millis(20));
      }
    } catch (const std::exception& e) {
      return Status::DeadlineExceeded(Where() + ": rendezvous store at " + StoreAddress() +
                                      " failed while ranks joined (rank 0 gone?): " + What(e));
    }
    if (!absent.empty()) {
      std::string list;
      for (int r : absent) list += (list.empty() ? "" : ", ") + std::to_string(r);
      return Status::DeadlineExceeded(Where() + ": rank(s) " + list + " did not join the rendezvous at " +
                                      StoreAddress() + " within " + Fixed(options.timeout_s) + " s");
    }
    beat_thread = std::thread([this] { Beat(); });
    std::string bind_address;
    try {
      bind_address = BindAddress(route);
    } catch (const std::exception& e) {
      return Status::DeadlineExceeded(Where() + ": rendezvous store at " + StoreAddress() +
                                      " failed while ranks joined (rank 0 gone?): " + What(e));
    }

    try {
      auto prefixed = c10::make_intrusive<c10d::PrefixStore>(backend, store);
      if (backend == "gloo") {
        auto o = c10d::ProcessGroupGloo::Options::create(timeout);
        if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME")) {
          o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
        } else if (IsLoopback(rdv.master_addr)) {
          o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
        } else if (!bind_address.empty()) {
          o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(bind_address));
        } else {
          o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
        }
        o->threads = 2;
        comm = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rdv.rank, rdv.world_size, o);
      } else {
#ifdef FLAP_WITH_NCCL
        // Without asynchronous error handling a NCCL collective never times out.
        setenv("NCCL_ASYNC_ERROR_HANDLING", "1", 0);
        setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1", 0);
        // Blocking wait: Work::wait blocks the host until the collective is done and throws
        // once the timeout has passed, so a dead peer surfaces here as a Status (Fail names it).
        setenv("NCCL_BLOCKING_WAIT", "1", 0);
        setenv("TORCH_NCCL_BLOCKING_WAIT", "1", 0);
        // NCCL's bootstrap and socket transport on the interface toward rank 0 (route.h),
        // unless NCCL_SOCKET_IFNAME names one.
        if (const std::string ifname = bind_address.empty() ? "" : InterfaceHolding(bind_address); !ifname.empty()) {
          setenv("NCCL_SOCKET_IFNAME", ("=" + ifname).c_str(), 0);
        }
        auto o = c10d::ProcessGroupNCCL::Options::create();
        o->timeout = timeout;
        comm = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, rdv.rank, rdv.world_size, o);
#endif
      }
    } catch (const std::exception& e) {
      return Status::DeadlineExceeded(Where() + ": " + backend + " could not connect every rank within " +
                                      Fixed(options.timeout_s) + " s: " + What(e));
    }
    return Status::OK();
  }
};

namespace {

class PendingWork : public WorkerGroup::Pending {
 public:
  PendingWork(WorkerGroup::Impl* impl, uint64_t n, c10::intrusive_ptr<c10d::Work> work)
      : impl_(impl), n_(n), work_(std::move(work)) {}
  Status Wait() override {
    if (!work_) return Status::OK();
    Status s = impl_->WaitWork("all_reduce", n_, work_);
    work_.reset();
    return s;
  }

 private:
  WorkerGroup::Impl* impl_;
  uint64_t n_;
  c10::intrusive_ptr<c10d::Work> work_;
};

}  // namespace

WorkerGroup::WorkerGroup(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

WorkerGroup::~WorkerGroup() { (void)Shutdown(); }

std::unique_ptr<WorkerGroup> WorkerGroup::Single() {
  return std::unique_ptr<WorkerGroup>(new WorkerGroup(std::make_unique<Impl>()));
}

StatusOr<std::unique_ptr<WorkerGroup>> WorkerGroup::Create(const Rendezvous& rendezvous, const GroupOptions& options) {
  if (rendezvous.world_size <= 1 && !options.communicator_for_one) return Single();
  auto impl = std::make_unique<Impl>();
  impl->rdv = rendezvous;
  impl->options = options;
  Status s = impl->Join();
  if (!s.ok()) {
    impl->StopBeat();
    return s;
  }
  return std::unique_ptr<WorkerGroup>(new WorkerGroup(std::move(impl)));
}

int WorkerGroup::rank() const { return impl_->rdv.rank; }
int WorkerGroup::world_size() const { return impl_->rdv.world_size; }
const std::string& WorkerGroup::backend() const { return impl_->backend; }
Status WorkerGroup::status() const { return impl_->Current(); }

Status WorkerGroup::AllGather(const at::Tensor& local, at::Tensor* gathered) {
  if (impl_->Identity()) {
    *gathered = local;
    return Status::OK();
  }
  at::Tensor in = local.detach().contiguous();
  const bool staged = impl_->Staged(in);
  if (staged) in = in.to(impl_->options.device);
  std::vector<std::vector<at::Tensor>> outs(1);
  for (int r = 0; r < world_size(); ++r) outs[0].push_back(at::empty_like(in));
  std::vector<at::Tensor> ins{in};
  FLAP_RETURN_IF_ERROR(impl_->Run("all_gather", [&] { return impl_->comm->allgather(outs, ins); }));
  *gathered = at::cat(outs[0], 0);
  if (staged) *gathered = gathered->to(local.device());
  return Status::OK();
}

Status WorkerGroup::AllReduceSum(at::Tensor& tensor) {
  if (impl_->Identity()) return Status::OK();
  const bool staged = impl_->Staged(tensor);
  std::vector<at::Tensor> ts{staged ? tensor.to(impl_->options.device) : tensor};
  FLAP_RETURN_IF_ERROR(impl_->Run("all_reduce", [&] { return impl_->comm->allreduce(ts); }));
  if (staged) tensor.copy_(ts[0]);
  return Status::OK();
}

StatusOr<std::unique_ptr<WorkerGroup::Pending>> WorkerGroup::StartAllReduceSum(at::Tensor tensor) {
  if (impl_->Identity()) return std::unique_ptr<Pending>(new PendingWork(impl_.get(), 0, {}));
  if (impl_->Staged(tensor)) {
    // Gradient buckets live on the device; a CPU tensor under NCCL is reduced at once.
    FLAP_RETURN_IF_ERROR(AllReduceSum(tensor));
    return std::unique_ptr<Pending>(new PendingWork(impl_.get(), 0, {}));
  }
  std::vector<at::Tensor> ts{tensor};
  uint64_t n = 0;
  c10::intrusive_ptr<c10d::Work> work;
  FLAP_RETURN_IF_ERROR(impl_->Issue(
      "all_reduce", [&] { return impl_->comm->allreduce(ts); }, &n, &work));
  return std::unique_ptr<Pending>(new PendingWork(impl_.get(), n, std::move(work)));
}

Status WorkerGroup::Broadcast(at::Tensor& tensor, int root) {
  if (impl_->Identity()) return Status::OK();
  const bool staged = impl_->Staged(tensor);
  std::vector<at::Tensor> ts{staged ? tensor.to(impl_->options.device) : tensor};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  FLAP_RETURN_IF_ERROR(impl_->Run("broadcast", [&] { return impl_->comm->broadcast(ts, o); }));
  if (staged) tensor.copy_(ts[0]);
  return Status::OK();
}

Status WorkerGroup::Barrier() {
  if (impl_->Identity()) return Status::OK();
  c10d::BarrierOptions o;
  if (impl_->backend == "nccl") o.device_ids = {impl_->options.device.index()};
  return impl_->Run("barrier", [&] { return impl_->comm->barrier(o); });
}

Status WorkerGroup::Shutdown() {
  Impl& m = *impl_;
  if (m.shut_down) return m.Current();
  m.shut_down = true;
  if (m.Identity()) return m.Current();
  Status s = m.Current();
  if (s.ok()) s = Barrier();
  m.StopBeat();
  const bool failed = !s.ok();
  try {
    if (!failed) m.store->set("exit/" + std::to_string(rank()), Bytes("ok"));
    if (rank() == 0) {
      // Keep the store up until the others have left (after a failure: until they had time
      // to diagnose, since the ranks named missing never will).
      const auto deadline =
          Clock::now() + (failed
                              ? std::chrono::duration_cast<Millis>(std::chrono::duration<double>(4.0 * m.beat_s + 2.0))
                              : m.timeout);
      std::vector<int> missing;
      {
        MutexLock l(&m.fail_mu);
        missing = m.missing;
      }
      for (int r = 1; r < world_size() && Clock::now() < deadline;) {
        if (std::find(missing.begin(), missing.end(), r) != missing.end() ||
            m.store->check({"exit/" + std::to_string(r)})) {
          ++r;
        } else {
          std::this_thread::sleep_for(Millis(20));
        }
      }
    }
  } catch (const std::exception&) {
  }
  if (failed) {
    // Abandon the communicator: joining its threads could wait on a dead peer.
    (void)m.comm.release();
  } else {
    m.comm.reset();
  }
  return s;
}

}  // namespace flap::core
