#include "catalog.h"

namespace predictd {

std::string_view to_string(BillingUnit u) { return u == BillingUnit::run ? "run" : "image"; }

Catalog::Catalog(std::vector<ModelEntry> entries) : entries_(std::move(entries)) {}

Catalog Catalog::defaults() {
  // SPEC §3: the proxy's published prices; expected_s are typical run times
  // that seed the first poll until finished jobs teach better ones.
  struct Row {
    const char* name;
    const char* price;
    BillingUnit per;
    const char* version;
    double expected_s;
  };
  static constexpr Row kRows[] = {
      {"black-forest-labs/flux-schnell", "0.003", BillingUnit::image, nullptr, 0.8},
      {"black-forest-labs/flux-dev", "0.025", BillingUnit::image, nullptr, 3.2},
      {"black-forest-labs/flux-pro", "0.055", BillingUnit::image, nullptr, 14},
      {"black-forest-labs/flux-1.1-pro", "0.04", BillingUnit::image, nullptr, 3.8},
      {"stability-ai/stable-diffusion", "0.0034", BillingUnit::image,
       "ac732df83cea7fff18b8472768c88ad041fa750ff7682a21affe81863cbe77e4", 1.9},
      {"stability-ai/sdxl", "0.0063", BillingUnit::image,
       "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc", 5.0},
      {"stability-ai/stable-diffusion-inpainting", "0.0021", BillingUnit::image,
       "95b7223104132402a9ae91cc677285bc5eb997834bd2349fa486f53910fd68b3", 2.7},
      {"stability-ai/stable-diffusion-img2img", "0.0093", BillingUnit::image,
       "15a3689ee13b0d2616e98820eca31d4c3abcd36672df6afce5cb6feb1d66087d", 3.5},
      {"minimax/video-01", "0.50", BillingUnit::run, nullptr, 300},
      {"minimax/video-01-live", "0.50", BillingUnit::run, nullptr, 300},
      {"lucataco/flux-schnell-lora", "0.0060", BillingUnit::image,
       "2a6b576af31790b470f0a8442e1e9791213fa13799cbb65a9fc1436e96389574", 2.7},
      {"lucataco/flux-dev-lora", "0.038", BillingUnit::image,
       "091495765fa5ef2725a175a57b276ec30dc9d39c22d30410f2ede68a3eab66b3", 18.5},
      {"recraft-ai/recraft-v3-svg", "0.08", BillingUnit::image, nullptr, 17.9},
      {"ideogram-ai/ideogram-v2-turbo", "0.05", BillingUnit::image, nullptr, 12.4},
  };
  std::vector<ModelEntry> entries;
  for (const Row& r : kRows) {
    ModelEntry e;
    e.name = r.name;
    e.price_usd = *Decimal::parse(r.price);
    e.per = r.per;
    if (r.version) e.version = r.version;
    e.expected_s = r.expected_s;
    entries.push_back(std::move(e));
  }
  return Catalog(std::move(entries));
}

const ModelEntry* Catalog::find_model(std::string_view name) const {
  for (const auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

const ModelEntry* Catalog::find_version(std::string_view version) const {
  for (const auto& e : entries_)
    if (e.version && *e.version == version) return &e;
  return nullptr;
}

}  // namespace predictd
