// Suite 6, security: certificates and host names are verified, the token
// reaches only the API (never a log line, a row or the database file), and
// size limits hold.
#include <signal.h>
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>

#include <boost/json.hpp>

#include "engine_rig.h"
#include "http_test_server.h"
#include "process.h"
#include "sim_server.h"
#include "soak_common.h"

using namespace predictd;
using namespace std::chrono_literals;
namespace json = boost::json;
using test::Reply;
using test::ReceivedRequest;

namespace {

constexpr const char* kSchnell = "black-forest-labs/flux-schnell";

// The engine against a simulator whose certificate the client must refuse.
void expect_refused(const PemPair& served, const std::optional<std::string>& trusted, const char* why) {
  SCOPED_TRACE(why);
  test::EngineRig rig;
  sim::Options so;
  so.profile = sim::Profile::instant;
  so.tls_cert_pem = served.cert_pem;
  so.tls_key_pem = served.key_pem;
  sim::Server sim(so);
  rig.point_at(sim.start());
  if (trusted) test::write_file(rig.dir.file("trusted.pem"), *trusted);
  rig.http_settings.ca_file = trusted ? std::optional(rig.dir.file("trusted.pem")) : std::nullopt;
  const int64_t id = rig.insert(std::string("INSERT INTO jobs(model, input) VALUES ('") + kSchnell + "', '{}')");
  rig.start();
  // Several tries, each refused, none of them spending an attempt.
  ASSERT_TRUE(rig.run_until([&] { return rig.logs.find({"api_error", "attempt_spent=0"}).size() >= 2; }, 20s));
  rig.stop();
  const JobRow r = rig.row(id);
  EXPECT_EQ(r.status, JobStatus::queued);
  EXPECT_EQ(r.attempts, 0);
  EXPECT_EQ(sim.stats().requests, 0);  // not one request got through the handshake
  EXPECT_FALSE(rig.logs.find({"error", "api_error", "op=create", "attempt_spent=0"}).empty());
  sim.stop();
}

}  // namespace

TEST(Security, UntrustedCertificateIsRefused) {
  const PemPair self_signed = make_self_signed({"localhost"}, {"127.0.0.1"});
  expect_refused(self_signed, std::nullopt, "self-signed, not in the trust store");
  const PemPair other = make_self_signed({"localhost"}, {"127.0.0.1"});
  expect_refused(self_signed, other.cert_pem, "another certificate trusted");
}

TEST(Security, WrongHostNameIsRefused) {
  // Trusted, but issued for another name than the one we connect to.
  const PemPair elsewhere = make_self_signed({"api.elsewhere.example"}, {});
  expect_refused(elsewhere, elsewhere.cert_pem, "certificate for another host");
}

// The real daemon against an API that echoes the token back in every error
// message it can (as some proxies do): the token must still appear nowhere.
TEST(Security, TokenAppearsInNoLogLineRowOrDatabaseFile) {
  const std::string token = "r8_security_secret_token_c0ffee42";
  test::TempDir dir;
  const PemPair pem = make_self_signed({"localhost"}, {"127.0.0.1"});
  test::write_file(dir.file("ca.pem"), pem.cert_pem);
  std::atomic<int> authorized{0};
  std::map<std::string, int> creates;  // by prompt
  std::mutex mu;
  test::HttpTestServer server(
      [&](const ReceivedRequest& r) -> Reply {
        const std::string auth = r.header("Authorization").value_or("");
        if (auth == "Bearer " + token) ++authorized;
        auto echo = [&](int status, const std::string& what) {
          return Reply{.status = status,
                       .body = json::serialize(json::object{{"detail", what + " (" + auth + ")"}}),
                       .headers = {{"Content-Type", "application/json"}}};
        };
        std::lock_guard lock(mu);
        if (r.method == "POST" && r.target.ends_with("/predictions")) {
          const std::string prompt(json::parse(r.body).at("input").at("prompt").as_string());
          const int n = ++creates[prompt];
          if (prompt == "refused") return echo(422, "input rejected for token");
          if (prompt == "flaky" && n <= 2) return echo(500, "upstream failed for");
          return Reply{.status = 201,
                       .body = json::serialize(json::object{{"id", "p-" + prompt}, {"status", "starting"}}),
                       .headers = {{"Content-Type", "application/json"}}};
        }
        if (r.method == "GET" && r.target.starts_with("/v1/predictions?"))
          return Reply{.status = 200, .body = R"({"results":[],"next":null})"};
        if (r.method == "GET" && r.target.starts_with("/v1/predictions/"))
          return Reply{.status = 200,
                       .body = json::serialize(json::object{{"id", r.target.substr(16)},
                                                            {"status", "failed"},
                                                            {"error", "model crashed; request had " + auth}}),
                       .headers = {{"Content-Type", "application/json"}}};
        return echo(404, "not found");
      },
      pem);

  test::DaemonConfig dc;
  dc.db_path = dir.file("jobs.db");
  dc.base_url = "https://localhost:" + std::to_string(server.port());
  dc.ca_file = dir.file("ca.pem");
  dc.log_file = dir.file("predictd.log");
  dc.base_ms = 20;
  dc.max_ms = 100;
  test::write_file(dir.file("predictd.json"), test::daemon_config_json(dc));
  {
    auto store = Store::open(dc.db_path);
    for (const char* p : {"refused", "flaky", "runs"})
      store->insert(NewJob{.model = kSchnell, .input = std::string("{\"prompt\":\"") + p + "\"}"});
  }
  const std::string out = dir.file("predictd.out");
  test::Process daemon({PREDICTD_BIN, "--config", dir.file("predictd.json"), "--check-config"},
                       {"PREDICTD_API_TOKEN=" + token}, out);
  ASSERT_EQ(daemon.wait(10s).value_or(-1), 0);
  test::Process run({PREDICTD_BIN, "--config", dir.file("predictd.json")}, {"PREDICTD_API_TOKEN=" + token}, out);
  auto store = Store::open(dc.db_path);
  ASSERT_TRUE(test::wait_until(
      [&] {
        for (const JobRow& r : store->list(std::nullopt, 10))
          if (!is_terminal(r.status)) return false;
        return true;
      },
      30s));
  run.signal(SIGTERM);
  auto st = run.wait(10s);
  ASSERT_TRUE(st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0);

  EXPECT_GE(authorized.load(), 6);  // the token did reach the API
  std::string rows;
  for (const JobRow& r : store->list(std::nullopt, 10)) {
    EXPECT_EQ(r.status, JobStatus::failed) << r.id;
    rows += r.error.value_or("") + "\n";
  }
  EXPECT_EQ(rows.find(token), std::string::npos) << rows;
  EXPECT_NE(rows.find("[redacted]"), std::string::npos) << rows;  // the echoes were there, and were removed
  store.reset();
  for (const char* f : {"jobs.db", "jobs.db-wal", "predictd.log", "predictd.out"}) {
    if (!std::filesystem::exists(dir.file(f))) continue;
    EXPECT_EQ(test::read_file(dir.file(f)).find(token), std::string::npos) << f << " holds the token";
  }
  const std::string log = test::read_file(dir.file("predictd.log"));
  EXPECT_NE(log.find("[redacted]"), std::string::npos);
  EXPECT_NE(log.find("job_retry"), std::string::npos);
}

// Response headers and bodies over the client's limits are refused, and the
// job goes on (a poll error never fails it).
TEST(Security, ResponseSizeLimitsHold) {
  test::EngineRig rig;
  rig.http_settings.header_limit = 8 * 1024;
  rig.http_settings.body_limit = 64 * 1024;
  std::atomic<int> polls{0};
  test::HttpTestServer server(
      [&](const ReceivedRequest& r) -> Reply {
        if (r.method == "POST") return Reply{.status = 201, .body = R"({"id":"big1","status":"starting"})"};
        const int n = ++polls;
        if (n == 1) return Reply{.status = 200, .body = "{}", .headers = {{"X-Padding", std::string(16 * 1024, 'h')}}};
        if (n == 2)
          return Reply{.status = 200,
                       .body = R"({"id":"big1","status":"processing","logs":")" + std::string(256 * 1024, 'l') + "\"}"};
        return Reply{.status = 200, .body = R"({"id":"big1","status":"succeeded","output":["https://x/a.webp"]})"};
      },
      rig.pem);
  rig.point_at(server.port());
  const int64_t id = rig.insert(std::string("INSERT INTO jobs(model, input) VALUES ('") + kSchnell + "', '{}')");
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.all_terminal(); }));
  EXPECT_EQ(rig.row(id).status, JobStatus::succeeded);
  EXPECT_EQ(polls.load(), 3);
  EXPECT_EQ(rig.logs.find({"api_error op=poll", "header"}).size() + rig.logs.find({"api_error op=poll", "body"}).size(),
            2u);
}
