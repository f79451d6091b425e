#include <gtest/gtest.h>

#include "replicate.h"

using namespace predictd;

TEST(Replicate, ParsesArrayOutputAndMetrics) {
  auto r = parse_prediction(R"({"id":"p1","status":"succeeded","model":"black-forest-labs/flux-schnell",
    "version":"v","input":{"b":1,"a":"x"},"output":["https://a/0.webp","https://a/1.webp"],
    "error":null,"metrics":{"predict_time":0.81,"total_time":1.2,"image_count":2},
    "created_at":"2026-11-25T10:00:00.000Z","urls":{"get":"https://api.replicate.com/v1/predictions/p1"}})",
                            /*with_input=*/true);
  ASSERT_TRUE(std::holds_alternative<Prediction>(r)) << std::get<std::string>(r);
  const auto& p = std::get<Prediction>(r);
  EXPECT_EQ(p.id, "p1");
  EXPECT_EQ(p.status, RemoteStatus::succeeded);
  ASSERT_EQ(p.output.size(), 2u);
  EXPECT_EQ(p.output[1], "https://a/1.webp");
  EXPECT_FALSE(p.output_error);
  EXPECT_DOUBLE_EQ(*p.predict_time, 0.81);
  EXPECT_EQ(*p.image_count, 2);
  EXPECT_EQ(p.canonical_input, R"({"a":"x","b":1})");
  // Polls and creates skip that pass.
  EXPECT_EQ(std::get<Prediction>(parse_prediction(R"({"id":"p","status":"starting","input":{"a":1}})")).canonical_input,
            "");
  EXPECT_EQ(*p.model, "black-forest-labs/flux-schnell");
}

TEST(Replicate, StringOutputBecomesOneElement) {
  auto r = parse_prediction(R"({"id":"p2","status":"succeeded","output":"https://x/out.mp4"})");
  const auto& p = std::get<Prediction>(r);
  ASSERT_EQ(p.output.size(), 1u);
  EXPECT_EQ(p.output[0], "https://x/out.mp4");
}

TEST(Replicate, RejectsWhatIsNotAPrediction) {
  EXPECT_EQ(std::get<std::string>(parse_prediction(R"({"status":"starting"})")), "prediction has no string `id`");
  EXPECT_EQ(std::get<std::string>(parse_prediction(R"({"id":"p","status":"sleeping"})")),
            "prediction p has unknown status \"sleeping\"");
  EXPECT_EQ(std::get<std::string>(parse_prediction(R"({"id":"p","status":7})")),
            "prediction p has no string `status`");
  EXPECT_EQ(std::get<std::string>(parse_prediction("[1,2]")), "response is not a JSON object");
  auto truncated = std::get<std::string>(parse_prediction(R"({"id":"p","sta)"));
  EXPECT_EQ(truncated.rfind("response is not valid JSON", 0), 0u) << truncated;
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_prediction("")));
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_prediction("<html>502 Bad Gateway</html>")));
}

TEST(Replicate, FlagsUnusableSucceededOutput) {
  auto number = std::get<Prediction>(parse_prediction(R"({"id":"p","status":"succeeded","output":42})"));
  EXPECT_EQ(*number.output_error, "output is a int64, not a string or an array of strings");
  auto mixed = std::get<Prediction>(parse_prediction(R"({"id":"p","status":"succeeded","output":["a",1]})"));
  EXPECT_EQ(*mixed.output_error, "output array holds a non-string element");
  auto none = std::get<Prediction>(parse_prediction(R"({"id":"p","status":"succeeded","output":null})"));
  EXPECT_EQ(*none.output_error, "succeeded without any output");
  auto running = std::get<Prediction>(parse_prediction(R"({"id":"p","status":"processing","output":null})"));
  EXPECT_FALSE(running.output_error);
}

TEST(Replicate, PageAndNextCursor) {
  auto r = parse_prediction_page(R"({"next":"https://api.replicate.com/v1/predictions?cursor=abc",
    "previous":null,"results":[{"id":"a","status":"starting"},{"bad":1},{"id":"b","status":"failed","error":"oom"}]})");
  const auto& page = std::get<PredictionPage>(r);
  ASSERT_EQ(page.results.size(), 2u);
  EXPECT_EQ(page.results[1].error.value(), "oom");
  EXPECT_EQ(*page.next, "https://api.replicate.com/v1/predictions?cursor=abc");
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_prediction_page(R"({"results":3})")));
}

TEST(Replicate, CanonicalJsonSortsKeysAtEveryDepth) {
  EXPECT_EQ(*canonical_json(R"({ "z": [ {"b":2,"a":1} ], "a": "s" })"), R"({"a":"s","z":[{"a":1,"b":2}]})");
  EXPECT_EQ(canonical_json(R"({"a":1})"), canonical_json(R"({ "a" : 1 })"));
  EXPECT_FALSE(canonical_json("{"));
}

TEST(Replicate, InputMustBeAnObject) {
  EXPECT_FALSE(check_input_object(R"({"prompt":"a cat"})"));
  EXPECT_EQ(*check_input_object("[1]"), "input must be a JSON object, got array");
  EXPECT_EQ(*check_input_object("\"x\""), "input must be a JSON object, got string");
  EXPECT_EQ(check_input_object("{").value().rfind("input is not valid JSON", 0), 0u);
}

TEST(Replicate, CreateRequestForms) {
  auto m = make_create_request("black-forest-labs/flux-schnell", "", R"({"prompt":"a cat"})");
  EXPECT_EQ(m.path, "/v1/models/black-forest-labs/flux-schnell/predictions");
  EXPECT_EQ(m.body, R"({"input":{"prompt":"a cat"}})");
  auto v = make_create_request("stability-ai/sdxl", "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc",
                               R"({"prompt":"x"})");
  EXPECT_EQ(v.path, "/v1/predictions");
  EXPECT_EQ(v.body,
            R"({"version":"7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc","input":{"prompt":"x"}})");
}

TEST(Replicate, ErrorMessagesAndThrottling) {
  EXPECT_EQ(error_message(R"({"title":"Invalid input","detail":"prompt is required","status":422})", 422),
            "prompt is required");
  EXPECT_EQ(error_message("<html>\nBad Gateway</html>", 502), "HTTP 502: <html> Bad Gateway</html>");
  EXPECT_EQ(error_message("", 500), "HTTP 500 with an empty body");
  EXPECT_EQ(*throttle_delay_s(R"({"detail":"Request was throttled. Expected available in 3 seconds."})"), 3.0);
  EXPECT_FALSE(throttle_delay_s("slow down"));
  EXPECT_EQ(*parse_retry_after(" 7 "), 7.0);
  EXPECT_FALSE(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"));
  EXPECT_FALSE(parse_retry_after("-1"));
}

// Found by fuzz_replicate: Boost.JSON 1.81 read this 53-digit integer and its
// shortest echo 4.4446404804404447e+52 as two different doubles, so a row's
// input and the API's echo of it did not match when reconciling.
TEST(Replicate, CanonicalJsonReadsNumbersExactly) {
  const char* big = R"({"x":44446404804404446404804444464464048044444644444446444})";
  EXPECT_EQ(*canonical_json(big), R"({"x":4.4446404804404447e+52})");
  EXPECT_EQ(canonical_json(big), canonical_json(R"({"x":4.4446404804404447e+52})"));
  EXPECT_EQ(*canonical_json(R"([1.0, 1, 0.1, 2.5e-3, 18446744073709551615, -9223372036854775808])"),
            "[1,1,0.1,0.0025,18446744073709551615,-9223372036854775808]");
  auto r = parse_prediction(R"({"id":"p","status":"starting","input":{"x":4.4446404804404447e+52}})", true);
  EXPECT_EQ(std::get<Prediction>(r).canonical_input, *canonical_json(big));
}

// Found by fuzz_replicate: 0.9892e337 overflows a double, and the canonical
// form was the non-JSON "Infinity", which did not read back.
TEST(Replicate, CanonicalJsonIsAFixedPointAtTheLimits) {
  for (const char* text : {"0.9892e337", "-1e400", "1e-400", "-0.0", "[-0.0]", R"({"b":1,"a":2,"b":3})"}) {
    auto c = canonical_json(text);
    ASSERT_TRUE(c) << text;
    EXPECT_EQ(canonical_json(*c), c) << text;
  }
  EXPECT_EQ(*canonical_json("0.9892e337"), "1.7976931348623157e+308");
  EXPECT_EQ(*canonical_json("-0.0"), "0");
  EXPECT_EQ(*canonical_json(R"({"b":1,"a":2,"b":3})"), R"({"a":2,"b":3})");  // the last duplicate, as Boost.JSON
}

TEST(Replicate, PageInputsStayWithTheirItems) {
  auto r = parse_prediction_page(R"({"results":[7,{"id":"a","status":"starting","input":{"n":1.0}},{"id":"x"},
    {"id":"b","status":"starting","input":{"n":2,"m":[0.5]},"nested":{"input":{"no":1}}}],"input":{"no":2}})");
  const auto& page = std::get<PredictionPage>(r);
  ASSERT_EQ(page.results.size(), 2u);
  EXPECT_EQ(page.results[0].canonical_input, R"({"n":1})");
  EXPECT_EQ(page.results[1].canonical_input, R"({"m":[0.5],"n":2})");
  // A duplicate `results` replaces the first, inputs and all.
  auto d = parse_prediction_page(R"({"results":[{"id":"a","status":"starting","input":{"n":1}}],
    "results":[{"id":"b","status":"starting"}]})");
  ASSERT_EQ(std::get<PredictionPage>(d).results.size(), 1u);
  EXPECT_EQ(std::get<PredictionPage>(d).results[0].canonical_input, "");
}

// Reviewed while fuzzing: std::stod threw std::out_of_range on a digit run
// too long for a double, out of an API error body.
TEST(Replicate, ThrottleDelayNeverThrows) {
  EXPECT_FALSE(throttle_delay_s("Expected available in " + std::string(400, '9') + " seconds."));
  EXPECT_EQ(*throttle_delay_s("AVAILABLE IN 2.5s"), 2.5);
  EXPECT_EQ(*throttle_delay_s("available in 3.x, available in 4 s"), 4.0);
  EXPECT_FALSE(throttle_delay_s("available in 3. seconds"));
  EXPECT_FALSE(throttle_delay_s(std::string(5000, 'x') + "available in 3 seconds"));  // past the first 4 KiB
}
