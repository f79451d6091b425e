// predictd-sim: a Replicate-compatible API server for tests, the demo and
// benchmarks. One thread, one io_context; tests run it in-process on its own
// thread (it plays the remote API).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>

namespace predictd::sim {

enum class Profile { instant, realistic };

// Each rate is a probability per request (0..1).
struct Faults {
  double throttle = 0;         // 429 with Retry-After and the throttling body
  double server_error = 0;     // 500, 502 or 503
  double reset_after_create = 0;  // the prediction is created, the connection dropped unanswered
  double stall = 0;            // no answer for stall_s, then the connection is closed
  double truncated = 0;        // a 200 whose JSON body is cut short
  double malformed = 0;        // a 200 whose body is not JSON
  double huge_logs = 0;        // a 200 with `logs` of huge_logs_bytes
  double stall_s = 60;
  std::size_t huge_logs_bytes = 4 * 1024 * 1024;
  int retry_after_s = 2;
};

struct Options {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  std::optional<std::string> tls_cert_pem;  // both set: HTTPS
  std::optional<std::string> tls_key_pem;
  std::string prefix;                       // "/replicate"
  std::optional<std::string> token;         // required Bearer token
  Profile profile = Profile::realistic;
  double time_scale = 1.0;                  // 10: runs finish 10x sooner
  uint64_t seed = 1;
  double cold_start_rate = 0.03;            // realistic: 20–60 s in `starting`
  double failure_rate = 0.02;               // realistic: status failed
  double creates_per_minute = 0;            // 0: unlimited
  double requests_per_minute = 0;
  Faults faults;
};

class Server final {
 public:
  explicit Server(Options options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and serves on a thread of its own; returns the bound port.
  uint16_t start();
  // Binds (returns the port), then run() serves on the calling thread until stop().
  uint16_t listen();
  void run();
  void stop();
  uint16_t port() const;

  // The body of GET /_sim/stats.
  std::string stats_json();
  void set_faults(const Faults& faults);

 private:
  class Impl;
  std::shared_ptr<Impl> impl_;
  std::thread thread_;
};

}  // namespace predictd::sim
