// Archiving outputs (SPEC §9): every output of a succeeded job is streamed to
// {dir}/{YYYY}/{MM}/{DD}/{job id}-{index}.{ext} on the engine's io_context,
// then `files` (or `archive_error`) is written to the row.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace boost::asio {
class io_context;
}

namespace predictd {

struct Config;
class Store;

struct ArchiveOptions {
  std::chrono::seconds give_up_after{1800};         // transient failures retried this long per job
  std::chrono::milliseconds backoff_base{1000};
  std::chrono::milliseconds backoff_max{60000};
  std::chrono::milliseconds busy_retry{20};          // a locked database is retried this soon
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds read_timeout{30000};     // per wait for data, not per file
  int max_redirects = 3;
};

struct ArchiveCounters {
  uint64_t files = 0;      // stored under their final name
  uint64_t bytes = 0;
  uint64_t jobs_done = 0;  // `files` written
  uint64_t jobs_failed = 0;  // `archive_error` written
  uint64_t retries = 0;
  uint64_t requests = 0;   // HTTP requests sent, redirects included
  // The longest single file-system call made on the loop (write, sync_file_range,
  // fsync, rename): what a download cost the polls and creates waiting behind it.
  double max_disk_call_ms = 0;
};

// "png" for "https://h/x/out-0.png?sig=1", nullopt when the last path segment has no short
// alphanumeric extension.
std::optional<std::string> extension_from_url(std::string_view url);
// "webp" for "image/webp; charset=binary"; nullopt when unknown.
std::optional<std::string> extension_from_content_type(std::string_view content_type);

// A decoded data: URL (RFC 2397): media type and bytes. nullopt when malformed.
struct DataUrl {
  std::string media_type;
  std::string bytes;
};
std::optional<DataUrl> decode_data_url(std::string_view url);

class Archiver final {
 public:
  // config.archive.dir must be set. The token goes only to the API's own origin
  // (scheme, host and port of api.base_url).
  Archiver(boost::asio::io_context& io, Store& store, const Config& config, std::string token,
           ArchiveOptions options = {});
  // Closes files and connections; temporary files stay, as after a crash.
  ~Archiver();
  Archiver(const Archiver&) = delete;
  Archiver& operator=(const Archiver&) = delete;

  // Takes up succeeded rows with neither files nor archive_error (after a restart).
  void resume();
  // A job just recorded succeeded (committed); read back from the store.
  void add(int64_t job_id);
  // Abandons downloads in flight and removes their temporary files; the jobs
  // stay pending in the database and resume at the next start.
  void stop();

  ArchiveCounters counters() const;
  std::size_t pending_jobs() const;  // not yet written to the row
  std::size_t active_downloads() const;

 private:
  class Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace predictd
