// The engine in this process, on the test's io_context, against any HTTPS
// server (predictd-sim or a scripted HttpTestServer), with every log line kept.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "config.h"
#include "engine.h"
#include "http_client.h"
#include "sqlite.h"
#include "store.h"
#include "test_util.h"
#include "tls_cert.h"

namespace predictd::test {

inline constexpr const char* kRigToken = "r8_rig_secret_token_77d0e3";

// Captures spdlog's default logger for the rig's lifetime (all levels).
class LogCapture final {
 public:
  LogCapture();
  ~LogCapture();
  std::vector<std::string> lines() const;
  // Lines holding every one of `parts`.
  std::vector<std::string> find(const std::vector<std::string>& parts) const;
  bool contains(const std::string& text) const;

  struct State;

 private:
  std::shared_ptr<State> state_;
  std::shared_ptr<void> previous_;
};

struct EngineRig {
  TempDir dir;
  std::string db_path = dir.file("jobs.db");
  PemPair pem = make_self_signed({"localhost"}, {"127.0.0.1"});
  Config config;
  HttpClientSettings http_settings;
  EngineOptions options;
  std::unique_ptr<Store> store;
  std::unique_ptr<Db> feeder;
  boost::asio::io_context io{1};
  std::unique_ptr<HttpClient> http;
  std::unique_ptr<Engine> engine;
  LogCapture logs;

  // `port` serves HTTPS with `pem` under `prefix`.
  EngineRig();
  ~EngineRig();
  void point_at(uint16_t port, const std::string& prefix = "");
  void start();
  void stop();

  int64_t insert(const std::string& sql);  // a full INSERT statement; returns the row id
  JobRow row(int64_t id) { return store->get(id).value(); }
  bool all_terminal();
  bool run_until(const std::function<bool()>& cond, std::chrono::milliseconds deadline = std::chrono::seconds(20));
  // Runs the loop for `d`; returns how many handlers ran.
  std::size_t run_for(std::chrono::milliseconds d);
};

}  // namespace predictd::test
