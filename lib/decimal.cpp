#include "decimal.h"

namespace predictd {

std::optional<Decimal> Decimal::parse(std::string_view s) {
  Decimal d;
  bool dot = false, digits = false;
  int significant = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '.') {
      if (dot || !digits || i + 1 == s.size()) return std::nullopt;
      dot = true;
      continue;
    }
    if (c < '0' || c > '9') return std::nullopt;
    digits = true;
    if (d.mantissa != 0 || c != '0') ++significant;
    if (significant > 18 || (dot && d.scale >= 18)) return std::nullopt;
    d.mantissa = d.mantissa * 10 + (c - '0');
    if (dot) ++d.scale;
  }
  if (!digits) return std::nullopt;
  // Trailing zeros after the point carry no value: 2.50 is 2.5.
  while (d.scale > 0 && d.mantissa % 10 == 0) {
    d.mantissa /= 10;
    --d.scale;
  }
  return d;
}

std::string Decimal::to_string() const {
  const std::string digits = std::to_string(mantissa);
  if (scale == 0) return digits;
  const std::size_t frac = static_cast<std::size_t>(scale);
  const std::string padded = digits.size() <= frac ? std::string(frac + 1 - digits.size(), '0') + digits : digits;
  return padded.substr(0, padded.size() - frac) + "." + padded.substr(padded.size() - frac);
}

bool operator==(const Decimal& a, const Decimal& b) {
  auto norm = [](Decimal d) {
    while (d.scale > 0 && d.mantissa % 10 == 0) {
      d.mantissa /= 10;
      --d.scale;
    }
    return d;
  };
  const Decimal x = norm(a), y = norm(b);
  return x.mantissa == y.mantissa && x.scale == y.scale;
}

}  // namespace predictd
