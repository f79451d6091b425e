#include "timefmt.h"

#include <charconv>
#include <cstdio>
#include <ctime>

namespace predictd {

std::string format_utc(SysTime t) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  int frac = static_cast<int>(ms % 1000);
  if (frac < 0) {
    frac += 1000;
    --secs;
  }
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
  return buf;
}

namespace {
bool take_int(std::string_view& s, std::size_t digits, int& out) {
  if (s.size() < digits) return false;
  for (std::size_t i = 0; i < digits; ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  std::from_chars(s.data(), s.data() + digits, out);
  s.remove_prefix(digits);
  return true;
}
bool take_char(std::string_view& s, char c) {
  if (s.empty() || s.front() != c) return false;
  s.remove_prefix(1);
  return true;
}
}  // namespace

std::optional<SysTime> parse_utc(std::string_view s) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  if (!take_int(s, 4, y) || !take_char(s, '-') || !take_int(s, 2, mo) || !take_char(s, '-') || !take_int(s, 2, d))
    return std::nullopt;
  std::chrono::nanoseconds frac{0};
  const bool has_time = !s.empty() && (s.front() == 'T' || s.front() == ' ');
  if (has_time) {
    s.remove_prefix(1);
    if (!take_int(s, 2, h) || !take_char(s, ':') || !take_int(s, 2, mi)) return std::nullopt;
    if (take_char(s, ':')) {
      if (!take_int(s, 2, sec)) return std::nullopt;
      if (take_char(s, '.')) {
        int64_t scale = 100000000, ns = 0;
        std::size_t n = 0;
        while (!s.empty() && s.front() >= '0' && s.front() <= '9') {
          ns += (s.front() - '0') * scale;
          scale /= 10;
          s.remove_prefix(1);
          ++n;
        }
        if (n == 0) return std::nullopt;
        frac = std::chrono::nanoseconds(ns);
      }
    }
  }
  // julianday() takes a zone only after a time, and seconds up to 59: what
  // predictctl accepts here must pass the schema's not_before CHECK.
  if (has_time) take_char(s, 'Z');
  if (!s.empty()) return std::nullopt;
  const std::chrono::year_month_day ymd{std::chrono::year(y), std::chrono::month(static_cast<unsigned>(mo)),
                                        std::chrono::day(static_cast<unsigned>(d))};
  if (!ymd.ok() || h > 23 || mi > 59 || sec > 59) return std::nullopt;
  const auto tp = std::chrono::sys_days(ymd) + std::chrono::hours(h) + std::chrono::minutes(mi) + std::chrono::seconds(sec);
  // SysTime counts nanoseconds in 64 bits (years 1678..2262): a time outside
  // that would overflow in the conversion below.
  constexpr auto kLimit = std::chrono::floor<std::chrono::seconds>(SysTime::duration::max()) - std::chrono::seconds(1);
  if (tp.time_since_epoch() > kLimit || tp.time_since_epoch() < -kLimit) return std::nullopt;
  return std::chrono::time_point_cast<SysTime::duration>(tp + frac);
}

}  // namespace predictd
