// Pure scheduling arithmetic: when to poll, rate budgets, retry backoff.
// Time is passed in, so tests need no clock.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <unordered_map>

namespace predictd {

using SteadyTime = std::chrono::steady_clock::time_point;
using Seconds = std::chrono::duration<double>;

struct PollPolicy {
  double first_fraction = 0.9;      // first poll at this share of the expected run time
  double near_fraction = 0.015;     // interval near the expected time, as a share of it
  double overdue_fraction = 0.1;    // interval growth per second overdue
  double min_interval_s = 0.1;
  double max_interval_s = 30.0;
};

// Seconds after the create to the first poll.
double first_poll_delay_s(double expected_s, const PollPolicy& p);
// Seconds from a poll that found the job still running to the next one.
double next_poll_interval_s(double elapsed_s, double expected_s, const PollPolicy& p);

// Expected run time per model: seeded from the catalog, moved towards each
// observed run time (exponentially weighted).
class RuntimeEstimator final {
 public:
  double expected_s(const std::string& model, double seed_s) const;
  void observe(const std::string& model, double seed_s, double observed_s);

 private:
  std::unordered_map<std::string, double> learned_;
};

// A token bucket refilled at `per_minute`, holding at most `burst_s` seconds'
// worth (at least one token), so bursts never exceed what a per-minute limit allows.
class TokenBucket final {
 public:
  TokenBucket(double per_minute, SteadyTime now, double burst_s = 1.0);
  void set_rate(double per_minute);
  bool try_take(SteadyTime now);
  // Tokens available now (whole).
  int64_t available(SteadyTime now);
  // Time until one token is available (zero if one is).
  Seconds wait_time(SteadyTime now);
  // No tokens until `until` (a server's Retry-After).
  void pause_until(SteadyTime until);
  SteadyTime paused_until() const { return paused_until_; }

 private:
  void refill(SteadyTime now);
  double burst_s_;
  double per_second_;
  double capacity_;
  double tokens_;
  SteadyTime last_;
  SteadyTime paused_until_{};
};

// Exponential backoff with full jitter in [base·2^(n-1)/2, base·2^(n-1)], capped.
std::chrono::milliseconds backoff_delay(int attempt, int base_ms, int max_ms, std::mt19937_64& rng);

}  // namespace predictd
