// The engine against an API that fails: outages, timeouts while requests
// fail, unusable prediction lists, client errors SPEC §4 does not name.
// A scripted HTTPS server plays the API (tests/support/http_test_server).
#include <gtest/gtest.h>

#include <map>
#include <mutex>

#include "engine_rig.h"
#include "http_test_server.h"
#include "sim_server.h"
#include "timefmt.h"

using namespace predictd;
using namespace std::chrono_literals;
using test::Reply;
using test::ReceivedRequest;

namespace {

constexpr const char* kModel = "black-forest-labs/flux-schnell";

std::string prediction(const std::string& id, const std::string& status, const std::string& prompt,
                       const std::string& created_at = "") {
  std::string p = R"({"id":")" + id + R"(","status":")" + status + R"(","model":")" + kModel +
                  R"(","input":{"prompt":")" + prompt + "\"}";
  if (status == "succeeded") p += R"(,"output":["https://x/)" + id + R"(.webp"])";
  if (!created_at.empty()) p += R"(,"created_at":")" + created_at + "\"";
  return p + "}";
}

std::string page(const std::vector<std::string>& items, const std::string& next = "") {
  std::string body = "{\"results\":[";
  for (std::size_t i = 0; i < items.size(); ++i) body += (i ? "," : "") + items[i];
  return body + "],\"next\":" + (next.empty() ? "null" : "\"" + next + "\"") + "}";
}

std::string prompt_of(const std::string& body) {
  const auto at = body.find("\"prompt\":\"");
  if (at == std::string::npos) return "";
  const auto start = at + 10;
  return body.substr(start, body.find('"', start) - start);
}

int64_t insert(test::EngineRig& rig, const std::string& prompt, const std::string& timeout_s = "NULL") {
  return rig.insert(std::string("INSERT INTO jobs(model, input, timeout_s) VALUES ('") + kModel +
                    "', '{\"prompt\":\"" + prompt + "\"}', " + timeout_s + ")");
}

}  // namespace

// 5xx on every create while the list answers: each create is proven absent
// and sent again, until retry.max_attempts (3 in the rig).
TEST(EngineFaults, ServerErrorsOnCreateAreRetriedThenFailAfterMaxAttempts) {
  test::EngineRig rig;
  std::mutex mu;
  int creates = 0;
  test::HttpTestServer server(
      [&](const ReceivedRequest& r) {
        std::lock_guard lock(mu);
        if (r.method == "POST") {
          ++creates;
          return Reply{.status = 503, .body = R"({"detail":"Service temporarily unavailable"})"};
        }
        return Reply{.status = 200, .body = page({})};
      },
      rig.pem);
  rig.point_at(server.port());
  const int64_t id = insert(rig, "x");
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.all_terminal(); }, 30s));
  const JobRow row = rig.row(id);
  EXPECT_EQ(row.status, JobStatus::failed);
  EXPECT_EQ(row.attempts, 3);
  EXPECT_EQ(row.error.value_or(""), "gave up after 3 attempts: Service temporarily unavailable");
  std::lock_guard lock(mu);
  EXPECT_EQ(creates, 3);
}

// Everything answers 5xx for a while: new jobs wait (one probe at a time)
// instead of each spending its attempts; when the API is back, every job
// runs, none twice, none failed.
TEST(EngineFaults, AnOutageHoldsNewJobsAndLosesNone) {
  test::EngineRig rig;
  rig.config.retry = {.max_attempts = 3, .base_ms = 200, .max_ms = 2000};
  sim::Options so;
  so.token = test::kRigToken;
  so.profile = sim::Profile::instant;
  so.tls_cert_pem = rig.pem.cert_pem;
  so.tls_key_pem = rig.pem.key_pem;
  so.faults.server_error = 1.0;
  sim::Server sim(so);
  rig.point_at(sim.start());
  for (int i = 0; i < 20; ++i) insert(rig, "outage " + std::to_string(i));
  rig.start();
  rig.run_until([] { return false; }, 3s);
  EXPECT_GE(sim.stats().faults["server_error"], 3);
  EXPECT_TRUE(rig.logs.contains("api_error op=health"));
  // Without the hold every job was claimed and created within the first second.
  int untouched = 0;
  for (const auto& r : rig.store->list(std::nullopt, 100)) {
    EXPECT_FALSE(is_terminal(r.status)) << r.id;
    untouched += r.status == JobStatus::queued && r.attempts == 0;
  }
  EXPECT_GE(untouched, 10);
  sim.set_faults({});
  ASSERT_TRUE(rig.run_until([&] { return rig.all_terminal(); }, 60s));
  for (const auto& r : rig.store->list(std::nullopt, 100)) {
    EXPECT_EQ(r.status, JobStatus::succeeded) << r.id << " " << r.error.value_or("");
    EXPECT_LE(r.attempts, 2) << r.id;
  }
  EXPECT_EQ(sim.stats().duplicate_creates, 0);
  EXPECT_TRUE(rig.logs.contains("api_recovered"));
}

// The job's timeout passed while its polls failed: the cancel goes out and
// the job ends (it used to poll on, never ending while the API failed).
TEST(EngineFaults, TimeoutEndsAJobWhosePollsFail) {
  test::EngineRig rig;
  rig.options.timeout_grace = 1s;
  std::mutex mu;
  int cancels = 0;
  test::HttpTestServer server(
      [&](const ReceivedRequest& r) {
        std::lock_guard lock(mu);
        if (r.method == "POST" && r.target.ends_with("/cancel")) {
          ++cancels;
          return Reply{.status = 503, .body = R"({"detail":"unavailable"})"};
        }
        if (r.method == "POST") return Reply{.status = 201, .body = prediction("p1", "starting", "x")};
        return Reply{.status = 503, .body = R"({"detail":"unavailable"})"};
      },
      rig.pem);
  rig.point_at(server.port());
  const int64_t id = insert(rig, "x", "1");
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.all_terminal(); }, 15s));
  EXPECT_EQ(rig.row(id).status, JobStatus::canceled);
  EXPECT_EQ(rig.row(id).error.value_or(""), "timed out after 1 s");
  std::lock_guard lock(mu);
  EXPECT_EQ(cancels, 1);
}

// Nothing answers after the create, and the client's own timeout is longer
// than api.request_timeout_s: a second deadline, one request timeout after
// the first, ends the job locally.
TEST(EngineFaults, TimeoutEndsAJobWhenTheApiStopsAnswering) {
  test::EngineRig rig;
  rig.options.timeout_grace = 1s;
  rig.http_settings.request_timeout = 30s;
  test::HttpTestServer server(
      [&](const ReceivedRequest& r) {
        if (r.method == "POST" && !r.target.ends_with("/cancel"))
          return Reply{.status = 201, .body = prediction("p1", "starting", "x")};
        return Reply{.action = Reply::Action::stall};
      },
      rig.pem);
  rig.point_at(server.port());
  const int64_t id = insert(rig, "x", "1");
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.all_terminal(); }, 20s));
  EXPECT_EQ(rig.row(id).status, JobStatus::canceled);
  EXPECT_EQ(rig.row(id).error.value_or(""), "timed out after 1 s");
  EXPECT_TRUE(rig.logs.contains("ended locally"));
}

// A create throttled past the job's timeout is not sent again: the job ends
// canceled by its deadline (it used to lose its timeout in the queue and be
// created, and billed, after it).
TEST(EngineFaults, AJobThrottledPastItsTimeoutIsNotCreatedAgain) {
  test::EngineRig rig;
  rig.options.timeout_grace = 1s;
  std::mutex mu;
  int creates = 0;
  test::HttpTestServer server(
      [&](const ReceivedRequest& r) {
        std::lock_guard lock(mu);
        if (r.method == "POST") ++creates;
        return Reply{.status = 429, .body = R"({"detail":"Request was throttled."})", .headers = {{"Retry-After", "30"}}};
      },
      rig.pem);
  rig.point_at(server.port());
  const int64_t id = insert(rig, "x", "1");
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.all_terminal(); }, 10s));
  EXPECT_EQ(rig.row(id).status, JobStatus::canceled);
  EXPECT_EQ(rig.row(id).error.value_or(""), "timed out after 1 s");
  EXPECT_EQ(rig.row(id).attempts, 0);
  std::lock_guard lock(mu);
  EXPECT_EQ(creates, 1);
}

// Cancel-After carries the job's timeout, at least 5 s (SPEC §4).
TEST(EngineFaults, CreatesCarryTheTimeoutAsCancelAfter) {
  test::EngineRig rig;
  std::mutex mu;
  std::map<std::string, std::string> cancel_after;  // prompt -> header
  test::HttpTestServer server(
      [&](const ReceivedRequest& r) {
        std::lock_guard lock(mu);
        if (r.method == "POST") {
          const std::string p = prompt_of(r.body);
          cancel_after[p] = r.header("Cancel-After").value_or("(none)");
          return Reply{.status = 201, .body = prediction("p-" + p, "succeeded", p)};
        }
        return Reply{.status = 404, .body = R"({"detail":"Not found"})"};
      },
      rig.pem);
  rig.point_at(server.port());
  rig.config.jobs.default_timeout_s = 1800;
  insert(rig, "short", "1");
  insert(rig, "long", "600");
  insert(rig, "default");
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.all_terminal(); }));
  std::lock_guard lock(mu);
  EXPECT_EQ(cancel_after["short"], "5s");
  // Whole seconds left of the timeout when the create left.
  EXPECT_TRUE(cancel_after["long"] == "600s" || cancel_after["long"] == "599s") << cancel_after["long"];
  EXPECT_TRUE(cancel_after["default"] == "1800s" || cancel_after["default"] == "1799s") << cancel_after["default"];
}

// The list fails while the API answers everything else (another job's
// polls): the list is unusable, so after three listings the ambiguous create
// is sent again, logged job_retry ambiguous=1.
TEST(EngineFaults, AnUnusableListLeadsToOneResendWhileTheApiAnswers) {
  test::EngineRig rig;
  std::mutex mu;
  int creates_b = 0, lists = 0;
  bool b_done = false;
  test::HttpTestServer server(
      [&](const ReceivedRequest& r) {
        std::lock_guard lock(mu);
        if (r.method == "POST") {
          const std::string p = prompt_of(r.body);
          if (p == "a") return Reply{.status = 201, .body = prediction("pa", "starting", "a")};
          if (++creates_b == 1) return Reply{.action = Reply::Action::reset};
          return Reply{.status = 201, .body = prediction("pb", "starting", "b")};
        }
        if (r.target.starts_with("/v1/predictions?")) {
          ++lists;
          return Reply{.status = 500, .body = R"({"detail":"Internal server error"})"};
        }
        if (r.target == "/v1/predictions/pb") {
          b_done = true;
          return Reply{.status = 200, .body = prediction("pb", "succeeded", "b")};
        }
        return Reply{.status = 200, .body = prediction("pa", b_done ? "succeeded" : "processing", "a")};
      },
      rig.pem);
  rig.point_at(server.port());
  const int64_t a = insert(rig, "a");
  const int64_t b = insert(rig, "b");
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.all_terminal(); }, 40s));
  EXPECT_EQ(rig.row(a).status, JobStatus::succeeded);
  EXPECT_EQ(rig.row(b).status, JobStatus::succeeded) << rig.row(b).error.value_or("");
  EXPECT_EQ(rig.row(b).attempts, 2);
  EXPECT_EQ(rig.logs.find({"job_retry", "ambiguous=1", "could not be read"}).size(), 1u);
  std::lock_guard lock(mu);
  EXPECT_EQ(creates_b, 2);
  EXPECT_GE(lists, 3 * 3);  // at least three listings of three tries each
  EXPECT_EQ(lists % 3, 0);
}

// A listing cut off before its created_after bound (here: a `next` without a
// cursor) proves nothing: the create is not sent again as if absent.
TEST(EngineFaults, ACutOffListingIsNotProofOfAbsence) {
  test::EngineRig rig;
  std::mutex mu;
  int creates = 0, lists = 0;
  const std::string recent = format_utc(std::chrono::system_clock::now() + 1h);
  test::HttpTestServer server(
      [&](const ReceivedRequest& r) {
        std::lock_guard lock(mu);
        if (r.method == "POST") {
          if (++creates == 1) return Reply{.action = Reply::Action::reset};
          return Reply{.status = 201, .body = prediction("p2", "succeeded", "x")};
        }
        ++lists;
        return Reply{.status = 200, .body = page({prediction("other", "succeeded", "other", recent)},
                                                  "https://api.replicate.com/v1/predictions")};
      },
      rig.pem);
  rig.point_at(server.port());
  const int64_t id = insert(rig, "x");
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.all_terminal(); }, 30s));
  EXPECT_EQ(rig.row(id).status, JobStatus::succeeded);
  EXPECT_TRUE(rig.logs.contains("cut off after 1 pages"));
  EXPECT_TRUE(rig.logs.find({"job_retry", "ambiguous=0"}).empty());
  EXPECT_EQ(rig.logs.find({"job_retry", "ambiguous=1"}).size(), 1u);
  std::lock_guard lock(mu);
  EXPECT_EQ(lists, 3);
}

// A failed page is tried again on its own; the listing does not start over,
// and it stops at the page where every job of the batch was found.
TEST(EngineFaults, AFailedListPageIsTriedAloneAndListingStopsWhenAllAreFound) {
  test::EngineRig rig;
  std::mutex mu;
  std::map<std::string, int> pages;  // target -> requests
  std::string created;
  test::HttpTestServer server(
      [&](const ReceivedRequest& r) {
        std::lock_guard lock(mu);
        if (r.method == "POST") {
          created = format_utc(std::chrono::system_clock::now());
          return Reply{.action = Reply::Action::reset};
        }
        if (r.target.starts_with("/v1/predictions?")) {
          const bool second = r.target.find("cursor=2") != std::string::npos;
          const int n = ++pages[second ? "2" : r.target.find("cursor=3") != std::string::npos ? "3" : "1"];
          if (!second && r.target.find("cursor=3") == std::string::npos)
            return Reply{.status = 200,
                         .body = page({prediction("o1", "succeeded", "other", created)},
                                      "https://api.replicate.com/v1/predictions?cursor=2")};
          if (second && n == 1) return Reply{.status = 502, .body = "<html>Bad gateway</html>"};
          if (second)
            return Reply{.status = 200,
                         .body = page({prediction("mine", "succeeded", "x", created)},
                                      "https://api.replicate.com/v1/predictions?cursor=3")};
          return Reply{.status = 200, .body = page({})};
        }
        return Reply{.status = 200, .body = prediction("mine", "succeeded", "x", created)};
      },
      rig.pem);
  rig.point_at(server.port());
  const int64_t id = insert(rig, "x");
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.all_terminal(); }, 20s));
  EXPECT_EQ(rig.row(id).status, JobStatus::succeeded);
  EXPECT_EQ(rig.row(id).prediction_id.value_or(""), "mine");
  std::lock_guard lock(mu);
  EXPECT_EQ(pages["1"], 1);
  EXPECT_EQ(pages["2"], 2);
  EXPECT_EQ(pages["3"], 0);
}

// A client error SPEC §4 does not name (here 405) created nothing: the
// create is tried again with backoff, counted, instead of failing the job.
TEST(EngineFaults, AnUnnamedClientErrorIsRetriedNotFailed) {
  test::EngineRig rig;
  std::mutex mu;
  int creates = 0;
  test::HttpTestServer server(
      [&](const ReceivedRequest& r) {
        std::lock_guard lock(mu);
        if (r.method == "POST" && ++creates == 1)
          return Reply{.status = 405, .body = R"({"detail":"Method not allowed"})"};
        return Reply{.status = 201, .body = prediction("p", "succeeded", "x")};
      },
      rig.pem);
  rig.point_at(server.port());
  const int64_t id = insert(rig, "x");
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.all_terminal(); }));
  EXPECT_EQ(rig.row(id).status, JobStatus::succeeded);
  EXPECT_EQ(rig.row(id).attempts, 2);
  std::lock_guard lock(mu);
  EXPECT_EQ(creates, 2);
}

// 402 (the account's credit) pauses all traffic like 401/403 and fails nothing.
TEST(EngineFaults, PaymentRequiredPausesWithoutFailingJobs) {
  test::EngineRig rig;
  std::mutex mu;
  int creates = 0;
  test::HttpTestServer server(
      [&](const ReceivedRequest& r) {
        std::lock_guard lock(mu);
        if (r.method == "POST") ++creates;
        return Reply{.status = 402, .body = R"({"detail":"Insufficient credit"})"};
      },
      rig.pem);
  rig.point_at(server.port());
  const int64_t id = insert(rig, "x");
  insert(rig, "y");
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.logs.contains("account's balance"); }));
  rig.run_until([] { return false; }, 300ms);
  EXPECT_TRUE(rig.engine->auth_paused());
  EXPECT_EQ(rig.row(id).status, JobStatus::queued);
  EXPECT_EQ(rig.row(id).attempts, 0);
  std::lock_guard lock(mu);
  EXPECT_LE(creates, 2);  // both may have left before the first answer
}

// Claimed jobs beyond the connections wait in the engine, not in the HTTP
// client: a 429 holds them back (no request inside its Retry-After), a cancel
// ends one without a request, and a stop puts the rest back in the queue.
TEST(EngineFaults, CreatesWaitingForAConnectionAreHeldCanceledAndRequeued) {
  test::EngineRig rig;
  std::mutex mu;
  std::vector<std::string> created;  // prompts that reached the server
  test::HttpTestServer server(
      [&](const ReceivedRequest& r) {
        std::lock_guard lock(mu);
        const std::string p = prompt_of(r.body);
        if (r.method == "POST") created.push_back(p);
        if (p == "j1")
          return Reply{.status = 429, .body = R"({"detail":"Request was throttled."})",
                       .headers = {{"Retry-After", "30"}}, .delay = 100ms};
        if (r.method == "POST") return Reply{.status = 201, .body = prediction("p-" + p, "succeeded", p), .delay = 100ms};
        return Reply{.status = 404, .body = R"({"detail":"Not found"})"};
      },
      rig.pem);
  rig.point_at(server.port());  // 4 connections
  rig.config.limits.creates_per_minute = 6000;  // the budget is not what holds them
  std::vector<int64_t> ids;
  for (int i = 1; i <= 10; ++i) ids.push_back(insert(rig, "j" + std::to_string(i)));
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.logs.contains("api_throttled op=create"); }));
  ASSERT_TRUE(rig.run_until([&] {
    int done = 0;
    for (int i = 1; i < 4; ++i) done += rig.row(ids[i]).status == JobStatus::succeeded;
    return done == 3;
  }));
  // Jobs 5-8 were claimed and wait for the end of the Retry-After; cancel one of them.
  EXPECT_EQ(rig.row(ids[5]).status, JobStatus::submitting);
  rig.feeder->exec("UPDATE jobs SET cancel_requested = 1 WHERE id = " + std::to_string(ids[5]));
  ASSERT_TRUE(rig.run_until([&] { return rig.row(ids[5]).status == JobStatus::canceled; }));
  EXPECT_EQ(rig.row(ids[5]).error.value_or(""), "canceled on request");
  rig.stop();
  for (int i : {0, 4, 6, 7, 8, 9}) {
    EXPECT_EQ(rig.row(ids[i]).status, JobStatus::queued) << "j" << i + 1;
    EXPECT_EQ(rig.row(ids[i]).attempts, 0) << "j" << i + 1;
  }
  std::lock_guard lock(mu);
  EXPECT_EQ(created.size(), 4u);
  for (const auto& p : created) EXPECT_TRUE(p == "j1" || p == "j2" || p == "j3" || p == "j4") << p;
}
