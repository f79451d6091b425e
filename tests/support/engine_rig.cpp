#include "engine_rig.h"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

namespace predictd::test {

struct LogCapture::State {
  mutable std::mutex mu;
  std::vector<std::string> lines;
};

namespace {
class CaptureSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit CaptureSink(std::shared_ptr<LogCapture::State> s) : s_(std::move(s)) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    std::string line = std::string(spdlog::level::to_string_view(msg.level).data()) + " " +
                       std::string(msg.payload.data(), msg.payload.size());
    std::lock_guard lock(s_->mu);
    s_->lines.push_back(std::move(line));
  }
  void flush_() override {}

 private:
  std::shared_ptr<LogCapture::State> s_;
};
}  // namespace

LogCapture::LogCapture() : state_(std::make_shared<State>()) {
  previous_ = spdlog::default_logger();
  auto logger = std::make_shared<spdlog::logger>("capture", std::make_shared<CaptureSink>(state_));
  logger->set_level(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

LogCapture::~LogCapture() {
  spdlog::set_default_logger(std::static_pointer_cast<spdlog::logger>(previous_));
}

std::vector<std::string> LogCapture::lines() const {
  std::lock_guard lock(state_->mu);
  return state_->lines;
}

std::vector<std::string> LogCapture::find(const std::vector<std::string>& parts) const {
  std::vector<std::string> out;
  for (const auto& l : lines()) {
    bool all = true;
    for (const auto& p : parts) all = all && l.find(p) != std::string::npos;
    if (all) out.push_back(l);
  }
  return out;
}

bool LogCapture::contains(const std::string& text) const { return !find({text}).empty(); }

EngineRig::EngineRig() {
  write_file(dir.file("ca.pem"), pem.cert_pem);
  config.db_path = db_path;
  config.api.ca_file = dir.file("ca.pem");
  config.api.max_connections = 4;
  config.api.request_timeout_s = 2;
  config.retry = {.max_attempts = 3, .base_ms = 20, .max_ms = 200};
  http_settings.ca_file = config.api.ca_file;
  http_settings.max_connections = config.api.max_connections;
  http_settings.request_timeout = std::chrono::seconds(2);
  http_settings.connect_timeout = std::chrono::seconds(2);
  http_settings.user_agent = "predictd/test";
  options.db_path = db_path;
  options.db_check_interval = std::chrono::milliseconds(20);
  options.auth_retry = std::chrono::seconds(1);
  options.poll.min_interval_s = 0.05;
  options.poll.max_interval_s = 0.2;
  store = Store::open(db_path);
  feeder = std::make_unique<Db>(db_path, 2000);
}

EngineRig::~EngineRig() {
  engine.reset();
  http.reset();
}

void EngineRig::point_at(uint16_t port, const std::string& prefix) {
  config.api.base_url = "https://localhost:" + std::to_string(port) + prefix;
  http_settings.base_url = config.api.base_url;
}

void EngineRig::start() {
  http = std::make_unique<HttpClient>(io, http_settings);
  engine = std::make_unique<Engine>(io, *store, *http, config, kRigToken, options);
  engine->start();
}

void EngineRig::stop() {
  bool done = false;
  engine->stop([&] { done = true; });
  run_until([&] { return done; }, std::chrono::seconds(10));
}

int64_t EngineRig::insert(const std::string& sql) {
  feeder->exec(sql);
  return feeder->last_insert_rowid();
}

bool EngineRig::all_terminal() {
  Stmt s(*feeder, "SELECT count(*) FROM jobs WHERE status NOT IN ('succeeded', 'failed', 'canceled')");
  s.step();
  return s.get_int(0) == 0;
}

bool EngineRig::run_until(const std::function<bool()>& cond, std::chrono::milliseconds deadline) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    io.run_for(std::chrono::milliseconds(5));
    if (io.stopped()) io.restart();
  }
  return cond();
}

std::size_t EngineRig::run_for(std::chrono::milliseconds d) {
  std::size_t n = 0;
  const auto end = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < end) {
    n += io.run_until(end);
    if (io.stopped()) io.restart();
  }
  return n;
}

}  // namespace predictd::test
