// The engine (SPEC §2–§4): takes rows from the store to terminal states
// through the API, on one io_context, with timers instead of threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "schedule.h"

namespace boost::asio {
class io_context;
}

namespace predictd {

struct Config;
class Store;
class HttpClient;

struct EngineOptions {
  PollPolicy poll;
  std::chrono::milliseconds db_check_interval{250};  // fallback when no file event arrives
  std::chrono::milliseconds busy_retry{20};          // a locked database is retried this soon
  std::chrono::milliseconds group_commit{10};        // commits at most this often under load
  std::chrono::milliseconds drain_timeout{5000};     // SIGTERM: in-flight requests get this long
  std::chrono::seconds stats_interval{60};
  std::chrono::seconds auth_retry{30};               // after a 401/403, probe again this late
  std::chrono::seconds timeout_grace{2};             // local deadline after the server's Cancel-After
  std::string db_path;                               // watched with inotify when set
  // Called on the io_context for each job whose move to succeeded has been committed (archiving).
  std::function<void(int64_t job_id)> on_succeeded;
};

struct EngineCounters {
  uint64_t claimed = 0;
  uint64_t submitted = 0;
  uint64_t succeeded = 0;
  uint64_t failed = 0;
  uint64_t canceled = 0;
  uint64_t retries = 0;
  uint64_t creates_sent = 0;
  uint64_t polls_sent = 0;
  uint64_t requests_sent = 0;
  uint64_t throttled = 0;
  uint64_t db_busy = 0;
  uint64_t adopted = 0;
  uint64_t credits = 0;
  double max_loop_lag_ms = 0;
};

class Engine final {
 public:
  Engine(boost::asio::io_context& io, Store& store, HttpClient& http, const Config& config,
         std::string token, EngineOptions options = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Loads unfinished rows (resuming polls, reconciling `submitting` ones) and starts claiming.
  void start();
  // Stops claiming, lets in-flight requests finish for up to drain_timeout,
  // writes everything pending, then calls `done` on the io_context.
  void stop(std::function<void()> done);
  // Takes a new catalog, prices, limits and retry settings.
  void reload(const Config& config);

  EngineCounters counters() const;
  std::size_t in_flight() const;  // jobs between submitting and a terminal state
  bool auth_paused() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace predictd
