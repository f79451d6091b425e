#include "http_client.h"

#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <deque>
#include <optional>
#include <stdexcept>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <spdlog/spdlog.h>

namespace predictd {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

const std::string* HttpResponse::header(std::string_view lower_name) const {
  for (const auto& [k, v] : headers)
    if (k == lower_name) return &v;
  return nullptr;
}

namespace {

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

struct Origin {
  bool tls = true;
  std::string host;  // without IPv6 brackets: what we resolve and verify
  std::string port;
  std::string prefix;
  std::string host_header;
  bool ip_literal = false;
};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// "http[s]://host[:port][/prefix]", host a name, an IPv4 or a bracketed IPv6 address.
Origin parse_origin(const std::string& url) {
  const auto bad = [&] { return std::invalid_argument("not an http(s) URL: " + url); };
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) throw bad();
  const std::string scheme = lower(url.substr(0, scheme_end));
  if (scheme != "http" && scheme != "https") throw bad();
  Origin o;
  o.tls = scheme == "https";
  const auto rest = std::string_view(url).substr(scheme_end + 3);
  const auto slash = rest.find('/');
  const auto authority = rest.substr(0, slash);
  o.prefix = slash == std::string_view::npos ? "" : std::string(rest.substr(slash));
  if (o.prefix.find_first_of("?#") != std::string::npos || authority.find('@') != std::string_view::npos)
    throw bad();

  const bool bracketed = authority.starts_with('[');
  std::string_view host = authority, port;
  bool has_port = false;
  const auto colon = authority.find(':', bracketed ? authority.find(']') : 0);
  if (colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    has_port = true;
  }
  if (bracketed) {
    if (host.size() < 3 || !host.ends_with(']')) throw bad();
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty() || host.find_first_of("[]") != std::string_view::npos) throw bad();
  o.host = host;
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(o.host, ec);
  o.ip_literal = !ec;
  if (bracketed && !(o.ip_literal && address.is_v6())) throw bad();
  if (has_port && (port.empty() || port.size() > 5 ||
                   !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
                   std::stoi(std::string(port)) > 65535))
    throw bad();

  const std::string default_port = o.tls ? "443" : "80";
  o.port = has_port ? std::string(port) : default_port;
  o.host_header = bracketed ? "[" + o.host + "]" : o.host;
  if (o.port != default_port) o.host_header += ":" + o.port;
  while (!o.prefix.empty() && o.prefix.back() == '/') o.prefix.pop_back();
  return o;
}

// Safe to repeat after a connection died without an answer (RFC 9110 §9.2.2).
bool idempotent(http::verb v) {
  return v == http::verb::get || v == http::verb::head || v == http::verb::options || v == http::verb::put ||
         v == http::verb::delete_;
}

HttpFailure classify_read(const beast::error_code& ec) {
  if (ec == beast::error::timeout) return HttpFailure::timeout;
  if (ec == http::error::body_limit || ec == http::error::header_limit || ec == http::error::buffer_overflow)
    return HttpFailure::too_large;
  // The connection ended (cleanly or mid-message): the server or the network gave up.
  if (ec == http::error::end_of_stream || ec == http::error::partial_message) return HttpFailure::io_error;
  // Any other parser error: the server sent something that is not HTTP/1.1.
  if (ec.category() == http::make_error_code(http::error::bad_version).category()) return HttpFailure::bad_response;
  return HttpFailure::io_error;  // reset, TLS truncation, ...
}

// A body that hands 2xx payloads to a BodySink and keeps any other in memory.
// Which of the two is chosen after the header is read, before the body starts.
struct SinkBody {
  struct value_type {
    const BodySink* sink = nullptr;
    std::string text;
    bool sink_refused = false;
  };
  class reader {
   public:
    template <bool isRequest, class Fields>
    reader(http::header<isRequest, Fields>&, value_type& body) : body_(body) {}
    void init(const boost::optional<std::uint64_t>&, beast::error_code& ec) { ec = {}; }
    template <class ConstBufferSequence>
    std::size_t put(const ConstBufferSequence& buffers, beast::error_code& ec) {
      ec = {};
      std::size_t n = 0;
      for (const auto b : beast::buffers_range_ref(buffers)) {
        const std::string_view piece(static_cast<const char*>(b.data()), b.size());
        if (!body_.sink) {
          body_.text.append(piece);
        } else if (!(*body_.sink)(piece)) {
          body_.sink_refused = true;
          ec = asio::error::operation_aborted;
          return n;
        }
        n += piece.size();
      }
      return n;
    }
    void finish(beast::error_code& ec) { ec = {}; }

   private:
    value_type& body_;
  };
};

constexpr std::uint64_t kStreamErrorBodyLimit = 64 * 1024;
// How long a released connection sits idle before it is watched for the server closing it.
constexpr std::chrono::milliseconds kIdleWatchDelay{200};

HttpResponse failed(HttpFailure f, std::string error) {
  HttpResponse r;
  r.failure = f;
  r.error = std::move(error);
  return r;
}

}  // namespace

class HttpClient::Impl : public std::enable_shared_from_this<HttpClient::Impl> {
 public:
  Impl(asio::io_context& io, HttpClientSettings settings)
      : io_(io), settings_(std::move(settings)), origin_(parse_origin(settings_.base_url)),
        ssl_(ssl::context::tls_client) {
    if (settings_.max_connections < 1) throw std::invalid_argument("max_connections must be at least 1");
    if (origin_.tls) {
      ssl_.set_default_verify_paths();
      if (settings_.ca_file) ssl_.load_verify_file(*settings_.ca_file);
      ssl_.set_verify_mode(settings_.verify_peer ? ssl::verify_peer : ssl::verify_none);
    }
  }

  // One pooled connection. Everything that can be pending on it (resolve,
  // connect, handshake, write, read, idle watch) is cancelled by close().
  struct Conn {
    Conn(asio::io_context& io, ssl::context* tls) : resolver(io) {
      if (tls)
        secure.emplace(io, *tls);
      else
        plain.emplace(io);
    }
    tcp::resolver resolver;
    std::optional<beast::tcp_stream> plain;
    std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
    beast::flat_buffer buffer;
    bool connected = false;      // handshake done, usable for requests
    bool watched = false;        // an idle watch is pending on the socket
    bool host_mismatch = false;  // the certificate chain was fine but named another host

    beast::tcp_stream& lowest() { return secure ? beast::get_lowest_layer(*secure) : *plain; }
    void close() {
      resolver.cancel();
      beast::error_code ec;
      lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
      lowest().close();
    }
  };
  using ConnPtr = std::shared_ptr<Conn>;

  struct Pending {
    HttpRequest request;
    Callback done;
    BodySink sink;  // set: a streamed exchange
    std::uint64_t sink_limit = 0;
  };

  void send(HttpRequest request, Callback done) {
    if (stopped_) {
      // Still exactly one callback, but never from inside send().
      asio::post(io_, [self = shared_from_this(), done = std::move(done)] {
        if (!self->destroyed_) done(failed(HttpFailure::not_sent, "client shut down"));
      });
      return;
    }
    queue_.push_back(Pending{std::move(request), std::move(done)});
    pump();
  }

  void stream(HttpRequest request, std::uint64_t limit, BodySink sink, Callback done) {
    if (stopped_) {
      send(std::move(request), std::move(done));  // answered not_sent
      return;
    }
    queue_.push_back(Pending{std::move(request), std::move(done), std::move(sink), limit});
    pump();
  }

  std::size_t in_flight() const { return queue_.size() + busy_.size(); }
  std::size_t open_connections() const { return idle_.size() + busy_.size(); }

  void shutdown() {
    if (stopped_) return;
    stopped_ = true;
    watch_timer_.cancel();
    for (auto& c : idle_) c->close();
    idle_.clear();
    // In-flight exchanges see their operation aborted and answer themselves.
    for (auto& c : busy_) c->close();
    auto queued = std::move(queue_);
    queue_.clear();
    if (destroyed_ || queued.empty()) return;
    asio::post(io_, [self = shared_from_this(), queued = std::move(queued)]() mutable {
      for (auto& p : queued)
        if (!self->destroyed_) p.done(failed(HttpFailure::not_sent, "client shut down"));
    });
  }

  bool destroyed_ = false;

 private:
  void pump() {
    while (!stopped_ && !queue_.empty()) {
      ConnPtr conn = take_idle();
      if (!conn) {
        if (open_connections() >= static_cast<std::size_t>(settings_.max_connections)) return;
        conn = new_conn();
      }
      busy_.push_back(conn);
      Pending p = std::move(queue_.front());
      queue_.pop_front();
      // `self` is a parameter, not a capture: it must live in the frame
      // before the coroutine first runs, which may be after ~HttpClient.
      asio::co_spawn(io_, exchange(shared_from_this(), std::move(conn), std::move(p)), [](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          spdlog::error("api_error op=http error=\"internal: {}\"", ex.what());
        }
      });
    }
  }

  ConnPtr new_conn() { return std::make_shared<Conn>(io_, origin_.tls ? &ssl_ : nullptr); }

  // The most recently used idle connection that the server has not closed.
  // Checking just before use (besides the idle watch) narrows the window in
  // which a request can be written into a connection the server already gave up.
  ConnPtr take_idle() {
    while (!idle_.empty()) {
      ConnPtr c = std::move(idle_.back());
      idle_.pop_back();
      auto& sock = c->lowest().socket();
      char byte;
      const ssize_t n = ::recv(sock.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (c->watched) {
          beast::error_code ec;
          sock.cancel(ec);  // ends the idle watch; its handler sees the conn is no longer idle
          c->watched = false;
        }
        return c;
      }
      c->close();  // EOF, an alert, stray bytes or an error: not reusable
    }
    return nullptr;
  }

  void release(const ConnPtr& conn, bool reusable) {
    busy_.erase(std::find(busy_.begin(), busy_.end(), conn));
    if (!reusable || stopped_) {
      conn->close();
      return;
    }
    conn->lowest().expires_never();
    idle_.push_back(conn);
    // A busy client takes the connection again within milliseconds (and
    // checks it then); only connections that stay idle get a watch.
    if (!watch_timer_armed_) {
      watch_timer_armed_ = true;
      watch_timer_.expires_after(kIdleWatchDelay);
      watch_timer_.async_wait([weak = weak_from_this()](beast::error_code ec) {
        auto self = weak.lock();
        if (!self) return;
        self->watch_timer_armed_ = false;
        if (!ec && !self->stopped_) self->watch_idle();
      });
    }
  }

  // Notice a server closing an idle connection (keep-alive timeout) at once,
  // so its socket does not linger in CLOSE_WAIT until the next take.
  void watch_idle() {
    for (const auto& conn : idle_) {
      if (conn->watched) continue;
      conn->watched = true;
      conn->lowest().socket().async_wait(
          tcp::socket::wait_read, [weak = weak_from_this(), c = std::weak_ptr<Conn>(conn)](beast::error_code ec) {
            auto self = weak.lock();
            auto conn = c.lock();
            if (ec || !self || !conn) return;
            auto it = std::find(self->idle_.begin(), self->idle_.end(), conn);
            if (it == self->idle_.end()) return;
            self->idle_.erase(it);
            conn->watched = false;
            conn->close();
            self->pump();  // a slot freed up
          });
    }
  }

  void replace_busy(const ConnPtr& old_conn, const ConnPtr& new_conn) {
    *std::find(busy_.begin(), busy_.end(), old_conn) = new_conn;
  }

  static std::string tls_error(Conn& c, const beast::error_code& ec) {
    // OpenSSL's reason alone ("certificate verify failed"), without asio's "(SSL routines)".
    const char* reason =
        ec.category() == asio::error::get_ssl_category() ? ERR_reason_error_string(static_cast<unsigned long>(ec.value()))
                                                         : nullptr;
    std::string e = "TLS handshake: " + (reason ? std::string(reason) : ec.message());
    if (c.host_mismatch) return e + " (certificate does not match the host name)";
    const long v = SSL_get_verify_result(c.secure->native_handle());
    if (v != X509_V_OK) e += std::string(" (") + X509_verify_cert_error_string(v) + ")";
    return e;
  }

  // Resolve, connect and (for https) handshake, all under one connect_timeout.
  // Failures here are not_sent: not a byte of the request has been written.
  asio::awaitable<std::optional<HttpResponse>> connect(ConnPtr c) {
    const auto deadline = Clock::now() + settings_.connect_timeout;
    // The resolver has no timeout of its own: cancel it at the deadline.
    asio::steady_timer guard(io_, deadline);
    guard.async_wait([c](beast::error_code ec) {
      if (!ec) c->resolver.cancel();
    });
    auto [rec, results] = co_await c->resolver.async_resolve(origin_.host, origin_.port, use_nothrow);
    guard.cancel();
    if (stopped_) co_return failed(HttpFailure::not_sent, "client shut down");
    if (rec == asio::error::operation_aborted) co_return failed(HttpFailure::not_sent, "resolve: timed out");
    if (rec) co_return failed(HttpFailure::not_sent, "resolve " + origin_.host + ": " + rec.message());

    auto& tcp_layer = c->lowest();
    tcp_layer.expires_at(deadline);
    auto [cec, ep] = co_await tcp_layer.async_connect(results, use_nothrow);
    if (stopped_) co_return failed(HttpFailure::not_sent, "client shut down");
    if (cec == beast::error::timeout) co_return failed(HttpFailure::not_sent, "connect: timed out");
    if (cec) co_return failed(HttpFailure::not_sent, "connect: " + cec.message());
    beast::error_code ignored;
    tcp_layer.socket().set_option(tcp::no_delay(true), ignored);

    if (c->secure) {
      // SNI (not for IP literals, RFC 6066), host-name verification and the
      // verify mode of the context always go together.
      if (!origin_.ip_literal && !SSL_set_tlsext_host_name(c->secure->native_handle(), origin_.host.c_str()))
        co_return failed(HttpFailure::not_sent, "TLS: cannot set SNI host name");
      if (settings_.verify_peer) {
        c->secure->set_verify_callback(
            [check = ssl::host_name_verification(origin_.host), c = c.get()](bool pre, ssl::verify_context& ctx) {
              const bool ok = check(pre, ctx);
              if (pre && !ok) c->host_mismatch = true;
              return ok;
            });
      }
      auto [hec] = co_await c->secure->async_handshake(ssl::stream_base::client, use_nothrow);
      if (stopped_) co_return failed(HttpFailure::not_sent, "client shut down");
      if (hec == beast::error::timeout) co_return failed(HttpFailure::not_sent, "TLS handshake: timed out");
      if (hec) co_return failed(HttpFailure::not_sent, tls_error(*c, hec));
    }
    c->connected = true;
    co_return std::nullopt;
  }

  struct Exchanged {
    HttpResponse response;
    bool reusable = false;
    bool nothing_received = false;  // the connection died before any response byte
  };

  template <class Stream>
  asio::awaitable<Exchanged> roundtrip(Stream& stream, Conn& c, const http::request<http::string_body>& req,
                                       const Pending& p) {
    Exchanged x;
    // One deadline for write + read together.
    beast::get_lowest_layer(stream).expires_after(settings_.request_timeout);
    auto [wec, written] = co_await http::async_write(stream, req, use_nothrow);
    if (wec) {
      x.nothing_received = true;
      // A failed write never delivered the whole request; with 0 bytes, none of it.
      if (wec == beast::error::timeout && !stopped_)
        x.response = failed(HttpFailure::timeout, "write: timed out");
      else
        x.response = failed(written == 0 ? HttpFailure::not_sent : HttpFailure::io_error,
                            stopped_ ? "client shut down" : "write: " + wec.message());
      co_return x;
    }

    if (p.sink) co_return co_await read_streamed(stream, c, p, std::move(x));
    http::response_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(settings_.header_limit, UINT32_MAX)));
    parser.body_limit(settings_.body_limit);
    if (req.method() == http::verb::head) parser.skip(true);
    auto [rec, read] = co_await http::async_read(stream, c.buffer, parser, use_nothrow);
    if (rec) {
      x.nothing_received = !parser.got_some() && c.buffer.size() == 0;
      // After shutdown the request was written all the same: it may have reached the server.
      const HttpFailure f = stopped_ ? HttpFailure::io_error : classify_read(rec);
      x.response = failed(f, stopped_ ? "client shut down"
                                      : "read: " + (f == HttpFailure::timeout ? "timed out" : rec.message()));
      co_return x;
    }

    auto& res = parser.get();
    x.response.status = static_cast<int>(res.result_int());
    x.response.headers.reserve(static_cast<std::size_t>(std::distance(res.begin(), res.end())));
    for (const auto& f : res) {
      std::string name(f.name_string());
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return std::tolower(ch); });
      x.response.headers.emplace_back(std::move(name), std::string(f.value()));
    }
    x.response.body = std::move(res.body());
    x.reusable = res.keep_alive() && parser.is_done();
    co_return x;
  }

  // The header under request_timeout, then the body with request_timeout per
  // read: a large download may take long as long as data keeps coming.
  template <class Stream>
  asio::awaitable<Exchanged> read_streamed(Stream& stream, Conn& c, const Pending& p, Exchanged x) {
    http::response_parser<SinkBody> parser;
    parser.header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(settings_.header_limit, UINT32_MAX)));
    // Content-Length is checked against the limit as the header ends.
    parser.body_limit(std::max(p.sink_limit, kStreamErrorBodyLimit));
    auto [hec, hn] = co_await http::async_read_header(stream, c.buffer, parser, use_nothrow);
    beast::error_code ec = hec;
    bool skip_body = false;
    if (!ec) {
      const unsigned status = parser.get().result_int();
      const bool to_sink = status >= 200 && status < 300;
      if (to_sink) parser.get().body().sink = &p.sink;
      if (to_sink && p.sink_limit < kStreamErrorBodyLimit) parser.body_limit(p.sink_limit);
      // An error page too large to keep: answer with its status and drop the connection.
      const auto length = parser.content_length();
      skip_body = !to_sink && length && *length > kStreamErrorBodyLimit;
      if (!to_sink) parser.body_limit(kStreamErrorBodyLimit);
      while (!skip_body && !ec && !parser.is_done()) {
        beast::get_lowest_layer(stream).expires_after(settings_.request_timeout);
        auto [rec, n] = co_await http::async_read_some(stream, c.buffer, parser, use_nothrow);
        ec = rec;
      }
    }
    if (ec) {
      x.nothing_received = !parser.got_some() && c.buffer.size() == 0;
      if (parser.get().body().sink_refused) {
        x.response = failed(HttpFailure::io_error, "the body sink refused data");
        co_return x;
      }
      const HttpFailure f = stopped_ ? HttpFailure::io_error : classify_read(ec);
      x.response = failed(f, stopped_ ? "client shut down"
                                      : "read: " + (f == HttpFailure::timeout ? "timed out" : ec.message()));
      co_return x;
    }
    auto& res = parser.get();
    x.response.status = static_cast<int>(res.result_int());
    for (const auto& f : res) {
      std::string name(f.name_string());
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return std::tolower(ch); });
      x.response.headers.emplace_back(std::move(name), std::string(f.value()));
    }
    x.response.body = std::move(res.body().text);
    x.reusable = !skip_body && res.keep_alive() && parser.is_done();
    co_return x;
  }

  http::request<http::string_body> build(HttpRequest& r) const {
    http::request<http::string_body> req;
    req.version(11);
    const auto verb = http::string_to_verb(r.method);
    if (verb == http::verb::unknown)
      req.method_string(r.method);
    else
      req.method(verb);
    req.target(origin_.prefix + r.path);
    req.set(http::field::host, origin_.host_header);
    if (!settings_.user_agent.empty()) req.set(http::field::user_agent, settings_.user_agent);
    for (const auto& [k, v] : r.headers) req.set(k, v);
    if (!r.body.empty()) {
      req.set(http::field::content_type, "application/json");
      req.body() = std::move(r.body);
    }
    req.keep_alive(true);
    req.prepare_payload();
    return req;
  }

  asio::awaitable<void> exchange([[maybe_unused]] std::shared_ptr<Impl> self, ConnPtr conn, Pending p) {
    const auto start = Clock::now();
    std::optional<HttpResponse> out;
    bool reusable = false;

    std::optional<http::request<http::string_body>> req;
    try {
      req.emplace(build(p.request));
    } catch (const std::exception& e) {
      out = failed(HttpFailure::not_sent, std::string("bad request: ") + e.what());
    }
    if (out) co_await asio::post(io_, asio::use_awaitable);  // the callback must not run inside send()

    // Stale keep-alive connections. A request on a reused connection that
    // dies before any response byte arrives (EOF or reset: the server closed
    // it as idle) is tried once more on a fresh connection when:
    //  - the write failed with nothing written: the request never left, any method;
    //  - the method is idempotent (GET): repeating it is harmless.
    // A POST whose bytes were written is not repeated: HTTP cannot tell "closed
    // before reading it" from "read it, created the prediction, then died", and
    // a duplicate create costs money. It fails as io_error (an attempt that may
    // have reached the server), so the engine backs off and reconciles. What
    // keeps that rare is the liveness check in take_idle() and the idle watch
    // that drops connections the server has closed before they are picked.
    for (int round = 0; req && !out; ++round) {
      if (stopped_) {
        out = failed(HttpFailure::not_sent, "client shut down");
        break;
      }
      const bool reused = conn->connected;
      if (!conn->connected) {
        out = co_await connect(conn);
        if (out) break;
      }
      if (p.request.hold && !destroyed_ && p.request.hold()) {
        // Closed, not kept: bytes the server sent after the handshake (TLS 1.3
        // session tickets) are still unread, and take_idle() drops such a one.
        out = failed(HttpFailure::held, "held back before sending");
        break;
      }
      // Not a ?: expression: GCC 12 miscompiles co_await inside a conditional operator.
      Exchanged x;
      if (conn->secure)
        x = co_await roundtrip(*conn->secure, *conn, *req, p);
      else
        x = co_await roundtrip(*conn->plain, *conn, *req, p);
      const auto f = x.response.failure;
      const bool stale = reused && round == 0 && !stopped_ && x.nothing_received &&
                         (f == HttpFailure::not_sent || (f == HttpFailure::io_error && idempotent(req->method())));
      if (!stale) {
        out = std::move(x.response);
        reusable = f == HttpFailure::none && x.reusable;
        break;
      }
      spdlog::debug("http_retry reason=stale_connection method={} error=\"{}\"", std::string(req->method_string()),
                    x.response.error);
      auto fresh = new_conn();
      replace_busy(conn, fresh);
      conn->close();
      conn = std::move(fresh);
    }

    out->latency = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
    release(conn, reusable);
    pump();
    if (!destroyed_) p.done(std::move(*out));
  }

  asio::io_context& io_;
  HttpClientSettings settings_;
  Origin origin_;
  ssl::context ssl_;
  std::deque<Pending> queue_;     // FIFO of requests waiting for a connection
  std::vector<ConnPtr> idle_;     // used LIFO: the most recently used is the least likely stale
  std::vector<ConnPtr> busy_;     // connections with an exchange running on them
  asio::steady_timer watch_timer_{io_};
  bool watch_timer_armed_ = false;
  bool stopped_ = false;
};

HttpClient::HttpClient(asio::io_context& io, HttpClientSettings settings)
    : impl_(std::make_shared<Impl>(io, std::move(settings))) {}

HttpClient::~HttpClient() {
  impl_->destroyed_ = true;
  impl_->shutdown();
}

void HttpClient::send(HttpRequest request, Callback done) { impl_->send(std::move(request), std::move(done)); }
void HttpClient::stream(HttpRequest request, std::uint64_t body_limit, BodySink sink, Callback done) {
  impl_->stream(std::move(request), body_limit, std::move(sink), std::move(done));
}
std::size_t HttpClient::in_flight() const { return impl_->in_flight(); }
std::size_t HttpClient::open_connections() const { return impl_->open_connections(); }
void HttpClient::shutdown() { impl_->shutdown(); }

}  // namespace predictd
