// Suite 4, bad responses: a scripted API answers one kind of garbage; the
// engine logs it clearly, retries or fails the job as SPEC §4 says, and ends
// with nothing in flight.
#include <gtest/gtest.h>

#include <atomic>
#include <iostream>
#include <mutex>

#include <boost/json.hpp>

#include "engine_rig.h"
#include "http_test_server.h"
#include "timefmt.h"

using namespace predictd;
using namespace std::chrono_literals;
namespace json = boost::json;
using test::Reply;
using test::ReceivedRequest;

namespace {

constexpr const char* kModel = "black-forest-labs/flux-schnell";
constexpr const char* kId = "pred0bad0resp";

enum class Kind { create, poll, list };

// A one-prediction Replicate: good answers, except that `bad(kind, n)` may
// replace the n-th (1-based) request of a kind.
struct FakeApi {
  std::mutex mu;
  std::string input = "{}";
  std::string created_at;
  bool created = false;
  int creates = 0, polls = 0, lists = 0, other = 0;
  std::function<std::optional<Reply>(Kind, int)> bad;

  json::object prediction(const char* status) {
    json::object p{{"id", kId},
                   {"model", kModel},
                   {"version", "hidden"},
                   {"status", status},
                   {"input", json::parse(input)},
                   {"created_at", created_at},
                   {"urls", {{"get", std::string("https://api.replicate.com/v1/predictions/") + kId}}}};
    if (std::string_view(status) == "succeeded") {
      p["output"] = json::array{"https://replicate.delivery/out-0.webp"};
      p["metrics"] = {{"predict_time", 0.4}, {"image_count", 1}};
    }
    return p;
  }
  static Reply json_reply(int status, const json::value& v) {
    return Reply{.status = status, .body = json::serialize(v), .headers = {{"Content-Type", "application/json"}}};
  }

  Reply handle(const ReceivedRequest& r) {
    std::lock_guard lock(mu);
    if (r.method == "POST" && r.target.ends_with("/predictions")) {
      ++creates;
      input = json::serialize(json::parse(r.body).at("input"));
      if (bad)
        if (auto b = bad(Kind::create, creates)) {
          // Garbage may still follow a prediction the server made.
          if (b->status < 300 || b->action != Reply::Action::respond) mark_created();
          return *b;
        }
      mark_created();
      return json_reply(201, prediction("starting"));
    }
    if (r.method == "GET" && r.target.starts_with("/v1/predictions?")) {
      ++lists;
      if (bad)
        if (auto b = bad(Kind::list, lists)) return *b;
      json::array results;
      if (created) results.push_back(prediction("processing"));
      return json_reply(200, json::object{{"results", results}, {"next", nullptr}, {"previous", nullptr}});
    }
    if (r.method == "GET" && r.target == std::string("/v1/predictions/") + kId) {
      ++polls;
      if (bad)
        if (auto b = bad(Kind::poll, polls)) return *b;
      return json_reply(200, prediction("succeeded"));
    }
    ++other;
    return json_reply(404, json::object{{"detail", "Not found."}});
  }
  void mark_created() {
    if (!created) created_at = format_utc(std::chrono::system_clock::now());
    created = true;
  }
};

Reply raw_body(int status, std::string body, std::string type = "application/json") {
  return Reply{.status = status, .body = std::move(body), .headers = {{"Content-Type", std::move(type)}}};
}

const std::string kHtml =
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1>"
    "</center><hr><center>nginx</center></body></html>";

struct Scenario {
  const char* name;
  std::function<std::optional<Reply>(Kind, int)> bad;
  JobStatus outcome;
  std::vector<std::string> log_parts;  // one log line holds all of these
  std::string error_prefix;            // of the row's error, when it failed
  int creates;                         // requests the server saw
  std::size_t body_limit = 64ull * 1024 * 1024;
};

std::optional<Reply> first(Kind want, Kind k, int n, Reply r, int times = 1) {
  if (k == want && n <= times) return r;
  return std::nullopt;
}

std::vector<Scenario> scenarios() {
  const std::string pred = std::string("{\"id\":\"") + kId + "\",";
  std::vector<Scenario> s;
  s.push_back({"truncated JSON on a poll",
               [=](Kind k, int n) { return first(Kind::poll, k, n, raw_body(200, pred + "\"status\":\"succ"), 2); },
               JobStatus::succeeded, {"api_error op=poll", "response is not valid JSON"}, "", 1});
  s.push_back({"wrong types on a poll",
               [=](Kind k, int n) { return first(Kind::poll, k, n, raw_body(200, pred + "\"status\":3}")); },
               JobStatus::succeeded, {"api_error op=poll", "has no string `status`"}, "", 1});
  s.push_back({"missing id on the create (the prediction exists)",
               [](Kind k, int n) { return first(Kind::create, k, n, raw_body(201, "{\"status\":\"starting\"}")); },
               JobStatus::succeeded, {"job_retry", "prediction has no string `id`"}, "", 1});
  s.push_back({"unknown status on a poll",
               [=](Kind k, int n) { return first(Kind::poll, k, n, raw_body(200, pred + "\"status\":\"queued\"}")); },
               JobStatus::succeeded, {"api_error op=poll", "has unknown status"}, "", 1});
  s.push_back({"output a number on success",
               [=](Kind k, int) -> std::optional<Reply> {
                 if (k != Kind::poll) return std::nullopt;
                 return raw_body(200, pred + "\"status\":\"succeeded\",\"output\":42}");
               },
               JobStatus::failed, {"job_failed", "output is a int64"},
               "the API reported success but output is a int64, not a string or an array of strings", 1});
  s.push_back({"huge logs within the body limit",
               [=](Kind k, int n) {
                 return first(Kind::poll, k, n,
                              raw_body(200, pred + "\"status\":\"processing\",\"logs\":\"" +
                                                std::string(8 << 20, 'l') + "\"}"));
               },
               JobStatus::succeeded, {"job_succeeded"}, "", 1});
  s.push_back({"a body over the limit",
               [=](Kind k, int n) {
                 return first(Kind::poll, k, n,
                              raw_body(200, pred + "\"status\":\"processing\",\"logs\":\"" +
                                                std::string(2 << 20, 'l') + "\"}"));
               },
               JobStatus::succeeded, {"api_error op=poll", "prediction=pred0bad0resp"}, "", 1, 1 << 20});
  s.push_back({"an HTML error page on the create",
               [=](Kind k, int n) { return first(Kind::create, k, n, raw_body(502, kHtml, "text/html")); },
               JobStatus::succeeded, {"job_retry", "HTTP 502: <!DOCTYPE html>"}, "", 2});
  s.push_back({"an HTML page with 200 on a poll",
               [=](Kind k, int n) { return first(Kind::poll, k, n, raw_body(200, kHtml, "text/html")); },
               JobStatus::succeeded, {"api_error op=poll", "response is not valid JSON"}, "", 1});
  s.push_back({"an empty 200 on a poll",
               [=](Kind k, int n) { return first(Kind::poll, k, n, raw_body(200, "")); },
               JobStatus::succeeded, {"api_error op=poll", "response is not valid JSON"}, "", 1});
  s.push_back({"an empty 400 on the create",
               [=](Kind k, int n) -> std::optional<Reply> {
                 if (k == Kind::create && n == 1) return Reply{.status = 400, .body = ""};
                 return std::nullopt;
               },
               JobStatus::failed, {"job_failed", "HTTP 400 with an empty body"}, "HTTP 400 with an empty body", 1});
  s.push_back({"a redirect on every create",
               [=](Kind k, int) -> std::optional<Reply> {
                 if (k != Kind::create) return std::nullopt;
                 return Reply{.status = 301, .body = "", .headers = {{"Location", "https://evil.example/steal"}}};
               },
               JobStatus::failed, {"job_failed", "gave up after 3 attempts"}, "gave up after 3 attempts: HTTP 301", 3});
  s.push_back({"a redirect on a poll",
               [=](Kind k, int n) {
                 return first(Kind::poll, k, n,
                              Reply{.status = 302, .body = "", .headers = {{"Location", "https://evil.example/"}}});
               },
               JobStatus::succeeded, {"api_error op=poll", "status=302"}, "", 1});
  s.push_back({"a create never answered",
               [=](Kind k, int n) { return first(Kind::create, k, n, Reply{.action = Reply::Action::stall}); },
               JobStatus::succeeded, {"job_retry", "timed out"}, "", 1});
  s.push_back({"a poll never answered",
               [=](Kind k, int n) { return first(Kind::poll, k, n, Reply{.action = Reply::Action::stall}); },
               JobStatus::succeeded, {"api_error op=poll", "timed out"}, "", 1});
  // One reset looks like a stale keep-alive connection and is retried at once,
  // silently; the second, on a fresh connection, is an error.
  s.push_back({"resets on a poll",
               [=](Kind k, int n) { return first(Kind::poll, k, n, Reply{.action = Reply::Action::reset}, 2); },
               JobStatus::succeeded, {"api_error op=poll"}, "", 1});
  s.push_back({"bytes that are not HTTP",
               [=](Kind k, int n) {
                 return first(Kind::poll, k, n, Reply{.action = Reply::Action::raw, .raw = "SSH-2.0-OpenSSH\r\n"});
               },
               JobStatus::succeeded, {"api_error op=poll"}, "", 1});
  s.push_back({"another prediction's body on a poll",
               [=](Kind k, int n) {
                 return first(Kind::poll, k, n, raw_body(200, "{\"id\":\"someoneelse\",\"status\":\"succeeded\","
                                                              "\"output\":[\"https://x/y.png\"]}"));
               },
               JobStatus::succeeded, {"api_error op=poll", "response is for prediction someoneelse"}, "", 1});
  s.push_back({"a list that is not JSON while reconciling",
               [=](Kind k, int n) -> std::optional<Reply> {
                 if (k == Kind::create && n == 1) return Reply{.action = Reply::Action::reset};
                 if (k == Kind::list && n == 1) return raw_body(200, "[");
                 return std::nullopt;
               },
               JobStatus::succeeded, {"api_error op=list", "response is not valid JSON"}, "", 1});
  return s;
}

}  // namespace

class BadResponses : public ::testing::TestWithParam<std::size_t> {};

TEST_P(BadResponses, LoggedThenRetriedOrFailedAndNothingLeftInFlight) {
  const Scenario sc = scenarios()[GetParam()];
  SCOPED_TRACE(sc.name);
  test::EngineRig rig;
  rig.http_settings.body_limit = sc.body_limit;
  auto api = std::make_shared<FakeApi>();
  api->bad = sc.bad;
  test::HttpTestServer server([api](const ReceivedRequest& r) { return api->handle(r); }, rig.pem);
  rig.point_at(server.port());
  const int64_t id = rig.insert(std::string("INSERT INTO jobs(model, input) VALUES ('") + kModel +
                                "', '{\"prompt\":\"bad responses\"}')");
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.all_terminal(); }, 30s));
  ASSERT_TRUE(rig.run_until([&] { return rig.engine->in_flight() == 0 && rig.http->in_flight() == 0; }, 5s));

  const JobRow r = rig.row(id);
  EXPECT_EQ(r.status, sc.outcome) << r.error.value_or("");
  if (sc.outcome == JobStatus::succeeded) {
    EXPECT_EQ(r.prediction_id.value_or(""), kId);
    EXPECT_EQ(r.cost_credits.value_or(-1), 75);
  } else {
    EXPECT_EQ(r.error.value_or("").substr(0, sc.error_prefix.size()), sc.error_prefix);
    EXPECT_EQ(r.cost_credits.value_or(-1), 0);
  }
  if (rig.logs.find(sc.log_parts).empty()) {
    ADD_FAILURE() << "no log line with all of the expected parts; warnings were:";
    for (const auto& l : rig.logs.lines())
      if (!l.starts_with("info") && !l.starts_with("debug")) std::cout << "  " << l << "\n";
  }
  std::lock_guard lock(api->mu);
  EXPECT_EQ(api->creates, sc.creates);
  EXPECT_EQ(api->other, 0);  // no request went anywhere else (a Location was never followed)
  EXPECT_LE(server.max_open_connections(), rig.config.api.max_connections);
}

INSTANTIATE_TEST_SUITE_P(Kinds, BadResponses, ::testing::Range<std::size_t>(0, scenarios().size()),
                         [](const ::testing::TestParamInfo<std::size_t>& i) {
                           std::string n;
                           for (char c : std::string(scenarios()[i.param].name))
                             n += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return n;
                         });
