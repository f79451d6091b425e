#include "pricing.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>

namespace predictd {

int64_t cost_credits(const ModelEntry& model, int64_t units, const Billing& billing) {
  // price = p / 10^ps and markup = m / 10^ms, so the cost is the integer product
  // p × units × m × credits over 10^(ps+ms), rounded up. 128 bits hold every
  // product of in-range operands until the checks below say otherwise.
  using i128 = __int128;
  i128 numerator = 1;
  for (int64_t factor : {model.price_usd.mantissa, units, billing.markup.mantissa, billing.credits_per_currency_unit}) {
    if (factor < 0) throw std::invalid_argument("credit cost of a negative quantity");
    if (__builtin_mul_overflow(numerator, static_cast<i128>(factor), &numerator))
      throw std::overflow_error("credit cost out of range");
  }
  const int scale = model.price_usd.scale + billing.markup.scale;
  if (model.price_usd.scale < 0 || billing.markup.scale < 0 || scale > 36)
    throw std::invalid_argument("credit cost: decimal scale out of range");
  i128 denominator = 1;
  for (int i = 0; i < scale; ++i) denominator *= 10;
  const i128 credits = numerator / denominator + (numerator % denominator != 0 ? 1 : 0);
  if (credits > INT64_MAX) throw std::overflow_error("credit cost out of range");
  return static_cast<int64_t>(credits);
}

int64_t billed_units(const ModelEntry& model, std::optional<int64_t> image_count, int64_t output_count) {
  if (model.per == BillingUnit::run) return 1;
  // A nonsensical negative count from the server bills nothing rather than
  // making the cost computation throw.
  return std::max<int64_t>(0, image_count.value_or(output_count));
}

}  // namespace predictd
