#include "daemon.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <optional>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/program_options.hpp>
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#ifdef PREDICTD_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "config.h"
#include "engine.h"
#include "http_client.h"
#include "log.h"
#include "archive.h"
#include "paths.h"
#include "sqlite.h"
#include "store.h"

namespace predictd {
namespace asio = boost::asio;
namespace po = boost::program_options;

namespace {

// Only one daemon per database: an flock on "<db>.lock", held for the process lifetime.
class InstanceLock final {
 public:
  explicit InstanceLock(const std::string& db_path) : path_(db_path + ".lock") {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0660);
    if (fd_ < 0) throw std::runtime_error("cannot open lock file " + path_ + ": " + std::strerror(errno));
    locked_ = ::flock(fd_, LOCK_EX | LOCK_NB) == 0;
  }
  ~InstanceLock() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool locked() const { return locked_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  bool locked_ = false;
};

void notify(const std::string& state) {
#ifdef PREDICTD_HAVE_SYSTEMD
  sd_notify(0, state.c_str());
#else
  (void)state;
#endif
}

HttpClientSettings http_settings(const Config& c) {
  HttpClientSettings s;
  s.base_url = c.api.base_url;
  s.ca_file = c.api.ca_file;
  s.max_connections = c.api.max_connections;
  s.request_timeout = std::chrono::seconds(c.api.request_timeout_s);
  s.user_agent = std::string("predictd/") + PREDICTD_VERSION;
  return s;
}

// What a start refuses before it opens anything, beyond the config's syntax:
// no token, a database or log file that cannot be opened. --check-config runs
// the same checks, so that it passes only when a start would get this far.
// Returns the token; throws ConfigError naming the key.
std::string preflight(const Config& config) {
  std::string token = load_api_token(config);
  if (auto problem = db_path_problem(config.db_path, DbUse::write)) throw ConfigError("db.path: " + *problem);
  if (config.log.file)
    if (auto problem = log_file_problem(*config.log.file)) throw ConfigError("log.file: " + *problem);
  return token;
}

int run(const Config& initial, const std::string& config_path, const std::string& token) {
  Config config = initial;
  init_logging(config.log);
  redact_in_logs(token);

  InstanceLock lock(config.db_path);
  if (!lock.locked()) {
    std::cerr << "predictd: another predictd is running on " << config.db_path << " (it holds " << lock.path()
              << ")\n";
    return kExitLocked;
  }
  std::unique_ptr<Store> store;
  try {
    store = Store::open(config.db_path);
  } catch (const DbError& e) {
    // The header passed preflight but the rest is not a database (cut short, overwritten).
    if ((e.code() & 0xff) != SQLITE_NOTADB) throw;
    std::cerr << "predictd: db.path: " << config.db_path << ": not a SQLite database\n";
    return kExitConfig;
  }

  asio::io_context io(1);
  // stderr gets one write per turn of the loop, not one per line; the guard
  // (destroyed after everything that logs, before io) writes what is left.
  defer_log_flush([&io](std::function<void()> f) { asio::post(io, std::move(f)); });
  struct LogFlushGuard {
    ~LogFlushGuard() { defer_log_flush(nullptr); }
  } log_flush_guard;
  HttpClient http(io, http_settings(config));
  EngineOptions options;
  options.db_path = config.db_path;
  // archive.* takes effect at start only: a reload does not start or stop archiving.
  std::unique_ptr<Archiver> archiver;
  if (config.archive.dir) {
    archiver = std::make_unique<Archiver>(io, *store, config, token);
    options.on_succeeded = [&archiver](int64_t id) { archiver->add(id); };
  }
  Engine engine(io, *store, http, config, token, options);

  spdlog::info("startup version={} db={} base_url={} schema={} max_in_flight={}", PREDICTD_VERSION,
               config.db_path, config.api.base_url, store->schema_version(), config.limits.max_in_flight);

  // STATUS= for systemctl status: counts since start and the request rate since the last beat.
  auto last_at = std::chrono::steady_clock::now();
  uint64_t last_requests = 0;
  auto status_line = [&] {
    const auto c = engine.counters();
    const auto now = std::chrono::steady_clock::now();
    const double span_s = std::chrono::duration<double>(now - last_at).count();
    const double rate = span_s > 0 ? static_cast<double>(c.requests_sent - last_requests) / span_s : 0.0;
    last_at = now;
    last_requests = c.requests_sent;
    return fmt::format("STATUS={} in flight, {} succeeded, {} failed, {} canceled since start, {:.1f} requests/s{}",
                       engine.in_flight(), c.succeeded, c.failed, c.canceled, rate,
                       engine.auth_paused() ? ", PAUSED: the API refuses the token" : "");
  };
  asio::steady_timer beat(io);
  asio::steady_timer flush_timer(io);

  asio::signal_set stop_signals(io, SIGTERM, SIGINT);
  asio::signal_set hup(io, SIGHUP);
  bool stopping = false;
  stop_signals.async_wait([&](auto ec, int sig) {
    if (ec) return;
    stopping = true;
    spdlog::info("shutdown signal={} in_flight={} action=\"draining requests, remote predictions keep running\"",
                 sig == SIGTERM ? "TERM" : "INT", engine.in_flight());
    notify("STOPPING=1\nSTATUS=stopping: draining " + std::to_string(engine.in_flight()) + " requests");
    engine.stop([&] {
      beat.cancel();
      flush_timer.cancel();
      if (archiver) archiver->stop();  // unfinished archives resume at the next start
      hup.cancel();
      io.stop();
    });
  });
  std::function<void()> wait_hup = [&] {
    hup.async_wait([&](auto ec, int) {
      if (ec || stopping) return;
      notify("RELOADING=1");
      try {
        Config next = load_config(config_path);
        if (next.db_path != config.db_path)
          throw ConfigError("db.path: cannot change while running (restart predictd)");
        init_logging(next.log);  // level and file; reopens the file (logrotate moved it)
        // The connection pools, the token and the archiver are built once: api.* and archive.* wait for a restart.
        const bool api_changed = !(next.api == config.api) || !(next.archive == config.archive);
        next.api = config.api;
        next.archive = config.archive;
        engine.reload(next);
        config = next;
        spdlog::info("config_reloaded ok=1 models={} log_level={}", config.models.entries().size(), config.log.level);
        if (api_changed)
          spdlog::warn("config_reloaded api_changed=1 action=\"api.* and archive.* keys take effect at the next restart\"");
      } catch (const std::exception& e) {
        spdlog::error("config_reloaded ok=0 error={} action=\"kept the previous config\"", log_quote(e.what()));
        try {
          reopen_log_file();
        } catch (const std::exception& reopen) {
          spdlog::error("config_reloaded ok=0 error={}", log_quote(reopen.what()));
        }
      }
      notify("READY=1\n" + status_line());
      wait_hup();
    });
  };
  wait_hup();

  // systemd's watchdog is fed from the loop itself, so a stalled loop gets
  // restarted; STATUS= follows the live counts on the same beat.
  auto beat_interval = std::chrono::microseconds(std::chrono::seconds(5));
  bool watchdog_on = false;
#ifdef PREDICTD_HAVE_SYSTEMD
  uint64_t watchdog_usec = 0;
  if (sd_watchdog_enabled(0, &watchdog_usec) > 0) {
    watchdog_on = true;
    beat_interval = std::min(beat_interval, std::chrono::microseconds(watchdog_usec / 3));
  }
#endif
  // The log file is block-buffered for throughput; those who tail it see each line within a second.
  std::function<void()> flush_logs = [&] {
    spdlog::default_logger()->flush();
    flush_timer.expires_after(std::chrono::seconds(1));
    flush_timer.async_wait([&](auto ec) {
      if (!ec && !stopping) flush_logs();
    });
  };
  std::function<void()> feed = [&] {
    notify(std::string(watchdog_on ? "WATCHDOG=1\n" : "") + status_line());
    beat.expires_after(beat_interval);
    beat.async_wait([&](auto ec) {
      if (!ec && !stopping) feed();
    });
  };

  engine.start();
  if (archiver) archiver->resume();
  notify("READY=1\n" + status_line());
  feed();
  flush_logs();
  io.run();
  auto c = engine.counters();
  spdlog::info("shutdown done=1 succeeded={} failed={} canceled={} in_flight={}", c.succeeded, c.failed, c.canceled,
               engine.in_flight());
  spdlog::default_logger()->flush();
  return kExitOk;
}

}  // namespace

int run_daemon(const std::vector<std::string>& args) {
  po::options_description desc("Usage: predictd --config FILE [--check-config]\nOptions");
  desc.add_options()("config", po::value<std::string>(), "the config file (JSON)")(
      "check-config", "validate the config and exit (0 valid, 78 invalid)")("version", "print the version")(
      "help", "print this help");
  po::variables_map vm;
  try {
    const auto parsed = po::command_line_parser(args).options(desc).run();
    // Without a positional description, program_options keeps stray words aside instead of refusing them.
    for (const auto& word : po::collect_unrecognized(parsed.options, po::include_positional))
      throw po::error("unexpected argument \"" + word + "\" (predictd takes only options)");
    po::store(parsed, vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "predictd: " << e.what() << "\n" << desc;
    return kExitUsage;
  }
  if (vm.count("help")) {
    std::cout << desc;
    return kExitOk;
  }
  if (vm.count("version")) {
    std::cout << "predictd " << PREDICTD_VERSION << "\n";
    return kExitOk;
  }
  if (!vm.count("config")) {
    std::cerr << "predictd: --config FILE is required\n" << desc;
    return kExitUsage;
  }
  const std::string path = vm["config"].as<std::string>();
  Config config;
  try {
    config = load_config(path);
  } catch (const ConfigError& e) {
    std::cerr << "predictd: " << path << ": " << e.what() << "\n";
    return kExitConfig;
  }
  std::string token;
  try {
    token = preflight(config);
  } catch (const ConfigError& e) {
    std::cerr << "predictd: " << e.what() << "\n";
    return kExitConfig;
  }
  if (vm.count("check-config")) {
    std::cout << "predictd: " << path << ": ok\n";
    return kExitOk;
  }
  return run(config, path, token);
}

}  // namespace predictd
