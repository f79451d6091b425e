#include "http_test_server.h"

#include <strings.h>

#include <mutex>
#include <thread>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace predictd::test {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

namespace {
constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
}

std::optional<std::string> ReceivedRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k.size() == name.size() && ::strncasecmp(k.data(), name.data(), k.size()) == 0) return v;
  return std::nullopt;
}

class HttpTestServer::Impl {
 public:
  Impl(Handler handler, std::optional<PemPair> tls) : handler_(std::move(handler)), tls_(tls.has_value()) {
    if (tls) {
      ctx_.use_certificate_chain(asio::buffer(tls->cert_pem));
      ctx_.use_private_key(asio::buffer(tls->key_pem), ssl::context::pem);
    }
    acceptor_.open(tcp::v4());
    acceptor_.set_option(tcp::acceptor::reuse_address(true));
    acceptor_.bind({asio::ip::make_address("127.0.0.1"), 0});
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    asio::co_spawn(io_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }

  ~Impl() {
    io_.stop();
    thread_.join();
  }

  std::uint16_t port_ = 0;
  std::atomic<int> accepted_{0}, open_{0}, max_open_{0};
  mutable std::mutex mu_;
  std::vector<ReceivedRequest> requests_;

 private:
  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, sock] = co_await acceptor_.async_accept(use_nothrow);
      if (ec) co_return;
      const int index = ++accepted_;
      const int now_open = ++open_;
      int seen = max_open_.load();
      while (now_open > seen && !max_open_.compare_exchange_weak(seen, now_open)) {
      }
      asio::co_spawn(io_, session(std::move(sock), index), asio::detached);
    }
  }

  asio::awaitable<void> session(tcp::socket sock, int index) {
    struct Closed {
      std::atomic<int>& open;
      ~Closed() { --open; }
    } closed{open_};
    if (!tls_) {
      co_await serve(sock, sock, index);
      co_return;
    }
    ssl::stream<tcp::socket> stream(std::move(sock), ctx_);
    auto [ec] = co_await stream.async_handshake(ssl::stream_base::server, use_nothrow);
    if (!ec) co_await serve(stream, stream.next_layer(), index);
  }

  template <class Stream>
  asio::awaitable<void> serve(Stream& stream, tcp::socket& sock, int index) {
    beast::flat_buffer buffer;
    for (int n = 1;; ++n) {
      http::request<http::string_body> req;
      auto [ec, bytes] = co_await http::async_read(stream, buffer, req, use_nothrow);
      if (ec) co_return;
      ReceivedRequest r{std::string(req.method_string()), std::string(req.target()), req.body(), {}, index, n};
      for (const auto& f : req) r.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
      {
        std::lock_guard lock(mu_);
        requests_.push_back(r);
      }
      const Reply reply = handler_(r);
      if (reply.delay.count() > 0) {
        asio::steady_timer t(io_, reply.delay);
        co_await t.async_wait(use_nothrow);
      }
      beast::error_code ignored;
      switch (reply.action) {
        case Reply::Action::stall: {
          asio::steady_timer t(io_, std::chrono::hours(1));
          co_await t.async_wait(use_nothrow);
          co_return;
        }
        case Reply::Action::reset:
          sock.set_option(tcp::socket::linger(true, 0), ignored);
          sock.close(ignored);
          co_return;
        case Reply::Action::close:
          sock.shutdown(tcp::socket::shutdown_both, ignored);
          sock.close(ignored);
          co_return;
        case Reply::Action::raw:
          co_await asio::async_write(stream, asio::buffer(reply.raw), use_nothrow);
          sock.shutdown(tcp::socket::shutdown_both, ignored);
          sock.close(ignored);
          co_return;
        case Reply::Action::respond:
          break;
      }
      http::response<http::string_body> res{static_cast<http::status>(reply.status), 11};
      for (const auto& [k, v] : reply.headers) res.set(k, v);
      res.body() = reply.body;
      res.keep_alive(reply.keep_alive);
      res.prepare_payload();
      auto [wec, wn] = co_await http::async_write(stream, res, use_nothrow);
      if (wec || !reply.keep_alive || reply.close_after) {
        sock.shutdown(tcp::socket::shutdown_both, ignored);
        sock.close(ignored);
        co_return;
      }
    }
  }

  Handler handler_;
  bool tls_;
  asio::io_context io_{1};
  ssl::context ctx_{ssl::context::tls_server};
  tcp::acceptor acceptor_{io_};
  std::thread thread_;
};

HttpTestServer::HttpTestServer(Handler handler, std::optional<PemPair> tls)
    : impl_(std::make_unique<Impl>(std::move(handler), std::move(tls))) {}
HttpTestServer::~HttpTestServer() = default;

std::uint16_t HttpTestServer::port() const { return impl_->port_; }
int HttpTestServer::connections() const { return impl_->accepted_; }
int HttpTestServer::open_connections() const { return impl_->open_; }
int HttpTestServer::max_open_connections() const { return impl_->max_open_; }

std::vector<ReceivedRequest> HttpTestServer::requests() const {
  std::lock_guard lock(impl_->mu_);
  return impl_->requests_;
}

std::size_t HttpTestServer::request_count() const {
  std::lock_guard lock(impl_->mu_);
  return impl_->requests_.size();
}

}  // namespace predictd::test
