// The HTTPS client against predictd-sim (in-process, TLS with a test certificate).
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>

#include "http_client.h"
#include "sim_server.h"
#include "test_util.h"
#include "tls_cert.h"

using namespace predictd;
using namespace std::chrono_literals;

namespace {

struct Fixture {
  test::TempDir dir;
  PemPair pem;
  std::unique_ptr<sim::Server> sim;
  uint16_t port = 0;
  boost::asio::io_context io{1};

  explicit Fixture(sim::Options so = {}, std::vector<std::string> names = {"localhost"}, bool tls = true)
      : pem(make_self_signed(names, {})) {
    test::write_file(dir.file("ca.pem"), pem.cert_pem);
    if (tls) {
      so.tls_cert_pem = pem.cert_pem;
      so.tls_key_pem = pem.key_pem;
    }
    so.profile = sim::Profile::instant;
    sim = std::make_unique<sim::Server>(so);
    port = sim->start();
  }
  ~Fixture() { sim->stop(); }

  HttpClientSettings settings(bool tls = true) {
    HttpClientSettings s;
    s.base_url = std::string(tls ? "https" : "http") + "://localhost:" + std::to_string(port);
    s.ca_file = dir.file("ca.pem");
    s.max_connections = 2;
    s.request_timeout = 2s;
    s.connect_timeout = 2s;
    return s;
  }

  std::vector<HttpResponse> run(HttpClient& c, std::vector<HttpRequest> reqs) {
    std::vector<HttpResponse> out(reqs.size());
    std::size_t done = 0;
    for (std::size_t i = 0; i < reqs.size(); ++i)
      c.send(reqs[i], [&, i](HttpResponse r) {
        out[i] = std::move(r);
        ++done;
      });
    const auto end = std::chrono::steady_clock::now() + 20s;
    while (done < reqs.size() && std::chrono::steady_clock::now() < end) {
      io.run_for(5ms);
      if (io.stopped()) io.restart();
    }
    EXPECT_EQ(done, reqs.size());
    return out;
  }

  int64_t stat(const char* k) { return boost::json::parse(sim->stats_json()).at(k).as_int64(); }
};

HttpRequest create_req() {
  return {.method = "POST", .path = "/v1/models/black-forest-labs/flux-schnell/predictions",
          .body = R"({"input":{"prompt":"x"}})"};
}

}  // namespace

TEST(HttpClient, ReusesOneKeepAliveConnection) {
  Fixture f;
  HttpClient c(f.io, f.settings());
  for (int i = 0; i < 10; ++i) {
    auto r = f.run(c, {{.method = "GET", .path = "/v1/predictions"}});
    ASSERT_EQ(r[0].failure, HttpFailure::none) << r[0].error;
    EXPECT_EQ(r[0].status, 200);
  }
  EXPECT_EQ(f.stat("connections"), 1);
  EXPECT_EQ(c.open_connections(), 1u);
}

TEST(HttpClient, ConcurrencyIsCappedAtMaxConnections) {
  Fixture f;
  HttpClient c(f.io, f.settings());
  std::vector<HttpRequest> reqs(30, create_req());
  auto rs = f.run(c, reqs);
  for (auto& r : rs) {
    EXPECT_EQ(r.status, 201);
    EXPECT_NE(r.header("content-type"), nullptr);
  }
  EXPECT_LE(f.stat("connections"), 2);
  EXPECT_EQ(f.stat("creates"), 30);
}

TEST(HttpClient, UntrustedCertificateIsRefusedBeforeSending) {
  Fixture f;
  auto s = f.settings();
  s.ca_file.reset();
  HttpClient c(f.io, s);
  auto r = f.run(c, {create_req()});
  EXPECT_EQ(r[0].failure, HttpFailure::not_sent);
  EXPECT_NE(r[0].error.find("certificate verify failed"), std::string::npos) << r[0].error;
  EXPECT_EQ(f.stat("requests"), 0);
}

TEST(HttpClient, WrongHostNameIsRefused) {
  Fixture f({}, {"example.test"});
  HttpClient c(f.io, f.settings());
  auto r = f.run(c, {create_req()});
  EXPECT_EQ(r[0].failure, HttpFailure::not_sent);
  EXPECT_EQ(f.stat("requests"), 0);
}

TEST(HttpClient, PlainHttpWorks) {
  Fixture f({}, {"localhost"}, false);
  HttpClient c(f.io, f.settings(false));
  auto r = f.run(c, {create_req()});
  EXPECT_EQ(r[0].status, 201);
}

TEST(HttpClient, StallTimesOutResetIsAnIoErrorLargeBodyIsRefused) {
  sim::Options so;
  so.faults.stall = 1.0;
  so.faults.stall_s = 5;
  Fixture f(so);
  auto s = f.settings();
  s.request_timeout = 200ms;
  s.body_limit = 1024 * 1024;
  HttpClient c(f.io, s);
  auto r = f.run(c, {create_req()});
  EXPECT_EQ(r[0].failure, HttpFailure::timeout) << r[0].error;

  sim::Faults reset;
  reset.reset_after_create = 1.0;
  f.sim->set_faults(reset);
  r = f.run(c, {create_req()});
  EXPECT_EQ(r[0].failure, HttpFailure::io_error) << r[0].error;

  f.sim->set_faults({});
  r = f.run(c, {create_req()});
  ASSERT_EQ(r[0].status, 201);
  const std::string id(boost::json::parse(r[0].body).at("id").as_string());
  sim::Faults huge;
  huge.huge_logs = 1.0;
  huge.huge_logs_bytes = 2 * 1024 * 1024;
  f.sim->set_faults(huge);
  r = f.run(c, {{.method = "GET", .path = "/v1/predictions/" + id}});
  EXPECT_EQ(r[0].failure, HttpFailure::too_large) << r[0].error;
}

TEST(HttpClient, ShutdownAnswersQueuedRequestsOnce) {
  Fixture f;
  HttpClient c(f.io, f.settings());
  int calls = 0;
  for (int i = 0; i < 5; ++i) c.send(create_req(), [&](HttpResponse) { ++calls; });
  c.shutdown();
  const auto end = std::chrono::steady_clock::now() + 5s;
  while (calls < 5 && std::chrono::steady_clock::now() < end) {
    f.io.run_for(5ms);
    if (f.io.stopped()) f.io.restart();
  }
  f.io.run_for(50ms);
  EXPECT_EQ(calls, 5);
}
