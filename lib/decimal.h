// Exact non-negative decimals for prices ("0.0063", "2.5"): an integer
// mantissa and a power-of-ten scale. No binary floating point.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace predictd {

struct Decimal {
  int64_t mantissa = 0;  // value = mantissa / 10^scale
  int scale = 0;         // 0..18

  // Parses "12", "0.0063", "2.50"; rejects signs, exponents, empty parts and
  // more than 18 significant digits.
  static std::optional<Decimal> parse(std::string_view s);
  std::string to_string() const;  // shortest exact form: "0.0063", "2.5", "12"
  friend bool operator==(const Decimal& a, const Decimal& b);  // by value: 2.5 == 2.50
};

}  // namespace predictd
