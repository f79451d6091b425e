#include "config.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <set>
#include <type_traits>

#include <boost/json.hpp>
#include <boost/json/basic_parser_impl.hpp>

namespace predictd {
namespace json = boost::json;

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) { throw ConfigError(path + ": " + what); }
[[noreturn]] void unknown_key(const std::string& path) { throw ConfigError("unknown key \"" + path + "\""); }

int64_t get_int(const json::value& v, const std::string& path, int64_t min, int64_t max) {
  int64_t n = 0;
  if (v.is_int64())
    n = v.get_int64();
  else if (v.is_uint64() && v.get_uint64() <= static_cast<uint64_t>(INT64_MAX))
    n = static_cast<int64_t>(v.get_uint64());
  else if (v.is_uint64())
    n = INT64_MAX;  // out of range below, with the range in the message
  else
    fail(path, "expected an integer");
  if (n < min || n > max) fail(path, "must be between " + std::to_string(min) + " and " + std::to_string(max));
  return n;
}

std::string get_string(const json::value& v, const std::string& path) {
  if (!v.is_string()) fail(path, "expected a string");
  if (v.get_string().empty()) fail(path, "must not be empty");
  return std::string(v.get_string());
}

std::optional<std::string> get_opt_string(const json::value& v, const std::string& path) {
  if (v.is_null()) return std::nullopt;
  if (!v.is_string()) fail(path, "expected a string or null");
  if (v.get_string().empty()) fail(path, "must not be empty (null leaves it unset)");
  return std::string(v.get_string());
}

// Prices and the markup are decimal strings: a JSON number would reach us as a
// double, and 0.0063 has no exact binary form. Numbers are rejected, not rounded.
Decimal get_decimal(const json::value& v, const std::string& path) {
  if (!v.is_string()) fail(path, "expected a decimal string such as \"2.5\"");
  auto d = Decimal::parse(std::string_view(v.get_string()));
  if (!d) fail(path, "\"" + std::string(v.get_string()) + "\" is not a decimal number");
  return *d;
}

// Hand-written matchers rather than <regex>: libstdc++'s regex recurses per
// character (a long value could exhaust the stack) and trips GCC 12's
// -Wmaybe-uninitialized under ASan.
bool is_alnum(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// [A-Za-z0-9][A-Za-z0-9._-]*
bool is_name_part(std::string_view s) {
  if (s.empty() || !is_alnum(s.front())) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return is_alnum(c) || c == '.' || c == '_' || c == '-'; });
}

// "owner/name"
bool is_model_name(std::string_view s) {
  const auto slash = s.find('/');
  return slash != std::string_view::npos && is_name_part(s.substr(0, slash)) && is_name_part(s.substr(slash + 1));
}

bool is_version_id(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// A scheme of letters, "://", and an authority holding '@'.
bool has_userinfo(std::string_view url) {
  const auto sep = url.find("://");
  if (sep == std::string_view::npos || sep == 0) return false;
  if (!std::all_of(url.begin(), url.begin() + sep, [](char c) { return std::isalpha(static_cast<unsigned char>(c)); }))
    return false;
  const std::string_view rest = url.substr(sep + 3);
  return rest.substr(0, rest.find_first_of("/?#")).find('@') != std::string_view::npos;
}

// http(s)://host[:port][/path]: host a name or a bracketed IPv6 address, port
// 1..65535, no query, fragment or whitespace.
bool is_base_url(std::string_view url) {
  if (url.starts_with("https://"))
    url.remove_prefix(8);
  else if (url.starts_with("http://"))
    url.remove_prefix(7);
  else
    return false;
  const std::string_view authority = url.substr(0, url.find('/'));
  const std::string_view path = url.substr(authority.size());
  std::string_view host = authority, port;
  if (authority.starts_with("[")) {
    const auto close = authority.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    host = authority.substr(1, close - 1);
    if (!std::all_of(host.begin(), host.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.'; }))
      return false;
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty() && !after.starts_with(":")) return false;
    if (!after.empty()) port = after.substr(1);
    if (after == ":") return false;
  } else {
    const auto colon = authority.find(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      if (port.empty()) return false;
    }
    if (host.empty() || !std::all_of(host.begin(), host.end(), [](char c) { return is_alnum(c) || c == '.' || c == '-'; }))
      return false;
  }
  if (!port.empty()) {
    if (port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
    const int n = std::stoi(std::string(port));
    if (n < 1 || n > 65535) return false;
  }
  return path.find_first_of("?# \t\n\v\f\r") == std::string_view::npos;
}

std::string check_base_url(std::string url, const std::string& path) {
  // Credentials in the URL would end up in logs and error messages: say so
  // without echoing the value.
  if (has_userinfo(url)) fail(path, "must not hold credentials (use api.token_file)");
  if (!is_base_url(url)) fail(path, "expected an http:// or https:// URL with a host, got \"" + url + "\"");
  // Paths are appended as "/v1/...": one slash, whatever the config says.
  while (url.back() == '/') url.pop_back();
  return url;
}

using Setter = std::function<void(Config&, const json::value&, const std::string&)>;

template <class Field>
Setter integer(Field field, int64_t min, int64_t max) {
  return [=](Config& c, const json::value& v, const std::string& p) {
    auto& f = field(c);
    f = static_cast<std::remove_reference_t<decltype(f)>>(get_int(v, p, min, max));
  };
}

template <class Field>
Setter optional_path(Field field) {
  return [=](Config& c, const json::value& v, const std::string& p) { field(c) = get_opt_string(v, p); };
}

// THE table: every key, its default and its description. parse_config starts
// from these defaults (Config's initializers must agree: a test checks), and
// config/predictd.json must hold every key with this value and this comment.
struct Key {
  const char* path;
  const char* default_json;
  const char* doc;
  Setter set;
};

const std::vector<Key>& keys() {
  static const std::vector<Key> kKeys = {
      {"db.path", R"("/var/lib/predictd/jobs.db")", "The SQLite database holding the jobs table (created and migrated at start).",
       [](Config& c, const json::value& v, const std::string& p) { c.db_path = get_string(v, p); }},
      {"api.base_url", R"("https://api.openai-hk.com/replicate")",
       "Replicate (https://api.replicate.com) or a proxy that mirrors it, without /v1.",
       [](Config& c, const json::value& v, const std::string& p) { c.api.base_url = check_base_url(get_string(v, p), p); }},
      {"api.token_file", R"("/etc/predictd/api_token")",
       "File holding the API token; env PREDICTD_API_TOKEN and the systemd credential api_token come first.",
       optional_path([](Config& c) -> auto& { return c.api.token_file; })},
      {"api.ca_file", "null", "A PEM CA certificate trusted in addition to the system store (null: none).",
       optional_path([](Config& c) -> auto& { return c.api.ca_file; })},
      {"api.max_connections", "32", "Keep-alive HTTPS connections to the API, at most.",
       integer([](Config& c) -> auto& { return c.api.max_connections; }, 1, 1024)},
      {"api.request_timeout_s", "30", "Seconds for one request and its response.",
       integer([](Config& c) -> auto& { return c.api.request_timeout_s; }, 1, 600)},
      {"billing.markup", R"("2.5")", "The proxy's price over the USD price, as a decimal string (a JSON number is refused).",
       [](Config& c, const json::value& v, const std::string& p) {
         c.billing.markup = get_decimal(v, p);
         if (c.billing.markup.mantissa == 0) fail(p, "must be greater than 0");
       }},
      {"billing.credits_per_currency_unit", "10000", "Credits per unit of the proxy's currency.",
       integer([](Config& c) -> auto& { return c.billing.credits_per_currency_unit; }, 1, 1000000000000)},
      {"limits.max_in_flight", "256", "Jobs between submitting and a terminal state, at most.",
       integer([](Config& c) -> auto& { return c.limits.max_in_flight; }, 1, 1000000)},
      {"limits.creates_per_minute", "600", "Create requests per minute, at most.",
       integer([](Config& c) -> auto& { return c.limits.creates_per_minute; }, 1, 100000000)},
      {"limits.requests_per_minute", "3000", "Other requests (polls, cancels, lists) per minute, at most.",
       integer([](Config& c) -> auto& { return c.limits.requests_per_minute; }, 1, 100000000)},
      {"retry.max_attempts", "5", "Creates tried per job before it fails (only those that may have reached the server count).",
       integer([](Config& c) -> auto& { return c.retry.max_attempts; }, 1, 100)},
      {"retry.base_ms", "1000", "First retry delay; each retry doubles it, with jitter.",
       integer([](Config& c) -> auto& { return c.retry.base_ms; }, 1, 3600000)},
      {"retry.max_ms", "300000", "Longest retry delay (at least retry.base_ms).",
       integer([](Config& c) -> auto& { return c.retry.max_ms; }, 1, 86400000)},
      {"jobs.default_timeout_s", "1800", "Timeout of a job whose timeout_s is NULL, from its first submission.",
       integer([](Config& c) -> auto& { return c.jobs.default_timeout_s; }, 1, 7 * 86400)},
      {"jobs.max_input_bytes", "1048576", "A larger input fails without any request.",
       integer([](Config& c) -> auto& { return c.jobs.max_input_bytes; }, 2, 64 * 1024 * 1024)},
      {"log.level", R"("info")", "trace, debug, info, warn, error, critical or off.",
       [](Config& c, const json::value& v, const std::string& p) {
         c.log.level = get_string(v, p);
         for (const char* l : {"trace", "debug", "info", "warn", "error", "critical", "off"})
           if (c.log.level == l) return;
         fail(p, "expected one of trace, debug, info, warn, error, critical, off");
       }},
      {"log.file", "null", "Also log to this file, reopened on SIGHUP (null: stderr only).",
       optional_path([](Config& c) -> auto& { return c.log.file; })},
      {"archive.dir", "null", "Keep every output of a succeeded job on local disk here (null: off).",
       optional_path([](Config& c) -> auto& { return c.archive.dir; })},
      {"archive.max_file_bytes", "536870912", "Largest output file archived.",
       integer([](Config& c) -> auto& { return c.archive.max_file_bytes; }, 1, INT64_MAX)},
      {"archive.concurrency", "8", "Downloads at once, at most.",
       integer([](Config& c) -> auto& { return c.archive.concurrency; }, 1, 256)},
  };
  return kKeys;
}

ModelEntry parse_model(const std::string& name, const json::value& v, const std::string& path) {
  if (!is_model_name(name)) fail(path, "a model name must be \"owner/name\"");
  if (!v.is_object()) fail(path, "expected an object");
  ModelEntry e;
  e.name = name;
  bool has_price = false;
  for (const auto& kv : v.get_object()) {
    const std::string key(kv.key());
    const std::string p = path + "." + key;
    const json::value& x = kv.value();
    if (key == "price_usd") {
      e.price_usd = get_decimal(x, p);
      has_price = true;
    } else if (key == "per") {
      const std::string per = get_string(x, p);
      if (per != "image" && per != "run") fail(p, "expected \"image\" or \"run\"");
      e.per = per == "run" ? BillingUnit::run : BillingUnit::image;
    } else if (key == "version") {
      e.version = get_opt_string(x, p);
      if (e.version && !is_version_id(*e.version)) fail(p, "expected 64 lowercase hex digits");
    } else if (key == "expected_s") {
      // A scheduling hint, not money: a double is fine here.
      if (!x.is_number()) fail(p, "expected a number");
      e.expected_s = x.to_number<double>();
      if (!(e.expected_s > 0 && e.expected_s <= 86400)) fail(p, "must be greater than 0 and at most 86400");
    } else if (key == "prefer_wait_s") {
      if (!x.is_null()) e.prefer_wait_s = static_cast<int>(get_int(x, p, 1, 60));
    } else {
      unknown_key(p);
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
    // Pricing by version must be unambiguous.
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

// Boost.JSON keeps the last of duplicate keys without a word; in a config the
// first would be silently ignored, so a second pass over the (valid) text finds
// them, with their key path.
class DuplicateKeyFinder final {
 public:
  static constexpr std::size_t max_object_size = -1, max_array_size = -1, max_key_size = -1, max_string_size = -1;
  std::string duplicate;  // path of the first duplicate key

  bool on_document_begin(json::error_code&) { return true; }
  bool on_document_end(json::error_code&) { return true; }
  bool on_object_begin(json::error_code&) { return open(true); }
  bool on_object_end(std::size_t, json::error_code&) { return close(); }
  bool on_array_begin(json::error_code&) { return open(false); }
  bool on_array_end(std::size_t, json::error_code&) { return close(); }
  bool on_key_part(json::string_view s, std::size_t, json::error_code&) {
    key_.append(s.data(), s.size());
    return true;
  }
  bool on_key(json::string_view s, std::size_t, json::error_code& ec) {
    key_.append(s.data(), s.size());
    Frame& f = frames_.back();
    f.child = f.path.empty() ? key_ : f.path + "." + key_;
    if (!f.keys.insert(std::move(key_)).second) {
      duplicate = f.child;
      ec = json::error::syntax;  // stops the parser; the caller reports `duplicate`
      return false;
    }
    key_.clear();
    return true;
  }
  bool on_string_part(json::string_view, std::size_t, json::error_code&) { return true; }
  bool on_string(json::string_view, std::size_t, json::error_code&) { return true; }
  bool on_number_part(json::string_view, json::error_code&) { return true; }
  bool on_int64(int64_t, json::string_view, json::error_code&) { return true; }
  bool on_uint64(uint64_t, json::string_view, json::error_code&) { return true; }
  bool on_double(double, json::string_view, json::error_code&) { return true; }
  bool on_bool(bool, json::error_code&) { return true; }
  bool on_null(json::error_code&) { return true; }
  bool on_comment_part(json::string_view, json::error_code&) { return true; }
  bool on_comment(json::string_view, json::error_code&) { return true; }

 private:
  struct Frame {
    std::string path, child;
    std::set<std::string> keys;
  };
  bool open(bool object) {
    std::string path = frames_.empty() ? std::string() : frames_.back().child;
    frames_.push_back({object ? path : path + "[]", {}, {}});
    if (!object) frames_.back().child = frames_.back().path;
    return true;
  }
  bool close() {
    frames_.pop_back();
    return true;
  }
  std::vector<Frame> frames_;
  std::string key_;
};

json::value parse_json(std::string_view text) {
  json::parse_options opts;
  opts.allow_comments = true;
  opts.allow_trailing_commas = true;
  json::stream_parser parser({}, opts);
  json::error_code ec;
  const std::size_t used = parser.write(text.data(), text.size(), ec);
  if (!ec) parser.finish(ec);
  if (ec) throw ConfigError("invalid JSON at " + line_col(text, used) + ": " + ec.message());
  json::basic_parser<DuplicateKeyFinder> finder(opts);
  finder.write_some(false, text.data(), text.size(), ec);
  if (!finder.handler().duplicate.empty()) throw ConfigError("duplicate key \"" + finder.handler().duplicate + "\"");
  return parser.release();
}

// The whole file, or nullopt with errno set.
std::optional<std::string> read_text(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return std::nullopt;
  std::string out;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, f.get())) out.append(buf, n);
  if (std::ferror(f.get())) return std::nullopt;
  return out;
}

}  // namespace

Config parse_config(std::string_view text) {
  const json::value root = parse_json(text);
  if (!root.is_object()) throw ConfigError("the config must be a JSON object");

  Config config;
  for (const Key& k : keys()) k.set(config, json::parse(k.default_json), k.path);
  for (const auto& section : root.get_object()) {
    const std::string name(section.key());
    if (name == "models") {
      config.models = parse_models(section.value());
      continue;
    }
    const bool known = std::any_of(keys().begin(), keys().end(),
                                   [&](const Key& k) { return std::string_view(k.path).starts_with(name + "."); });
    if (!known) unknown_key(name);
    if (!section.value().is_object()) fail(name, "expected an object");
    for (const auto& kv : section.value().get_object()) {
      const std::string path = name + "." + std::string(kv.key());
      auto it = std::find_if(keys().begin(), keys().end(), [&](const Key& k) { return path == k.path; });
      if (it == keys().end()) unknown_key(path);
      it->set(config, kv.value(), path);
    }
  }
  if (config.retry.base_ms > config.retry.max_ms) fail("retry.base_ms", "must not exceed retry.max_ms");
  return config;
}

Config load_config(const std::string& path) {
  auto text = read_text(path);
  if (!text) throw ConfigError(std::string("cannot read the config file: ") + std::strerror(errno));
  return parse_config(*text);
}

std::vector<std::pair<std::string, std::string>> config_keys() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Key& k : keys()) out.emplace_back(k.path, k.doc);
  return out;
}

std::vector<ConfigKeyInfo> config_key_table() {
  std::vector<ConfigKeyInfo> out;
  for (const Key& k : keys()) out.push_back({k.path, k.default_json, k.doc});
  return out;
}

std::string load_api_token(const Config& config) {
  std::string token, source;
  if (const char* env = std::getenv("PREDICTD_API_TOKEN")) {
    token = env;
    source = "PREDICTD_API_TOKEN";
  }
  // systemd sets CREDENTIALS_DIRECTORY when the unit loads any credential;
  // without an api_token among them we go on to api.token_file.
  if (source.empty())
    if (const char* dir = std::getenv("CREDENTIALS_DIRECTORY"); dir && *dir) {
      const std::string file = std::string(dir) + "/api_token";
      if (auto t = read_text(file)) {
        token = std::move(*t);
        source = file;
      } else if (errno != ENOENT) {
        throw ConfigError("api token: cannot read the credential " + file + ": " + std::strerror(errno));
      }
    }
  if (source.empty() && config.api.token_file) {
    source = *config.api.token_file;
    auto t = read_text(source);
    if (!t) throw ConfigError("api.token_file: cannot read " + source + ": " + std::strerror(errno));
    token = std::move(*t);
  }
  if (source.empty())
    throw ConfigError(
        "api token: none found (set the environment variable PREDICTD_API_TOKEN, the systemd credential api_token, "
        "or api.token_file)");
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  if (token.empty()) throw ConfigError("api token: " + source + " is empty");
  // It goes into an HTTP header: anything else would corrupt the request.
  for (unsigned char ch : token)
    if (ch <= 0x20 || ch == 0x7f) throw ConfigError("api token: " + source + " holds whitespace or control characters");
  return token;
}

}  // namespace predictd
