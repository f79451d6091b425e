// The HTTPS client against a scripted in-process server (TLS with a test certificate).
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "http_client.h"
#include "http_test_server.h"
#include "test_util.h"
#include "tls_cert.h"

using namespace predictd;
using namespace std::chrono_literals;
using test::HttpTestServer;
using test::ReceivedRequest;
using test::Reply;
using Action = Reply::Action;

namespace {

Reply ok(std::string body = "{}") { return {.status = 200, .body = std::move(body)}; }

HttpRequest get(std::string path = "/v1/predictions/abc") { return {.method = "GET", .path = std::move(path)}; }
HttpRequest post(std::string body = R"({"input":{"prompt":"a cat"}})") {
  return {.method = "POST", .path = "/v1/models/o/m/predictions", .body = std::move(body)};
}

// The client's side of a test: its io_context, trust in the test CA, and a
// record of every callback so each test can check "exactly once".
struct Client {
  test::TempDir dir;
  boost::asio::io_context io{1};
  std::vector<int> calls;  // callbacks per send(), by index
  std::vector<HttpResponse> responses;

  explicit Client(const PemPair& ca) { test::write_file(dir.file("ca.pem"), ca.cert_pem); }

  HttpClientSettings settings(std::uint16_t port, bool tls = true, std::string host = "localhost") {
    HttpClientSettings s;
    s.base_url = (tls ? "https://" : "http://") + host + ":" + std::to_string(port);
    s.ca_file = dir.file("ca.pem");
    s.max_connections = 2;
    s.connect_timeout = 5s;
    s.request_timeout = 5s;
    s.user_agent = "predictd-test/1";
    return s;
  }

  std::size_t send(HttpClient& c, HttpRequest r) {
    const std::size_t i = calls.size();
    calls.push_back(0);
    responses.emplace_back();
    c.send(std::move(r), [this, i](HttpResponse res) {
      ++calls[i];
      responses[i] = std::move(res);
    });
    return i;
  }

  // Runs the loop until cond holds; false after the deadline.
  bool run_until(const std::function<bool()>& cond, std::chrono::milliseconds limit = 15s) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!cond() && std::chrono::steady_clock::now() < end) {
      io.run_for(5ms);
      if (io.stopped()) io.restart();
    }
    return cond();
  }

  bool all_done() const {
    return std::all_of(calls.begin(), calls.end(), [](int n) { return n > 0; });
  }
  // Every callback ran once and only once.
  void expect_each_once() const {
    for (std::size_t i = 0; i < calls.size(); ++i) EXPECT_EQ(calls[i], 1) << "request " << i;
  }

  HttpResponse exchange(HttpClient& c, HttpRequest r) {
    const auto i = send(c, std::move(r));
    EXPECT_TRUE(run_until([&] { return calls[i] > 0; })) << "no answer";
    return responses[i];
  }
};

struct Tls {
  PemPair pem = make_self_signed({"localhost"}, {"127.0.0.1"});
};

}  // namespace

TEST(HttpClient, PostOverTlsSendsExactlyTheRequestAndCopiesTheResponse) {
  Tls tls;
  HttpTestServer server(
      [](const ReceivedRequest&) {
        return Reply{.status = 201,
                     .body = R"({"id":"p1"})",
                     .headers = {{"Content-Type", "application/json"},
                                 {"Location", "/v1/predictions/p1"},
                                 {"Retry-After", "7"}}};
      },
      tls.pem);
  Client cl(tls.pem);
  auto s = cl.settings(server.port());
  s.base_url += "/replicate/";
  HttpClient c(cl.io, s);
  const std::string body = R"({"input":{"prompt":"a cat \u00e9 ✓","n":1}})";
  HttpRequest req = post(body);
  req.headers = {{"Authorization", "Bearer r8_secret"}, {"Prefer", "wait=5"}};
  const auto r = cl.exchange(c, req);

  ASSERT_EQ(r.failure, HttpFailure::none) << r.error;
  EXPECT_EQ(r.status, 201);
  EXPECT_EQ(r.body, R"({"id":"p1"})");
  ASSERT_NE(r.header("content-type"), nullptr);
  EXPECT_EQ(*r.header("content-type"), "application/json");
  ASSERT_NE(r.header("location"), nullptr);
  EXPECT_EQ(*r.header("location"), "/v1/predictions/p1");
  ASSERT_NE(r.header("retry-after"), nullptr);
  EXPECT_EQ(*r.header("retry-after"), "7");
  EXPECT_EQ(r.header("Retry-After"), nullptr);  // names are lower-cased

  const auto got = server.requests();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].method, "POST");
  EXPECT_EQ(got[0].target, "/replicate/v1/models/o/m/predictions");
  EXPECT_EQ(got[0].body, body);
  EXPECT_EQ(got[0].header("host"), "localhost:" + std::to_string(server.port()));
  EXPECT_EQ(got[0].header("user-agent"), "predictd-test/1");
  EXPECT_EQ(got[0].header("content-type"), "application/json");
  EXPECT_EQ(got[0].header("content-length"), std::to_string(body.size()));
  EXPECT_EQ(got[0].header("authorization"), "Bearer r8_secret");
  EXPECT_EQ(got[0].header("prefer"), "wait=5");
  cl.expect_each_once();
}

TEST(HttpClient, BaseUrlMustBeHttpOrHttpsWithAHost) {
  boost::asio::io_context io;
  for (const char* bad : {"ftp://h", "https://", "https://h:99999", "https://h:", "https://u@h", "https://h/p?q=1",
                          "https://[::1", "https://[h]:1", "localhost:80", "https://h:8a"}) {
    HttpClientSettings s;
    s.base_url = bad;
    EXPECT_THROW(HttpClient(io, s), std::invalid_argument) << bad;
  }
  for (const char* good : {"https://h", "HTTPS://api.example.com:8443/replicate/", "http://[::1]:8080/x",
                           "http://127.0.0.1"}) {
    HttpClientSettings s;
    s.base_url = good;
    EXPECT_NO_THROW(HttpClient(io, s)) << good;
  }
}

TEST(HttpClient, GetHasNoBodyNorContentTypeAndHonoursThePrefix) {
  Tls tls;
  HttpTestServer server([](const ReceivedRequest&) { return ok(R"({"status":"starting"})"); }, tls.pem);
  Client cl(tls.pem);
  auto s = cl.settings(server.port());
  s.base_url += "/replicate";
  HttpClient c(cl.io, s);
  const auto r = cl.exchange(c, get("/v1/predictions/p1"));
  ASSERT_EQ(r.failure, HttpFailure::none) << r.error;
  EXPECT_EQ(r.body, R"({"status":"starting"})");
  EXPECT_GE(r.latency.count(), 0);
  const auto got = server.requests();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].method, "GET");
  EXPECT_EQ(got[0].target, "/replicate/v1/predictions/p1");
  EXPECT_EQ(got[0].body, "");
  EXPECT_FALSE(got[0].header("content-type"));
}

TEST(HttpClient, SequentialRequestsReuseOneConnection) {
  Tls tls;
  HttpTestServer server([](const ReceivedRequest&) { return ok(); }, tls.pem);
  Client cl(tls.pem);
  HttpClient c(cl.io, cl.settings(server.port()));
  for (int i = 0; i < 10; ++i) {
    const auto r = cl.exchange(c, i % 2 ? get() : post());
    ASSERT_EQ(r.failure, HttpFailure::none) << r.error;
  }
  EXPECT_EQ(server.connections(), 1);
  EXPECT_EQ(server.request_count(), 10u);
  EXPECT_EQ(c.open_connections(), 1u);
  EXPECT_EQ(c.in_flight(), 0u);
  cl.expect_each_once();
}

TEST(HttpClient, ConcurrencyIsCappedAtMaxConnections) {
  Tls tls;
  HttpTestServer server([](const ReceivedRequest&) { return Reply{.body = "{}", .delay = 10ms}; }, tls.pem);
  Client cl(tls.pem);
  auto s = cl.settings(server.port());
  s.max_connections = 3;
  HttpClient c(cl.io, s);
  for (int i = 0; i < 30; ++i) cl.send(c, post());
  EXPECT_EQ(c.in_flight(), 30u);
  ASSERT_TRUE(cl.run_until([&] { return cl.all_done(); }));
  for (const auto& r : cl.responses) EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(server.connections(), 3);  // capped, and reused
  EXPECT_LE(server.max_open_connections(), 3);
  EXPECT_EQ(server.request_count(), 30u);
  EXPECT_EQ(c.in_flight(), 0u);
  cl.expect_each_once();
}

// A hold is asked after the connect, just before writing: a pause that began
// while the request waited for its connection keeps it back.
TEST(HttpClient, HeldRequestIsNotWritten) {
  Tls tls;
  HttpTestServer server([](const ReceivedRequest&) { return ok(); }, tls.pem);
  Client cl(tls.pem);
  HttpClient c(cl.io, cl.settings(server.port()));
  bool paused = false;
  int asked = 0;
  auto held = get("/held");
  held.hold = [&] { return ++asked, paused; };
  const auto i = cl.send(c, std::move(held));
  paused = true;  // after send(), before the connection is up
  ASSERT_TRUE(cl.run_until([&] { return cl.calls[i] > 0; }));
  EXPECT_EQ(cl.responses[i].failure, HttpFailure::held) << cl.responses[i].error;
  EXPECT_EQ(asked, 1);
  EXPECT_EQ(server.request_count(), 0u);
  paused = false;
  auto later = get("/later");
  later.hold = [&] { return ++asked, paused; };
  const auto r = cl.exchange(c, std::move(later));
  EXPECT_EQ(r.status, 200) << r.error;
  ASSERT_EQ(server.request_count(), 1u);
  EXPECT_EQ(server.requests()[0].target, "/later");
  EXPECT_EQ(c.in_flight(), 0u);
  cl.expect_each_once();
}

TEST(HttpClient, QueuedRequestsGoOutInFifoOrder) {
  Tls tls;
  HttpTestServer server([](const ReceivedRequest&) { return ok(); }, tls.pem);
  Client cl(tls.pem);
  auto s = cl.settings(server.port());
  s.max_connections = 1;
  HttpClient c(cl.io, s);
  for (int i = 0; i < 8; ++i) cl.send(c, get("/" + std::to_string(i)));
  ASSERT_TRUE(cl.run_until([&] { return cl.all_done(); }));
  const auto got = server.requests();
  ASSERT_EQ(got.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(got[i].target, "/" + std::to_string(i));
}

TEST(HttpClient, UntrustedCertificateIsRefusedBeforeSending) {
  Tls tls;
  HttpTestServer server([](const ReceivedRequest&) { return ok(); }, tls.pem);
  Client cl(tls.pem);
  auto s = cl.settings(server.port());
  s.ca_file.reset();
  HttpClient c(cl.io, s);
  const auto r = cl.exchange(c, post());
  EXPECT_EQ(r.failure, HttpFailure::not_sent);
  EXPECT_EQ(r.error, "TLS handshake: certificate verify failed (self-signed certificate)");
  EXPECT_EQ(server.request_count(), 0u);
  EXPECT_EQ(c.open_connections(), 0u);
}

TEST(HttpClient, CertificateForAnotherHostIsRefused) {
  const PemPair other = make_self_signed({"example.test"}, {});
  HttpTestServer server([](const ReceivedRequest&) { return ok(); }, other);
  Client cl(other);  // trusted, but it does not name localhost
  HttpClient c(cl.io, cl.settings(server.port()));
  const auto r = cl.exchange(c, post());
  EXPECT_EQ(r.failure, HttpFailure::not_sent);
  EXPECT_EQ(r.error, "TLS handshake: certificate verify failed (certificate does not match the host name)");
  EXPECT_EQ(server.request_count(), 0u);
}

TEST(HttpClient, VerificationCanBeTurnedOff) {
  const PemPair other = make_self_signed({"example.test"}, {});
  HttpTestServer server([](const ReceivedRequest&) { return ok(); }, other);
  Client cl(other);
  auto s = cl.settings(server.port());
  s.ca_file.reset();
  s.verify_peer = false;
  HttpClient c(cl.io, s);
  const auto r = cl.exchange(c, get());
  EXPECT_EQ(r.failure, HttpFailure::none) << r.error;
}

TEST(HttpClient, IpAddressInTheCertificateIsAccepted) {
  Tls tls;
  HttpTestServer server([](const ReceivedRequest&) { return ok(); }, tls.pem);
  Client cl(tls.pem);
  HttpClient c(cl.io, cl.settings(server.port(), true, "127.0.0.1"));
  const auto r = cl.exchange(c, get());
  EXPECT_EQ(r.failure, HttpFailure::none) << r.error;
  EXPECT_EQ(server.requests().at(0).header("host"), "127.0.0.1:" + std::to_string(server.port()));
}

TEST(HttpClient, PlainHttpWorks) {
  Tls tls;
  HttpTestServer server([](const ReceivedRequest&) { return Reply{.status = 201, .body = "{}"}; });
  Client cl(tls.pem);
  HttpClient c(cl.io, cl.settings(server.port(), false));
  const auto r = cl.exchange(c, post());
  EXPECT_EQ(r.failure, HttpFailure::none) << r.error;
  EXPECT_EQ(r.status, 201);
  EXPECT_EQ(server.requests().at(0).body, R"({"input":{"prompt":"a cat"}})");
}

TEST(HttpClient, RefusedConnectionIsNotSent) {
  std::uint16_t port;
  {
    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
    port = a.local_endpoint().port();
  }
  Tls tls;
  Client cl(tls.pem);
  HttpClient c(cl.io, cl.settings(port, true, "127.0.0.1"));
  const auto r = cl.exchange(c, post());
  EXPECT_EQ(r.failure, HttpFailure::not_sent);
  EXPECT_EQ(r.error, "connect: Connection refused");
}

TEST(HttpClient, SilentServerTimesOutTheHandshakeAsNotSent) {
  // The kernel accepts the TCP connection; nobody ever answers the ClientHello.
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor silent(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  Tls tls;
  Client cl(tls.pem);
  auto s = cl.settings(silent.local_endpoint().port());
  s.connect_timeout = 200ms;
  HttpClient c(cl.io, s);
  const auto r = cl.exchange(c, post());
  EXPECT_EQ(r.failure, HttpFailure::not_sent);
  EXPECT_EQ(r.error, "TLS handshake: timed out");
  EXPECT_GE(r.latency, 190ms);
  EXPECT_LT(r.latency, 3s);
}

TEST(HttpClient, StalledServerTimesOut) {
  Tls tls;
  HttpTestServer server([](const ReceivedRequest&) { return Reply{.action = Action::stall}; }, tls.pem);
  Client cl(tls.pem);
  auto s = cl.settings(server.port());
  s.request_timeout = 200ms;
  HttpClient c(cl.io, s);
  const auto r = cl.exchange(c, post());
  EXPECT_EQ(r.failure, HttpFailure::timeout) << r.error;
  EXPECT_EQ(r.error, "read: timed out");
  EXPECT_GE(r.latency, 190ms);
  EXPECT_LT(r.latency, 3s);
  EXPECT_EQ(server.request_count(), 1u);
  EXPECT_EQ(c.open_connections(), 0u);
}

TEST(HttpClient, ResetAfterTheRequestIsAnIoError) {
  Tls tls;
  HttpTestServer server([](const ReceivedRequest&) { return Reply{.action = Action::reset}; }, tls.pem);
  Client cl(tls.pem);
  HttpClient c(cl.io, cl.settings(server.port()));
  for (auto req : {post(), get()}) {  // a fresh connection is never retried, GET or not
    const auto r = cl.exchange(c, req);
    EXPECT_EQ(r.failure, HttpFailure::io_error) << r.error;
    EXPECT_EQ(r.error, "read: Connection reset by peer");
  }
  EXPECT_EQ(server.request_count(), 2u);
  EXPECT_EQ(c.open_connections(), 0u);
  cl.expect_each_once();
}

TEST(HttpClient, IdleConnectionClosedByTheServerIsNotReused) {
  Tls tls;
  HttpTestServer server([](const ReceivedRequest&) { return Reply{.body = "{}", .close_after = true}; }, tls.pem);
  Client cl(tls.pem);
  HttpClient c(cl.io, cl.settings(server.port()));
  ASSERT_EQ(cl.exchange(c, post()).failure, HttpFailure::none);
  // The idle watch notices the server's FIN and drops the connection.
  ASSERT_TRUE(cl.run_until([&] { return server.open_connections() == 0 && c.open_connections() == 0; }));
  const auto r = cl.exchange(c, post());
  EXPECT_EQ(r.failure, HttpFailure::none) << r.error;
  EXPECT_EQ(server.connections(), 2);
  EXPECT_EQ(server.request_count(), 2u);
}

// The server drops a kept-alive connection just as the next request arrives
// (the keep-alive race): the request reaches it but gets no answer.
Reply drop_second_request(const ReceivedRequest& r) {
  if (r.request_on_connection == 2) return Reply{.action = Action::close};
  return ok(R"({"n":1})");
}

TEST(HttpClient, GetOnAStaleConnectionIsRetriedOnceOnAFreshOne) {
  Tls tls;
  HttpTestServer server(drop_second_request, tls.pem);
  Client cl(tls.pem);
  HttpClient c(cl.io, cl.settings(server.port()));
  ASSERT_EQ(cl.exchange(c, get()).failure, HttpFailure::none);
  const auto r = cl.exchange(c, get());
  EXPECT_EQ(r.failure, HttpFailure::none) << r.error;
  EXPECT_EQ(r.body, R"({"n":1})");
  EXPECT_EQ(server.connections(), 2);
  EXPECT_EQ(server.request_count(), 3u);
  cl.expect_each_once();
}

TEST(HttpClient, PostOnAStaleConnectionIsNotRepeated) {
  Tls tls;
  HttpTestServer server(drop_second_request, tls.pem);
  Client cl(tls.pem);
  HttpClient c(cl.io, cl.settings(server.port()));
  ASSERT_EQ(cl.exchange(c, post()).failure, HttpFailure::none);
  const auto r = cl.exchange(c, post());
  // The server saw the create: it may exist, so the client must not send it again.
  EXPECT_EQ(r.failure, HttpFailure::io_error) << r.error;
  EXPECT_EQ(r.error, "read: stream truncated");
  EXPECT_EQ(server.request_count(), 2u);
  EXPECT_EQ(server.connections(), 1);
  cl.expect_each_once();
}

TEST(HttpClient, GetRetriedOnlyOnce) {
  Tls tls;
  HttpTestServer server(
      [](const ReceivedRequest& r) {
        if (r.connection == 1 && r.request_on_connection == 1) return ok();
        return Reply{.action = Action::close};
      },
      tls.pem);
  Client cl(tls.pem);
  HttpClient c(cl.io, cl.settings(server.port()));
  ASSERT_EQ(cl.exchange(c, get()).failure, HttpFailure::none);
  const auto r = cl.exchange(c, get());
  EXPECT_EQ(r.failure, HttpFailure::io_error) << r.error;
  EXPECT_EQ(server.request_count(), 3u);
}

TEST(HttpClient, OversizedBodyOrHeaderIsTooLarge) {
  Tls tls;
  HttpTestServer server(
      [](const ReceivedRequest& r) {
        if (r.target == "/big-body") return ok(std::string(5000, 'x'));
        return Reply{.body = "{}", .headers = {{"X-Junk", std::string(5000, 'h')}}};
      },
      tls.pem);
  Client cl(tls.pem);
  auto s = cl.settings(server.port());
  s.body_limit = 4096;
  s.header_limit = 4096;
  HttpClient c(cl.io, s);
  auto r = cl.exchange(c, get("/big-body"));
  EXPECT_EQ(r.failure, HttpFailure::too_large) << r.error;
  EXPECT_EQ(r.error, "read: body limit exceeded");
  EXPECT_EQ(r.status, 0);
  r = cl.exchange(c, get("/big-header"));
  EXPECT_EQ(r.failure, HttpFailure::too_large) << r.error;
  EXPECT_EQ(r.error, "read: header limit exceeded");
  // A body exactly at the limit is fine.
  HttpTestServer exact([](const ReceivedRequest&) { return ok(std::string(4096, 'x')); }, tls.pem);
  auto s2 = cl.settings(exact.port());
  s2.body_limit = 4096;
  HttpClient c3(cl.io, s2);
  r = cl.exchange(c3, get());
  EXPECT_EQ(r.failure, HttpFailure::none) << r.error;
  EXPECT_EQ(r.body.size(), 4096u);
}

TEST(HttpClient, GarbageIsABadResponse) {
  Tls tls;
  HttpTestServer server(
      [](const ReceivedRequest&) { return Reply{.action = Action::raw, .raw = "SSH-2.0-OpenSSH_9.2\r\n\r\n"}; },
      tls.pem);
  Client cl(tls.pem);
  HttpClient c(cl.io, cl.settings(server.port()));
  const auto r = cl.exchange(c, get());
  EXPECT_EQ(r.failure, HttpFailure::bad_response) << r.error;
  EXPECT_EQ(r.error, "read: bad version");
}

TEST(HttpClient, ConnectionCloseResponseIsNotReused) {
  Tls tls;
  HttpTestServer server([](const ReceivedRequest&) { return Reply{.body = "{}", .keep_alive = false}; },
                        tls.pem);
  Client cl(tls.pem);
  HttpClient c(cl.io, cl.settings(server.port()));
  for (int i = 0; i < 3; ++i) ASSERT_EQ(cl.exchange(c, get()).failure, HttpFailure::none);
  EXPECT_EQ(server.connections(), 3);
  EXPECT_EQ(server.request_count(), 3u);
}

TEST(HttpClient, ShutdownAnswersQueuedAndInFlightOnce) {
  Tls tls;
  HttpTestServer server([](const ReceivedRequest&) { return Reply{.action = Action::stall}; }, tls.pem);
  Client cl(tls.pem);
  HttpClient c(cl.io, cl.settings(server.port()));  // 2 connections
  for (int i = 0; i < 5; ++i) cl.send(c, post());
  ASSERT_TRUE(cl.run_until([&] { return server.request_count() == 2; }));
  c.shutdown();
  ASSERT_TRUE(cl.run_until([&] { return cl.all_done(); }));
  int io_errors = 0, not_sent = 0;
  for (const auto& r : cl.responses) {
    io_errors += r.failure == HttpFailure::io_error;  // written: may have reached the server
    not_sent += r.failure == HttpFailure::not_sent;   // still queued
    EXPECT_EQ(r.error, "client shut down");
  }
  EXPECT_EQ(io_errors, 2);
  EXPECT_EQ(not_sent, 3);
  EXPECT_EQ(c.open_connections(), 0u);
  EXPECT_EQ(c.in_flight(), 0u);

  const auto late = cl.send(c, get());
  ASSERT_TRUE(cl.run_until([&] { return cl.calls[late] > 0; }));
  EXPECT_EQ(cl.responses[late].failure, HttpFailure::not_sent);
  cl.io.run_for(20ms);
  cl.expect_each_once();
  EXPECT_EQ(server.request_count(), 2u);
}

TEST(HttpClient, NoCallbackAndNoRequestAfterDestruction) {
  Tls tls;
  HttpTestServer server([](const ReceivedRequest&) { return Reply{.action = Action::stall}; }, tls.pem);
  Client cl(tls.pem);
  {
    HttpClient c(cl.io, cl.settings(server.port()));
    cl.send(c, post());
    ASSERT_TRUE(cl.run_until([&] { return server.request_count() == 1; }));
    for (int i = 0; i < 3; ++i) cl.send(c, post());  // one connecting, two queued
  }
  // Whatever the client left on the loop finishes without calling back.
  cl.io.restart();
  cl.io.run();
  for (int n : cl.calls) EXPECT_EQ(n, 0);
  EXPECT_EQ(server.request_count(), 1u);
}
