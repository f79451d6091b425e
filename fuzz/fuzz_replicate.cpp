// libFuzzer target: everything predictd reads from an API response body or
// header (lib/replicate), plus the billing a succeeded prediction leads to.
// A crash, sanitizer report or broken invariant (abort) is a finding.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string_view>

#include <boost/json.hpp>

#include "catalog.h"
#include "pricing.h"
#include "replicate.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void check_prediction(const predictd::Prediction& p) {
  using predictd::RemoteStatus;
  check(!p.id.empty());
  check(!p.output_error || p.output.empty());
  if (p.status == RemoteStatus::succeeded) check(p.output_error || !p.output.empty());
  if (p.image_count) check(*p.image_count >= 0 && *p.image_count < 1000000);
  if (!p.canonical_input.empty()) {
    check(p.canonical_input.front() == '{');
    check(predictd::canonical_json(p.canonical_input) == p.canonical_input);
  }
  // What the engine bills for a succeeded prediction, for every default model.
  if (p.status == RemoteStatus::succeeded && !p.output_error) {
    static const predictd::Catalog kCatalog = predictd::Catalog::defaults();
    for (const auto& m : kCatalog.entries()) {
      const int64_t units = predictd::billed_units(m, p.image_count, static_cast<int64_t>(p.output.size()));
      check(units >= 0);
      try {
        check(predictd::cost_credits(m, units, predictd::Billing{}) >= 0);
      } catch (const std::overflow_error&) {
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);

  const auto parsed = predictd::parse_prediction(body, /*with_input=*/true);
  if (auto* p = std::get_if<predictd::Prediction>(&parsed))
    check_prediction(*p);
  else
    check(!std::get<std::string>(parsed).empty());

  auto page = predictd::parse_prediction_page(body);
  if (auto* pg = std::get_if<predictd::PredictionPage>(&page))
    for (const auto& p : pg->results) check_prediction(p);

  // Canonical JSON is valid JSON and a fixed point.
  if (auto c = predictd::canonical_json(body)) {
    boost::json::error_code ec;
    boost::json::parse(*c, ec);
    check(!ec);
    check(predictd::canonical_json(*c) == *c);
  }

  check(!predictd::error_message(body, 500).empty());
  if (auto d = predictd::throttle_delay_s(body)) check(std::isfinite(*d) && *d >= 0);
  if (auto d = predictd::parse_retry_after(body)) check(std::isfinite(*d) && *d >= 0);
  return 0;
}
