// Credit cost of a succeeded job (SPEC §3), exact.
#pragma once

#include <cstdint>
#include <optional>

#include "catalog.h"
#include "decimal.h"

namespace predictd {

struct Billing {
  Decimal markup{25, 1};                     // 2.5
  int64_t credits_per_currency_unit = 10000;

  friend bool operator==(const Billing&, const Billing&) = default;
};

// ceil(price × units × markup × credits_per_currency_unit), exact.
// std::invalid_argument on a negative operand, std::overflow_error past int64_t.
int64_t cost_credits(const ModelEntry& model, int64_t units, const Billing& billing);

// Billed units: 1 for a per-run model; else metrics.image_count when given,
// else the number of outputs.
int64_t billed_units(const ModelEntry& model, std::optional<int64_t> image_count, int64_t output_count);

}  // namespace predictd
