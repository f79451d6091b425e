#include "pricing.h"

#include <cstdint>
#include <stdexcept>

namespace predictd {

int64_t cost_credits(const ModelEntry& model, int64_t units, const Billing& billing) {
  // price = p / 10^ps, markup = m / 10^ms: the product over 10^(ps+ms), rounded up.
  using i128 = __int128;
  i128 numerator = model.price_usd.mantissa;
  for (int64_t factor : {units, billing.markup.mantissa, billing.credits_per_currency_unit})
    if (factor < 0 || __builtin_mul_overflow(numerator, static_cast<i128>(factor), &numerator))
      throw std::overflow_error("credit cost out of range");
  i128 denominator = 1;
  for (int i = 0; i < model.price_usd.scale + billing.markup.scale; ++i) denominator *= 10;
  const i128 credits = (numerator + denominator - 1) / denominator;
  if (credits > INT64_MAX) throw std::overflow_error("credit cost out of range");
  return static_cast<int64_t>(credits);
}

int64_t billed_units(const ModelEntry& model, std::optional<int64_t> image_count, int64_t output_count) {
  if (model.per == BillingUnit::run) return 1;
  return image_count.value_or(output_count);
}

}  // namespace predictd
