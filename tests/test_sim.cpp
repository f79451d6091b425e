// predictd-sim's protocol, spoken to with our own HTTP client.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>

#include "http_client.h"
#include "sim_server.h"
#include "test_util.h"

using namespace predictd;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

struct Sim {
  std::unique_ptr<sim::Server> server;
  boost::asio::io_context io{1};
  std::unique_ptr<HttpClient> client;

  explicit Sim(sim::Options so = {}) {
    so.prefix = "/replicate";
    so.token = "t0k";
    server = std::make_unique<sim::Server>(so);
    const uint16_t port = server->start();
    HttpClientSettings s;
    s.base_url = "http://127.0.0.1:" + std::to_string(port) + "/replicate";
    client = std::make_unique<HttpClient>(io, s);
  }
  ~Sim() {
    client.reset();
    server->stop();
  }

  HttpResponse call(const std::string& method, const std::string& path, const std::string& body = "",
                    std::vector<std::pair<std::string, std::string>> headers = {{"Authorization", "Bearer t0k"}}) {
    std::optional<HttpResponse> out;
    client->send({.method = method, .path = path, .body = body, .headers = headers},
                 [&](HttpResponse r) { out = std::move(r); });
    const auto end = std::chrono::steady_clock::now() + 20s;
    while (!out && std::chrono::steady_clock::now() < end) {
      io.run_for(2ms);
      if (io.stopped()) io.restart();
    }
    return out.value();
  }
  json::object create(const std::string& model, const std::string& input = R"({"prompt":"x"})") {
    auto r = call("POST", "/v1/models/" + model + "/predictions", R"({"input":)" + input + "}");
    EXPECT_EQ(r.status, 201) << r.body;
    return json::parse(r.body).as_object();
  }
  json::object get(const std::string& id) {
    return json::parse(call("GET", "/v1/predictions/" + id).body).as_object();
  }
};

}  // namespace

TEST(Sim, InstantProfileSucceedsByTheFirstPoll) {
  sim::Options so;
  so.profile = sim::Profile::instant;
  Sim s(so);
  auto p = s.create("black-forest-labs/flux-schnell", R"({"prompt":"x","num_outputs":3})");
  EXPECT_EQ(p.at("status").as_string(), "starting");
  EXPECT_EQ(p.at("urls").at("get").as_string(), "https://api.replicate.com/v1/predictions/" +
                                                     std::string(p.at("id").as_string()));
  auto done = s.get(std::string(p.at("id").as_string()));
  EXPECT_EQ(done.at("status").as_string(), "succeeded");
  EXPECT_EQ(done.at("output").as_array().size(), 3u);
  EXPECT_EQ(done.at("metrics").at("image_count").as_int64(), 3);
  auto video = s.create("minimax/video-01");
  auto v = s.get(std::string(video.at("id").as_string()));
  EXPECT_TRUE(v.at("output").is_string());
  EXPECT_FALSE(v.at("metrics").as_object().contains("image_count"));
}

TEST(Sim, PredictionsCarryEveryRequiredFieldOfTheOpenApiSchema) {
  const std::string path = std::string(PREDICTD_SOURCE_DIR) + "/../shared/reference/replicate-openapi.json";
  std::ifstream in(path);
  if (!in) GTEST_SKIP() << "no " << path;
  json::value doc = json::parse(test::read_file(path));
  const auto& schema = doc.at("components").at("schemas").at("schemas_prediction_response").as_object();
  sim::Options so;
  so.profile = sim::Profile::instant;
  Sim s(so);
  auto created = s.create("stability-ai/sdxl");
  auto p = s.get(std::string(created.at("id").as_string()));
  ASSERT_TRUE(schema.contains("required"));
  for (const auto& req : schema.at("required").as_array()) {
    const std::string key(req.as_string());
    ASSERT_TRUE(p.contains(key)) << key;
    const auto& prop = schema.at("properties").at(key).as_object();
    if (!prop.contains("type")) continue;
    const std::string type(prop.at("type").as_string());
    const json::value& v = p.at(key);
    const bool nullable = prop.contains("nullable") && prop.at("nullable").as_bool();
    if (v.is_null() && nullable) continue;
    const bool ok = type == "string"    ? v.is_string()
                    : type == "object"  ? v.is_object()
                    : type == "boolean" ? v.is_bool()
                    : type == "number"  ? v.is_number()
                                        : true;
    EXPECT_TRUE(ok) << key << " should be a " << type;
  }
}

TEST(Sim, ValidationErrors) {
  Sim s;
  EXPECT_EQ(s.call("POST", "/v1/models/nobody/nothing/predictions", R"({"input":{}})").status, 404);
  EXPECT_EQ(s.call("POST", "/v1/predictions", R"({"version":"abc","input":{}})").status, 422);
  EXPECT_EQ(s.call("POST", "/v1/models/black-forest-labs/flux-schnell/predictions", R"({"input":[1]})").status, 422);
  EXPECT_EQ(s.call("POST", "/v1/models/black-forest-labs/flux-schnell/predictions", R"({})").status, 422);
  EXPECT_EQ(s.call("POST", "/v1/models/black-forest-labs/flux-schnell/predictions", "not json").status, 400);
  EXPECT_EQ(s.call("POST", "/v1/models/black-forest-labs/flux-schnell/predictions", R"({"input":{},"extra":1})").status,
            422);
  // The OpenAPI pattern (which admits 61..99, though its text says 1..60).
  for (const char* bad : {"wait=0", "wait=100", "wait=5s", "sleep"})
    EXPECT_EQ(s.call("POST", "/v1/models/black-forest-labs/flux-schnell/predictions", R"({"input":{}})",
                     {{"Authorization", "Bearer t0k"}, {"Prefer", bad}})
                  .status,
              400)
        << bad;
  EXPECT_EQ(s.call("GET", "/v1/predictions/none").status, 404);
  EXPECT_EQ(s.call("GET", "/v1/predictions", "", {}).status, 401);
}

TEST(Sim, VersionFormAndPreferWait) {
  sim::Options so;
  so.time_scale = 100;
  so.cold_start_rate = 0;
  so.failure_rate = 0;
  Sim s(so);
  auto r = s.call("POST", "/v1/predictions",
                  R"({"version":"7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc","input":{"prompt":"x"}})",
                  {{"Authorization", "Bearer t0k"}, {"Prefer", "wait=5"}});
  ASSERT_EQ(r.status, 201);
  auto p = json::parse(r.body).as_object();
  EXPECT_EQ(p.at("status").as_string(), "succeeded");  // 5 s at 100x: held until done
  EXPECT_EQ(p.at("model").as_string(), "stability-ai/sdxl");
}

TEST(Sim, CancelAndCancelAfter) {
  sim::Options so;
  so.cold_start_rate = 0;
  Sim s(so);
  auto p = s.create("minimax/video-01");
  const std::string id(p.at("id").as_string());
  auto c = s.call("POST", "/v1/predictions/" + id + "/cancel");
  EXPECT_EQ(json::parse(c.body).at("status").as_string(), "canceled");
  auto r = s.call("POST", "/v1/models/minimax/video-01/predictions", R"({"input":{}})",
                  {{"Authorization", "Bearer t0k"}, {"Cancel-After", "2s"}});
  EXPECT_EQ(r.status, 400);  // under the 5 s minimum
}

TEST(Sim, ListIsNewestFirstAndPaginated) {
  sim::Options so;
  so.profile = sim::Profile::instant;
  Sim s(so);
  std::vector<std::string> ids;
  for (int i = 0; i < 130; ++i) ids.emplace_back(s.create("black-forest-labs/flux-schnell", "{\"i\":" + std::to_string(i) + "}").at("id").as_string());
  auto page = json::parse(s.call("GET", "/v1/predictions").body).as_object();
  auto& results = page.at("results").as_array();
  ASSERT_EQ(results.size(), 100u);
  EXPECT_EQ(results[0].at("id").as_string(), ids.back());
  std::string next(page.at("next").as_string());
  auto page2 = json::parse(s.call("GET", "/v1/predictions" + next.substr(next.find('?'))).body).as_object();
  EXPECT_EQ(page2.at("results").as_array().size(), 30u);
  EXPECT_EQ(page2.at("results").as_array().back().at("id").as_string(), ids.front());
  auto stats = json::parse(s.server->stats_json());
  EXPECT_EQ(stats.at("creates").as_int64(), 130);
  EXPECT_EQ(stats.at("distinct_inputs").as_int64(), 130);
}

TEST(Sim, RateLimitAnswers429WithRetryAfter) {
  sim::Options so;
  so.profile = sim::Profile::instant;
  so.creates_per_minute = 60;  // one per second, burst one
  Sim s(so);
  s.create("black-forest-labs/flux-schnell");
  auto r = s.call("POST", "/v1/models/black-forest-labs/flux-schnell/predictions", R"({"input":{}})");
  EXPECT_EQ(r.status, 429);
  ASSERT_NE(r.header("retry-after"), nullptr);
  EXPECT_NE(r.body.find("Expected available in"), std::string::npos);
}
