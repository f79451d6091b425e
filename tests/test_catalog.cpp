#include <gtest/gtest.h>

#include "catalog.h"

using namespace predictd;

TEST(Catalog, DefaultsAreSpecSection3ExactlyInOrder) {
  struct Row {
    const char* name;
    const char* price;
    const char* per;
    const char* version;
    double expected_s;
  };
  const Row expected[] = {
      {"black-forest-labs/flux-schnell", "0.003", "image", "", 0.8},
      {"black-forest-labs/flux-dev", "0.025", "image", "", 3.2},
      {"black-forest-labs/flux-pro", "0.055", "image", "", 14},
      {"black-forest-labs/flux-1.1-pro", "0.04", "image", "", 3.8},
      {"stability-ai/stable-diffusion", "0.0034", "image",
       "ac732df83cea7fff18b8472768c88ad041fa750ff7682a21affe81863cbe77e4", 1.9},
      {"stability-ai/sdxl", "0.0063", "image", "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc", 5.0},
      {"stability-ai/stable-diffusion-inpainting", "0.0021", "image",
       "95b7223104132402a9ae91cc677285bc5eb997834bd2349fa486f53910fd68b3", 2.7},
      {"stability-ai/stable-diffusion-img2img", "0.0093", "image",
       "15a3689ee13b0d2616e98820eca31d4c3abcd36672df6afce5cb6feb1d66087d", 3.5},
      {"minimax/video-01", "0.5", "run", "", 300},
      {"minimax/video-01-live", "0.5", "run", "", 300},
      {"lucataco/flux-schnell-lora", "0.006", "image",
       "2a6b576af31790b470f0a8442e1e9791213fa13799cbb65a9fc1436e96389574", 2.7},
      {"lucataco/flux-dev-lora", "0.038", "image", "091495765fa5ef2725a175a57b276ec30dc9d39c22d30410f2ede68a3eab66b3",
       18.5},
      {"recraft-ai/recraft-v3-svg", "0.08", "image", "", 17.9},
      {"ideogram-ai/ideogram-v2-turbo", "0.05", "image", "", 12.4},
  };
  const Catalog c = Catalog::defaults();
  ASSERT_EQ(c.entries().size(), std::size(expected));
  for (std::size_t i = 0; i < std::size(expected); ++i) {
    const ModelEntry& e = c.entries()[i];
    const Row& r = expected[i];
    EXPECT_EQ(e.name, r.name);
    EXPECT_EQ(e.price_usd.to_string(), r.price) << r.name;
    EXPECT_EQ(to_string(e.per), r.per) << r.name;
    EXPECT_EQ(e.version.value_or(""), r.version) << r.name;
    EXPECT_EQ(e.expected_s, r.expected_s) << r.name;
    EXPECT_FALSE(e.prefer_wait_s) << r.name;
  }
}

TEST(Catalog, FindsByModelAndByVersion) {
  const Catalog c = Catalog::defaults();
  for (const ModelEntry& e : c.entries()) {
    EXPECT_EQ(c.find_model(e.name), &e);
    if (e.version) {
      EXPECT_EQ(c.find_version(*e.version), &e);
    }
  }
  const ModelEntry* lora = c.find_version("2a6b576af31790b470f0a8442e1e9791213fa13799cbb65a9fc1436e96389574");
  ASSERT_NE(lora, nullptr);
  EXPECT_EQ(lora->name, "lucataco/flux-schnell-lora");
  EXPECT_EQ(c.find_model("nobody/nothing"), nullptr);
  EXPECT_EQ(c.find_model("stability-ai/SDXL"), nullptr);  // names are exact
  EXPECT_EQ(c.find_model("stability-ai"), nullptr);
  EXPECT_EQ(c.find_version(""), nullptr);  // model-form entries have no version to match
  EXPECT_EQ(c.find_version("7762FD07CF82C948538E41F63F77D685E02B063E37E496E96EEFD46C929F9BDC"), nullptr);
  EXPECT_EQ(c.find_version("black-forest-labs/flux-schnell"), nullptr);
}

TEST(Catalog, ACustomCatalogHoldsOnlyItsEntries) {
  ModelEntry a{.name = "me/cheap", .price_usd = {1, 3}, .per = BillingUnit::run, .version = std::string(64, 'a')};
  ModelEntry b{.name = "me/other", .price_usd = {2, 0}, .prefer_wait_s = 10};
  const Catalog c({a, b});
  ASSERT_EQ(c.entries().size(), 2u);
  EXPECT_EQ(c.find_model("me/other")->prefer_wait_s.value(), 10);
  EXPECT_EQ(c.find_version(std::string(64, 'a'))->name, "me/cheap");
  EXPECT_EQ(c.find_model("black-forest-labs/flux-schnell"), nullptr);
  EXPECT_EQ(Catalog().entries().size(), 0u);
  EXPECT_TRUE(Catalog::defaults() == Catalog::defaults());
  EXPECT_FALSE(c == Catalog::defaults());
}

TEST(Catalog, BillingUnitNames) {
  EXPECT_EQ(to_string(BillingUnit::image), "image");
  EXPECT_EQ(to_string(BillingUnit::run), "run");
}
