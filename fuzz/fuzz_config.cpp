// libFuzzer target: the config file (lib/config parse_config). A bad config
// must end in ConfigError with a message; any other exception, crash or
// sanitizer report is a finding.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <regex>
#include <string>
#include <string_view>

#include <boost/json.hpp>

#include "config.h"

namespace {

bool accepted(const std::string& text) {
  try {
    predictd::parse_config(text);
    return true;
  } catch (const predictd::ConfigError&) {
    return false;
  }
}

// The input as api.base_url and as a model name, against the <regex>
// patterns that the hand-written matchers in config.cpp replaced.
void differential(std::string_view s) {
  if (s.size() > 120 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c < 0x7f; })) return;
  const std::string str(s);
  const std::string quoted = boost::json::serialize(boost::json::string_view(s));
  static const std::regex kUserinfo(R"(^[A-Za-z]+://[^/?#]*@)");
  static const std::regex kUrl(R"(^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:([0-9]{1,5}))?(/[^?#\s]*)?$)");
  std::smatch m;
  const bool url_ok = !std::regex_search(str, kUserinfo) && std::regex_match(str, m, kUrl) &&
                      (!m[3].matched || (std::stoi(m[3].str()) >= 1 && std::stoi(m[3].str()) <= 65535));
  if (accepted(R"({"api": {"base_url": )" + quoted + "}}") != url_ok) std::abort();
  static const std::regex kName(R"(^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$)");
  if (accepted(R"({"models": {)" + quoted + R"(: {"price_usd": "1"}}})") != std::regex_match(str, kName)) std::abort();
  static const std::regex kHex("^[0-9a-f]{64}$");
  if (accepted(R"({"models": {"a/b": {"price_usd": "1", "version": )" + quoted + "}}}") != std::regex_match(str, kHex))
    std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  differential(text);
  try {
    const predictd::Config c = predictd::parse_config(text);
    // What the rest of the daemon relies on once a config is accepted.
    if (c.retry.base_ms > c.retry.max_ms) std::abort();
    if (c.api.base_url.empty() || c.api.base_url.back() == '/') std::abort();
    if (c.models.entries().empty()) std::abort();
    for (const auto& m : c.models.entries())
      if (c.models.find_model(m.name) != &m) std::abort();
  } catch (const predictd::ConfigError& e) {
    if (std::string_view(e.what()).empty()) std::abort();
  }
  return 0;
}
