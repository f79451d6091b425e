// predictd's main program, as a function so tests can run it in-process.
#pragma once

#include <string>
#include <vector>

namespace predictd {

// Exit codes (SPEC §5).
inline constexpr int kExitOk = 0;
inline constexpr int kExitUsage = 64;
inline constexpr int kExitLocked = 75;
inline constexpr int kExitConfig = 78;

// Parses `args` (without argv[0]), then checks the config or runs the daemon
// until SIGTERM/SIGINT. Returns the exit code.
int run_daemon(const std::vector<std::string>& args);

}  // namespace predictd
