#include "http_client.h"

#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <deque>
#include <regex>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl.hpp>
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
  std::string host;
  std::string port;
  std::string prefix;
};

Origin parse_origin(const std::string& url) {
  static const std::regex kUrl(R"(^(https?)://([^/:?#]+)(?::([0-9]{1,5}))?(/[^?#]*)?$)");
  std::smatch m;
  if (!std::regex_match(url, m, kUrl)) throw std::invalid_argument("not an http(s) URL: " + url);
  Origin o;
  o.tls = m[1] == "https";
  o.host = m[2];
  o.port = m[3].matched ? m[3].str() : (o.tls ? "443" : "80");
  o.prefix = m[4].matched ? m[4].str() : "";
  while (!o.prefix.empty() && o.prefix.back() == '/') o.prefix.pop_back();
  return o;
}

}  // namespace

class HttpClient::Impl : public std::enable_shared_from_this<HttpClient::Impl> {
 public:
  Impl(asio::io_context& io, HttpClientSettings settings)
      : io_(io), settings_(std::move(settings)), origin_(parse_origin(settings_.base_url)),
        ssl_(ssl::context::tls_client) {
    if (origin_.tls) {
      ssl_.set_default_verify_paths();
      if (settings_.ca_file) ssl_.load_verify_file(*settings_.ca_file);
      ssl_.set_verify_mode(settings_.verify_peer ? ssl::verify_peer : ssl::verify_none);
    }
    host_header_ = origin_.host;
    if ((origin_.tls && origin_.port != "443") || (!origin_.tls && origin_.port != "80"))
      host_header_ += ":" + origin_.port;
  }

  struct Conn {
    std::unique_ptr<beast::tcp_stream> plain;
    std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> secure;
    beast::flat_buffer buffer;
    bool connected = false;

    beast::tcp_stream& lowest() { return secure ? beast::get_lowest_layer(*secure) : *plain; }
    void close() {
      if (!secure && !plain) return;
      beast::error_code ec;
      lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
      lowest().close();
    }
  };

  struct Pending {
    HttpRequest request;
    Callback done;
  };

  void send(HttpRequest request, Callback done) {
    queue_.push_back(Pending{std::move(request), std::move(done)});
    pump();
  }

  std::size_t in_flight() const { return queue_.size() + active_; }
  std::size_t open_connections() const { return idle_.size() + active_; }

  void shutdown() {
    stopped_ = true;
    for (auto& c : idle_) c->close();
    idle_.clear();
    for (auto& c : busy_) c->close();
    auto queued = std::move(queue_);
    queue_.clear();
    for (auto& p : queued) {
      HttpResponse r;
      r.failure = HttpFailure::io_error;
      r.error = "client shut down";
      if (!destroyed_) p.done(std::move(r));
    }
  }

  bool destroyed_ = false;

 private:
  void pump() {
    while (!stopped_ && !queue_.empty()) {
      std::shared_ptr<Conn> conn = take_idle();
      if (!conn) {
        if (active_ + idle_.size() >= static_cast<std::size_t>(settings_.max_connections)) return;
        conn = std::make_shared<Conn>();
      }
      Pending p = std::move(queue_.front());
      queue_.pop_front();
      ++active_;
      busy_.push_back(conn);
      asio::co_spawn(io_, exchange(conn, std::move(p)), [](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          spdlog::error("api_error op=http error=\"internal: {}\"", ex.what());
        }
      });
    }
  }

  // An idle connection whose peer has not closed it (a readable idle socket
  // means EOF or an alert: it would fail the next request).
  std::shared_ptr<Conn> take_idle() {
    while (!idle_.empty()) {
      auto c = idle_.back();
      idle_.pop_back();
      char byte;
      const ssize_t n = ::recv(c->lowest().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return c;
      c->close();
    }
    return nullptr;
  }

  void release(const std::shared_ptr<Conn>& conn, bool reusable) {
    --active_;
    busy_.erase(std::find(busy_.begin(), busy_.end(), conn));
    if (reusable && !stopped_)
      idle_.push_back(conn);
    else
      conn->close();
  }

  asio::awaitable<beast::error_code> connect(Conn& c) {
    tcp::resolver resolver(io_);
    auto [rec, results] = co_await resolver.async_resolve(origin_.host, origin_.port, use_nothrow);
    if (rec) co_return rec;
    auto stream = std::make_unique<beast::tcp_stream>(io_);
    stream->expires_after(settings_.connect_timeout);
    auto [cec, ep] = co_await stream->async_connect(results, use_nothrow);
    if (cec) co_return cec;
    stream->socket().set_option(tcp::no_delay(true));
    if (!origin_.tls) {
      c.plain = std::move(stream);
      c.connected = true;
      co_return beast::error_code{};
    }
    c.secure = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(std::move(*stream), ssl_);
    // SNI, and the certificate must name the host we dialled.
    if (!SSL_set_tlsext_host_name(c.secure->native_handle(), origin_.host.c_str()))
      co_return beast::error_code(static_cast<int>(::ERR_get_error()), asio::error::get_ssl_category());
    c.secure->set_verify_callback(ssl::host_name_verification(origin_.host));
    beast::get_lowest_layer(*c.secure).expires_after(settings_.connect_timeout);
    auto [hec] = co_await c.secure->async_handshake(ssl::stream_base::client, use_nothrow);
    if (hec) co_return hec;
    c.connected = true;
    co_return beast::error_code{};
  }

  template <class Stream>
  asio::awaitable<void> roundtrip(Stream& stream, Conn& c, const http::request<http::string_body>& req,
                                  HttpResponse& out, bool& reusable, std::size_t& written) {
    beast::get_lowest_layer(stream).expires_after(settings_.request_timeout);
    auto [wec, wn] = co_await http::async_write(stream, req, use_nothrow);
    written = wn;
    if (wec) {
      out.failure = wn == 0 ? HttpFailure::not_sent : HttpFailure::io_error;
      out.error = "write: " + wec.message();
      co_return;
    }
    http::response_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(settings_.header_limit));
    parser.body_limit(settings_.body_limit);
    auto [rec, rn] = co_await http::async_read(stream, c.buffer, parser, use_nothrow);
    if (rec) {
      if (rec == beast::error::timeout)
        out.failure = HttpFailure::timeout;
      else if (rec == http::error::body_limit || rec == http::error::header_limit || rec == http::error::buffer_overflow)
        out.failure = HttpFailure::too_large;
      else if (rec.category() == beast::error_code(http::error::end_of_stream).category() &&
               rec != http::error::end_of_stream && rec != http::error::partial_message)
        out.failure = HttpFailure::bad_response;
      else
        out.failure = HttpFailure::io_error;
      out.error = "read: " + rec.message();
      co_return;
    }
    auto& res = parser.get();
    out.status = static_cast<int>(res.result_int());
    for (const auto& f : res) {
      std::string name(f.name_string());
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return std::tolower(ch); });
      out.headers.emplace_back(std::move(name), std::string(f.value()));
    }
    out.body = std::move(res.body());
    reusable = res.keep_alive() && parser.is_done();
  }

  asio::awaitable<void> exchange(std::shared_ptr<Conn> conn, Pending p) {
    auto self = shared_from_this();
    const auto start = Clock::now();
    http::request<http::string_body> req{p.request.method == "POST" ? http::verb::post
                                         : p.request.method == "GET" ? http::verb::get
                                                                     : http::string_to_verb(p.request.method),
                                         origin_.prefix + p.request.path, 11};
    req.set(http::field::host, host_header_);
    if (!settings_.user_agent.empty()) req.set(http::field::user_agent, settings_.user_agent);
    for (const auto& [k, v] : p.request.headers) req.set(k, v);
    if (!p.request.body.empty()) {
      req.set(http::field::content_type, "application/json");
      req.body() = std::move(p.request.body);
    }
    req.keep_alive(true);
    req.prepare_payload();

    HttpResponse out;
    bool reusable = false;
    // A GET on a reused connection that fails before any answer is tried once
    // more on a new one. A POST is not: the server may have acted on it, and
    // the caller decides how to find out.
    for (int round = 0; round < 2; ++round) {
      const bool reused = conn->connected;
      if (!conn->connected) {
        auto ec = co_await connect(*conn);
        if (ec) {
          out.failure = HttpFailure::not_sent;
          out.error = std::string(conn->secure ? "TLS handshake: " : "connect: ") + ec.message();
          if (ec == beast::error::timeout) out.error = "connect: timed out";
          break;
        }
      }
      out = HttpResponse{};
      std::size_t written = 0;
      if (conn->secure)
        co_await roundtrip(*conn->secure, *conn, req, out, reusable, written);
      else
        co_await roundtrip(*conn->plain, *conn, req, out, reusable, written);
      const bool retry = reused && round == 0 && req.method() == http::verb::get && !stopped_ &&
                         (out.failure == HttpFailure::io_error || out.failure == HttpFailure::not_sent);
      if (!retry) break;
      conn->close();
      *conn = Conn{};
    }
    if (stopped_ && out.failure == HttpFailure::none && out.status == 0) {
      out.failure = HttpFailure::io_error;
      out.error = "client shut down";
    }
    out.latency = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
    release(conn, out.failure == HttpFailure::none && reusable);
    if (destroyed_) co_return;
    p.done(std::move(out));
    pump();
  }

  asio::io_context& io_;
  HttpClientSettings settings_;
  Origin origin_;
  ssl::context ssl_;
  std::string host_header_;
  std::deque<Pending> queue_;
  std::vector<std::shared_ptr<Conn>> idle_;
  std::vector<std::shared_ptr<Conn>> busy_;
  std::size_t active_ = 0;
  bool stopped_ = false;
};

HttpClient::HttpClient(asio::io_context& io, HttpClientSettings settings)
    : impl_(std::make_shared<Impl>(io, std::move(settings))) {}

HttpClient::~HttpClient() {
  impl_->destroyed_ = true;
  impl_->shutdown();
}

void HttpClient::send(HttpRequest request, Callback done) { impl_->send(std::move(request), std::move(done)); }
std::size_t HttpClient::in_flight() const { return impl_->in_flight(); }
std::size_t HttpClient::open_connections() const { return impl_->open_connections(); }
void HttpClient::shutdown() { impl_->shutdown(); }

}  // namespace predictd
