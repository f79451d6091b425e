#include <gtest/gtest.h>

#include <map>

#include "catalog.h"
#include "decimal.h"
#include "pricing.h"

using namespace predictd;

TEST(Decimal, ParsesExactly) {
  EXPECT_EQ(Decimal::parse("0.0063")->mantissa, 63);
  EXPECT_EQ(Decimal::parse("0.0063")->scale, 4);
  EXPECT_EQ(*Decimal::parse("2.50"), *Decimal::parse("2.5"));
  EXPECT_EQ(Decimal::parse("12")->to_string(), "12");
  EXPECT_EQ(Decimal::parse("0.50")->to_string(), "0.5");
  EXPECT_EQ(Decimal::parse("0.003")->to_string(), "0.003");
  for (const char* bad : {"", ".5", "5.", "-1", "1e3", "1.2.3", "abc", " 1", "1234567890123456789"})
    EXPECT_FALSE(Decimal::parse(bad)) << bad;
}

TEST(Pricing, EveryCatalogModelAtOneAndFourUnits) {
  // credits = ceil(USD × units × 2.5 × 10000), worked out by hand.
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
    EXPECT_EQ(cost_credits(*m, billed_units(*m, std::nullopt, 1), billing), credits.first) << name;
    EXPECT_EQ(cost_credits(*m, billed_units(*m, std::nullopt, 4), billing), credits.second) << name;
  }
}

TEST(Pricing, UnitsFromImageCountElseOutputs) {
  const Catalog catalog = Catalog::defaults();
  const ModelEntry& sdxl = *catalog.find_model("stability-ai/sdxl");
  EXPECT_EQ(billed_units(sdxl, 3, 1), 3);
  EXPECT_EQ(billed_units(sdxl, std::nullopt, 2), 2);
  const ModelEntry& video = *catalog.find_model("minimax/video-01");
  EXPECT_EQ(billed_units(video, 5, 3), 1);
}

TEST(Pricing, MarkupAndCreditRateAreConfigurable) {
  const Catalog catalog = Catalog::defaults();
  const ModelEntry& m = *catalog.find_model("black-forest-labs/flux-schnell");
  EXPECT_EQ(cost_credits(m, 1, Billing{*Decimal::parse("1"), 10000}), 30);
  EXPECT_EQ(cost_credits(m, 1, Billing{*Decimal::parse("3.3333"), 1}), 1);  // 0.0099999 rounds up
  ModelEntry tenth = m;
  tenth.price_usd = *Decimal::parse("0.1");
  EXPECT_EQ(cost_credits(tenth, 1, Billing{}), 2500);
  ModelEntry huge = m;
  huge.price_usd = *Decimal::parse("999999999999999999");
  EXPECT_THROW(cost_credits(huge, 1000000, Billing{*Decimal::parse("999999999"), 1000000000}), std::overflow_error);
}

TEST(Catalog, VersionsAndLookups) {
  const Catalog c = Catalog::defaults();
  const ModelEntry* lora = c.find_version("2a6b576af31790b470f0a8442e1e9791213fa13799cbb65a9fc1436e96389574");
  ASSERT_NE(lora, nullptr);
  EXPECT_EQ(lora->name, "lucataco/flux-schnell-lora");
  EXPECT_EQ(c.find_model("nobody/nothing"), nullptr);
  int versions = 0;
  for (const auto& e : c.entries()) versions += e.version ? 1 : 0;
  EXPECT_EQ(versions, 6);
}
