// A tiny scriptable HTTP/1.1 server for tests: 127.0.0.1:0, TLS or plain,
// its own thread and io_context. A handler decides each answer, including the
// failures a client has to survive (stall, reset, close without answer, bytes
// that are not HTTP). It counts connections so tests can prove reuse and caps.
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

#include "tls_cert.h"

namespace predictd::test {

struct ReceivedRequest {
  std::string method;
  std::string target;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // as received, in order
  int connection = 0;             // 1-based, in accept order
  int request_on_connection = 0;  // 1-based

  // The value of the first header with this name (case-insensitive), or nullopt.
  std::optional<std::string> header(std::string_view name) const;
};

struct Reply {
  enum class Action {
    respond,  // send the response below
    stall,    // never answer; keep the connection open
    reset,    // close with RST (SO_LINGER 0)
    close,    // close without answering (FIN, no TLS close_notify)
    raw,      // write `raw` as is, then close
  };
  Action action = Action::respond;
  int status = 200;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  bool keep_alive = true;      // false: "Connection: close", then close
  bool close_after = false;    // close after answering although it announced keep-alive
  std::chrono::milliseconds delay{0};  // before acting
  std::string raw;
};

class HttpTestServer final {
 public:
  // Called on the server's thread, so it must be thread-safe.
  using Handler = std::function<Reply(const ReceivedRequest&)>;

  // With `tls`, serves HTTPS with that certificate and key.
  explicit HttpTestServer(Handler handler, std::optional<PemPair> tls = std::nullopt);
  ~HttpTestServer();
  HttpTestServer(const HttpTestServer&) = delete;
  HttpTestServer& operator=(const HttpTestServer&) = delete;

  std::uint16_t port() const;
  int connections() const;      // accepted so far
  int open_connections() const;
  int max_open_connections() const;
  std::vector<ReceivedRequest> requests() const;
  std::size_t request_count() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace predictd::test
