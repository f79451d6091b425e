// UTC timestamps in the jobs table's format: YYYY-MM-DDTHH:MM:SS.sssZ.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace predictd {

using SysTime = std::chrono::system_clock::time_point;

std::string format_utc(SysTime t);
// Accepts what SQLite's julianday() accepts for our purposes:
// YYYY-MM-DD[(T| )HH:MM[:SS[.fff]]][Z]. Returns nullopt otherwise.
std::optional<SysTime> parse_utc(std::string_view s);

}  // namespace predictd
