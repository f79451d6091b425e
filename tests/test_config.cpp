#include <gtest/gtest.h>

#include <cstdlib>
#include <set>

#include <boost/json.hpp>

#include "config.h"
#include "test_util.h"

using namespace predictd;
namespace json = boost::json;

namespace {

std::string error_of(const std::string& text) {
  try {
    parse_config(text);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(accepted)";
}

const std::string kSdxlVersion = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc";

// Sets or unsets an environment variable for one test, restoring it after.
class EnvVar final {
 public:
  explicit EnvVar(const char* name) : name_(name) {
    if (const char* v = std::getenv(name)) saved_ = v;
    ::unsetenv(name);
  }
  ~EnvVar() { saved_ ? ::setenv(name_, saved_->c_str(), 1) : ::unsetenv(name_); }
  void set(const std::string& v) { ::setenv(name_, v.c_str(), 1); }
  void unset() { ::unsetenv(name_); }

 private:
  const char* name_;
  std::optional<std::string> saved_;
};

std::string token_error(const Config& c) {
  try {
    load_api_token(c);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(read)";
}

}  // namespace

TEST(Config, EmptyObjectMeansAllDefaults) {
  const Config c = parse_config("{}");
  EXPECT_TRUE(c == Config{}) << "config.cpp's table and config.h's initializers disagree";
  EXPECT_EQ(c.db_path, "/var/lib/predictd/jobs.db");
  EXPECT_EQ(c.api.base_url, "https://api.openai-hk.com/replicate");
  EXPECT_EQ(c.api.token_file.value(), "/etc/predictd/api_token");
  EXPECT_FALSE(c.api.ca_file);
  EXPECT_EQ(c.api.max_connections, 32);
  EXPECT_EQ(c.api.request_timeout_s, 30);
  EXPECT_EQ(c.billing.markup, Decimal::parse("2.5").value());
  EXPECT_EQ(c.billing.credits_per_currency_unit, 10000);
  EXPECT_EQ(c.limits.max_in_flight, 256);
  EXPECT_EQ(c.limits.creates_per_minute, 600);
  EXPECT_EQ(c.limits.requests_per_minute, 3000);
  EXPECT_EQ(c.retry.max_attempts, 5);
  EXPECT_EQ(c.retry.base_ms, 1000);
  EXPECT_EQ(c.retry.max_ms, 300000);
  EXPECT_EQ(c.jobs.default_timeout_s, 1800);
  EXPECT_EQ(c.jobs.max_input_bytes, 1048576);
  EXPECT_EQ(c.log.level, "info");
  EXPECT_FALSE(c.log.file);
  EXPECT_FALSE(c.archive.dir);
  EXPECT_EQ(c.archive.max_file_bytes, 536870912);
  EXPECT_EQ(c.archive.concurrency, 8);
  EXPECT_TRUE(c.models == Catalog::defaults());
}

TEST(Config, TheTableHoldsEverySpecKeyOnce) {
  const std::vector<std::string> spec = {
      "db.path", "api.base_url", "api.token_file", "api.ca_file", "api.max_connections", "api.request_timeout_s",
      "billing.markup", "billing.credits_per_currency_unit", "limits.max_in_flight", "limits.creates_per_minute",
      "limits.requests_per_minute", "retry.max_attempts", "retry.base_ms", "retry.max_ms", "jobs.default_timeout_s",
      "jobs.max_input_bytes", "log.level", "log.file", "archive.dir", "archive.max_file_bytes", "archive.concurrency"};
  const auto table = config_key_table();
  const auto keys = config_keys();
  ASSERT_EQ(table.size(), spec.size());
  ASSERT_EQ(keys.size(), spec.size());
  for (std::size_t i = 0; i < spec.size(); ++i) {
    EXPECT_EQ(table[i].path, spec[i]);
    EXPECT_EQ(keys[i].first, spec[i]);
    EXPECT_EQ(keys[i].second, table[i].doc);
    EXPECT_FALSE(table[i].doc.empty()) << spec[i];
    EXPECT_NO_THROW(json::parse(table[i].default_json)) << spec[i];
  }
}

TEST(Config, EveryKeyCanBeSet) {
  const Config c = parse_config(R"({
    // the API, with a trailing slash that is dropped
    "api": { "base_url": "http://127.0.0.1:8080/replicate/", "max_connections": 4, "token_file": null,
             "ca_file": "/etc/ssl/extra.pem", "request_timeout_s": 7, },
    /* prices */ "billing": { "markup": "3.10", "credits_per_currency_unit": 100 },
    "db": { "path": "jobs.db" },
    "limits": { "max_in_flight": 1, "creates_per_minute": 2, "requests_per_minute": 3 },
    "retry": { "max_attempts": 1, "base_ms": 10, "max_ms": 10 },
    "jobs": { "default_timeout_s": 60, "max_input_bytes": 100 },
    "log": { "level": "debug", "file": "/var/log/predictd.log" },
    "archive": { "dir": "/srv/out", "max_file_bytes": 9007199254740993, "concurrency": 1 },
  })");
  EXPECT_EQ(c.api.base_url, "http://127.0.0.1:8080/replicate");
  EXPECT_EQ(c.api.max_connections, 4);
  EXPECT_FALSE(c.api.token_file);
  EXPECT_EQ(c.api.ca_file.value(), "/etc/ssl/extra.pem");
  EXPECT_EQ(c.api.request_timeout_s, 7);
  EXPECT_EQ(c.billing.markup.to_string(), "3.1");
  EXPECT_EQ(c.billing.credits_per_currency_unit, 100);
  EXPECT_EQ(c.db_path, "jobs.db");  // relative paths stay as given
  EXPECT_EQ(c.limits.max_in_flight, 1);
  EXPECT_EQ(c.limits.creates_per_minute, 2);
  EXPECT_EQ(c.limits.requests_per_minute, 3);
  EXPECT_EQ(c.retry.max_attempts, 1);
  EXPECT_EQ(c.retry.base_ms, 10);
  EXPECT_EQ(c.retry.max_ms, 10);
  EXPECT_EQ(c.jobs.default_timeout_s, 60);
  EXPECT_EQ(c.jobs.max_input_bytes, 100);
  EXPECT_EQ(c.log.level, "debug");
  EXPECT_EQ(c.log.file.value(), "/var/log/predictd.log");
  EXPECT_EQ(c.archive.dir.value(), "/srv/out");
  EXPECT_EQ(c.archive.max_file_bytes, 9007199254740993);  // exact: integers are not read as doubles
  EXPECT_EQ(c.archive.concurrency, 1);
  EXPECT_TRUE(c.models == Catalog::defaults());  // no "models": the default catalog
}

TEST(Config, BaseUrls) {
  for (const char* ok : {"https://api.replicate.com", "http://localhost:1/", "https://[::1]:8443/replicate",
                         "https://api.openai-hk.com/replicate/v0-proxy"})
    EXPECT_EQ(error_of(std::string(R"({"api": {"base_url": ")") + ok + "\"}}"), "(accepted)") << ok;
  EXPECT_EQ(parse_config(R"({"api": {"base_url": "https://h///"}})").api.base_url, "https://h");
  for (const char* bad : {"ftp://x", "https://", "https:///path", "api.replicate.com", "https://h:0", "https://h:70000",
                          "https://h/?q=1", "https://h/#f", "https://h h/", "HTTPS://h"})
    EXPECT_EQ(error_of(std::string(R"({"api": {"base_url": ")") + bad + "\"}}"),
              std::string("api.base_url: expected an http:// or https:// URL with a host, got \"") + bad + "\"")
        << bad;
  // The hand-written matcher that replaced <regex> keeps its edges.
  for (const char* ok : {"https://[::1]", "http://a-b.c:65535/x/y_z~", "https://h/p%20q"})
    EXPECT_EQ(error_of(std::string(R"({"api": {"base_url": ")") + ok + "\"}}"), "(accepted)") << ok;
  for (const char* bad : {"https://[]", "https://[::1]x", "https://[::1]:", "https://h:", "https://a_b", "https://h:123456",
                          "https://h?x", "https://[g::1]", "http:/h"})
    EXPECT_NE(error_of(std::string(R"({"api": {"base_url": ")") + bad + "\"}}"), "(accepted)") << bad;
  // A long value is matched without recursion (libstdc++'s regex used one frame per character).
  EXPECT_EQ(error_of(R"({"api": {"base_url": "https://h/)" + std::string(200000, 'a') + "\"}}"), "(accepted)");
  EXPECT_EQ(error_of(R"({"models": {"a/)" + std::string(200000, 'b') + R"(": {"price_usd": "1"}}})"), "(accepted)");
  EXPECT_EQ(error_of(R"({"models": {"a/_b": {"price_usd": "1"}}})"), "models.a/_b: a model name must be \"owner/name\"");
  // Credentials in the URL are refused without being echoed.
  EXPECT_EQ(error_of(R"({"api": {"base_url": "https://me:r8_secret@host/replicate"}})"),
            "api.base_url: must not hold credentials (use api.token_file)");
}

TEST(Config, ExactErrorMessages) {
  const std::pair<const char*, const char*> cases[] = {
      // Unknown keys name their path.
      {R"({"api": {"max_conections": 4}})", "unknown key \"api.max_conections\""},
      {R"({"apis": {}})", "unknown key \"apis\""},
      {R"({"db": {"path": "x", "journal": "wal"}})", "unknown key \"db.journal\""},
      {R"({"api.base_url": "x"})", "unknown key \"api.base_url\""},
      // Wrong types: "expected ...".
      {R"({"api": 5})", "api: expected an object"},
      {R"({"api": {"max_connections": "4"}})", "api.max_connections: expected an integer"},
      {R"({"api": {"max_connections": 4.0}})", "api.max_connections: expected an integer"},
      {R"({"api": {"max_connections": null}})", "api.max_connections: expected an integer"},
      {R"({"api": {"max_connections": true}})", "api.max_connections: expected an integer"},
      {R"({"db": {"path": 1}})", "db.path: expected a string"},
      {R"({"db": {"path": null}})", "db.path: expected a string"},
      {R"({"db": {"path": ""}})", "db.path: must not be empty"},
      {R"({"api": {"token_file": 3}})", "api.token_file: expected a string or null"},
      {R"({"api": {"ca_file": ""}})", "api.ca_file: must not be empty (null leaves it unset)"},
      {R"({"log": {"file": false}})", "log.file: expected a string or null"},
      {R"({"archive": {"dir": []}})", "archive.dir: expected a string or null"},
      // Ranges.
      {R"({"api": {"max_connections": 0}})", "api.max_connections: must be between 1 and 1024"},
      {R"({"api": {"max_connections": -3}})", "api.max_connections: must be between 1 and 1024"},
      {R"({"api": {"max_connections": 18446744073709551615}})", "api.max_connections: must be between 1 and 1024"},
      {R"({"api": {"request_timeout_s": 0}})", "api.request_timeout_s: must be between 1 and 600"},
      {R"({"jobs": {"default_timeout_s": 0}})", "jobs.default_timeout_s: must be between 1 and 604800"},
      {R"({"jobs": {"max_input_bytes": 1}})", "jobs.max_input_bytes: must be between 2 and 67108864"},
      {R"({"limits": {"max_in_flight": 0}})", "limits.max_in_flight: must be between 1 and 1000000"},
      {R"({"limits": {"creates_per_minute": 0}})", "limits.creates_per_minute: must be between 1 and 100000000"},
      {R"({"limits": {"requests_per_minute": 0}})", "limits.requests_per_minute: must be between 1 and 100000000"},
      {R"({"retry": {"max_attempts": 0}})", "retry.max_attempts: must be between 1 and 100"},
      {R"({"retry": {"base_ms": 0}})", "retry.base_ms: must be between 1 and 3600000"},
      {R"({"retry": {"base_ms": 5000, "max_ms": 4000}})", "retry.base_ms: must not exceed retry.max_ms"},
      {R"({"archive": {"max_file_bytes": 0}})", "archive.max_file_bytes: must be between 1 and 9223372036854775807"},
      {R"({"archive": {"concurrency": 0}})", "archive.concurrency: must be between 1 and 256"},
      {R"({"billing": {"credits_per_currency_unit": 0}})",
       "billing.credits_per_currency_unit: must be between 1 and 1000000000000"},
      {R"({"billing": {"credits_per_currency_unit": "10000"}})",
       "billing.credits_per_currency_unit: expected an integer"},
      // The markup is a decimal string; a JSON number would arrive as a double.
      {R"({"billing": {"markup": 2.5}})", "billing.markup: expected a decimal string such as \"2.5\""},
      {R"({"billing": {"markup": 3}})", "billing.markup: expected a decimal string such as \"2.5\""},
      {R"({"billing": {"markup": "2,5"}})", "billing.markup: \"2,5\" is not a decimal number"},
      {R"({"billing": {"markup": "-1"}})", "billing.markup: \"-1\" is not a decimal number"},
      {R"({"billing": {"markup": "0.0"}})", "billing.markup: must be greater than 0"},
      {R"({"log": {"level": "loud"}})", "log.level: expected one of trace, debug, info, warn, error, critical, off"},
      {R"({"log": {"level": "INFO"}})", "log.level: expected one of trace, debug, info, warn, error, critical, off"},
      // The document itself.
      {"[]", "the config must be a JSON object"},
      {"\"x\"", "the config must be a JSON object"},
  };
  for (const auto& [text, message] : cases) EXPECT_EQ(error_of(text), message) << text;
}

TEST(Config, JsonSyntaxErrorsGiveLineAndColumn) {
  EXPECT_EQ(error_of("{\n  \"api\": {,}\n}"), "invalid JSON at line 2, column 11: syntax error");
  EXPECT_EQ(error_of("{\n  // a comment\n  \"db\": {\"path\": 'x'}\n}"), "invalid JSON at line 3, column 18: syntax error");
  EXPECT_EQ(error_of("{\"db\": {}"), "invalid JSON at line 1, column 10: incomplete JSON");
  EXPECT_EQ(error_of(""), "invalid JSON at line 1, column 1: incomplete JSON");
  EXPECT_EQ(error_of("{} {}"), "invalid JSON at line 1, column 4: extra data");
  EXPECT_EQ(error_of("{\"a\": 1 /* open"), "invalid JSON at line 1, column 16: incomplete JSON");
}

TEST(Config, DuplicateKeysAreErrorsNotSilentlyOverridden) {
  EXPECT_EQ(error_of(R"({"api": {"max_connections": 4, "max_connections": 5}})"),
            "duplicate key \"api.max_connections\"");
  EXPECT_EQ(error_of(R"({"api": {"max_connections": 4}, "db": {}, "api": {}})"), "duplicate key \"api\"");
  EXPECT_EQ(error_of(R"({"models": {"a/b": {"price_usd": "1"}, "a/b": {"price_usd": "2"}}})"),
            "duplicate key \"models.a/b\"");
  EXPECT_EQ(error_of(R"({"models": {"a/b": {"price_usd": "1", "per": "run", "price_usd": "2"}}})"),
            "duplicate key \"models.a/b.price_usd\"");
  // The same name at different places is no duplicate.
  EXPECT_EQ(error_of(R"({"db": {"path": "a"}, "log": {"file": "b", "level": "info"}, "archive": {"dir": "c"}})"),
            "(accepted)");
}

TEST(Config, ExplicitModelsReplaceTheCatalog) {
  const Config c = parse_config(R"({"models": {
    "me/fast": {"price_usd": "0.01", "per": "run", "expected_s": 2, "prefer_wait_s": 5},
    "Me/v.2_x-y": {"price_usd": "1", "version": ")" + kSdxlVersion + R"(", "expected_s": 0.25},
    "me/plain": {"price_usd": "0.0063", "version": null, "prefer_wait_s": null},
  }})");
  ASSERT_EQ(c.models.entries().size(), 3u);
  const ModelEntry& fast = c.models.entries()[0];
  EXPECT_EQ(fast.name, "me/fast");
  EXPECT_EQ(fast.price_usd.to_string(), "0.01");
  EXPECT_EQ(fast.per, BillingUnit::run);
  EXPECT_EQ(fast.expected_s, 2.0);
  EXPECT_EQ(fast.prefer_wait_s.value(), 5);
  EXPECT_FALSE(fast.version);
  const ModelEntry& v = c.models.entries()[1];
  EXPECT_EQ(v.per, BillingUnit::image);  // the default unit
  EXPECT_EQ(v.expected_s, 0.25);
  EXPECT_EQ(c.models.find_version(kSdxlVersion), &v);
  const ModelEntry& plain = c.models.entries()[2];
  EXPECT_FALSE(plain.version);
  EXPECT_FALSE(plain.prefer_wait_s);
  EXPECT_EQ(plain.expected_s, 5.0);  // ModelEntry's default
  EXPECT_EQ(c.models.find_model("stability-ai/sdxl"), nullptr);  // nothing of the defaults remains
}

TEST(Config, ModelErrors) {
  const std::string v = kSdxlVersion;
  const std::pair<std::string, std::string> cases[] = {
      {R"({"models": {"a/b": {"price_usd": "0.1", "per": "video"}}})", "models.a/b.per: expected \"image\" or \"run\""},
      {R"({"models": {"a/b": {"price_usd": "0.1", "colour": 1}}})", "unknown key \"models.a/b.colour\""},
      {R"({"models": {"a/b": {"per": "run"}}})", "models.a/b.price_usd: is required"},
      {R"({"models": {"a/b": {"price_usd": 0.1}}})", "models.a/b.price_usd: expected a decimal string such as \"2.5\""},
      {R"({"models": {"a/b": {"price_usd": "1e-3"}}})", "models.a/b.price_usd: \"1e-3\" is not a decimal number"},
      {R"({"models": {"a/b": {"price_usd": "1", "version": "xyz"}}})",
       "models.a/b.version: expected 64 lowercase hex digits"},
      {R"({"models": {"a/b": {"price_usd": "1", "version": "7762FD07CF82C948538E41F63F77D685E02B063E37E496E96EEFD46C929F9BDC"}}})",
       "models.a/b.version: expected 64 lowercase hex digits"},
      {R"({"models": {"a/b": {"price_usd": "1", "version": ")" + v + R"(0"}}})",
       "models.a/b.version: expected 64 lowercase hex digits"},
      {R"({"models": {"nameonly": {"price_usd": "1"}}})", "models.nameonly: a model name must be \"owner/name\""},
      {R"({"models": {"a/b/c": {"price_usd": "1"}}})", "models.a/b/c: a model name must be \"owner/name\""},
      {R"({"models": {"/b": {"price_usd": "1"}}})", "models./b: a model name must be \"owner/name\""},
      {R"({"models": {"a b/c": {"price_usd": "1"}}})", "models.a b/c: a model name must be \"owner/name\""},
      {R"({"models": {"a/b": "0.1"}})", "models.a/b: expected an object"},
      {R"({"models": []})", "models: expected an object"},
      {R"({"models": {}})", "models: must list at least one model"},
      {R"({"models": {"a/b": {"price_usd": "1", "expected_s": 0}}})",
       "models.a/b.expected_s: must be greater than 0 and at most 86400"},
      {R"({"models": {"a/b": {"price_usd": "1", "expected_s": "3"}}})", "models.a/b.expected_s: expected a number"},
      {R"({"models": {"a/b": {"price_usd": "1", "prefer_wait_s": 0}}})",
       "models.a/b.prefer_wait_s: must be between 1 and 60"},
      {R"({"models": {"a/b": {"price_usd": "1", "prefer_wait_s": 61}}})",
       "models.a/b.prefer_wait_s: must be between 1 and 60"},
      {R"({"models": {"a/b": {"price_usd": "1", "version": ")" + v + R"("}, "c/d": {"price_usd": "2", "version": ")" +
           v + R"("}}})",
       "models.c/d.version: already used by a/b"},
  };
  for (const auto& [text, message] : cases) EXPECT_EQ(error_of(text), message) << text;
}

TEST(Config, LoadConfigReadsAFile) {
  test::TempDir dir;
  test::write_file(dir.file("c.json"), "{ \"db\": { \"path\": \"/tmp/x.db\" }, }\n");
  EXPECT_EQ(load_config(dir.file("c.json")).db_path, "/tmp/x.db");
  try {
    load_config(dir.file("missing.json"));
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "cannot read the config file: No such file or directory");
  }
  try {
    load_config(dir.path().string());  // a directory
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "cannot read the config file: Is a directory");
  }
}

TEST(Config, ExampleFileHoldsEveryKeyWithItsDefaultAndComment) {
  const std::string path = std::string(PREDICTD_SOURCE_DIR) + "/config/predictd.json";
  EXPECT_TRUE(load_config(path) == Config{}) << "config/predictd.json differs from the defaults";
  const std::string text = test::read_file(path);
  json::parse_options opts;
  opts.allow_comments = true;
  opts.allow_trailing_commas = true;
  const json::value doc = json::parse(text, {}, opts);
  std::set<std::string> sections;
  for (const ConfigKeyInfo& k : config_key_table()) {
    const auto dot = k.path.find('.');
    const std::string section = k.path.substr(0, dot), leaf = k.path.substr(dot + 1);
    sections.insert(section);
    const json::value* v = doc.as_object().if_contains(section);
    ASSERT_TRUE(v && v->is_object()) << section;
    const json::value* value = v->as_object().if_contains(leaf);
    ASSERT_TRUE(value) << k.path << " is missing from config/predictd.json";
    EXPECT_EQ(*value, json::parse(k.default_json)) << k.path;
    // Each key carries the table's description as its comment, on the line above.
    EXPECT_NE(text.find("// " + k.doc + "\n    \"" + leaf + "\":"), std::string::npos) << k.path;
  }
  sections.insert("models");
  EXPECT_EQ(doc.as_object().size(), sections.size());
  // The full default catalog is written out, every entry with its expected_s.
  const json::object& models = doc.at("models").as_object();
  EXPECT_EQ(models.size(), Catalog::defaults().entries().size());
  for (const auto& kv : models) EXPECT_TRUE(kv.value().as_object().contains("expected_s")) << kv.key();
}

TEST(Config, TokenSourcesInOrder) {
  EnvVar env("PREDICTD_API_TOKEN"), creds("CREDENTIALS_DIRECTORY");
  test::TempDir dir;
  std::filesystem::create_directory(dir.path() / "creds");
  Config c;
  c.api.token_file = dir.file("token");
  EXPECT_EQ(token_error(c), "api.token_file: cannot read " + dir.file("token") + ": No such file or directory");
  test::write_file(dir.file("token"), "r8_secret_from_file\r\n");
  EXPECT_EQ(load_api_token(c), "r8_secret_from_file");
  // A credentials directory without api_token (other credentials only) falls through to the file.
  creds.set((dir.path() / "creds").string());
  EXPECT_EQ(load_api_token(c), "r8_secret_from_file");
  test::write_file(dir.path() / "creds" / "api_token", "r8_secret_from_credential");
  EXPECT_EQ(load_api_token(c), "r8_secret_from_credential");
  env.set("r8_secret_from_env\n");
  EXPECT_EQ(load_api_token(c), "r8_secret_from_env");
  env.unset();
  creds.unset();
  c.api.token_file.reset();
  EXPECT_EQ(token_error(c),
            "api token: none found (set the environment variable PREDICTD_API_TOKEN, the systemd credential api_token, "
            "or api.token_file)");
}

TEST(Config, BadTokensAreErrorsThatNeverHoldTheToken) {
  EnvVar env("PREDICTD_API_TOKEN"), creds("CREDENTIALS_DIRECTORY");
  test::TempDir dir;
  Config c;
  c.api.token_file = dir.file("token");
  test::write_file(dir.file("token"), "  \n");
  EXPECT_EQ(token_error(c), "api token: " + dir.file("token") + " is empty");
  test::write_file(dir.file("token"), "r8_first_secret\nr8_second_secret\n");
  EXPECT_EQ(token_error(c), "api token: " + dir.file("token") + " holds whitespace or control characters");
  env.set("r8_env secret");
  EXPECT_EQ(token_error(c), "api token: PREDICTD_API_TOKEN holds whitespace or control characters");
  // Set but empty is a mistake to report, not a reason to look elsewhere.
  env.set("");
  EXPECT_EQ(token_error(c), "api token: PREDICTD_API_TOKEN is empty");
  env.unset();
  // An api_token that exists but cannot be read is reported, not skipped.
  std::filesystem::create_directory(dir.path() / "creds");
  std::filesystem::create_directory(dir.path() / "creds" / "api_token");
  creds.set((dir.path() / "creds").string());
  EXPECT_EQ(token_error(c), "api token: cannot read the credential " + dir.file("creds/api_token") + ": Is a directory");
}
