#include <gtest/gtest.h>

#include <map>
#include <stdexcept>

#include "catalog.h"
#include "decimal.h"
#include "pricing.h"

using namespace predictd;

namespace {
Decimal dec(const char* s) { return Decimal::parse(s).value(); }
ModelEntry priced(const char* usd, BillingUnit per = BillingUnit::image) {
  return ModelEntry{.name = "test/model", .price_usd = dec(usd), .per = per};
}
}  // namespace

TEST(Pricing, EveryCatalogModelAtOneAndFourUnits) {
  // credits = ceil(USD × units × 2.5 × 10000), worked out by hand:
  // e.g. sdxl 0.0063 × 25000 = 157.5 → 158; × 4 = 630. Per-run models bill 1 unit.
  const std::map<std::string, std::pair<int64_t, int64_t>> expected = {
      {"black-forest-labs/flux-schnell", {75, 300}},
      {"black-forest-labs/flux-dev", {625, 2500}},
      {"black-forest-labs/flux-pro", {1375, 5500}},
      {"black-forest-labs/flux-1.1-pro", {1000, 4000}},
      {"stability-ai/stable-diffusion", {85, 340}},
      {"stability-ai/sdxl", {158, 630}},
      {"stability-ai/stable-diffusion-inpainting", {53, 210}},
      {"stability-ai/stable-diffusion-img2img", {233, 930}},
      {"minimax/video-01", {12500, 12500}},
      {"minimax/video-01-live", {12500, 12500}},
      {"lucataco/flux-schnell-lora", {150, 600}},
      {"lucataco/flux-dev-lora", {950, 3800}},
      {"recraft-ai/recraft-v3-svg", {2000, 8000}},
      {"ideogram-ai/ideogram-v2-turbo", {1250, 5000}},
  };
  const Catalog catalog = Catalog::defaults();
  ASSERT_EQ(catalog.entries().size(), expected.size());
  const Billing billing;
  for (const auto& [name, credits] : expected) {
    const ModelEntry* m = catalog.find_model(name);
    ASSERT_NE(m, nullptr) << name;
    // Units from the output count, and from metrics.image_count.
    EXPECT_EQ(cost_credits(*m, billed_units(*m, std::nullopt, 1), billing), credits.first) << name;
    EXPECT_EQ(cost_credits(*m, billed_units(*m, std::nullopt, 4), billing), credits.second) << name;
    EXPECT_EQ(cost_credits(*m, billed_units(*m, 1, 1), billing), credits.first) << name;
    EXPECT_EQ(cost_credits(*m, billed_units(*m, 4, 1), billing), credits.second) << name;
  }
}

TEST(Pricing, SpecExamples) {
  const Catalog c = Catalog::defaults();
  const Billing b;
  EXPECT_EQ(cost_credits(*c.find_model("stability-ai/sdxl"), 1, b), 158);
  EXPECT_EQ(cost_credits(*c.find_model("stability-ai/sdxl"), 4, b), 630);
  EXPECT_EQ(cost_credits(*c.find_model("black-forest-labs/flux-schnell"), 1, b), 75);
  EXPECT_EQ(cost_credits(*c.find_model("minimax/video-01"), 1, b), 12500);
  EXPECT_EQ(cost_credits(priced("0.1"), 1, b), 2500);  // 0.1 USD → 0.25 → 2500 credits
  // Priced by the version's entry, as a job that names only the version is.
  EXPECT_EQ(cost_credits(*c.find_version("7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"), 1, b),
            158);
}

TEST(Pricing, UnitsFromImageCountElseOutputs) {
  const Catalog catalog = Catalog::defaults();
  const ModelEntry& sdxl = *catalog.find_model("stability-ai/sdxl");
  EXPECT_EQ(billed_units(sdxl, 3, 1), 3);  // metrics.image_count wins over the outputs
  EXPECT_EQ(billed_units(sdxl, 0, 2), 0);
  EXPECT_EQ(billed_units(sdxl, std::nullopt, 2), 2);
  EXPECT_EQ(billed_units(sdxl, std::nullopt, 0), 0);
  EXPECT_EQ(billed_units(sdxl, -3, 2), 0);  // a bogus count bills nothing rather than throwing
  const ModelEntry& video = *catalog.find_model("minimax/video-01");
  EXPECT_EQ(billed_units(video, 5, 3), 1);
  EXPECT_EQ(billed_units(video, std::nullopt, 0), 1);
  EXPECT_EQ(cost_credits(video, billed_units(video, std::nullopt, 7), Billing{}), 12500);
}

TEST(Pricing, RoundsUpOnlyAFraction) {
  const Billing b;
  EXPECT_EQ(cost_credits(priced("0.00004"), 1, b), 1);  // 0.00004 × 25000 = 1 exactly
  EXPECT_EQ(cost_credits(priced("0.000041"), 1, b), 2);  // 1.025
  EXPECT_EQ(cost_credits(priced("0.000000000000000001"), 1, b), 1);
  EXPECT_EQ(cost_credits(priced("0.0063"), 0, b), 0);
  EXPECT_EQ(cost_credits(priced("0"), 5, b), 0);
}

TEST(Pricing, ExactWhereBinaryFloatingPointIsNot) {
  // In doubles 0.1 × 3 × 10 is 3.0000000000000004, whose ceiling is 4.
  EXPECT_EQ(cost_credits(priced("0.1"), 3, Billing{dec("1"), 10}), 3);
  EXPECT_EQ(cost_credits(priced("0.07"), 100, Billing{dec("1"), 1}), 7);  // 0.07 × 100 = 7.000000000000001
  // 19 significant digits: beyond a double's 53-bit mantissa.
  EXPECT_EQ(cost_credits(priced("999999999999999999"), 1, Billing{dec("1"), 9}), 8999999999999999991);
}

TEST(Pricing, MarkupAndCreditRateAreConfigurable) {
  const ModelEntry m = priced("0.003");
  EXPECT_EQ(cost_credits(m, 1, Billing{dec("1"), 10000}), 30);
  EXPECT_EQ(cost_credits(m, 1, Billing{dec("3.3333"), 1}), 1);  // 0.0099999 rounds up
  EXPECT_EQ(cost_credits(m, 7, Billing{dec("0.000000000000000001"), 1000000000000}), 1);  // 2.1e-8
  EXPECT_EQ(cost_credits(m, 3, Billing{dec("1.5"), 1000}), 14);  // 13.5
}

TEST(Pricing, OutOfRangeThrowsInsteadOfWrapping) {
  const ModelEntry huge = priced("999999999999999999");
  EXPECT_THROW(cost_credits(huge, 1, Billing{dec("1"), 10}), std::overflow_error);  // just past int64_t
  EXPECT_THROW(cost_credits(huge, 1000000, Billing{dec("999999999"), 1000000000}), std::overflow_error);
  EXPECT_THROW(cost_credits(huge, INT64_MAX, Billing{dec("999999999999999999"), INT64_MAX}), std::overflow_error);
  EXPECT_THROW(cost_credits(priced("0.1"), -1, Billing{}), std::invalid_argument);
  EXPECT_THROW(cost_credits(priced("0.1"), 1, Billing{dec("1"), -5}), std::invalid_argument);
}
