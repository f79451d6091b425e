// An asynchronous HTTP/1.1 client over TLS (or plain TCP for http:// URLs)
// with a keep-alive pool for one origin. Runs on the caller's io_context;
// single-threaded, no locks. Beast and Asio SSL stay inside http_client.cpp.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace predictd {

struct HttpClientSettings {
  std::string base_url;                 // "https://host[:port][/prefix]"
  std::optional<std::string> ca_file;   // added to the system CA store
  bool verify_peer = true;
  int max_connections = 32;
  std::chrono::milliseconds connect_timeout{10000};   // resolve + connect + TLS handshake
  std::chrono::milliseconds request_timeout{30000};   // write + read of one exchange
  std::size_t header_limit = 64 * 1024;
  std::uint64_t body_limit = 64ull * 1024 * 1024;
  std::string user_agent;
};

struct HttpRequest {
  std::string method;  // "GET", "POST"
  std::string path;    // appended to base_url's prefix: "/v1/predictions/abc"
  std::string body;    // sent with Content-Type: application/json when non-empty
  std::vector<std::pair<std::string, std::string>> headers;
  // Asked just before the request is written (after any connect): true keeps
  // it back, answered HttpFailure::held. Lets a Retry-After that arrived while
  // the request waited for its connection still hold it.
  std::function<bool()> hold;
};

enum class HttpFailure {
  none,
  not_sent,      // resolve, connect or TLS handshake failed: the request never left
  held,          // not sent: the request's hold() said so
  timeout,       // after the request may have been sent
  io_error,      // reset or EOF after the request may have been sent
  too_large,     // header or body over the limit
  bad_response,  // not parseable as HTTP
};

struct HttpResponse {
  HttpFailure failure = HttpFailure::none;
  std::string error;  // human-readable, for logs, when failure != none
  int status = 0;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // lower-case names
  std::chrono::milliseconds latency{0};  // from getting a connection to the end (not the time queued)

  const std::string* header(std::string_view lower_name) const;
};

// Receives a 2xx response's body piece by piece as it arrives, so that a
// download never sits whole in memory. Returning false aborts the exchange
// (e.g. a local write failed); the connection is then closed.
using BodySink = std::function<bool(std::string_view chunk)>;

class HttpClient final {
 public:
  using Callback = std::function<void(HttpResponse)>;

  HttpClient(boost::asio::io_context& io, HttpClientSettings settings);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Queues the request; `done` runs on the io_context exactly once, unless the
  // client is destroyed first. Requests beyond max_connections wait in FIFO order.
  // When a kept-alive connection turns out to have been closed by the server
  // (no response byte), an idempotent request (GET) is sent once more on a new
  // connection; a POST only if not a byte of it had been written, otherwise it
  // fails as io_error: the server may have acted on it.
  void send(HttpRequest request, Callback done);
  // Like send(), but a 2xx body goes to `sink` (at most `body_limit` bytes, else
  // too_large) and request_timeout bounds each wait for data, not the whole
  // body; any other status comes back whole in `body` (up to 64 KiB).
  void stream(HttpRequest request, std::uint64_t body_limit, BodySink sink, Callback done);

  std::size_t in_flight() const;      // sent or waiting for a connection
  std::size_t open_connections() const;
  // Cancels queued and in-flight requests and closes connections. Each callback
  // still runs once: not_sent if its request had not been written (queued or
  // connecting), io_error if it may have reached the server. A send() after
  // shutdown() is answered not_sent.
  void shutdown();

 private:
  class Impl;
  std::shared_ptr<Impl> impl_;  // shared with its coroutines, which may outlive the client briefly
};

}  // namespace predictd
