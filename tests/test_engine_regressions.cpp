// Regressions for defects the reliability suites (tests/reliability) found.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <optional>

#include "engine_rig.h"
#include "http_test_server.h"
#include "timefmt.h"

using namespace predictd;
using namespace std::chrono_literals;
using test::Reply;
using test::ReceivedRequest;

// A proxy that echoes the Authorization header in its error message must not
// get the token written into the row (security suite).
TEST(EngineRegression, TokenEchoedByTheApiIsRedactedInTheRow) {
  test::EngineRig rig;
  test::HttpTestServer server(
      [](const ReceivedRequest& r) {
        return Reply{.status = 422,
                     .body = "{\"detail\":\"input rejected for " + r.header("Authorization").value_or("") + "\"}"};
      },
      rig.pem);
  rig.point_at(server.port());
  const int64_t id =
      rig.insert("INSERT INTO jobs(model, input) VALUES ('black-forest-labs/flux-schnell', '{\"prompt\":\"x\"}')");
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.all_terminal(); }));
  EXPECT_EQ(rig.row(id).status, JobStatus::failed);
  EXPECT_EQ(rig.row(id).error.value_or(""), "input rejected for Bearer [redacted]");
}

// A poll scheduled earlier than the armed one moved the timer's expiry; the
// aborted wait re-armed and aborted the new one, and so on forever: the loop
// spun at full speed and polls came late (fault soak: jobs stuck in `starting`,
// loop lag ~500 ms).
TEST(EngineRegression, AnEarlierPollDoesNotMakeTheTimerSpin) {
  test::EngineRig rig;
  std::atomic<int> polls{0};
  test::HttpTestServer server(
      [&](const ReceivedRequest& r) {
        if (r.method == "POST")
          return Reply{.status = 201,
                       .body = std::string("{\"id\":\"") + (r.body.find("late") != std::string::npos ? "late" : "soon") +
                               "\",\"status\":\"starting\"}"};
        ++polls;
        return Reply{.status = 200, .body = "{\"id\":\"" + r.target.substr(16) +
                                            "\",\"status\":\"succeeded\",\"output\":[\"https://x/1.webp\"]}"};
      },
      rig.pem);
  rig.point_at(server.port());
  std::vector<ModelEntry> models = Catalog::defaults().entries();
  for (auto& m : models) m.expected_s = m.name == "black-forest-labs/flux-dev" ? 1000 : 0.05;
  rig.config.models = Catalog(models);
  const int64_t late =
      rig.insert("INSERT INTO jobs(model, input) VALUES ('black-forest-labs/flux-dev', '{\"prompt\":\"late\"}')");
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.row(late).status == JobStatus::starting; }));
  // Its first poll is ~900 s away; this one's comes in ~50 ms: the expiry moves earlier.
  const int64_t soon =
      rig.insert("INSERT INTO jobs(model, input) VALUES ('black-forest-labs/flux-schnell', '{\"prompt\":\"soon\"}')");
  ASSERT_TRUE(rig.run_until([&] { return rig.row(soon).status == JobStatus::succeeded; }, 5s));
  // Idle now but for a 20 ms db timer and a 100 ms lag timer: a few dozen handlers a second.
  const std::size_t handlers = rig.run_for(1000ms);
  EXPECT_LT(handlers, 300u);
  EXPECT_EQ(polls.load(), 1);
}

// The run-time estimate learned from `metrics` alone: one answer claiming a
// day-long run pushed every later job's first poll of that model ~a day out
// (the fault soak's video jobs, with the simulator's scaled clock, sat in
// `starting` for minutes).
TEST(EngineRegression, AbsurdMetricsDoNotDelayLaterPolls) {
  test::EngineRig rig;
  test::HttpTestServer server(
      [&](const ReceivedRequest& r) {
        if (r.method == "POST")
          return Reply{.status = 201,
                       .body = std::string("{\"id\":\"") + (r.body.find("first") != std::string::npos ? "a" : "b") +
                               "\",\"status\":\"starting\"}"};
        return Reply{.status = 200,
                     .body = "{\"id\":\"" + r.target.substr(16) +
                             "\",\"status\":\"succeeded\",\"output\":[\"https://x/1.webp\"],"
                             "\"metrics\":{\"predict_time\":86000,\"total_time\":86400}}"};
      },
      rig.pem);
  rig.point_at(server.port());
  std::vector<ModelEntry> models = Catalog::defaults().entries();
  for (auto& m : models) m.expected_s = 0.1;
  rig.config.models = Catalog(models);
  const std::string insert = "INSERT INTO jobs(model, input) VALUES ('black-forest-labs/flux-schnell', ";
  const int64_t first = rig.insert(insert + "'{\"prompt\":\"first\"}')");
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.row(first).status == JobStatus::succeeded; }, 5s));
  EXPECT_EQ(rig.row(first).predict_time_s.value_or(0), 86000);  // recorded as the API said
  const int64_t second = rig.insert(insert + "'{\"prompt\":\"second\"}')");
  EXPECT_TRUE(rig.run_until([&] { return rig.row(second).status == JobStatus::succeeded; }, 5s));
}

// A claim handed every create to the HTTP client at once; those waiting there
// for a connection went out after a 429, inside its Retry-After (fault soak:
// 264 violations in 777 requests). Now only as many as there are connections
// are in flight, and the rest wait in the engine, which honours the pause.
TEST(EngineRegression, CreatesQueuedBehindA429WaitForRetryAfter) {
  test::EngineRig rig;
  rig.config.api.max_connections = 2;
  rig.http_settings.max_connections = 2;
  rig.config.limits.creates_per_minute = 60000;
  std::mutex mu;
  std::optional<std::chrono::steady_clock::time_point> throttled_at;
  int inside_window = 0, creates = 0;
  test::HttpTestServer server(
      [&](const ReceivedRequest& r) {
        std::lock_guard lock(mu);
        const auto now = std::chrono::steady_clock::now();
        if (r.method == "POST") {
          if (throttled_at && now < *throttled_at + 1s) ++inside_window;
          if (++creates == 3) {
            throttled_at = now;
            return Reply{.status = 429, .body = R"({"detail":"Request was throttled."})",
                         .headers = {{"Retry-After", "1"}}};
          }
          return Reply{.status = 201, .body = "{\"id\":\"p" + std::to_string(creates) + "\",\"status\":\"starting\"}"};
        }
        return Reply{.status = 200, .body = "{\"id\":\"" + r.target.substr(16) +
                                            "\",\"status\":\"succeeded\",\"output\":[\"https://x/1.webp\"]}"};
      },
      rig.pem);
  rig.point_at(server.port());
  for (int i = 0; i < 20; ++i)
    rig.insert("INSERT INTO jobs(model, input) VALUES ('black-forest-labs/flux-schnell', '{\"prompt\":\"" +
               std::to_string(i) + "\"}')");
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.all_terminal(); }, 20s));
  std::lock_guard lock(mu);
  ASSERT_TRUE(throttled_at);
  // The one create already on the other connection may cross the 429.
  EXPECT_LE(inside_window, 1);
  EXPECT_EQ(creates, 21);
}

// When listing predictions failed three times, the ambiguous job was created
// again: a duplicate whenever the first create had reached the server (fault
// soak: 339 such re-creates in 5,000 jobs). It now lists again later.
TEST(EngineRegression, AmbiguousCreateIsNotRepeatedWhileListingFails) {
  test::EngineRig rig;
  std::mutex mu;
  int creates = 0, lists = 0;
  std::string created_at;
  test::HttpTestServer server(
      [&](const ReceivedRequest& r) {
        std::lock_guard lock(mu);
        const std::string pred = R"({"id":"once","status":"succeeded","model":"black-forest-labs/flux-schnell",)"
                                 R"("input":{"prompt":"once"},"output":["https://x/1.webp"],"created_at":")" +
                                 created_at + "\"}";
        if (r.method == "POST") {
          ++creates;
          created_at = format_utc(std::chrono::system_clock::now());
          return Reply{.action = Reply::Action::reset};  // made, then the connection dropped
        }
        if (r.target.starts_with("/v1/predictions?")) {
          if (++lists <= 5) return Reply{.status = 503, .body = R"({"detail":"Service unavailable"})"};
          return Reply{.status = 200, .body = "{\"results\":[" + pred + "],\"next\":null}"};
        }
        return Reply{.status = 200, .body = pred};
      },
      rig.pem);
  rig.point_at(server.port());
  const int64_t id =
      rig.insert("INSERT INTO jobs(model, input) VALUES ('black-forest-labs/flux-schnell', '{\"prompt\":\"once\"}')");
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.all_terminal(); }, 20s));
  EXPECT_EQ(rig.row(id).status, JobStatus::succeeded);
  EXPECT_EQ(rig.row(id).prediction_id.value_or(""), "once");
  std::lock_guard lock(mu);
  EXPECT_EQ(creates, 1);
  EXPECT_GT(lists, 5);
}

// A proxy without GET /v1/predictions can never confirm an earlier create:
// the create is sent again (logged job_retry ambiguous=1) instead of failing the job.
TEST(EngineRegression, AmbiguousCreateIsSentAgainWhenTheApiHasNoPredictionList) {
  test::EngineRig rig;
  std::mutex mu;
  int creates = 0, lists = 0;
  test::HttpTestServer server(
      [&](const ReceivedRequest& r) {
        std::lock_guard lock(mu);
        const std::string pred = R"({"id":"second","status":"succeeded","model":"black-forest-labs/flux-schnell",)"
                                 R"("input":{"prompt":"p"},"output":["https://x/1.webp"]})";
        if (r.method == "POST") {
          if (++creates == 1) return Reply{.action = Reply::Action::reset};
          return Reply{.status = 201, .body = pred};
        }
        if (r.target.starts_with("/v1/predictions?")) {
          ++lists;
          return Reply{.status = 404, .body = R"({"detail":"Not found"})"};
        }
        return Reply{.status = 200, .body = pred};
      },
      rig.pem);
  rig.point_at(server.port());
  const int64_t id =
      rig.insert("INSERT INTO jobs(model, input) VALUES ('black-forest-labs/flux-schnell', '{\"prompt\":\"p\"}')");
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.all_terminal(); }, 20s));
  EXPECT_EQ(rig.row(id).status, JobStatus::succeeded) << rig.row(id).error.value_or("");
  EXPECT_EQ(rig.row(id).prediction_id.value_or(""), "second");
  EXPECT_EQ(rig.row(id).attempts, 2);
  std::lock_guard lock(mu);
  EXPECT_EQ(creates, 2);
  EXPECT_EQ(lists, 1);
}
