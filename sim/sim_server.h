// predictd-sim: a Replicate-compatible API server for tests, the demo and
// benchmarks. One thread, one io_context; tests run it in-process on a thread
// of its own (it plays the remote API, a separate process). The calls below
// that read or change its state post to that loop and wait, so they are safe
// from any other thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

namespace predictd::sim {

enum class Profile {
  instant,    // `starting` in the create's answer, `succeeded` by the first poll (or at once with Prefer: wait)
  realistic,  // per-model run times with spread, cold starts, model failures
};

// Each rate is a probability per API request (0..1).
struct Faults {
  double throttle = 0;            // 429 with Retry-After and Replicate's throttling body
  double server_error = 0;        // 500, 502 or 503
  double reset_after_create = 0;  // the prediction is created, the connection reset unanswered
  double stall = 0;               // no answer for stall_s, then the connection is closed
  double truncated = 0;           // a 2xx whose JSON body is cut in half (Content-Length matches the cut)
  double malformed = 0;           // a 2xx whose body is an HTML error page, not JSON
  double huge_logs = 0;           // a GET of a prediction whose `logs` is huge_logs_bytes long
  double stall_s = 60;            // real seconds (on the sim's clock, see Server::advance)
  std::size_t huge_logs_bytes = 4 * 1024 * 1024;
  int retry_after_s = 2;          // Retry-After of injected 429s
  // Each rate is a probability per output file request.
  double download_error = 0;      // 503
  double download_reset = 0;      // the connection is reset halfway through the body
  double download_stall = 0;      // the body stops halfway for stall_s, then the connection is closed
};

struct Options {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  std::optional<std::string> tls_cert_pem;  // both set: HTTPS
  std::optional<std::string> tls_key_pem;
  std::string prefix;                       // "/replicate": the API lives under {prefix}/v1/
  std::optional<std::string> token;         // required Bearer token
  // Where urls.get/cancel and list's next/previous point: Replicate's own host,
  // as proxies return it, so a client that follows urls.get is caught.
  std::string public_base = "https://api.replicate.com";
  Profile profile = Profile::realistic;
  double time_scale = 1.0;                  // 10: predictions run 10x faster; Prefer: wait=N holds N/10 s
  bool manual_clock = false;                // the clock moves only by advance(): fully deterministic tests
  uint64_t seed = 1;
  double cold_start_rate = 0.03;            // realistic: 20–60 s in `starting`
  double failure_rate = 0.02;               // realistic: status failed with an error
  double creates_per_minute = 0;            // 0: unlimited; else 429 + Retry-After beyond it
  double requests_per_minute = 0;           // the same for every other API request
  double expire_after_s = 0;                // drop predictions this many sim seconds after they end; 0: keep
  // Output links: {output_base}/xezq/{id}/out-{i}.{ext}, served by this server
  // (any Host, no token, never under the prefix); "{port}" stands for the bound
  // port, so "https://localhost:{port}" is another host name than the API's 127.0.0.1.
  std::string output_base = "https://replicate.delivery";
  // Set: a file request whose Host is not this base's host[:port] gets a 302 to it.
  std::optional<std::string> redirect_outputs_to;
  uint64_t video_bytes = 24 * 1024 * 1024;  // size of each mp4 output
  double output_expire_after_s = 0;         // files 404 this many sim seconds after the prediction ended; 0: never
  Faults faults;
};

// A snapshot of GET /_sim/stats. "Canonical input" = "m:owner/name|" or
// "v:<version>|" followed by the input serialized with sorted keys.
struct Stats {
  int64_t predictions = 0;       // held in memory now
  int64_t expired = 0;           // dropped after expire_after_s
  int64_t creates = 0;           // predictions created (including ones whose answer was a reset)
  int64_t distinct_inputs = 0;
  int64_t duplicate_creates = 0; // creates beyond the first per canonical input
  int64_t polls = 0;             // GET /v1/predictions/{id} answered with the prediction
  int64_t max_polls_per_prediction = 0;
  int64_t cancels = 0;           // POST .../cancel answered
  int64_t lists = 0;
  int64_t throttled = 0;         // every 429 (injected or rate limit)
  int64_t rate_limited = 0;      // 429s from creates_per_minute / requests_per_minute
  int64_t retry_after_violations = 0;  // requests sent after a 429 reached the client, inside its Retry-After
  int64_t unauthorized = 0;
  int64_t connections = 0;       // accepted
  int64_t requests = 0;          // API requests (not /_sim/)
  int64_t file_requests = 0;     // GETs of output files (redirects and errors included)
  int64_t file_bytes = 0;        // body bytes of output files written
  int64_t files_expired = 0;     // 404s for files past output_expire_after_s
  int64_t max_concurrent_file_bodies = 0;  // file bodies being written at the same time, at most
  std::map<std::string, int64_t> file_auth_by_host;  // file requests carrying Authorization, by Host
  std::map<std::string, int64_t> faults;             // by fault name, each served
  std::map<std::string, int64_t> responses;          // by HTTP status code
  std::map<std::string, int64_t> statuses;           // predictions in memory by current status
  std::map<std::string, int64_t> creates_by_input;   // canonical input -> creates
  std::map<std::string, int64_t> polls_by_prediction;
};

class Server final {
 public:
  explicit Server(Options options);
  ~Server();  // stops and joins
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and serves on a thread of its own; returns the bound port.
  uint16_t start();
  // Binds (returns the port); run() then serves on the calling thread until
  // stop(), SIGINT or SIGTERM.
  uint16_t listen();
  void run();
  // Closes the listener and every connection, ends held answers, and joins the
  // thread start() made. Idempotent.
  void stop();
  uint16_t port() const;

  Stats stats();
  std::string stats_json();  // the body of GET /_sim/stats
  void set_faults(const Faults& faults);
  // Changes any setting but the listener's (host, port, TLS, prefix): rates,
  // profile, limits, token. The time scale goes through set_time_scale.
  void configure(const std::function<void(Options&)>& change);
  // From now on the sim runs `scale` times faster than its clock.
  void set_time_scale(double scale);
  // Moves the sim's clock forward: predictions progress by d × time scale,
  // rate limits refill, Retry-After windows and stalls pass, held answers wake.
  void advance(std::chrono::duration<double> d);
  // Forgets every prediction and counter (POST /_sim/reset).
  void reset();

 private:
  class Impl;
  std::shared_ptr<Impl> impl_;
  std::thread thread_;
};

}  // namespace predictd::sim
