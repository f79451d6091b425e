#include "sim_server.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <chrono>
#include <deque>
#include <future>
#include <map>
#include <random>
#include <regex>
#include <thread>
#include <unordered_map>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>

#include "timefmt.h"

namespace predictd::sim {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

namespace {

struct ModelSpec {
  const char* name;
  const char* version;  // nullptr: model form only
  bool array_output;
  const char* ext;
  double run_s;         // typical run time (realistic profile)
  bool video;
};

// The catalog of SPEC §3 with the shapes of the real models.
constexpr ModelSpec kModels[] = {
    {"black-forest-labs/flux-schnell", nullptr, true, "webp", 0.8, false},
    {"black-forest-labs/flux-dev", nullptr, true, "webp", 3.2, false},
    {"black-forest-labs/flux-pro", nullptr, false, "webp", 14, false},
    {"black-forest-labs/flux-1.1-pro", nullptr, false, "webp", 3.8, false},
    {"stability-ai/stable-diffusion", "ac732df83cea7fff18b8472768c88ad041fa750ff7682a21affe81863cbe77e4", true, "png",
     1.9, false},
    {"stability-ai/sdxl", "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc", true, "png", 5.0, false},
    {"stability-ai/stable-diffusion-inpainting", "95b7223104132402a9ae91cc677285bc5eb997834bd2349fa486f53910fd68b3",
     true, "png", 2.7, false},
    {"stability-ai/stable-diffusion-img2img", "15a3689ee13b0d2616e98820eca31d4c3abcd36672df6afce5cb6feb1d66087d", true,
     "png", 3.5, false},
    {"minimax/video-01", nullptr, false, "mp4", 305, true},
    {"minimax/video-01-live", nullptr, false, "mp4", 305, true},
    {"lucataco/flux-schnell-lora", "2a6b576af31790b470f0a8442e1e9791213fa13799cbb65a9fc1436e96389574", true, "webp",
     2.7, false},
    {"lucataco/flux-dev-lora", "091495765fa5ef2725a175a57b276ec30dc9d39c22d30410f2ede68a3eab66b3", true, "webp", 18.5,
     false},
    {"recraft-ai/recraft-v3-svg", nullptr, false, "svg", 17.9, false},
    {"ideogram-ai/ideogram-v2-turbo", nullptr, false, "png", 12.4, false},
};

const ModelSpec* find_model(std::string_view name) {
  for (const auto& m : kModels)
    if (name == m.name) return &m;
  return nullptr;
}
const ModelSpec* find_version(std::string_view v) {
  for (const auto& m : kModels)
    if (m.version && v == m.version) return &m;
  return nullptr;
}

enum class St { starting, processing, succeeded, failed, canceled, aborted };
const char* st_name(St s) {
  static const char* kNames[] = {"starting", "processing", "succeeded", "failed", "canceled", "aborted"};
  return kNames[static_cast<int>(s)];
}
bool terminal(St s) { return s != St::starting && s != St::processing; }

void canonical(const json::value& v, std::string& out) {
  if (v.is_object()) {
    std::vector<const json::key_value_pair*> items;
    for (const auto& kv : v.get_object()) items.push_back(&kv);
    std::sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->key() < b->key(); });
    out += '{';
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (i) out += ',';
      out += json::serialize(json::string_view(items[i]->key()));
      out += ':';
      canonical(items[i]->value(), out);
    }
    out += '}';
  } else if (v.is_array()) {
    out += '[';
    bool first = true;
    for (const auto& e : v.get_array()) {
      if (!first) out += ',';
      first = false;
      canonical(e, out);
    }
    out += ']';
  } else {
    out += json::serialize(v);
  }
}

// Times are "sim seconds" since the server started: real seconds × time_scale.
struct Prediction {
  std::string id;
  const ModelSpec* model;
  bool version_form;
  json::value input;
  std::string created_at;  // wall clock, for created_after/created_before
  double created = 0;      // sim time
  double cold = 0;         // seconds in `starting`
  double run = 0;          // seconds in `processing`
  bool fails = false;
  int outputs = 1;
  std::optional<double> deadline;  // Cancel-After, sim time
  std::optional<double> canceled_at;
  int polls = 0;
};

struct RateBucket {
  double per_s = 0, capacity = 0, tokens = 0;
  Clock::time_point last{};
  void init(double per_minute) {
    per_s = per_minute / 60.0;
    capacity = std::max(1.0, per_s);
    tokens = capacity;
    last = Clock::now();
  }
  // 0 when allowed, else the seconds to wait.
  double take() {
    if (per_s <= 0) return 0;
    auto now = Clock::now();
    tokens = std::min(capacity, tokens + std::chrono::duration<double>(now - last).count() * per_s);
    last = now;
    if (tokens >= 1) {
      tokens -= 1;
      return 0;
    }
    return (1 - tokens) / per_s;
  }
};

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

enum class Action { respond, reset, stall };

}  // namespace

class Server::Impl : public std::enable_shared_from_this<Server::Impl> {
 public:
  explicit Impl(Options o)
      : opt_(std::move(o)), rng_(opt_.seed), acceptor_(io_), ssl_(ssl::context::tls_server), epoch_(Clock::now()) {
    if (opt_.tls_cert_pem && opt_.tls_key_pem) {
      ssl_.use_certificate_chain(asio::buffer(*opt_.tls_cert_pem));
      ssl_.use_private_key(asio::buffer(*opt_.tls_key_pem), ssl::context::pem);
      tls_ = true;
    }
    while (!opt_.prefix.empty() && opt_.prefix.back() == '/') opt_.prefix.pop_back();
    creates_bucket_.init(opt_.creates_per_minute);
    requests_bucket_.init(opt_.requests_per_minute);
  }

  uint16_t bind() {
    tcp::endpoint ep(asio::ip::make_address(opt_.host), opt_.port);
    acceptor_.open(ep.protocol());
    acceptor_.set_option(tcp::acceptor::reuse_address(true));
    acceptor_.bind(ep);
    acceptor_.listen(asio::socket_base::max_listen_connections);
    port_ = acceptor_.local_endpoint().port();
    asio::co_spawn(io_, accept_loop(), asio::detached);
    return port_;
  }

  void run() { io_.run(); }
  void stop() {
    asio::post(io_, [self = shared_from_this()] {
      beast::error_code ec;
      self->acceptor_.close(ec);
      for (auto& [id, s] : self->sockets_) s->close(ec);
      self->io_.stop();
    });
  }
  uint16_t port() const { return port_; }

  template <class F>
  auto on_loop(F f) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto fut = task.get_future();
    asio::post(io_, [&task] { task(); });
    return fut.get();
  }

  std::string stats_json() { return on_loop([this] { return json::serialize(stats()); }); }
  void set_faults(const Faults& f) {
    on_loop([this, f] {
      opt_.faults = f;
      return 0;
    });
  }

  asio::io_context io_{1};

 private:
  double now_sim() const { return std::chrono::duration<double>(Clock::now() - epoch_).count() * opt_.time_scale; }
  std::string wall_at(double sim_t) const {
    auto real = std::chrono::duration<double>((sim_t - now_sim()) / opt_.time_scale);
    return format_utc(std::chrono::system_clock::now() +
                      std::chrono::duration_cast<std::chrono::system_clock::duration>(real));
  }
  double uniform(double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng_); }
  bool chance(double p) { return p > 0 && uniform(0, 1) < p; }

  St status_of(const Prediction& p, double t) const {
    const double done = p.created + p.cold + p.run;
    if (p.canceled_at && t >= *p.canceled_at && *p.canceled_at < done) return St::canceled;
    // Cancel-After: before the run started the prediction is aborted, during it canceled.
    if (p.deadline && t >= *p.deadline && *p.deadline < done)
      return *p.deadline < p.created + p.cold ? St::aborted : St::canceled;
    if (t < p.created + p.cold) return St::starting;
    if (t < done) return St::processing;
    return p.fails ? St::failed : St::succeeded;
  }
  // Sim time at which the prediction's status becomes terminal.
  double end_of(const Prediction& p) const {
    double end = p.created + p.cold + p.run;
    if (p.canceled_at) end = std::min(end, *p.canceled_at);
    if (p.deadline) end = std::min(end, *p.deadline);
    return end;
  }

  json::object to_json(const Prediction& p, bool huge_logs = false, std::optional<double> at = std::nullopt) const {
    const double t = at.value_or(now_sim());
    const St s = status_of(p, t);
    json::object o;
    o["id"] = p.id;
    o["model"] = p.model->name;
    o["version"] = p.model->version ? p.model->version : "hidden";
    o["input"] = p.input;
    o["source"] = "api";
    o["data_removed"] = false;
    o["created_at"] = p.created_at;
    o["status"] = st_name(s);
    o["error"] = nullptr;
    json::object urls{{"get", "https://api.replicate.com/v1/predictions/" + p.id},
                      {"cancel", "https://api.replicate.com/v1/predictions/" + p.id + "/cancel"},
                      {"stream", "https://stream.replicate.com/v1/files/" + p.id},
                      {"web", "https://replicate.com/p/" + p.id}};
    o["urls"] = std::move(urls);
    std::string logs;
    if (s != St::starting) logs = "Using seed: 42\nRunning prediction...\n";
    json::object metrics;
    o["output"] = nullptr;
    if (s != St::starting) o["started_at"] = wall_at(p.created + p.cold);
    if (terminal(s)) o["completed_at"] = wall_at(end_of(p));
    if (s == St::succeeded) {
      const std::string base = "https://replicate.delivery/xezq/" + p.id + "/out-";
      if (p.model->array_output) {
        json::array a;
        for (int i = 0; i < p.outputs; ++i) a.emplace_back(base + std::to_string(i) + "." + p.model->ext);
        o["output"] = std::move(a);
      } else {
        o["output"] = base + "0." + p.model->ext;
      }
      metrics["predict_time"] = p.run;
      metrics["total_time"] = p.cold + p.run;
      if (!p.model->video) metrics["image_count"] = p.outputs;
      logs += "Generated " + std::to_string(p.outputs) + " output(s)\n";
    } else if (s == St::failed) {
      o["error"] = "CUDA out of memory. Tried to allocate 2.00 GiB";
      metrics["predict_time"] = p.run;
    } else if (s == St::aborted) {
      o["error"] = "Prediction deadline exceeded before it started";
    }
    if (huge_logs) logs.append(opt_.faults.huge_logs_bytes, 'x');
    o["logs"] = std::move(logs);
    o["metrics"] = std::move(metrics);
    return o;
  }

  json::object stats() const {
    json::object creates;
    int64_t duplicates = 0;
    for (const auto& [k, n] : creates_by_input_)
      if (n > 1) duplicates += n - 1;
    json::object polls;
    int64_t total_polls = 0, max_polls = 0;
    for (const auto& p : predictions_) {
      total_polls += p.polls;
      max_polls = std::max<int64_t>(max_polls, p.polls);
    }
    json::object faults;
    for (const auto& [k, n] : faults_served_) faults[k] = n;
    return json::object{{"predictions", predictions_.size()},
                        {"creates", creates_},
                        {"distinct_inputs", creates_by_input_.size()},
                        {"duplicate_creates", duplicates},
                        {"polls", total_polls},
                        {"max_polls_per_prediction", max_polls},
                        {"cancels", cancels_},
                        {"lists", lists_},
                        {"throttled", throttled_},
                        {"retry_after_violations", retry_after_violations_},
                        {"unauthorized", unauthorized_},
                        {"faults", std::move(faults)},
                        {"connections", connections_},
                        {"requests", requests_}};
  }

  Response reply(const Request& req, http::status st, const json::value& body) {
    Response res{st, req.version()};
    res.set(http::field::content_type, "application/json");
    res.set(http::field::server, "predictd-sim");
    res.keep_alive(req.keep_alive());
    res.body() = json::serialize(body);
    res.prepare_payload();
    return res;
  }
  Response problem(const Request& req, http::status st, const std::string& title, const std::string& detail) {
    return reply(req, st, json::object{{"title", title}, {"detail", detail}, {"status", static_cast<int>(st)}});
  }
  Response throttle(const Request& req, double wait_s, bool create) {
    ++throttled_;
    const int secs = std::max(1, static_cast<int>(std::ceil(wait_s)));
    (create ? create_blocked_until_ : other_blocked_until_) = Clock::now() + std::chrono::seconds(secs);
    auto res = problem(req, http::status::too_many_requests, "Request was throttled",
                       "Request was throttled. Expected available in " + std::to_string(secs) + " seconds.");
    res.set(http::field::retry_after, std::to_string(secs));
    return res;
  }

  std::string new_id() {
    static const char* kAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
    std::string id;
    for (int i = 0; i < 26; ++i) id += kAlphabet[std::uniform_int_distribution<int>(0, 35)(rng_)];
    return id;
  }

  static std::optional<double> parse_duration(std::string_view s) {
    // "30s", "5m", "1h30m", "90"
    static const std::regex kDur(R"(^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?$)");
    std::cmatch m;
    if (s.empty() || !std::regex_match(s.data(), s.data() + s.size(), m, kDur)) return std::nullopt;
    double total = 0;
    if (m[1].matched) total += 3600 * std::stod(m[1].str());
    if (m[2].matched) total += 60 * std::stod(m[2].str());
    if (m[3].matched) total += std::stod(m[3].str());
    return total;
  }

  // What a request gets, decided at once; `wait_until` > now holds the answer (Prefer: wait).
  struct Outcome {
    Action action = Action::respond;
    Response res;
    std::optional<std::size_t> hold_for;  // index of a prediction to hold on (Prefer: wait)
    double hold_s = 0;
    bool truncate = false;
  };

  Outcome handle(Request& req) {
    ++requests_;
    Outcome out;
    std::string target(req.target());
    if (target == "/_sim/stats") {
      out.res = reply(req, http::status::ok, stats());
      return out;
    }
    const std::string v1 = opt_.prefix + "/v1/";
    if (target.rfind(v1, 0) != 0) {
      out.res = problem(req, http::status::not_found, "Not found", "The requested resource could not be found.");
      return out;
    }
    std::string path = target.substr(v1.size() - 1);  // "/predictions..."
    std::string query;
    if (auto q = path.find('?'); q != std::string::npos) {
      query = path.substr(q + 1);
      path.resize(q);
    }
    if (opt_.token) {
      auto auth = req[http::field::authorization];
      if (auth != "Bearer " + *opt_.token) {
        ++unauthorized_;
        out.res = problem(req, http::status::unauthorized, "Unauthenticated",
                          "You did not pass a valid authentication token");
        return out;
      }
    }
    const bool is_create = req.method() == http::verb::post && path.size() >= 12 &&
                           path.compare(path.size() - 12, 12, "/predictions") == 0;
    // Retry-After honoured? Count requests that came back too soon.
    if (Clock::now() < (is_create ? create_blocked_until_ : other_blocked_until_)) ++retry_after_violations_;
    const Faults& f = opt_.faults;
    if (chance(f.throttle)) {
      ++faults_served_["throttle"];
      out.res = throttle(req, f.retry_after_s, is_create);
      return out;
    }
    if (double w = (is_create ? creates_bucket_ : requests_bucket_).take(); w > 0) {
      out.res = throttle(req, w, is_create);
      return out;
    }
    if (chance(f.server_error)) {
      static const http::status kCodes[] = {http::status::internal_server_error, http::status::bad_gateway,
                                            http::status::service_unavailable};
      auto code = kCodes[std::uniform_int_distribution<int>(0, 2)(rng_)];
      ++faults_served_["server_error"];
      out.res = problem(req, code, "Server error", "Something went wrong");
      return out;
    }
    if (chance(f.stall)) {
      ++faults_served_["stall"];
      out.action = Action::stall;
      return out;
    }

    if (is_create) {
      out = create(req, path);
    } else if (req.method() == http::verb::get && path == "/predictions") {
      out.res = list(req, query);
    } else if (req.method() == http::verb::get && path.rfind("/predictions/", 0) == 0 &&
               path.find('/', 13) == std::string::npos) {
      auto it = index_.find(path.substr(13));
      if (it == index_.end()) {
        out.res = problem(req, http::status::not_found, "Not found", "The requested resource could not be found.");
      } else {
        Prediction& p = predictions_[it->second];
        ++p.polls;
        out.res = reply(req, http::status::ok, to_json(p, chance(f.huge_logs)));
      }
    } else if (req.method() == http::verb::post && path.rfind("/predictions/", 0) == 0 &&
               path.size() > 20 && path.compare(path.size() - 7, 7, "/cancel") == 0) {
      auto it = index_.find(path.substr(13, path.size() - 13 - 7));
      if (it == index_.end()) {
        out.res = problem(req, http::status::not_found, "Not found", "The requested resource could not be found.");
      } else {
        ++cancels_;
        Prediction& p = predictions_[it->second];
        if (!terminal(status_of(p, now_sim()))) p.canceled_at = now_sim();
        out.res = reply(req, http::status::ok, to_json(p));
      }
    } else {
      out.res = problem(req, http::status::not_found, "Not found", "The requested resource could not be found.");
    }
    if (out.action == Action::respond && out.res.result() == http::status::ok) {
      if (chance(f.truncated)) {
        ++faults_served_["truncated"];
        out.truncate = true;
      } else if (chance(f.malformed)) {
        ++faults_served_["malformed"];
        out.res.body() = "<html><body>502 Bad Gateway</body></html>";
        out.res.set(http::field::content_type, "text/html");
        out.res.prepare_payload();
      }
    }
    return out;
  }

  Outcome create(Request& req, const std::string& path) {
    Outcome out;
    json::error_code ec;
    json::value body = json::parse(req.body(), ec);
    if (ec || !body.is_object()) {
      out.res = problem(req, http::status::bad_request, "Invalid JSON", "The request body is not a JSON object");
      return out;
    }
    const ModelSpec* model = nullptr;
    bool version_form = false;
    const auto& obj = body.get_object();
    if (path == "/predictions") {
      const json::value* v = obj.if_contains("version");
      if (!v || !v->is_string() || !(model = find_version(std::string_view(v->get_string())))) {
        out.res = problem(req, http::status::unprocessable_entity, "Invalid version or not permitted",
                          "The specified version does not exist (or perhaps you don't have permission to use it?)");
        return out;
      }
      version_form = true;
    } else {
      static const std::regex kModelPath(R"(^/models/([^/]+/[^/]+)/predictions$)");
      std::smatch m;
      if (!std::regex_match(path, m, kModelPath) || !(model = find_model(m[1].str()))) {
        out.res = problem(req, http::status::not_found, "Not found", "The requested resource could not be found.");
        return out;
      }
    }
    for (const auto& kv : obj) {
      if (kv.key() != "input" && kv.key() != "version" && kv.key() != "webhook" &&
          kv.key() != "webhook_events_filter" && kv.key() != "stream") {
        out.res = problem(req, http::status::unprocessable_entity, "Input validation failed",
                          "Additional property " + std::string(kv.key()) + " is not allowed");
        return out;
      }
    }
    const json::value* input = obj.if_contains("input");
    if (!input || !input->is_object()) {
      out.res = problem(req, http::status::unprocessable_entity, "Input validation failed",
                        "input is required and must be an object");
      return out;
    }
    std::optional<double> prefer_wait;
    if (auto prefer = req[http::field::prefer]; !prefer.empty()) {
      static const std::regex kPrefer(R"(^wait(=([1-9]|[1-9][0-9]|60))?$)");
      std::cmatch m;
      if (!std::regex_match(prefer.data(), prefer.data() + prefer.size(), m, kPrefer)) {
        out.res = problem(req, http::status::bad_request, "Invalid Prefer header",
                          "Prefer must be wait or wait=N with N between 1 and 60");
        return out;
      }
      prefer_wait = m[2].matched ? std::stod(m[2].str()) : 60.0;
    }
    std::optional<double> cancel_after;
    if (auto ca = req["Cancel-After"]; !ca.empty()) {
      cancel_after = parse_duration(ca);
      if (!cancel_after || *cancel_after < 5) {
        out.res = problem(req, http::status::bad_request, "Invalid Cancel-After header",
                          "Cancel-After must be a duration of at least 5s, such as 30s or 5m");
        return out;
      }
    }

    Prediction p;
    p.id = new_id();
    p.model = model;
    p.version_form = version_form;
    p.input = *input;
    p.created = now_sim();
    p.created_at = format_utc(std::chrono::system_clock::now());
    if (model->array_output) {
      if (const json::value* n = input->get_object().if_contains("num_outputs"); n && n->is_int64())
        p.outputs = static_cast<int>(std::clamp<int64_t>(n->get_int64(), 1, 4));
    }
    if (opt_.profile == Profile::instant) {
      p.cold = 1e-9;  // `starting` in the create's answer, succeeded by the first poll
    } else {
      p.run = model->video ? uniform(290, 320) : model->run_s * uniform(0.85, 1.15);
      if (chance(opt_.cold_start_rate)) p.cold = uniform(20, 60);
      else p.cold = uniform(0.05, 0.3);
      p.fails = chance(opt_.failure_rate);
    }
    if (cancel_after) p.deadline = p.created + *cancel_after;
    std::string key = version_form ? std::string("v:") + model->version : std::string("m:") + model->name;
    key += '|';
    canonical(*input, key);
    ++creates_by_input_[key];
    ++creates_;
    index_.emplace(p.id, predictions_.size());
    predictions_.push_back(std::move(p));
    const std::size_t idx = predictions_.size() - 1;

    if (chance(opt_.faults.reset_after_create)) {
      ++faults_served_["reset_after_create"];
      out.action = Action::reset;
      return out;
    }
    const Prediction& created = predictions_[idx];
    out.res = reply(req, http::status::created, to_json(created, false, created.created));
    if (prefer_wait) {
      out.hold_for = idx;
      out.hold_s = *prefer_wait;
    }
    return out;
  }

  Response list(const Request& req, const std::string& query) {
    ++lists_;
    std::map<std::string, std::string> q;
    std::regex kv("([^&=]+)=([^&]*)");
    for (auto it = std::sregex_iterator(query.begin(), query.end(), kv); it != std::sregex_iterator(); ++it) {
      const std::string v = (*it)[2];
      std::string decoded;
      for (std::size_t i = 0; i < v.size(); ++i) {
        if (v[i] == '%' && i + 2 < v.size() && std::isxdigit(static_cast<unsigned char>(v[i + 1])) &&
            std::isxdigit(static_cast<unsigned char>(v[i + 2]))) {
          decoded += static_cast<char>(std::stoi(v.substr(i + 1, 2), nullptr, 16));
          i += 2;
        } else {
          decoded += v[i] == '+' ? ' ' : v[i];
        }
      }
      q[(*it)[1]] = decoded;
    }
    std::size_t offset = 0;
    if (q.count("cursor")) offset = static_cast<std::size_t>(std::strtoull(q["cursor"].c_str(), nullptr, 10));
    constexpr std::size_t kPage = 100;
    json::array results;
    std::size_t skipped = 0, i = predictions_.size();
    bool more = false;
    while (i-- > 0) {
      const Prediction& p = predictions_[i];
      if (q.count("created_after") && p.created_at < q["created_after"]) break;  // newest first: the rest are older
      if (q.count("created_before") && p.created_at >= q["created_before"]) continue;
      if (skipped < offset) {
        ++skipped;
        continue;
      }
      if (results.size() == kPage) {
        more = true;
        break;
      }
      results.push_back(to_json(p));
    }
    json::object body{{"results", std::move(results)}, {"previous", nullptr}, {"next", nullptr}};
    if (more) {
      std::string next = "https://api.replicate.com/v1/predictions?cursor=" + std::to_string(offset + kPage);
      for (const char* k : {"created_after", "created_before"})
        if (q.count(k)) next += std::string("&") + k + "=" + q[k];
      body["next"] = next;
    }
    if (offset > 0) body["previous"] = "https://api.replicate.com/v1/predictions?cursor=" +
                                       std::to_string(offset > kPage ? offset - kPage : 0);
    return reply(req, http::status::ok, body);
  }

  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, sock] = co_await acceptor_.async_accept(use_nothrow);
      if (ec) co_return;
      ++connections_;
      sock.set_option(tcp::no_delay(true));
      asio::co_spawn(io_, session(std::move(sock)), asio::detached);
    }
  }

  template <class Stream>
  asio::awaitable<void> serve(Stream& stream, tcp::socket& raw) {
    beast::flat_buffer buf;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(64 * 1024 * 1024);
      auto [ec, n] = co_await http::async_read(stream, buf, parser, use_nothrow);
      if (ec) co_return;
      Request req = parser.release();
      Outcome out = handle(req);
      if (out.action == Action::reset) {
        raw.set_option(asio::socket_base::linger(true, 0));
        beast::error_code ignore;
        raw.close(ignore);
        co_return;
      }
      if (out.action == Action::stall) {
        asio::steady_timer t(io_);
        t.expires_after(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(opt_.faults.stall_s)));
        co_await t.async_wait(use_nothrow);
        beast::error_code ignore;
        raw.close(ignore);
        co_return;
      }
      if (out.hold_for) {
        // Prefer: wait — hold until the prediction is terminal or N seconds have passed.
        const Prediction& p = predictions_[*out.hold_for];
        const double until = std::min(end_of(p), now_sim() + out.hold_s);
        const double real_s = std::max(0.0, (until - now_sim()) / opt_.time_scale);
        asio::steady_timer t(io_);
        t.expires_after(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(real_s)));
        co_await t.async_wait(use_nothrow);
        out.res = reply(req, http::status::created, to_json(predictions_[*out.hold_for]));
      }
      if (out.truncate) {
        std::string& b = out.res.body();
        b.resize(b.size() / 2);
        out.res.prepare_payload();
      }
      const bool keep = out.res.keep_alive();
      auto [wec, wn] = co_await http::async_write(stream, out.res, use_nothrow);
      if (wec || !keep) co_return;
    }
  }

  asio::awaitable<void> session(tcp::socket sock) {
    const uint64_t id = next_socket_++;
    sockets_[id] = &sock;
    if (tls_) {
      ssl::stream<tcp::socket&> stream(sock, ssl_);
      auto [ec] = co_await stream.async_handshake(ssl::stream_base::server, use_nothrow);
      if (!ec) co_await serve(stream, sock);
    } else {
      co_await serve(sock, sock);
    }
    sockets_.erase(id);
  }

  Options opt_;
  std::mt19937_64 rng_;
  tcp::acceptor acceptor_;
  ssl::context ssl_;
  bool tls_ = false;
  uint16_t port_ = 0;
  Clock::time_point epoch_;
  std::deque<Prediction> predictions_;
  std::unordered_map<std::string, std::size_t> index_;
  std::unordered_map<std::string, int64_t> creates_by_input_;
  std::map<std::string, int64_t> faults_served_;
  std::unordered_map<uint64_t, tcp::socket*> sockets_;
  uint64_t next_socket_ = 0;
  RateBucket creates_bucket_, requests_bucket_;
  Clock::time_point create_blocked_until_{}, other_blocked_until_{};
  int64_t creates_ = 0, cancels_ = 0, lists_ = 0, throttled_ = 0, retry_after_violations_ = 0, unauthorized_ = 0,
          connections_ = 0, requests_ = 0;
};

Server::Server(Options options) : impl_(std::make_shared<Impl>(std::move(options))) {}

Server::~Server() {
  stop();
  if (thread_.joinable()) thread_.join();
}

uint16_t Server::listen() { return impl_->bind(); }

uint16_t Server::start() {
  const uint16_t port = impl_->bind();
  thread_ = std::thread([impl = impl_] { impl->run(); });
  return port;
}

void Server::run() { impl_->run(); }

void Server::stop() { impl_->stop(); }
uint16_t Server::port() const { return impl_->port(); }
std::string Server::stats_json() { return impl_->stats_json(); }
void Server::set_faults(const Faults& faults) { impl_->set_faults(faults); }

}  // namespace predictd::sim
