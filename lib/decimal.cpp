#include "decimal.h"

namespace predictd {
namespace {

constexpr int kMaxDigits = 18;  // 10^18 - 1 fits in int64_t

bool all_digits(std::string_view s) {
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// Equal values have one normal form: no trailing zeros after the point.
Decimal normalized(Decimal d) {
  while (d.scale > 0 && d.mantissa % 10 == 0) {
    d.mantissa /= 10;
    --d.scale;
  }
  return d;
}

}  // namespace

std::optional<Decimal> Decimal::parse(std::string_view s) {
  const auto dot = s.find('.');
  std::string_view whole = s.substr(0, dot);
  std::string_view frac = dot == std::string_view::npos ? std::string_view() : s.substr(dot + 1);
  if (whole.empty() || (dot != std::string_view::npos && frac.empty())) return std::nullopt;
  if (!all_digits(whole) || !all_digits(frac)) return std::nullopt;
  // Zeros that carry no value do not count towards the limits: "1.000…0" is 1.
  while (!frac.empty() && frac.back() == '0') frac.remove_suffix(1);
  while (whole.size() > 1 && whole.front() == '0') whole.remove_prefix(1);
  if (frac.size() > static_cast<std::size_t>(kMaxDigits)) return std::nullopt;
  std::string digits = std::string(whole) + std::string(frac);
  const auto first = digits.find_first_not_of('0');
  if (first != std::string::npos && digits.size() - first > static_cast<std::size_t>(kMaxDigits)) return std::nullopt;
  Decimal d;
  for (char c : digits) d.mantissa = d.mantissa * 10 + (c - '0');
  d.scale = static_cast<int>(frac.size());
  return d;
}

std::string Decimal::to_string() const {
  const Decimal d = normalized(*this);
  const std::string digits = std::to_string(d.mantissa);
  if (d.scale == 0) return digits;
  const std::size_t frac = static_cast<std::size_t>(d.scale);
  const std::string padded = digits.size() <= frac ? std::string(frac + 1 - digits.size(), '0') + digits : digits;
  return padded.substr(0, padded.size() - frac) + "." + padded.substr(padded.size() - frac);
}

bool operator==(const Decimal& a, const Decimal& b) {
  const Decimal x = normalized(a), y = normalized(b);
  return x.mantissa == y.mantissa && x.scale == y.scale;
}

}  // namespace predictd
