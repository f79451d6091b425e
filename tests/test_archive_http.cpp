// HttpClient::stream, the download path of the archiver, against the scripted
// in-process TLS server.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>

#include "http_client.h"
#include "http_test_server.h"
#include "test_util.h"
#include "tls_cert.h"

using namespace predictd;
using namespace std::chrono_literals;
using test::HttpTestServer;
using test::ReceivedRequest;
using test::Reply;

namespace {

struct Streamer {
  PemPair pem = make_self_signed({"localhost"}, {"127.0.0.1"});
  test::TempDir dir;
  boost::asio::io_context io{1};
  std::unique_ptr<HttpTestServer> server;
  std::unique_ptr<HttpClient> client;

  explicit Streamer(HttpTestServer::Handler handler) {
    test::write_file(dir.file("ca.pem"), pem.cert_pem);
    server = std::make_unique<HttpTestServer>(std::move(handler), pem);
    HttpClientSettings s;
    s.base_url = "https://localhost:" + std::to_string(server->port());
    s.ca_file = dir.file("ca.pem");
    s.max_connections = 1;
    s.connect_timeout = 5s;
    s.request_timeout = 5s;
    client = std::make_unique<HttpClient>(io, s);
  }

  struct Result {
    HttpResponse response;
    std::string sunk;
    int pieces = 0;
    int calls = 0;
  };

  Result stream(std::uint64_t limit, std::function<bool(std::string_view)> refuse = {}) {
    Result r;
    client->stream(
        {.method = "GET", .path = "/file"}, limit,
        [&](std::string_view piece) {
          if (refuse && refuse(piece)) return false;
          r.sunk.append(piece);
          ++r.pieces;
          return true;
        },
        [&](HttpResponse res) {
          ++r.calls;
          r.response = std::move(res);
        });
    const auto end = std::chrono::steady_clock::now() + 20s;
    while (r.calls == 0 && std::chrono::steady_clock::now() < end) {
      io.run_for(5ms);
      if (io.stopped()) io.restart();
    }
    return r;
  }
};

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7) % 26);
  return s;
}

}  // namespace

TEST(HttpStream, SuccessBodyGoesToTheSinkInPiecesAndTheConnectionIsReused) {
  const std::string body = pattern(3 * 1024 * 1024 + 17);
  Streamer s([&](const ReceivedRequest&) {
    return Reply{.status = 200, .body = body, .headers = {{"Content-Type", "video/mp4"}}};
  });
  auto r = s.stream(10 * 1024 * 1024);
  ASSERT_EQ(r.calls, 1);
  EXPECT_EQ(r.response.failure, HttpFailure::none) << r.response.error;
  EXPECT_EQ(r.response.status, 200);
  EXPECT_TRUE(r.response.body.empty());
  ASSERT_NE(r.response.header("content-type"), nullptr);
  EXPECT_EQ(*r.response.header("content-type"), "video/mp4");
  EXPECT_EQ(r.sunk, body);
  EXPECT_GT(r.pieces, 3);  // never handed over whole
  r = s.stream(10 * 1024 * 1024);
  EXPECT_EQ(r.sunk, body);
  EXPECT_EQ(s.server->connections(), 1);
}

TEST(HttpStream, OtherStatusesComeBackWholeWithoutTouchingTheSink) {
  Streamer s([](const ReceivedRequest&) {
    return Reply{.status = 404, .body = "Not found", .headers = {{"Content-Type", "text/plain"}}};
  });
  auto r = s.stream(1024 * 1024);
  EXPECT_EQ(r.response.failure, HttpFailure::none);
  EXPECT_EQ(r.response.status, 404);
  EXPECT_EQ(r.response.body, "Not found");
  EXPECT_EQ(r.pieces, 0);
}

TEST(HttpStream, BodyOverTheLimitIsTooLarge) {
  Streamer s([](const ReceivedRequest&) { return Reply{.status = 200, .body = pattern(200 * 1024)}; });
  auto r = s.stream(100 * 1024);
  EXPECT_EQ(r.response.failure, HttpFailure::too_large) << r.response.error;
  EXPECT_LE(r.sunk.size(), 100u * 1024);
}

TEST(HttpStream, SinkRefusalEndsTheExchangeAndDropsTheConnection) {
  Streamer s([](const ReceivedRequest&) { return Reply{.status = 200, .body = pattern(1024 * 1024)}; });
  auto r = s.stream(2 * 1024 * 1024, [](std::string_view) { return true; });
  EXPECT_EQ(r.response.failure, HttpFailure::io_error);
  EXPECT_EQ(r.response.error, "the body sink refused data");
  EXPECT_EQ(s.client->open_connections(), 0u);
  // The next exchange gets a fresh connection and works.
  r = s.stream(2 * 1024 * 1024);
  EXPECT_EQ(r.response.failure, HttpFailure::none);
  EXPECT_EQ(r.sunk.size(), 1024u * 1024);
  EXPECT_EQ(s.server->connections(), 2);
}
