// Logging setup (SPEC §7): spdlog, one line per event, `event key=value …`.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>

namespace predictd {

struct LogSettings;

// log.file rotates by size on its own (FILE → FILE.1 → … → FILE.{max_files}),
// so a service without logrotate cannot fill its disk; SIGHUP reopens it for
// those who rotate externally.
struct LogFileLimits {
  std::size_t max_bytes = 64 * 1024 * 1024;
  std::size_t max_files = 5;
};

// Configures the default logger: stderr (without timestamps when journald
// captures it, i.e. JOURNAL_STREAM is set), plus log.file when given. Every
// occurrence of each registered secret is replaced by "[redacted]". Called
// again (SIGHUP), it replaces level and sinks and keeps the secrets.
// Throws std::runtime_error when the level is unknown or the file can't be opened;
// the previous logger then stays in place.
void init_logging(const LogSettings& settings, LogFileLimits limits = {});

// Lines go to stderr as they are logged, one write each, unless `post` is
// set: then each line is buffered and a flush is posted (once per batch), so
// an event loop writes everything one turn logged in one write. warn and
// above are written at once. An empty `post` flushes and ends the deferral.
void defer_log_flush(std::function<void(std::function<void()>)> post);

// Adds a string that must never appear in a log line (the API token).
void redact_in_logs(const std::string& secret);

// Reopens the log file (after logrotate moved it); called on SIGHUP.
void reopen_log_file();

// Quotes a value for key=value output when it holds spaces, quotes or '='.
std::string log_quote(std::string_view value);

}  // namespace predictd
