// flap-coordinator: the sweep coordinator's server (coordinator/service.h explains the
// protocol). A thin main: options, then CoordinatorServer until SIGINT or SIGTERM, or until a
// journal write fails (exit 74: the supervisor restarts it from the journal). Never links
// LibTorch.
#include <signal.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <iostream>
#include <thread>

#include "coordinator/address_file.h"
#include "coordinator/server.h"

namespace po = boost::program_options;

namespace {
// Exit status after a journal write failure (EX_IOERR): restart from the journal.
constexpr int kJournalFailureExit = 74;
}  // namespace

int main(int argc, char** argv) {
  flap::coordinator::ServerOptions o;
  auto& s = o.service;
  po::options_description desc(
      "flap-coordinator: serves sweeps to worker groups over gRPC\n"
      "usage: flap-coordinator --state-dir DIR [options]\n\nOptions");
  desc.add_options()("help,h", "show this help")(
      "state-dir", po::value(&s.state_dir)->required(),
      "folder of the state (RocksDB in DIR/db) and, by default, the token (DIR/token)")(
      "listen", po::value(&o.listen)->default_value(o.listen), "host:port (port 0: any free)")(
      "token-file", po::value(&o.token_file),
      "the shared token; created with mode 0600 when absent (default DIR/token)")(
      "tls-cert", po::value(&o.tls_cert), "PEM certificate chain: serve TLS")("tls-key", po::value(&o.tls_key),
                                                                              "PEM private key of --tls-cert")(
      "insecure", po::bool_switch(&o.insecure),
      "allow plaintext gRPC on an address that is not loopback (the token crosses the network in the clear)")(
      "handshake-timeout-ms", po::value(&o.connections.handshake_timeout_ms)->default_value(o.connections.handshake_timeout_ms),
      "close a connection that has not set up TLS and HTTP/2 within this")(
      "max-connection-idle-ms", po::value(&o.connections.max_idle_ms)->default_value(o.connections.max_idle_ms),
      "close a connection without calls for this long (clients reconnect by themselves)")(
      "heartbeat-interval-ms", po::value(&s.heartbeat_interval_ms)->default_value(s.heartbeat_interval_ms),
      "told to groups")("heartbeat-timeout-ms",
                        po::value(&s.heartbeat_timeout_ms)->default_value(s.heartbeat_timeout_ms),
                        "a group silent this long loses its trial")(
      "lease-ttl-ms", po::value(&s.lease_ttl_ms)->default_value(s.lease_ttl_ms),
      "shard lease lifetime after grant or renewal")(
      "retries.preemption", po::value(&s.budgets.preemption)->default_value(s.budgets.preemption),
      "requeues after preemption")("retries.node_fault",
                                   po::value(&s.budgets.node_fault)->default_value(s.budgets.node_fault),
                                   "requeues after node faults / lost groups")(
      "retries.trial_error", po::value(&s.budgets.trial_error)->default_value(s.budgets.trial_error),
      "requeues after errors of the trial itself")("report-dir", po::value(&s.report_dir),
                                                   "write each sweep's report to DIR/<sweep>/ when it ends")(
      "metrics-listen", po::value(&o.metrics_listen),
      "serve Prometheus /metrics on HOST:PORT (port 0: any free; the endpoint is printed on stderr)")(
      "metrics-ended-sweeps", po::value(&s.metrics_ended_sweeps)->default_value(s.metrics_ended_sweeps),
      "ended sweeps whose series /metrics keeps (the most recently submitted)")(
      "sd-file", po::value(&s.sd_file),
      "keep a Prometheus file_sd file at PATH listing every live group's rank endpoints and, "
      "with --metrics-listen, the coordinator's own (docs/metrics.md)")("no-plots", "do not run gnuplot for reports");
  std::string address_file;  // coordinator/address_file.h
  desc.add_options()("address-file", po::value(&address_file),
                     "once listening, write HOST:PORT to FILE (atomically; the host name when listening on "
                     "0.0.0.0 or [::]) and remove it at shutdown");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return 0;
    }
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "flap-coordinator: " << e.what() << "\n" << desc << "\n";
    return 2;
  }
  s.report_plots = !vm.count("no-plots");
  if (auto secure = flap::coordinator::CheckListenSecurity(o); !secure.ok()) {
    std::cerr << "flap-coordinator: " << secure.message() << "\n";
    return 2;
  }

  // Block the stop signals before any thread starts, then wait for one. SIGUSR1 is this
  // process's own: the journal failed (below).
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  // A failed journal write leaves the state in memory ahead of the disk: the service answers
  // UNAVAILABLE from then on. Exit instead, so that the supervisor restarts the coordinator
  // from what was committed.
  s.on_journal_failure = [](const flap::Status& failure) {
    std::cerr << "flap-coordinator: " << failure.message() << "; exiting (status " << kJournalFailureExit
              << ") to be restarted from the committed state" << std::endl;
    kill(getpid(), SIGUSR1);
  };

  // Every connection takes a descriptor: as many as this user may have.
  std::cerr << "flap-coordinator: " << flap::coordinator::RaiseOpenFileLimit() << std::endl;
  auto server = flap::coordinator::CoordinatorServer::Start(o);
  if (!server.ok()) {
    std::cerr << "flap-coordinator: " << server.status().ToString() << "\n";
    return 1;
  }
  const std::string advertised = flap::coordinator::AdvertisedAddress(o.listen, (*server)->port());
  if (!address_file.empty()) {
    if (auto w = flap::coordinator::WriteAddressFile(address_file, advertised); !w.ok()) {
      std::cerr << "flap-coordinator: --address-file: " << w.ToString() << "\n";
      (*server)->Shutdown();
      return 1;
    }
  }
  std::cout << "flap-coordinator listening on " << (*server)->address() << std::endl;
  if (!(*server)->metrics_endpoint().empty()) {
    std::cerr << "flap-coordinator serves metrics on http://" << (*server)->metrics_endpoint() << "/metrics"
              << std::endl;
  }
  int sig = 0;
  sigwait(&stop, &sig);
  if (sig == SIGUSR1) {
    // Shut down (in-flight calls get their error) but never wait long on a broken state.
    std::thread([] {
      std::this_thread::sleep_for(std::chrono::seconds(10));
      _exit(kJournalFailureExit);
    }).detach();
    (*server)->Shutdown();
    if (!address_file.empty()) flap::coordinator::RemoveAddressFile(address_file, advertised);
    return kJournalFailureExit;
  }
  std::cerr << "flap-coordinator: signal " << sig << ", shutting down\n";
  (*server)->Shutdown();
  if (!address_file.empty()) flap::coordinator::RemoveAddressFile(address_file, advertised);
  return 0;
}
