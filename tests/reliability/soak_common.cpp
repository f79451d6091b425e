#include "soak_common.h"

#include <boost/json.hpp>

namespace predictd::test {

namespace json = boost::json;

std::string daemon_config_json(const DaemonConfig& c) {
  json::object models;
  const Catalog catalog = Catalog::defaults();
  for (const ModelEntry& m : catalog.entries()) {
    json::object e{{"price_usd", m.price_usd.to_string()},
                   {"per", std::string(to_string(m.per))},
                   {"expected_s", m.expected_s / c.time_scale}};
    if (m.version) e["version"] = *m.version;
    models[m.name] = std::move(e);
  }
  json::object cfg{
      {"db", {{"path", c.db_path}}},
      {"api",
       {{"base_url", c.base_url},
        {"token_file", nullptr},
        {"ca_file", c.ca_file},
        {"max_connections", c.max_connections},
        {"request_timeout_s", c.request_timeout_s}}},
      {"limits",
       {{"max_in_flight", c.max_in_flight},
        {"creates_per_minute", c.creates_per_minute},
        {"requests_per_minute", c.requests_per_minute}}},
      {"retry", {{"max_attempts", c.max_attempts}, {"base_ms", c.base_ms}, {"max_ms", c.max_ms}}},
      {"jobs", {{"default_timeout_s", c.default_timeout_s}}},
      {"log", {{"level", "info"}, {"file", c.log_file}}},
      {"models", std::move(models)},
  };
  return json::serialize(cfg);
}

SoakJob make_soak_job(const ModelEntry& m, const std::string& tag, std::mt19937_64& rng) {
  json::object input{{"prompt", "soak " + tag}};
  input["num_outputs"] = static_cast<int>(rng() % 4) + 1;
  SoakJob j;
  if (m.version && rng() % 2 == 0)
    j.version = *m.version;
  else
    j.model = m.name;
  j.input = json::serialize(input);
  return j;
}

}  // namespace predictd::test
