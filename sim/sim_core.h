// The simulator's model of Replicate, without any I/O: the catalog, the
// predictions and their life cycle, the JSON they are rendered as, and the
// counters behind GET /_sim/stats. Time is passed in (sim seconds), so the
// transport decides what a clock is and tests can drive it directly.
// Internal to predictd_sim_lib: Boost.JSON only, no Beast.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include <boost/json/value.hpp>

#include "sim_server.h"

namespace predictd::sim::core {

namespace json = boost::json;
using SysTime = std::chrono::system_clock::time_point;

struct ModelSpec {
  const char* name;     // owner/name
  const char* version;  // nullptr: an official model, model form only ("hidden")
  bool array_output;    // an array of URLs (honours num_outputs) or one URL string
  const char* ext;
  double run_s;         // typical run time (realistic profile)
  double spread_s;      // ± uniform spread around run_s
  bool per_image;       // reports metrics.image_count
};

std::span<const ModelSpec> models();
const ModelSpec* find_model(std::string_view owner_slash_name);
// The `version` field of POST /predictions: "<id>", "owner/name:<id>", or
// "owner/name" for an official model. nullptr when it names nothing we run.
const ModelSpec* resolve_version(std::string_view version_field);

enum class Status { starting, processing, succeeded, failed, canceled, aborted };
const char* status_name(Status s);
inline bool is_terminal(Status s) { return s != Status::starting && s != Status::processing; }

// JSON with object keys sorted at every level: the same input spelled two ways
// is one key.
std::string canonical_json(const json::value& v);
// Cancel-After: "30", "30s", "5m", "1h30m45s", "1.5s". nullopt when malformed.
std::optional<double> parse_duration(std::string_view s);
// Prefer: ^wait(=([1-9]|[1-9][0-9]|60))?$ (the OpenAPI pattern, which admits
// 61..99 although its text says 1..60). The seconds to wait, or nullopt when
// it does not match. Plain "wait" waits the maximum, 60 s.
std::optional<int> parse_prefer(std::string_view s);

// created_after / created_before: an RFC 3339 date-time (the OpenAPI format
// `date-time`), YYYY-MM-DDTHH:MM:SS[.frac] then Z or ±HH:MM, 'T' and 'Z' in
// either case; also the forms parse_utc takes (a space for the T, no seconds,
// a bare date, no zone: UTC). nullopt otherwise.
std::optional<SysTime> parse_date_time(std::string_view s);

struct Prediction {
  uint64_t seq = 0;  // creation order, the list cursor
  std::string id;
  const ModelSpec* model = nullptr;
  json::value input;
  SysTime created_wall;    // created_at
  double scale = 1;        // time scale at creation: maps sim offsets to wall offsets
  double created = 0;      // sim seconds
  double cold = 0;         // seconds in `starting`
  double run = 0;          // seconds in `processing`
  bool fails = false;
  int outputs = 1;
  std::optional<double> deadline;  // Cancel-After, sim seconds
  std::optional<double> canceled_at;
  int64_t polls = 0;
};

struct Settings {
  Profile profile = Profile::realistic;
  double cold_start_rate = 0;
  double failure_rate = 0;
  double expire_after_s = 0;        // sim seconds after completion; 0: never
  std::string public_base;          // "https://api.replicate.com"
  std::string output_base = "https://replicate.delivery";
  std::size_t huge_logs_bytes = 0;
};

class Simulation final {
 public:
  explicit Simulation(uint64_t seed) : rng_(seed) {}

  Status status_at(const Prediction& p, double t) const;
  // Sim time at which the prediction is (or will be) terminal.
  double end_of(const Prediction& p) const;

  Prediction& create(const Settings& s, const ModelSpec& model, bool version_form, const json::value& input,
                     double now, SysTime wall_now, double scale, std::optional<double> cancel_after);
  Prediction* find(std::string_view id);
  // Not terminal yet: canceled now. Returns whether it changed anything.
  bool cancel(Prediction& p, double now);
  // Drops predictions that completed more than expire_after_s ago.
  void expire(const Settings& s, double now);
  void reset();

  // `as_created`: the create's answer (always `starting`, whatever the profile).
  json::object render(const Settings& s, const Prediction& p, double now, bool as_created = false,
                      bool huge_logs = false) const;

  struct Page {
    json::object body;
    std::size_t count = 0;
  };
  // Newest first, 100 per page; cursor "b<seq>" (older than seq) or "a<seq>" (newer).
  Page list(const Settings& s, double now, std::optional<SysTime> created_after,
            std::optional<SysTime> created_before, std::string_view cursor) const;

  void fill_stats(Stats& st, double now, bool details) const;

  std::mt19937_64& rng() { return rng_; }
  double uniform(double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng_); }
  bool chance(double p) { return p > 0 && (p >= 1 || uniform(0, 1) < p); }

 private:
  std::string new_id();

  std::mt19937_64 rng_;
  std::deque<Prediction> predictions_;  // by seq, oldest first
  uint64_t first_seq_ = 0;              // seq of predictions_.front()
  std::unordered_map<std::string_view, uint64_t> index_;  // views into Prediction::id (deque keeps addresses)
  std::unordered_map<std::string, int64_t> creates_by_input_;
  int64_t creates_ = 0;
  int64_t expired_polls_ = 0;
  int64_t expired_ = 0;
};

}  // namespace predictd::sim::core
