// The model catalog (SPEC §3): price, billing unit, optional version, and
// scheduling hints per model.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "decimal.h"

namespace predictd {

enum class BillingUnit { image, run };
std::string_view to_string(BillingUnit u);

struct ModelEntry {
  std::string name;                    // "owner/name"
  Decimal price_usd;
  BillingUnit per = BillingUnit::image;
  std::optional<std::string> version;  // 64-hex; when set, the version form is used
  double expected_s = 5.0;             // typical run time: seeds the first poll
  std::optional<int> prefer_wait_s;    // send Prefer: wait=N on create (1..60)

  friend bool operator==(const ModelEntry&, const ModelEntry&) = default;
};

class Catalog final {
 public:
  Catalog() = default;
  explicit Catalog(std::vector<ModelEntry> entries);
  static Catalog defaults();  // SPEC §3's table

  const ModelEntry* find_model(std::string_view name) const;
  const ModelEntry* find_version(std::string_view version) const;
  const std::vector<ModelEntry>& entries() const { return entries_; }

  friend bool operator==(const Catalog&, const Catalog&) = default;

 private:
  std::vector<ModelEntry> entries_;
};

}  // namespace predictd
