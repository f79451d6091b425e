// The checks a claimed row goes through (lib/row_check), each refusal's exact
// message; fuzz/fuzz_row explores the same function.
#include <gtest/gtest.h>

#include "config.h"
#include "row_check.h"

using namespace predictd;

namespace {

const std::string kSdxl = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc";

JobRow row(std::optional<std::string> model, std::optional<std::string> version, std::string input,
           std::optional<int64_t> timeout_s = std::nullopt) {
  JobRow r;
  r.model = std::move(model);
  r.version = std::move(version);
  r.input = std::move(input);
  r.timeout_s = timeout_s;
  return r;
}

std::string verdict(const JobRow& r) {
  Config c;
  c.jobs.max_input_bytes = 32;
  return check_row(r, c).value_or("(ok)");
}

}  // namespace

TEST(RowCheck, AcceptsRowsTheCatalogKnows) {
  EXPECT_EQ(verdict(row("black-forest-labs/flux-schnell", {}, R"({"prompt":"a cat"})")), "(ok)");
  EXPECT_EQ(verdict(row({}, kSdxl, "{}", 604800)), "(ok)");
  EXPECT_EQ(verdict(row("stability-ai/sdxl", kSdxl, "{}", 1)), "(ok)");
  EXPECT_EQ(verdict(row("", kSdxl, "{}")), "(ok)");  // an empty model is no model
  EXPECT_EQ(resolve_model(row({}, kSdxl, "{}"), Catalog::defaults())->name, "stability-ai/sdxl");
}

TEST(RowCheck, RefusesWithAClearMessage) {
  EXPECT_EQ(verdict(row("black-forest-labs/flux-schnell", {}, R"({"prompt":")" + std::string(40, 'x') + "\"}")),
            "input is 53 bytes, over jobs.max_input_bytes (32)");
  EXPECT_EQ(verdict(row("black-forest-labs/flux-schnell", {}, "[1]")), "input must be a JSON object, got array");
  EXPECT_EQ(verdict(row("black-forest-labs/flux-schnell", {}, "{")).rfind("input is not valid JSON (", 0), 0u);
  EXPECT_EQ(verdict(row("nobody/nothing", {}, "{}")), "model nobody/nothing is not in the catalog");
  EXPECT_EQ(verdict(row({}, std::string(64, 'a'), "{}")), "version " + std::string(64, 'a') + " is not in the catalog");
  EXPECT_EQ(verdict(row("black-forest-labs/flux-dev", kSdxl, "{}")),
            "model black-forest-labs/flux-dev does not match version " + kSdxl + " (stability-ai/sdxl)");
  EXPECT_EQ(verdict(row({}, {}, "{}")), "neither model nor version is set");
  EXPECT_EQ(verdict(row("", "", "{}")), "neither model nor version is set");
  EXPECT_EQ(verdict(row({}, kSdxl, "{}", 0)), "timeout_s 0 is outside 1..604800");
  EXPECT_EQ(verdict(row({}, kSdxl, "{}", -5)), "timeout_s -5 is outside 1..604800");
  EXPECT_EQ(verdict(row({}, kSdxl, "{}", 604801)), "timeout_s 604801 is outside 1..604800");
}
