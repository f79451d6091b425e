// The daemon's config (SPEC §6). All defaults live in config.cpp's table.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "catalog.h"
#include "pricing.h"

namespace predictd {

// Error text names the key path, e.g. "api.max_connections: expected an integer".
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ApiSettings {
  std::string base_url = "https://api.openai-hk.com/replicate";
  std::optional<std::string> token_file = std::string("/etc/predictd/api_token");
  std::optional<std::string> ca_file;
  int max_connections = 32;
  int request_timeout_s = 30;
  friend bool operator==(const ApiSettings&, const ApiSettings&) = default;
};

struct Limits {
  int max_in_flight = 256;
  int creates_per_minute = 600;
  int requests_per_minute = 3000;
  friend bool operator==(const Limits&, const Limits&) = default;
};

struct RetrySettings {
  int max_attempts = 5;
  int base_ms = 1000;
  int max_ms = 300000;
  friend bool operator==(const RetrySettings&, const RetrySettings&) = default;
};

struct JobSettings {
  int default_timeout_s = 1800;
  int max_input_bytes = 1048576;
  friend bool operator==(const JobSettings&, const JobSettings&) = default;
};

struct LogSettings {
  std::string level = "info";
  std::optional<std::string> file;
  friend bool operator==(const LogSettings&, const LogSettings&) = default;
};

struct ArchiveSettings {
  std::optional<std::string> dir;
  int64_t max_file_bytes = 536870912;
  int concurrency = 8;
  friend bool operator==(const ArchiveSettings&, const ArchiveSettings&) = default;
};

struct Config {
  std::string db_path = "/var/lib/predictd/jobs.db";
  ApiSettings api;
  Billing billing;
  Limits limits;
  RetrySettings retry;
  JobSettings jobs;
  LogSettings log;
  ArchiveSettings archive;
  Catalog models = Catalog::defaults();
  friend bool operator==(const Config&, const Config&) = default;
};

// Parses JSON with comments and trailing commas. Relative paths stay as given.
Config parse_config(std::string_view text);
Config load_config(const std::string& path);  // reads the file; ConfigError on I/O errors too

// Every settable key path (except models.*) with a one-line description, in table order.
std::vector<std::pair<std::string, std::string>> config_keys();

// The same table with each key's default as JSON text ("32", "\"info\"", "null"), so that
// the example config and the docs can be checked against it.
struct ConfigKeyInfo {
  std::string path;
  std::string default_json;
  std::string doc;
};
std::vector<ConfigKeyInfo> config_key_table();

// The API token: env PREDICTD_API_TOKEN, else the systemd credential
// $CREDENTIALS_DIRECTORY/api_token, else api.token_file. Trailing whitespace trimmed. ConfigError
// when none is found or the file is unreadable; the message never holds the token.
std::string load_api_token(const Config& config);

}  // namespace predictd
