// Shared by the soaks: sizes from the environment, the daemon's config, the
// jobs they insert and SPEC §3's prices, written out independently of lib/.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "catalog.h"

namespace predictd::test {

inline bool full_length() {
  const char* v = std::getenv("RELIABILITY_FULL");
  return v && std::string(v) == "1";
}

inline int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

inline uint64_t seed_from_env() {
  const char* v = std::getenv("RELIABILITY_SEED");
  return v && *v ? std::strtoull(v, nullptr, 10) : std::random_device{}();
}

// SPEC §3's table in micro-USD, so expected credits need no decimal code of ours:
// credits = ceil(micro × units × 2.5 × 10000 / 1e6) = ceil(micro × units × 25 / 1000).
inline const std::map<std::string, int64_t>& spec_price_micro_usd() {
  static const std::map<std::string, int64_t> kPrices = {
      {"black-forest-labs/flux-schnell", 3000},          {"black-forest-labs/flux-dev", 25000},
      {"black-forest-labs/flux-pro", 55000},             {"black-forest-labs/flux-1.1-pro", 40000},
      {"stability-ai/stable-diffusion", 3400},           {"stability-ai/sdxl", 6300},
      {"stability-ai/stable-diffusion-inpainting", 2100}, {"stability-ai/stable-diffusion-img2img", 9300},
      {"minimax/video-01", 500000},                      {"minimax/video-01-live", 500000},
      {"lucataco/flux-schnell-lora", 6000},              {"lucataco/flux-dev-lora", 38000},
      {"recraft-ai/recraft-v3-svg", 80000},              {"ideogram-ai/ideogram-v2-turbo", 50000},
  };
  return kPrices;
}

inline int64_t spec_credits(const std::string& model, int64_t units) {
  const int64_t n = spec_price_micro_usd().at(model) * units * 25;
  return (n + 999) / 1000;
}

struct DaemonConfig {
  std::string db_path;
  std::string base_url;
  std::string ca_file;
  std::string log_file;
  double time_scale = 1;  // expected run times shrink with the simulator's clock
  int request_timeout_s = 10;
  int max_in_flight = 256;
  int creates_per_minute = 6000;
  int requests_per_minute = 60000;
  int max_attempts = 5;
  int base_ms = 200;
  int max_ms = 5000;
  int default_timeout_s = 900;
  int max_connections = 16;
};

// The config file's text; the catalog is the default one with expected_s scaled.
std::string daemon_config_json(const DaemonConfig& c);

// A job for `model` that the simulator accepts; `tag` makes its input unique.
struct SoakJob {
  std::string model;
  std::optional<std::string> version;  // the version column only (no model)
  std::string input;
};
SoakJob make_soak_job(const ModelEntry& m, const std::string& tag, std::mt19937_64& rng);

}  // namespace predictd::test
