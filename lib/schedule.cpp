#include "schedule.h"

#include <algorithm>
#include <cmath>

namespace predictd {

double first_poll_delay_s(double expected_s, const PollPolicy& p) {
  return std::max(p.min_interval_s, expected_s * p.first_fraction);
}

double next_poll_interval_s(double elapsed_s, double expected_s, const PollPolicy& p) {
  // Near the expected time, poll at a small share of it; once overdue, back
  // off in proportion to how late the job is (a cold start, a long queue).
  const double overdue = std::max(0.0, elapsed_s - expected_s);
  const double interval = expected_s * p.near_fraction + overdue * p.overdue_fraction;
  return std::clamp(interval, p.min_interval_s, p.max_interval_s);
}

double RuntimeEstimator::expected_s(const std::string& model, double seed_s) const {
  auto it = learned_.find(model);
  return it == learned_.end() ? seed_s : it->second;
}

void RuntimeEstimator::observe(const std::string& model, double seed_s, double observed_s) {
  if (!(observed_s > 0) || !std::isfinite(observed_s)) return;
  constexpr double kWeight = 0.2;
  auto [it, inserted] = learned_.try_emplace(model, seed_s);
  it->second += kWeight * (observed_s - it->second);
}

TokenBucket::TokenBucket(double per_minute, SteadyTime now, double burst_s) : burst_s_(burst_s), last_(now) {
  set_rate(per_minute);
  tokens_ = capacity_;
}

void TokenBucket::set_rate(double per_minute) {
  per_second_ = std::max(per_minute, 1e-9) / 60.0;
  capacity_ = std::max(1.0, per_second_ * burst_s_);
}

void TokenBucket::refill(SteadyTime now) {
  if (now <= last_) return;
  tokens_ = std::min(capacity_, tokens_ + Seconds(now - last_).count() * per_second_);
  last_ = now;
}

bool TokenBucket::try_take(SteadyTime now) {
  if (now < paused_until_) return false;
  refill(now);
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

int64_t TokenBucket::available(SteadyTime now) {
  if (now < paused_until_) return 0;
  refill(now);
  return static_cast<int64_t>(tokens_);
}

Seconds TokenBucket::wait_time(SteadyTime now) {
  if (now < paused_until_) return paused_until_ - now;
  refill(now);
  if (tokens_ >= 1.0) return Seconds(0);
  return Seconds((1.0 - tokens_) / per_second_);
}

void TokenBucket::pause_until(SteadyTime until) {
  if (until > paused_until_) paused_until_ = until;
  // A server that throttled us had no budget left: start again from empty.
  tokens_ = 0;
  last_ = std::max(last_, until);
}

std::chrono::milliseconds backoff_delay(int attempt, int base_ms, int max_ms, std::mt19937_64& rng) {
  const int shift = std::clamp(attempt - 1, 0, 30);
  const double ceiling = std::min<double>(max_ms, static_cast<double>(base_ms) * std::pow(2.0, shift));
  std::uniform_real_distribution<double> jitter(ceiling / 2, ceiling);
  return std::chrono::milliseconds(static_cast<int64_t>(jitter(rng)));
}

}  // namespace predictd
