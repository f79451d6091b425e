// The simulator's transport: Beast HTTP/1.1 (plain or TLS) with keep-alive on
// one io_context, faults, rate limits and the sim's clock. The model of the
// API itself is sim_core.
#include "sim_server.h"

#include <array>
#include <atomic>
#include <cmath>
#include <deque>
#include <future>
#include <set>
#include <unordered_map>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>

#include "sim_core.h"
#include "sim_files.h"
#include "timefmt.h"

namespace predictd::sim {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Steady = std::chrono::steady_clock;
using core::Prediction;
using core::Status;
constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

namespace {

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

// A token bucket on the sim's clock (seconds); burst = one second's worth, at least 1.
struct RateBucket {
  double per_s = 0, capacity = 0, tokens = 0, last = 0;
  void init(double per_minute, double now) {
    per_s = per_minute / 60.0;
    capacity = std::max(1.0, per_s);
    tokens = capacity;
    last = now;
  }
  // 0 when allowed, else the seconds until a token is there.
  double take(double now) {
    if (per_s <= 0) return 0;
    tokens = std::min(capacity, tokens + (now - last) * per_s);
    last = now;
    if (tokens >= 1) {
      tokens -= 1;
      return 0;
    }
    return (1 - tokens) / per_s;
  }
};

// The decoded value of `name` in a query string; nullopt when absent.
std::optional<std::string> query_param(std::string_view query, std::string_view name) {
  auto hex = [](char c) { return std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : (c | 0x20) - 'a' + 10; };
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view kv = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    const auto eq = kv.find('=');
    if (kv.substr(0, eq) != name) continue;
    const std::string_view v = eq == std::string_view::npos ? std::string_view() : kv.substr(eq + 1);
    std::string out;
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (v[i] == '%' && i + 2 < v.size() && std::isxdigit(static_cast<unsigned char>(v[i + 1])) &&
          std::isxdigit(static_cast<unsigned char>(v[i + 2]))) {
        out += static_cast<char>(hex(v[i + 1]) * 16 + hex(v[i + 2]));
        i += 2;
      } else {
        out += v[i] == '+' ? ' ' : v[i];
      }
    }
    return out;
  }
  return std::nullopt;
}

json::object stats_to_json(const Stats& st, bool details) {
  auto map_json = [](const std::map<std::string, int64_t>& m) {
    json::object o;
    for (const auto& [k, v] : m) o[k] = v;
    return o;
  };
  json::object o{{"predictions", st.predictions},
                 {"expired", st.expired},
                 {"creates", st.creates},
                 {"distinct_inputs", st.distinct_inputs},
                 {"duplicate_creates", st.duplicate_creates},
                 {"polls", st.polls},
                 {"max_polls_per_prediction", st.max_polls_per_prediction},
                 {"cancels", st.cancels},
                 {"lists", st.lists},
                 {"throttled", st.throttled},
                 {"rate_limited", st.rate_limited},
                 {"retry_after_violations", st.retry_after_violations},
                 {"unauthorized", st.unauthorized},
                 {"connections", st.connections},
                 {"requests", st.requests},
                 {"file_requests", st.file_requests},
                 {"file_bytes", st.file_bytes},
                 {"files_expired", st.files_expired},
                 {"max_concurrent_file_bodies", st.max_concurrent_file_bodies},
                 {"file_auth_by_host", map_json(st.file_auth_by_host)},
                 {"faults", map_json(st.faults)},
                 {"responses", map_json(st.responses)},
                 {"statuses", map_json(st.statuses)}};
  if (details) {
    o["creates_by_input"] = map_json(st.creates_by_input);
    o["polls_by_prediction"] = map_json(st.polls_by_prediction);
  }
  return o;
}

// What a request gets, decided at once.
struct Outcome {
  enum Kind { respond, reset, stall, hold } kind = respond;
  Response res;
  std::string hold_id;      // hold: the prediction whose answer waits (Prefer: wait)
  double hold_until = 0;    // hold: sim seconds
  bool truncate = false;
  bool malformed = false;
  bool control = false;     // /_sim/: not counted as an API answer
  int throttled = -1;       // a 429 for this class ([is_create]) whose Retry-After holds until throttle_until
  double throttle_until = 0;
};

}  // namespace

class Server::Impl : public std::enable_shared_from_this<Server::Impl> {
 public:
  explicit Impl(Options o)
      : opt_(std::move(o)),
        sim_(opt_.seed),
        acceptor_(io_),
        ssl_(ssl::context::tls_server),
        epoch_(Steady::now()),
        wall_epoch_(std::chrono::system_clock::now()) {
    if (opt_.tls_cert_pem.has_value() != opt_.tls_key_pem.has_value())
      throw std::invalid_argument("a TLS certificate and its key go together");
    if (opt_.tls_cert_pem) {
      ssl_.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                       ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
      ssl_.use_certificate_chain(asio::buffer(*opt_.tls_cert_pem));
      ssl_.use_private_key(asio::buffer(*opt_.tls_key_pem), ssl::context::pem);
      tls_ = true;
    }
    if (!(opt_.time_scale > 0)) throw std::invalid_argument("the time scale must be positive");
    while (!opt_.prefix.empty() && opt_.prefix.back() == '/') opt_.prefix.pop_back();
    if (!opt_.prefix.empty() && opt_.prefix.front() != '/') opt_.prefix.insert(0, "/");
    api_root_ = opt_.prefix + "/v1/";
    scale_ = opt_.time_scale;
    apply_options();
  }

  uint16_t bind() {
    tcp::endpoint ep(asio::ip::make_address(opt_.host), opt_.port);
    acceptor_.open(ep.protocol());
    acceptor_.set_option(tcp::acceptor::reuse_address(true));
    acceptor_.bind(ep);
    acceptor_.listen(asio::socket_base::max_listen_connections);
    port_ = acceptor_.local_endpoint().port();
    apply_options();  // output links may name the bound port
    asio::co_spawn(io_, accept_loop(), asio::detached);
    return port_;
  }

  void run(bool handle_signals) {
    std::optional<asio::signal_set> signals;
    if (handle_signals) {
      signals.emplace(io_, SIGINT, SIGTERM);
      signals->async_wait([this](auto ec, int) {
        if (!ec) shutdown();
      });
      signals_ = &*signals;
    }
    running_ = true;  // also set by Server::start() before the thread exists
    io_.run();
    running_ = false;
    signals_ = nullptr;
  }

  // Asks the loop to finish: every coroutine ends on its own, then run() returns.
  void stop() {
    asio::post(io_, [self = shared_from_this()] { self->shutdown(); });
  }
  uint16_t port() const { return port_; }
  void mark_running() { running_ = true; }

  // Runs f on the loop and waits for it; directly when no loop is running.
  template <class F>
  auto on_loop(F f) -> decltype(f()) {
    if (!running_ || io_.get_executor().running_in_this_thread()) return f();
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto fut = task.get_future();
    asio::post(io_, [&task] { task(); });
    while (fut.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready) {
      if (!running_) {
        // The loop ended before it ran the task: nothing else touches the state now.
        // (The task may still be queued; run it here rather than wait forever.)
        if (fut.wait_for(std::chrono::milliseconds(0)) != std::future_status::ready) task();
        break;
      }
    }
    return fut.get();
  }

  Stats stats(bool details) {
    Stats st = counters_;
    for (std::size_t i = 0; i < responses_.size(); ++i)
      if (responses_[i]) st.responses[std::to_string(i)] = responses_[i];
    sim_.fill_stats(st, sim_s(), details);
    return st;
  }

  void configure(const std::function<void(Options&)>& change) {
    Options next = opt_;
    change(next);
    // The listener and the clock stay as they are.
    next.host = opt_.host;
    next.port = opt_.port;
    next.tls_cert_pem = opt_.tls_cert_pem;
    next.tls_key_pem = opt_.tls_key_pem;
    next.prefix = opt_.prefix;
    next.time_scale = opt_.time_scale;
    next.manual_clock = opt_.manual_clock;
    const bool limits_changed = next.creates_per_minute != opt_.creates_per_minute ||
                                next.requests_per_minute != opt_.requests_per_minute;
    opt_ = std::move(next);
    if (limits_changed) init_buckets();
    apply_options();
  }

  void set_time_scale(double scale) {
    if (!(scale > 0)) throw std::invalid_argument("the time scale must be positive");
    sim_base_ = sim_s();
    clock_base_ = clock_s();
    scale_ = opt_.time_scale = scale;
    wake();
  }

  void advance(double seconds) {
    if (seconds < 0) throw std::invalid_argument("the clock does not go back");
    skew_ += seconds;
    wake();
  }

  void reset() {
    sim_.reset();
    counters_ = Stats{};
    responses_.fill(0);
    throttles_ = {};
    init_buckets();
  }

  asio::io_context io_{1};

 private:
  // --- The sim's clock -------------------------------------------------------
  // clock_s: seconds since start on the sim's clock (steady time plus advance(),
  // or advance() alone with manual_clock). sim_s: the predictions' time, which
  // runs scale_ times faster.
  double clock_s() const {
    if (opt_.manual_clock) return skew_;
    return std::chrono::duration<double>(Steady::now() - epoch_).count() + skew_;
  }
  double sim_s() const { return sim_base_ + (clock_s() - clock_base_) * scale_; }
  std::chrono::system_clock::time_point wall_now() const {
    return wall_epoch_ +
           std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(clock_s()));
  }
  // Clock seconds until sim time `t`.
  double clock_until_sim(double t) const { return (t - sim_s()) / scale_; }

  // Wakes every sleeping coroutine so it looks at the clock (and its prediction) again.
  void wake() {
    for (auto* t : sleepers_) t->cancel();
  }

  // Sleeps until remaining() (clock seconds) is <= 0 or the server stops.
  template <class F>
  asio::awaitable<void> sleep_while(F remaining) {
    asio::steady_timer t(io_);
    sleepers_.insert(&t);
    for (;;) {
      const double r = remaining();
      if (stopping_ || r <= 0) break;
      if (opt_.manual_clock || r > 86400)
        t.expires_after(std::chrono::hours(24));
      else
        t.expires_after(std::chrono::duration_cast<Steady::duration>(std::chrono::duration<double>(r)) +
                        std::chrono::microseconds(100));
      co_await t.async_wait(use_nothrow);
    }
    sleepers_.erase(&t);
  }

  void init_buckets() {
    creates_bucket_.init(opt_.creates_per_minute, clock_s());
    requests_bucket_.init(opt_.requests_per_minute, clock_s());
  }
  void apply_options() {
    if (!buckets_ready_) {
      init_buckets();
      buckets_ready_ = true;
    }
    settings_.profile = opt_.profile;
    settings_.cold_start_rate = opt_.cold_start_rate;
    settings_.failure_rate = opt_.failure_rate;
    settings_.expire_after_s = opt_.expire_after_s;
    settings_.public_base = opt_.public_base;
    while (!settings_.public_base.empty() && settings_.public_base.back() == '/') settings_.public_base.pop_back();
    settings_.huge_logs_bytes = opt_.faults.huge_logs_bytes;
    settings_.output_base = with_port(opt_.output_base);
    while (!settings_.output_base.empty() && settings_.output_base.back() == '/') settings_.output_base.pop_back();
    redirect_base_.reset();
    if (opt_.redirect_outputs_to) {
      redirect_base_ = with_port(*opt_.redirect_outputs_to);
      while (!redirect_base_->empty() && redirect_base_->back() == '/') redirect_base_->pop_back();
    }
    bearer_ = opt_.token ? "Bearer " + *opt_.token : std::string();
  }

  std::string with_port(std::string s) const {
    for (auto at = s.find("{port}"); at != std::string::npos; at = s.find("{port}"))
      s.replace(at, 6, std::to_string(port_));
    return s;
  }

  // --- Output files ----------------------------------------------------------
  // Answers a GET of an output link. Returns whether the connection stays open.
  template <class Stream>
  asio::awaitable<bool> serve_file(Stream& stream, tcp::socket& raw, const Request& req, const OutputFile& f) {
    ++counters_.file_requests;
    const std::string host(req[http::field::host]);
    if (!req[http::field::authorization].empty()) ++counters_.file_auth_by_host[host];
    const auto small = [&](http::status code, std::string body) {
      Response res{code, req.version()};
      res.set(http::field::content_type, "text/plain");
      res.keep_alive(req.keep_alive());
      res.body() = std::move(body);
      res.prepare_payload();
      return res;
    };
    std::optional<Response> res;
    const double now = sim_s();
    sim_.expire(settings_, now);  // a forgotten prediction's files are gone too
    const Prediction* p = sim_.find(f.id);
    if (redirect_base_ && authority(*redirect_base_) != host) {
      res = small(http::status::found, "");
      res->set(http::field::location, *redirect_base_ + std::string(req.target()));
    } else if (!p || sim_.status_at(*p, now) != Status::succeeded || f.index >= p->outputs || f.ext != p->model->ext) {
      res = small(http::status::not_found, "Not found");
    } else if (opt_.output_expire_after_s > 0 && now > sim_.end_of(*p) + opt_.output_expire_after_s) {
      ++counters_.files_expired;
      res = small(http::status::not_found, "Not found");
    } else if (sim_.chance(opt_.faults.download_error)) {
      ++counters_.faults["download_error"];
      res = small(http::status::service_unavailable, "Service Unavailable");
    }
    if (res) {
      const bool keep = res->keep_alive();
      auto [ec, n] = co_await http::async_write(stream, *res, use_nothrow);
      co_return !ec && keep;
    }
    // Header, then the body in pieces made as they are sent.
    http::response<http::empty_body> head{http::status::ok, req.version()};
    head.set(http::field::content_type, content_type(f.ext));
    head.content_length(f.size);
    head.keep_alive(req.keep_alive());
    http::response_serializer<http::empty_body> sr{head};
    auto [hec, hn] = co_await http::async_write_header(stream, sr, use_nothrow);
    if (hec) co_return false;
    const bool reset = sim_.chance(opt_.faults.download_reset);
    if (reset) ++counters_.faults["download_reset"];
    const bool stall = !reset && sim_.chance(opt_.faults.download_stall);
    if (stall) ++counters_.faults["download_stall"];
    const uint64_t end = reset || stall ? f.size / 2 : f.size;
    constexpr std::size_t kChunk = 64 * 1024;
    counters_.max_concurrent_file_bodies = std::max(counters_.max_concurrent_file_bodies, ++file_bodies_);
    bool write_failed = false;
    for (uint64_t off = 0; off < end && !stopping_;) {
      const std::string piece = output_bytes(f, off, static_cast<std::size_t>(std::min<uint64_t>(kChunk, end - off)));
      auto [ec, n] = co_await asio::async_write(stream, asio::buffer(piece), use_nothrow);
      if (ec) {
        write_failed = true;
        break;
      }
      counters_.file_bytes += static_cast<int64_t>(n);
      off += n;
    }
    if (stall && !write_failed && !stopping_) {
      // Half the body, then nothing: past a client's timeout for the next piece.
      const double until = clock_s() + opt_.faults.stall_s;
      co_await sleep_while([&] { return until - clock_s(); });
      --file_bodies_;
      beast::error_code ignore;
      raw.close(ignore);
      co_return false;
    }
    --file_bodies_;
    if (write_failed) co_return false;
    if (reset || stopping_) {
      beast::error_code ignore;
      raw.set_option(asio::socket_base::linger(true, 0), ignore);
      raw.close(ignore);
      co_return false;
    }
    co_return head.keep_alive();
  }

  static std::string authority(const std::string& base) {
    const auto sep = base.find("://");
    const auto rest = sep == std::string::npos ? base : base.substr(sep + 3);
    return rest.substr(0, rest.find('/'));
  }

  void shutdown() {
    stopping_ = true;
    beast::error_code ec;
    acceptor_.close(ec);
    for (auto& [id, s] : sockets_) s->close(ec);
    if (signals_) signals_->cancel();
    wake();
  }

  // --- Answers ---------------------------------------------------------------
  Response reply(const Request& req, http::status st, const json::value& body) {
    Response res{st, req.version()};
    res.set(http::field::content_type, "application/json");
    res.set(http::field::server, "predictd-sim");
    res.keep_alive(req.keep_alive());
    res.body() = json::serialize(body);
    res.prepare_payload();
    return res;
  }
  // Replicate's error shape (Django REST framework's problem details).
  Response problem(const Request& req, http::status st, std::string_view title, std::string_view detail) {
    return reply(req, st, json::object{{"title", title}, {"detail", detail}, {"status", static_cast<int>(st)}});
  }
  Response not_found(const Request& req) { return problem(req, http::status::not_found, "Not found", "Not found."); }
  void throttle(Outcome& out, const Request& req, double wait_s, bool create) {
    ++counters_.throttled;
    const int secs = std::max(1, static_cast<int>(std::ceil(wait_s)));
    out.throttled = create;
    out.throttle_until = clock_s() + secs;
    auto& res = out.res;
    res = problem(req, http::status::too_many_requests, "Request was throttled",
                  "Request was throttled. Expected available in " + std::to_string(secs) +
                      (secs == 1 ? " second." : " seconds."));
    res.set(http::field::retry_after, std::to_string(secs));
  }

  // --- Routing ---------------------------------------------------------------
  // `seen`: the mark of the connection's latest event (see serve).
  Outcome handle(Request& req, uint64_t seen) {
    Outcome out;
    const std::string_view target = req.target();
    const auto qpos = target.find('?');
    const std::string_view path = target.substr(0, qpos);
    const std::string_view query = qpos == std::string_view::npos ? std::string_view() : target.substr(qpos + 1);
    if (path.starts_with("/_sim/")) {
      out.control = true;
      out.res = control(req, path, query);
      return out;
    }
    ++counters_.requests;
    if (!path.starts_with(api_root_)) {
      out.res = not_found(req);
      return out;
    }
    if (opt_.token && req[http::field::authorization] != bearer_) {
      ++counters_.unauthorized;
      out.res = problem(req, http::status::unauthorized, "Unauthenticated",
                        "You did not pass a valid authentication token");
      return out;
    }
    const std::string_view rest = path.substr(api_root_.size() - 1);  // "/predictions..."
    const bool post = req.method() == http::verb::post, get = req.method() == http::verb::get;
    enum class Route { none, create_model, create_version, get, cancel, list } route = Route::none;
    std::string_view id, model_name;
    constexpr std::string_view kPreds = "/predictions", kModels = "/models/", kCancel = "/cancel";
    if (rest == kPreds) {
      route = post ? Route::create_version : get ? Route::list : Route::none;
    } else if (rest.starts_with(kPreds) && rest[kPreds.size()] == '/') {
      id = rest.substr(kPreds.size() + 1);
      if (id.ends_with(kCancel)) {
        id.remove_suffix(kCancel.size());
        if (post) route = Route::cancel;
      } else if (get) {
        route = Route::get;
      }
      if (id.empty() || id.find('/') != std::string_view::npos) route = Route::none;
    } else if (rest.starts_with(kModels) && rest.ends_with(kPreds) && post) {
      model_name = rest.substr(kModels.size(), rest.size() - kModels.size() - kPreds.size());
      if (std::count(model_name.begin(), model_name.end(), '/') == 1) route = Route::create_model;
    }
    if (route == Route::none) {
      out.res = not_found(req);
      return out;
    }
    const bool is_create = route == Route::create_model || route == Route::create_version;
    if (violates_retry_after(is_create, seen)) ++counters_.retry_after_violations;
    const Faults& f = opt_.faults;
    if (sim_.chance(f.throttle)) {
      ++counters_.faults["throttle"];
      throttle(out, req, f.retry_after_s, is_create);
      return out;
    }
    if (double w = (is_create ? creates_bucket_ : requests_bucket_).take(clock_s()); w > 0) {
      ++counters_.rate_limited;
      throttle(out, req, w, is_create);
      return out;
    }
    if (sim_.chance(f.server_error)) {
      static constexpr http::status kCodes[] = {http::status::internal_server_error, http::status::bad_gateway,
                                                http::status::service_unavailable};
      const auto code = kCodes[std::uniform_int_distribution<int>(0, 2)(sim_.rng())];
      ++counters_.faults["server_error"];
      out.res = problem(req, code, obsolete_reason(code), "Internal server error");
      return out;
    }
    if (sim_.chance(f.stall)) {
      ++counters_.faults["stall"];
      out.kind = Outcome::stall;
      return out;
    }
    const double now = sim_s();
    switch (route) {
      case Route::create_model:
      case Route::create_version:
        out = create(req, route == Route::create_version, model_name);
        break;
      case Route::list: {
        ++counters_.lists;
        const auto after_q = query_param(query, "created_after"), before_q = query_param(query, "created_before");
        const auto after = after_q ? core::parse_date_time(*after_q) : std::nullopt;
        const auto before = before_q ? core::parse_date_time(*before_q) : std::nullopt;
        if (after.has_value() != after_q.has_value() || before.has_value() != before_q.has_value()) {
          out.res = problem(req, http::status::bad_request, "Invalid date-time",
                            "created_after and created_before must be RFC 3339 date-times");
          break;
        }
        sim_.expire(settings_, now);
        auto page = sim_.list(settings_, now, after, before, query_param(query, "cursor").value_or(""));
        out.res = reply(req, http::status::ok, page.body);
        break;
      }
      case Route::get:
        sim_.expire(settings_, now);  // as creates and lists do: a forgotten prediction is 404
        if (Prediction* p = sim_.find(id)) {
          ++p->polls;
          const bool huge = sim_.chance(f.huge_logs);
          if (huge) ++counters_.faults["huge_logs"];
          out.res = reply(req, http::status::ok, sim_.render(settings_, *p, now, false, huge));
        } else {
          out.res = not_found(req);
        }
        break;
      case Route::cancel:
        sim_.expire(settings_, now);
        if (Prediction* p = sim_.find(id)) {
          ++counters_.cancels;
          if (sim_.cancel(*p, now)) wake();  // a held Prefer: wait answer ends now
          out.res = reply(req, http::status::ok, sim_.render(settings_, *p, now));
        } else {
          out.res = not_found(req);
        }
        break;
      case Route::none:
        break;
    }
    if (out.kind != Outcome::reset && out.kind != Outcome::stall && out.res.result_int() / 100 == 2) {
      if (sim_.chance(f.truncated)) {
        ++counters_.faults["truncated"];
        out.truncate = true;
      } else if (sim_.chance(f.malformed)) {
        ++counters_.faults["malformed"];
        out.malformed = true;
      }
    }
    return out;
  }

  static std::string_view obsolete_reason(http::status s) { return http::obsolete_reason(s); }

  Outcome create(Request& req, bool version_form, std::string_view model_name) {
    Outcome out;
    json::error_code ec;
    json::value body = json::parse(req.body(), ec);
    if (ec || !body.is_object()) {
      out.res = problem(req, http::status::bad_request, "Invalid JSON", "The request body is not a valid JSON object.");
      return out;
    }
    const auto& obj = body.get_object();
    const core::ModelSpec* model = nullptr;
    if (version_form) {
      const json::value* v = obj.if_contains("version");
      if (!v || !v->is_string() || !(model = core::resolve_version(std::string_view(v->get_string())))) {
        out.res = problem(req, http::status::unprocessable_entity, "Invalid version or not permitted",
                          "The specified version does not exist (or perhaps you don't have permission to use it?)");
        return out;
      }
    } else if (!(model = core::find_model(model_name))) {
      out.res = problem(req, http::status::not_found, "Not found", "The requested model could not be found.");
      return out;
    }
    // additionalProperties: false in both request schemas.
    for (const auto& kv : obj) {
      const std::string_view k = kv.key();
      if (k != "input" && !(version_form && k == "version") && k != "webhook" && k != "webhook_events_filter" &&
          k != "stream") {
        out.res = problem(req, http::status::unprocessable_entity, "Input validation failed",
                          "Additional property " + std::string(k) + " is not allowed");
        return out;
      }
    }
    const json::value* input = obj.if_contains("input");
    if (!input || !input->is_object()) {
      out.res = problem(req, http::status::unprocessable_entity, "Input validation failed",
                        input ? "input: Invalid type. Expected: object" : "input is required");
      return out;
    }
    std::optional<int> prefer_wait;
    if (auto prefer = req[http::field::prefer]; !prefer.empty()) {
      if (!(prefer_wait = core::parse_prefer(prefer))) {
        out.res = problem(req, http::status::bad_request, "Invalid Prefer header",
                          "Prefer must match ^wait(=([1-9]|[1-9][0-9]|60))?$, such as wait or wait=5");
        return out;
      }
    }
    std::optional<double> cancel_after;
    if (auto ca = req["Cancel-After"]; !ca.empty()) {
      cancel_after = core::parse_duration(ca);
      if (!cancel_after || *cancel_after < 5) {
        out.res = problem(req, http::status::bad_request, "Invalid Cancel-After header",
                          "Cancel-After must be a duration of at least 5 seconds, such as 30s, 5m or 1h30m");
        return out;
      }
    }
    const double now = sim_s();
    sim_.expire(settings_, now);
    Prediction& p = sim_.create(settings_, *model, version_form, *input, now, wall_now(), scale_, cancel_after);
    if (sim_.chance(opt_.faults.reset_after_create)) {
      ++counters_.faults["reset_after_create"];
      out.kind = Outcome::reset;
      return out;
    }
    if (prefer_wait) {
      out.kind = Outcome::hold;
      out.hold_id = p.id;
      out.hold_until = now + *prefer_wait;
      out.res = Response{http::status::created, req.version()};
      out.res.keep_alive(req.keep_alive());
      return out;
    }
    out.res = reply(req, http::status::created, sim_.render(settings_, p, now, true));
    return out;
  }

  Response control(const Request& req, std::string_view path, std::string_view query) {
    if (path == "/_sim/stats" && req.method() == http::verb::get) {
      const bool details = query.find("summary=1") == std::string_view::npos;
      return reply(req, http::status::ok, stats_to_json(stats(details), details));
    }
    if (path == "/_sim/reset" && req.method() == http::verb::post) {
      reset();
      return reply(req, http::status::ok, json::object{{"ok", true}});
    }
    if (path == "/_sim/control" && req.method() == http::verb::post) {
      // {"time_scale": 10, "advance_s": 30, "failure_rate": 0, "cold_start_rate": 0, "faults": {"throttle": 0.1}}
      json::error_code ec;
      json::value body = json::parse(req.body(), ec);
      if (ec || !body.is_object())
        return problem(req, http::status::bad_request, "Invalid JSON", "The request body is not a JSON object.");
      try {
        const auto& o = body.get_object();
        auto num = [](const json::value& v) { return v.to_number<double>(); };
        Options next = opt_;
        for (const auto& kv : o) {
          const std::string_view k = kv.key();
          if (k == "time_scale") set_time_scale(num(kv.value()));
          else if (k == "advance_s") advance(num(kv.value()));
          else if (k == "failure_rate") next.failure_rate = num(kv.value());
          else if (k == "cold_start_rate") next.cold_start_rate = num(kv.value());
          else if (k == "creates_per_minute") next.creates_per_minute = num(kv.value());
          else if (k == "requests_per_minute") next.requests_per_minute = num(kv.value());
          else if (k == "faults") {
            Faults& f = next.faults;
            for (const auto& fk : kv.value().as_object()) {
              const std::string_view n = fk.key();
              const double v = num(fk.value());
              if (n == "throttle") f.throttle = v;
              else if (n == "server_error") f.server_error = v;
              else if (n == "reset_after_create") f.reset_after_create = v;
              else if (n == "stall") f.stall = v;
              else if (n == "truncated") f.truncated = v;
              else if (n == "malformed") f.malformed = v;
              else if (n == "huge_logs") f.huge_logs = v;
              else if (n == "stall_s") f.stall_s = v;
              else if (n == "retry_after_s") f.retry_after_s = static_cast<int>(v);
              else if (n == "huge_logs_bytes") f.huge_logs_bytes = static_cast<std::size_t>(v);
              else if (n == "download_error") f.download_error = v;
              else if (n == "download_reset") f.download_reset = v;
              else if (n == "download_stall") f.download_stall = v;
              else throw std::invalid_argument("unknown fault " + std::string(n));
            }
          } else {
            throw std::invalid_argument("unknown key " + std::string(k));
          }
        }
        configure([&](Options& o2) { o2 = next; });
      } catch (const std::exception& e) {
        return problem(req, http::status::bad_request, "Invalid control", e.what());
      }
      return reply(req, http::status::ok, json::object{{"ok", true}});
    }
    return not_found(req);
  }

  // --- Connections -----------------------------------------------------------
  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, sock] = co_await acceptor_.async_accept(use_nothrow);
      if (ec) {
        if (stopping_ || ec == asio::error::operation_aborted) co_return;
        continue;  // e.g. EMFILE: keep serving the connections we have
      }
      ++counters_.connections;
      beast::error_code ignore;
      sock.set_option(tcp::no_delay(true), ignore);
      asio::co_spawn(io_, session(std::move(sock), ++mark_), asio::detached);
    }
  }

  // Did the client honour a Retry-After we sent? A request breaks one when it
  // comes inside the window on a connection accepted, or whose previous answer
  // began to go out, after the 429 was fully written: the client sent it with
  // the 429 already in its socket. Requests already on their way on other
  // connections of the pool do not count. Marks order these events over all
  // connections.
  bool violates_retry_after(bool create, uint64_t seen) {
    auto& sent = throttles_[create];
    const double now = clock_s();
    std::erase_if(sent, [&](const Throttle& t) { return t.until <= now; });
    return std::any_of(sent.begin(), sent.end(), [&](const Throttle& t) { return t.mark <= seen; });
  }

  template <class Stream>
  asio::awaitable<void> serve(Stream& stream, tcp::socket& raw, uint64_t seen) {
    beast::flat_buffer buf;
    while (!stopping_) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(64 * 1024 * 1024);
      auto [ec, n] = co_await http::async_read(stream, buf, parser, use_nothrow);
      if (ec || stopping_) co_return;
      Request req = parser.release();
      if (req.method() == http::verb::get) {
        const std::string_view target = req.target();
        if (auto file = output_file(target.substr(0, target.find('?')), opt_.video_bytes)) {
          seen = ++mark_;
          if (!co_await serve_file(stream, raw, req, *file)) co_return;
          continue;
        }
      }
      Outcome out = handle(req, seen);
      if (out.kind == Outcome::reset) {
        // An RST, not a FIN: the client sees a reset with no answer.
        beast::error_code ignore;
        raw.set_option(asio::socket_base::linger(true, 0), ignore);
        raw.close(ignore);
        co_return;
      }
      if (out.kind == Outcome::stall) {
        const double until = clock_s() + opt_.faults.stall_s;
        co_await sleep_while([&] { return until - clock_s(); });
        beast::error_code ignore;
        raw.close(ignore);
        co_return;
      }
      if (out.kind == Outcome::hold) {
        // Prefer: wait — hold until the prediction is terminal or N (sim) seconds have passed.
        co_await sleep_while([&] {
          const Prediction* p = sim_.find(out.hold_id);
          if (!p) return 0.0;
          return clock_until_sim(std::min(sim_.end_of(*p), out.hold_until));
        });
        if (stopping_) co_return;
        const double now = sim_s();
        if (const Prediction* p = sim_.find(out.hold_id)) {
          out.res = reply(req, core::is_terminal(sim_.status_at(*p, now)) ? http::status::created
                                                                           : http::status::accepted,
                          sim_.render(settings_, *p, now));
        } else {
          out.res = not_found(req);
        }
      }
      if (out.truncate) {
        std::string& b = out.res.body();
        b.resize(b.size() / 2);
        out.res.prepare_payload();
      } else if (out.malformed) {
        out.res.body() = "<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>";
        out.res.set(http::field::content_type, "text/html");
        out.res.prepare_payload();
      }
      const unsigned code = out.res.result_int();
      if (!out.control && code < responses_.size()) ++responses_[code];
      const bool keep = out.res.keep_alive();
      seen = ++mark_;
      auto [wec, wn] = co_await http::async_write(stream, out.res, use_nothrow);
      if (!wec && out.throttled >= 0) {
        seen = ++mark_;
        throttles_[out.throttled].push_back({seen, out.throttle_until});
      }
      if (wec || !keep) {
        if (!wec) {
          beast::error_code ignore;
          raw.shutdown(tcp::socket::shutdown_send, ignore);
        }
        co_return;
      }
    }
  }

  asio::awaitable<void> session(tcp::socket sock, uint64_t accepted) {
    const uint64_t id = next_socket_++;
    sockets_.emplace(id, &sock);
    if (tls_) {
      ssl::stream<tcp::socket&> stream(sock, ssl_);
      auto [ec] = co_await stream.async_handshake(ssl::stream_base::server, use_nothrow);
      if (!ec) co_await serve(stream, sock, accepted);
    } else {
      co_await serve(sock, sock, accepted);
    }
    sockets_.erase(id);
  }

  Options opt_;
  core::Settings settings_;
  core::Simulation sim_;
  tcp::acceptor acceptor_;
  ssl::context ssl_;
  bool tls_ = false;
  uint16_t port_ = 0;
  std::optional<std::string> redirect_base_;
  int64_t file_bodies_ = 0;  // file bodies being written now
  std::string api_root_;
  std::string bearer_;
  std::atomic<bool> running_{false};
  bool stopping_ = false;
  asio::signal_set* signals_ = nullptr;

  Steady::time_point epoch_;
  std::chrono::system_clock::time_point wall_epoch_;
  double skew_ = 0;        // advance()
  double scale_ = 1;
  double sim_base_ = 0;    // sim_s() = sim_base_ + (clock_s() - clock_base_) * scale_
  double clock_base_ = 0;
  std::set<asio::steady_timer*> sleepers_;

  std::unordered_map<uint64_t, tcp::socket*> sockets_;
  uint64_t next_socket_ = 0;
  RateBucket creates_bucket_, requests_bucket_;
  bool buckets_ready_ = false;
  struct Throttle {
    uint64_t mark;  // when the 429 was written
    double until;   // clock seconds: its Retry-After ends
  };
  std::array<std::deque<Throttle>, 2> throttles_;  // [is_create]: 429s written whose Retry-After holds
  uint64_t mark_ = 0;
  Stats counters_;
  std::array<int64_t, 600> responses_{};
};

Server::Server(Options options) : impl_(std::make_shared<Impl>(std::move(options))) {}

Server::~Server() { stop(); }

uint16_t Server::listen() { return impl_->bind(); }

uint16_t Server::start() {
  const uint16_t port = impl_->bind();
  impl_->mark_running();
  thread_ = std::thread([impl = impl_] { impl->run(false); });
  return port;
}

void Server::run() { impl_->run(true); }

void Server::stop() {
  impl_->stop();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

uint16_t Server::port() const { return impl_->port(); }
Stats Server::stats() {
  return impl_->on_loop([this] { return impl_->stats(true); });
}
std::string Server::stats_json() {
  return impl_->on_loop([this] { return json::serialize(stats_to_json(impl_->stats(true), true)); });
}
void Server::set_faults(const Faults& faults) {
  configure([&](Options& o) { o.faults = faults; });
}
void Server::configure(const std::function<void(Options&)>& change) {
  impl_->on_loop([&] {
    impl_->configure(change);
    return 0;
  });
}
void Server::set_time_scale(double scale) {
  impl_->on_loop([&] {
    impl_->set_time_scale(scale);
    return 0;
  });
}
void Server::advance(std::chrono::duration<double> d) {
  impl_->on_loop([&] {
    impl_->advance(d.count());
    return 0;
  });
}
void Server::reset() {
  impl_->on_loop([&] {
    impl_->reset();
    return 0;
  });
}

}  // namespace predictd::sim
