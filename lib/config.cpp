#include "config.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <regex>
#include <sstream>

#include <boost/json.hpp>

namespace predictd {
namespace json = boost::json;

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) { throw ConfigError(path + ": " + what); }

int64_t get_int(const json::value& v, const std::string& path, int64_t min, int64_t max) {
  int64_t n = 0;
  if (v.is_int64())
    n = v.get_int64();
  else if (v.is_uint64() && v.get_uint64() <= static_cast<uint64_t>(INT64_MAX))
    n = static_cast<int64_t>(v.get_uint64());
  else
    fail(path, "expected an integer");
  if (n < min || n > max) fail(path, "must be between " + std::to_string(min) + " and " + std::to_string(max));
  return n;
}

std::string get_string(const json::value& v, const std::string& path) {
  if (!v.is_string()) fail(path, "expected a string");
  return std::string(v.get_string());
}

std::optional<std::string> get_opt_string(const json::value& v, const std::string& path) {
  if (v.is_null()) return std::nullopt;
  if (!v.is_string()) fail(path, "expected a string or null");
  return std::string(v.get_string());
}

Decimal get_decimal(const json::value& v, const std::string& path) {
  // Prices are strings so that no binary floating point ever touches them.
  if (!v.is_string()) fail(path, "expected a decimal string such as \"2.5\"");
  auto d = Decimal::parse(std::string_view(v.get_string()));
  if (!d) fail(path, "\"" + std::string(v.get_string()) + "\" is not a decimal number");
  return *d;
}

// Every key of the config with its default (in Config's initializers) and how to set it.
struct Key {
  const char* path;
  const char* doc;
  std::function<void(Config&, const json::value&, const std::string&)> set;
};

const std::vector<Key>& keys() {
  static const std::vector<Key> kKeys = {
      {"db.path", "the SQLite database holding the jobs table",
       [](Config& c, const json::value& v, const std::string& p) {
         c.db_path = get_string(v, p);
         if (c.db_path.empty()) fail(p, "must not be empty");
       }},
      {"api.base_url", "Replicate or a proxy mirroring it, without /v1",
       [](Config& c, const json::value& v, const std::string& p) {
         c.api.base_url = get_string(v, p);
         static const std::regex kUrl(R"(^https?://[^/:?#\s]+(:[0-9]{1,5})?(/[^?#\s]*)?$)");
         if (!std::regex_match(c.api.base_url, kUrl))
           fail(p, "expected an http:// or https:// URL with a host, got \"" + c.api.base_url + "\"");
         while (c.api.base_url.back() == '/') c.api.base_url.pop_back();
       }},
      {"api.token_file", "file holding the API token",
       [](Config& c, const json::value& v, const std::string& p) { c.api.token_file = get_opt_string(v, p); }},
      {"api.ca_file", "extra CA certificate (PEM) trusted besides the system store",
       [](Config& c, const json::value& v, const std::string& p) { c.api.ca_file = get_opt_string(v, p); }},
      {"api.max_connections", "keep-alive connections to the API at most",
       [](Config& c, const json::value& v, const std::string& p) {
         c.api.max_connections = static_cast<int>(get_int(v, p, 1, 1024));
       }},
      {"api.request_timeout_s", "seconds for one request and its response",
       [](Config& c, const json::value& v, const std::string& p) {
         c.api.request_timeout_s = static_cast<int>(get_int(v, p, 1, 600));
       }},
      {"billing.markup", "the proxy's price over Replicate's",
       [](Config& c, const json::value& v, const std::string& p) {
         c.billing.markup = get_decimal(v, p);
         if (c.billing.markup.mantissa == 0) fail(p, "must be greater than 0");
       }},
      {"billing.credits_per_currency_unit", "credits per unit of the proxy's currency",
       [](Config& c, const json::value& v, const std::string& p) {
         c.billing.credits_per_currency_unit = get_int(v, p, 1, 1000000000);
       }},
      {"limits.max_in_flight", "jobs between submitting and a terminal state at most",
       [](Config& c, const json::value& v, const std::string& p) {
         c.limits.max_in_flight = static_cast<int>(get_int(v, p, 1, 1000000));
       }},
      {"limits.creates_per_minute", "create requests per minute at most",
       [](Config& c, const json::value& v, const std::string& p) {
         c.limits.creates_per_minute = static_cast<int>(get_int(v, p, 1, 100000000));
       }},
      {"limits.requests_per_minute", "other requests (polls, cancels, lists) per minute at most",
       [](Config& c, const json::value& v, const std::string& p) {
         c.limits.requests_per_minute = static_cast<int>(get_int(v, p, 1, 100000000));
       }},
      {"retry.max_attempts", "creates tried per job before it fails",
       [](Config& c, const json::value& v, const std::string& p) {
         c.retry.max_attempts = static_cast<int>(get_int(v, p, 1, 100));
       }},
      {"retry.base_ms", "first retry delay",
       [](Config& c, const json::value& v, const std::string& p) {
         c.retry.base_ms = static_cast<int>(get_int(v, p, 1, 3600000));
       }},
      {"retry.max_ms", "longest retry delay",
       [](Config& c, const json::value& v, const std::string& p) {
         c.retry.max_ms = static_cast<int>(get_int(v, p, 1, 86400000));
       }},
      {"jobs.default_timeout_s", "timeout of a job whose timeout_s is NULL",
       [](Config& c, const json::value& v, const std::string& p) {
         c.jobs.default_timeout_s = static_cast<int>(get_int(v, p, 5, 7 * 86400));
       }},
      {"jobs.max_input_bytes", "larger inputs fail without a request",
       [](Config& c, const json::value& v, const std::string& p) {
         c.jobs.max_input_bytes = static_cast<int>(get_int(v, p, 2, 64 * 1024 * 1024));
       }},
      {"log.level", "trace, debug, info, warn, error, critical or off",
       [](Config& c, const json::value& v, const std::string& p) {
         c.log.level = get_string(v, p);
         static const char* kLevels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
         for (const char* l : kLevels)
           if (c.log.level == l) return;
         fail(p, "expected one of trace, debug, info, warn, error, critical, off");
       }},
      {"log.file", "also log to this file (reopened on SIGHUP)",
       [](Config& c, const json::value& v, const std::string& p) { c.log.file = get_opt_string(v, p); }},
      {"archive.dir", "keep outputs here (null: off)",
       [](Config& c, const json::value& v, const std::string& p) { c.archive.dir = get_opt_string(v, p); }},
      {"archive.max_file_bytes", "largest output file archived",
       [](Config& c, const json::value& v, const std::string& p) {
         c.archive.max_file_bytes = get_int(v, p, 1, INT64_MAX);
       }},
      {"archive.concurrency", "downloads at once at most",
       [](Config& c, const json::value& v, const std::string& p) {
         c.archive.concurrency = static_cast<int>(get_int(v, p, 1, 256));
       }},
  };
  return kKeys;
}

ModelEntry parse_model(const std::string& name, const json::value& v, const std::string& path) {
  static const std::regex kName(R"(^[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._-]*$)", std::regex::icase);
  if (!std::regex_match(name, kName)) fail(path, "a model name must be \"owner/name\"");
  if (!v.is_object()) fail(path, "expected an object");
  ModelEntry e;
  e.name = name;
  bool has_price = false;
  for (const auto& kv : v.get_object()) {
    const std::string key(kv.key());
    const std::string p = path + "." + key;
    if (key == "price_usd") {
      e.price_usd = get_decimal(kv.value(), p);
      has_price = true;
    } else if (key == "per") {
      const std::string per = get_string(kv.value(), p);
      if (per == "image")
        e.per = BillingUnit::image;
      else if (per == "run")
        e.per = BillingUnit::run;
      else
        fail(p, "expected \"image\" or \"run\"");
    } else if (key == "version") {
      auto ver = get_opt_string(kv.value(), p);
      static const std::regex kHex("^[0-9a-f]{64}$");
      if (ver && !std::regex_match(*ver, kHex)) fail(p, "expected 64 lowercase hex digits");
      e.version = ver;
    } else if (key == "expected_s") {
      if (!kv.value().is_number()) fail(p, "expected a number of seconds");
      e.expected_s = kv.value().to_number<double>();
      if (!(e.expected_s > 0 && e.expected_s <= 86400)) fail(p, "must be between 0 and 86400");
    } else if (key == "prefer_wait_s") {
      e.prefer_wait_s = static_cast<int>(get_int(kv.value(), p, 1, 60));
    } else {
      throw ConfigError("unknown key \"" + p + "\"");
    }
  }
  if (!has_price) fail(path + ".price_usd", "is required");
  return e;
}

Catalog parse_models(const json::value& v) {
  if (!v.is_object()) fail("models", "expected an object");
  std::vector<ModelEntry> entries;
  for (const auto& kv : v.get_object()) {
    const std::string name(kv.key());
    entries.push_back(parse_model(name, kv.value(), "models." + name));
    for (std::size_t i = 0; i + 1 < entries.size(); ++i)
      if (entries.back().version && entries[i].version == entries.back().version)
        fail("models." + name + ".version", "already used by " + entries[i].name);
  }
  if (entries.empty()) fail("models", "must list at least one model");
  return Catalog(std::move(entries));
}

std::string line_col(std::string_view text, std::size_t offset) {
  std::size_t line = 1, col = 1;
  for (std::size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(col);
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t')) s.pop_back();
  return s;
}

std::optional<std::string> read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

Config parse_config(std::string_view text) {
  json::parse_options opts;
  opts.allow_comments = true;
  opts.allow_trailing_commas = true;
  json::stream_parser parser({}, opts);
  json::error_code ec;
  std::size_t used = parser.write_some(text.data(), text.size(), ec);
  if (!ec) parser.finish(ec);
  if (ec) throw ConfigError("invalid JSON at " + line_col(text, used) + ": " + ec.message());
  json::value root = parser.release();
  if (!root.is_object()) throw ConfigError("the config must be a JSON object");

  Config config;
  for (const auto& section : root.get_object()) {
    const std::string name(section.key());
    if (name == "models") {
      config.models = parse_models(section.value());
      continue;
    }
    bool known_section = false;
    for (const Key& k : keys())
      if (std::string_view(k.path).substr(0, name.size() + 1) == name + ".") known_section = true;
    if (!known_section) throw ConfigError("unknown key \"" + name + "\"");
    if (!section.value().is_object()) fail(name, "expected an object");
    for (const auto& kv : section.value().get_object()) {
      const std::string path = name + "." + std::string(kv.key());
      auto it = std::find_if(keys().begin(), keys().end(), [&](const Key& k) { return path == k.path; });
      if (it == keys().end()) throw ConfigError("unknown key \"" + path + "\"");
      it->set(config, kv.value(), path);
    }
  }
  if (config.retry.base_ms > config.retry.max_ms) fail("retry.base_ms", "must not exceed retry.max_ms");
  return config;
}

Config load_config(const std::string& path) {
  auto text = read_text(path);
  if (!text) throw ConfigError("cannot read the config file: " + std::string(std::strerror(errno)));
  return parse_config(*text);
}

std::vector<std::pair<std::string, std::string>> config_keys() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Key& k : keys()) out.emplace_back(k.path, k.doc);
  return out;
}

std::string load_api_token(const Config& config) {
  std::string token;
  std::string source;
  if (const char* env = std::getenv("PREDICTD_API_TOKEN"); env && *env) {
    token = env;
    source = "PREDICTD_API_TOKEN";
  } else if (const char* dir = std::getenv("CREDENTIALS_DIRECTORY"); dir && *dir) {
    source = std::string(dir) + "/api_token";
    auto t = read_text(source);
    if (!t) throw ConfigError("api token: cannot read the credential " + source);
    token = *t;
  } else if (config.api.token_file) {
    source = *config.api.token_file;
    auto t = read_text(source);
    if (!t)
      throw ConfigError("api.token_file: cannot read " + source + ": " + std::strerror(errno));
    token = *t;
  } else {
    throw ConfigError(
        "api token: none found (set api.token_file, the environment variable PREDICTD_API_TOKEN, or the systemd "
        "credential api_token)");
  }
  token = trim(std::move(token));
  if (token.empty()) throw ConfigError("api token: " + source + " is empty");
  if (token.find_first_of("\r\n") != std::string::npos)
    throw ConfigError("api token: " + source + " holds more than one line");
  return token;
}

}  // namespace predictd
