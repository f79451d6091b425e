#include <gtest/gtest.h>

#include <cstdlib>

#include "config.h"
#include "test_util.h"

using namespace predictd;

namespace {
std::string error_of(const std::string& text) {
  try {
    parse_config(text);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(accepted)";
}
}  // namespace

TEST(Config, EmptyObjectMeansAllDefaults) {
  Config c = parse_config("{}");
  EXPECT_EQ(c.db_path, "/var/lib/predictd/jobs.db");
  EXPECT_EQ(c.api.base_url, "https://api.openai-hk.com/replicate");
  EXPECT_EQ(c.api.max_connections, 32);
  EXPECT_EQ(c.limits.max_in_flight, 256);
  EXPECT_EQ(c.limits.creates_per_minute, 600);
  EXPECT_EQ(c.limits.requests_per_minute, 3000);
  EXPECT_EQ(c.retry.max_attempts, 5);
  EXPECT_EQ(c.jobs.default_timeout_s, 1800);
  EXPECT_EQ(c.billing.markup, *Decimal::parse("2.5"));
  EXPECT_EQ(c.billing.credits_per_currency_unit, 10000);
  EXPECT_EQ(c.models.entries().size(), 14u);
}

TEST(Config, CommentsAndTrailingCommas) {
  Config c = parse_config(R"({
    // the API
    "api": { "base_url": "http://127.0.0.1:8080/replicate/", "max_connections": 4, },
    /* prices */ "billing": { "markup": "3" },
  })");
  EXPECT_EQ(c.api.base_url, "http://127.0.0.1:8080/replicate");
  EXPECT_EQ(c.api.max_connections, 4);
  EXPECT_EQ(c.billing.markup, *Decimal::parse("3"));
}

TEST(Config, ExactErrorMessages) {
  EXPECT_EQ(error_of(R"({"api": {"max_conections": 4}})"), "unknown key \"api.max_conections\"");
  EXPECT_EQ(error_of(R"({"apis": {}})"), "unknown key \"apis\"");
  EXPECT_EQ(error_of(R"({"api": {"max_connections": "4"}})"), "api.max_connections: expected an integer");
  EXPECT_EQ(error_of(R"({"api": {"max_connections": 0}})"), "api.max_connections: must be between 1 and 1024");
  EXPECT_EQ(error_of(R"({"billing": {"markup": 2.5}})"), "billing.markup: expected a decimal string such as \"2.5\"");
  EXPECT_EQ(error_of(R"({"billing": {"markup": "2,5"}})"), "billing.markup: \"2,5\" is not a decimal number");
  EXPECT_EQ(error_of(R"({"log": {"level": "loud"}})"),
            "log.level: expected one of trace, debug, info, warn, error, critical, off");
  EXPECT_EQ(error_of(R"({"api": {"base_url": "ftp://x"}})"),
            "api.base_url: expected an http:// or https:// URL with a host, got \"ftp://x\"");
  EXPECT_EQ(error_of(R"({"models": {"a/b": {"price_usd": "0.1", "per": "video"}}})"),
            "models.a/b.per: expected \"image\" or \"run\"");
  EXPECT_EQ(error_of(R"({"models": {"a/b": {"price_usd": "0.1", "colour": 1}}})"), "unknown key \"models.a/b.colour\"");
  EXPECT_EQ(error_of(R"({"models": {"a/b": {"per": "run"}}})"), "models.a/b.price_usd: is required");
  EXPECT_EQ(error_of(R"({"models": {"a/b": {"price_usd": "1", "version": "xyz"}}})"),
            "models.a/b.version: expected 64 lowercase hex digits");
  EXPECT_EQ(error_of(R"({"models": {"nameonly": {"price_usd": "1"}}})"),
            "models.nameonly: a model name must be \"owner/name\"");
  EXPECT_EQ(error_of("{\n  \"api\": {,}\n}"), "invalid JSON at line 2, column 11: syntax error");
  EXPECT_EQ(error_of("[]"), "the config must be a JSON object");
}

TEST(Config, ExplicitModelsReplaceTheCatalog) {
  Config c = parse_config(R"({"models": {"a/b": {"price_usd": "0.01", "per": "run", "expected_s": 2, "prefer_wait_s": 5}}})");
  ASSERT_EQ(c.models.entries().size(), 1u);
  EXPECT_EQ(c.models.entries()[0].per, BillingUnit::run);
  EXPECT_EQ(c.models.entries()[0].prefer_wait_s.value(), 5);
}

TEST(Config, ExampleFileHoldsEveryKeyWithItsDefault) {
  const std::string path = std::string(PREDICTD_SOURCE_DIR) + "/config/predictd.json";
  Config example = load_config(path);
  Config defaults = parse_config("{}");
  EXPECT_EQ(example.db_path, defaults.db_path);
  EXPECT_EQ(example.api.base_url, defaults.api.base_url);
  EXPECT_EQ(example.limits.max_in_flight, defaults.limits.max_in_flight);
  EXPECT_EQ(example.models.entries().size(), defaults.models.entries().size());
  const std::string text = test::read_file(path);
  for (const auto& [key, doc] : config_keys()) {
    const std::string leaf = key.substr(key.find('.') + 1);
    EXPECT_NE(text.find("\"" + leaf + "\""), std::string::npos) << key << " is missing from config/predictd.json";
  }
}

TEST(Config, TokenSourcesInOrderAndNeverInMessages) {
  test::TempDir dir;
  Config c = parse_config("{}");
  c.api.token_file = dir.file("token");
  ::unsetenv("PREDICTD_API_TOKEN");
  ::unsetenv("CREDENTIALS_DIRECTORY");
  EXPECT_EQ(std::string("(none)"), [&] {
    try {
      load_api_token(c);
    } catch (const ConfigError& e) {
      return std::string(std::string(e.what()).rfind("api.token_file: cannot read", 0) == 0 ? "(none)" : e.what());
    }
    return std::string("(read)");
  }());
  test::write_file(dir.file("token"), "r8_secret_from_file\n");
  EXPECT_EQ(load_api_token(c), "r8_secret_from_file");
  test::write_file(dir.file("api_token"), "r8_secret_from_credential");
  ::setenv("CREDENTIALS_DIRECTORY", dir.path().c_str(), 1);
  EXPECT_EQ(load_api_token(c), "r8_secret_from_credential");
  ::setenv("PREDICTD_API_TOKEN", "r8_secret_from_env", 1);
  EXPECT_EQ(load_api_token(c), "r8_secret_from_env");
  ::unsetenv("PREDICTD_API_TOKEN");
  ::unsetenv("CREDENTIALS_DIRECTORY");
  test::write_file(dir.file("token"), "  \n");
  try {
    load_api_token(c);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "api token: " + dir.file("token") + " is empty");
  }
}
