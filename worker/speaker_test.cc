// The Speaker (rank 0's voice) against a scripted coordinator over gRPC on 127.0.0.1: which
// answers acknowledge a record and which make it go again, and under which folder a stopped
// group leaves its records for the next.
//
// Against the code before coordinator::IsTransient counted kCancelled (the sender treated every
// answer but UNAVAILABLE and DEADLINE_EXCEEDED as the coordinator's, and dropped the record),
// ACancelledReportIsSentAgain failed: the coordinator saw one call. A chaos soak had lost t0005's
// training record at step 8 that way ("reporting train metrics ... failed: cancelled: [CANCELLED]",
// a coordinator shutting down after its journal's disk filled). Against the code that named the
// outbox folder by the coordinator's address, ARestartedCoordinatorOnAnotherPortGetsTheLeftRecords
// failed: the second coordinator saw no call.
#include "worker/speaker.h"

#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <deque>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "tests/test_util.h"

namespace flap::worker {
namespace {

namespace v1 = coordinator::v1;

// A coordinator that registers any group under `id`, answers heartbeats CONTINUE, and answers
// ReportMetrics with the scripted codes in turn (OK once they run out), counting the calls.
class ScriptedCoordinator final : public v1::Coordinator::CallbackService {
 public:
  explicit ScriptedCoordinator(std::string id, std::deque<grpc::StatusCode> answers = {})
      : id_(std::move(id)), answers_(std::move(answers)) {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    b.RegisterService(this);
    server_ = b.BuildAndStart();
  }
  ~ScriptedCoordinator() override { server_->Shutdown(std::chrono::system_clock::now()); }

  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }
  std::vector<int64_t> steps_seen() {
    std::lock_guard<std::mutex> lock(mu_);
    return steps_;
  }
  void set_always(grpc::StatusCode code) {
    std::lock_guard<std::mutex> lock(mu_);
    always_ = code;
  }

  grpc::ServerUnaryReactor* RegisterGroup(grpc::CallbackServerContext* ctx, const v1::RegisterGroupRequest* req,
                                          v1::RegisterGroupResponse* resp) override {
    resp->set_group_id(req->group_id());
    resp->set_heartbeat_interval_ms(200);
    resp->set_coordinator_id(id_);
    return Done(ctx, grpc::Status::OK);
  }
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx, const v1::HeartbeatRequest*,
                                      v1::HeartbeatResponse* resp) override {
    resp->set_action(v1::CONTINUE);
    return Done(ctx, grpc::Status::OK);
  }
  grpc::ServerUnaryReactor* ReportMetrics(grpc::CallbackServerContext* ctx, const v1::ReportMetricsRequest* req,
                                          v1::ReportMetricsResponse* resp) override {
    grpc::StatusCode code = grpc::StatusCode::OK;
    {
      std::lock_guard<std::mutex> lock(mu_);
      steps_.push_back(req->step());
      if (!answers_.empty()) {
        code = answers_.front();
        answers_.pop_front();
      } else {
        code = always_;
      }
    }
    resp->set_action(v1::CONTINUE);
    return Done(ctx, code == grpc::StatusCode::OK ? grpc::Status::OK : grpc::Status(code, "scripted"));
  }

 private:
  static grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, const grpc::Status& s) {
    grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
    r->Finish(s);
    return r;
  }

  const std::string id_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::mutex mu_;
  std::deque<grpc::StatusCode> answers_;
  grpc::StatusCode always_ = grpc::StatusCode::OK;
  std::vector<int64_t> steps_;
};

std::unique_ptr<coordinator::CoordinatorClient> ClientOf(const ScriptedCoordinator& c) {
  coordinator::ClientOptions o;
  o.target = c.target();
  o.token = std::string(coordinator::kMinTokenChars, 'a');
  o.deadline_ms = 5000;
  auto client = coordinator::CoordinatorClient::Connect(o);
  EXPECT_TRUE(client.ok()) << client.status().ToString();
  return client.ok() ? std::move(*client) : nullptr;
}

v1::TrialRef Trial() {
  v1::TrialRef t;
  t.set_sweep_id("s");
  t.set_trial_id("t0001");
  t.set_attempt(1);
  return t;
}

class SpeakerTest : public ::testing::Test {
 protected:
  SpeakerOptions Options(double retry_s) const {
    SpeakerOptions o;
    o.group = "g";
    o.retry_s = retry_s;
    o.outbox_root = dir_.path();
    return o;
  }
  flap::testing::TempDir dir_{"speaker"};
  std::ostringstream log_;
};

TEST_F(SpeakerTest, ACancelledReportIsSentAgain) {
  ScriptedCoordinator coordinator("c1", {grpc::StatusCode::CANCELLED});
  auto client = ClientOf(coordinator);
  ASSERT_TRUE(client);
  Speaker speaker(client.get(), Options(30), log_);
  ASSERT_TRUE(speaker.Register(1, {}).ok());
  speaker.BeginTrial(Trial());
  speaker.Report(Trial(), coordinator::MetricKind::kTrain, 8, 0, 32, {{"loss", 1.0}});
  EXPECT_TRUE(speaker.Drained(std::chrono::seconds(20))) << log_.str();
  // Sent, cancelled by the coordinator, sent again and acknowledged.
  EXPECT_EQ(coordinator.steps_seen(), (std::vector<int64_t>{8, 8})) << log_.str();
}

TEST_F(SpeakerTest, ARefusedReportIsAcknowledgedAndNotSentAgain) {
  // The control: an answer (here INVALID_ARGUMENT) acknowledges the record; it is not resent.
  ScriptedCoordinator coordinator("c1", {grpc::StatusCode::INVALID_ARGUMENT});
  auto client = ClientOf(coordinator);
  ASSERT_TRUE(client);
  Speaker speaker(client.get(), Options(30), log_);
  ASSERT_TRUE(speaker.Register(1, {}).ok());
  speaker.Report(Trial(), coordinator::MetricKind::kTrain, 4, 0, 32, {{"loss", 1.0}});
  speaker.Report(Trial(), coordinator::MetricKind::kTrain, 8, 0, 32, {{"loss", 1.0}});
  EXPECT_TRUE(speaker.Drained(std::chrono::seconds(20))) << log_.str();
  EXPECT_EQ(coordinator.steps_seen(), (std::vector<int64_t>{4, 8})) << log_.str();
  EXPECT_NE(log_.str().find("reporting train metrics of s/t0001 at step 4 failed"), std::string::npos) << log_.str();
}

TEST_F(SpeakerTest, ARestartedCoordinatorOnAnotherPortGetsTheLeftRecords) {
  std::string left_in;
  {
    ScriptedCoordinator away("state-1");
    away.set_always(grpc::StatusCode::UNAVAILABLE);  // down for longer than this agent lives
    auto client = ClientOf(away);
    ASSERT_TRUE(client);
    Speaker speaker(client.get(), Options(0.5), log_);
    ASSERT_TRUE(speaker.Register(1, {}).ok());
    speaker.Report(Trial(), coordinator::MetricKind::kTrain, 12, 0, 32, {{"loss", 1.0}});
    speaker.Shutdown();  // waits 0.5 s, then keeps the record in the folder
    left_in = speaker.outbox_dir();
    ASSERT_FALSE(away.steps_seen().empty());
  }
  ASSERT_NE(log_.str().find("are kept in"), std::string::npos) << log_.str();
  // The same coordinator (the same state folder: the same id), back on another port.
  ScriptedCoordinator back("state-1");
  auto client = ClientOf(back);
  ASSERT_TRUE(client);
  Speaker speaker(client.get(), Options(30), log_);
  ASSERT_TRUE(speaker.Register(1, {}).ok());
  EXPECT_EQ(speaker.outbox_dir(), left_in);
  EXPECT_TRUE(speaker.Drained(std::chrono::seconds(20))) << log_.str();
  EXPECT_EQ(back.steps_seen(), (std::vector<int64_t>{12})) << log_.str();
}

TEST_F(SpeakerTest, AnotherCoordinatorDoesNotGetTheRecordsLeftForOne) {
  {
    ScriptedCoordinator away("state-1");
    away.set_always(grpc::StatusCode::UNAVAILABLE);
    auto client = ClientOf(away);
    ASSERT_TRUE(client);
    Speaker speaker(client.get(), Options(0.5), log_);
    ASSERT_TRUE(speaker.Register(1, {}).ok());
    speaker.Report(Trial(), coordinator::MetricKind::kTrain, 12, 0, 32, {{"loss", 1.0}});
    speaker.Shutdown();
  }
  ScriptedCoordinator other("state-2");
  auto client = ClientOf(other);
  ASSERT_TRUE(client);
  Speaker speaker(client.get(), Options(30), log_);
  ASSERT_TRUE(speaker.Register(1, {}).ok());
  speaker.Report(Trial(), coordinator::MetricKind::kTrain, 4, 0, 32, {{"loss", 1.0}});
  EXPECT_TRUE(speaker.Drained(std::chrono::seconds(20))) << log_.str();
  EXPECT_EQ(other.steps_seen(), (std::vector<int64_t>{4})) << log_.str();
}

}  // namespace
}  // namespace flap::worker
