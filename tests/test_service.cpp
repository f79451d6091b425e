// predictd as systemd runs it: the notify protocol through a fake
// NOTIFY_SOCKET, SIGTERM with predictions in flight, SIGHUP reloads.
#include <gtest/gtest.h>

#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <regex>

#include "process.h"
#include "sim_server.h"
#include "store.h"
#include "test_util.h"

namespace {
using namespace predictd;
using namespace predictd::test;
using namespace std::chrono_literals;

const std::string kPredictd = std::string(PREDICTD_BINARY_DIR) + "/predictd";
const std::string kToken = "r8_service_test_secret_42";

// A unix datagram socket standing in for systemd's notify socket.
class NotifySocket final {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) throw std::runtime_error("bind failed");
  }
  ~NotifySocket() {
    ::close(fd_);
    if (filler_fd_ >= 0) ::close(filler_fd_);
  }
  // Fills the receive queue with "filler" datagrams until the kernel takes no
  // more (net.unix.max_dgram_qlen); returns how many. Until the test reads one,
  // a notify from the daemon then blocks inside sd_notify.
  int fill() {
    filler_fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
    int n = 0;
    while (::sendto(filler_fd_, "filler", 6, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 6) ++n;
    return n;
  }
  // The next datagram, or "" when none arrives within `deadline`.
  std::string next(std::chrono::milliseconds deadline = 10s) {
    pollfd p{.fd = fd_, .events = POLLIN, .revents = 0};
    if (::poll(&p, 1, static_cast<int>(deadline.count())) != 1) return "";
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
  }
  // Reads datagrams until one contains `what`; returns it, or "" at the deadline.
  std::string until(const std::string& what, std::chrono::milliseconds deadline = 10s) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < end) {
      std::string m = next(std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now()));
      if (m.find(what) != std::string::npos) return m;
    }
    return "";
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  int filler_fd_ = -1;
};

int schema_version(const std::string& db) {
  sqlite3* h = nullptr;
  int v = -1;
  if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &s, nullptr) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
      v = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
  }
  sqlite3_close(h);
  return v;
}

struct Daemon {
  TempDir dir;
  std::string db = dir.file("jobs.db");
  std::string config = dir.file("predictd.json");
  std::string log = dir.file("predictd.log");

  Daemon() { write_file(dir.file("token"), kToken + "\n"); }

  // `models` is the JSON of the models key (empty: the default catalog).
  // `extra`: more top-level members, e.g. R"("limits": {"max_in_flight": 1},)".
  void write_config(const std::string& base_url, const std::string& models = "", const std::string& level = "info",
                    const std::string& extra = "") {
    write_file(config, R"({"db": {"path": ")" + db + R"("},
      "api": {"base_url": ")" + base_url + R"(", "token_file": ")" + dir.file("token") + R"("},
      "log": {"level": ")" + level + R"(", "file": ")" + log + R"("},)" +
                           (models.empty() ? "" : R"("models": )" + models + ",") + extra + "}");
  }
  std::unique_ptr<Process> start(std::vector<std::string> env = {}) {
    return std::make_unique<Process>(std::vector<std::string>{kPredictd, "--config", config}, env,
                                     dir.file("predictd.stderr"));
  }
  std::string logs() const {
    std::string all;
    for (auto& e : std::filesystem::directory_iterator(dir.path()))
      if (e.path().filename().string().starts_with("predictd")) all += read_file(e.path());
    return all;
  }
};

TEST(Service, NotifiesReadyAfterMigrationThenWatchdogStatusReloadingAndStopping) {
  Daemon s;
  s.write_config("http://127.0.0.1:9");
  NotifySocket sock(s.dir.file("notify"));
  // With the queue full, the daemon's first notify (READY=1) blocks until the
  // test reads: the schema version seen meanwhile is what it had done before
  // READY. A READY sent before the migration would leave it at -1 (no file) or 0.
  const int fillers = sock.fill();
  ASSERT_GT(fillers, 0);
  auto d = s.start({"NOTIFY_SOCKET=" + sock.path(), "WATCHDOG_USEC=300000"});
  EXPECT_TRUE(wait_until([&] { return schema_version(s.db) >= 1; }, 10s))
      << "no migration while READY=1 could not be delivered: " << s.logs();
  for (int i = 0; i < fillers; ++i) ASSERT_EQ(sock.next(), "filler");

  const std::string ready = sock.next();
  ASSERT_NE(ready.find("READY=1"), std::string::npos) << "the daemon's first message: " << ready << s.logs();
  EXPECT_NE(ready.find("STATUS=0 in flight, 0 succeeded, 0 failed, 0 canceled"), std::string::npos) << ready;

  // WATCHDOG_USEC=300 ms: pinged every 100 ms from the loop, with the status.
  const auto first = std::chrono::steady_clock::now();
  for (int i = 0; i < 4; ++i) {
    const std::string ping = sock.until("WATCHDOG=1", 2s);
    ASSERT_FALSE(ping.empty());
    EXPECT_NE(ping.find("STATUS="), std::string::npos);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - first, 2s);

  d->signal(SIGHUP);
  EXPECT_FALSE(sock.until("RELOADING=1").empty());
  EXPECT_FALSE(sock.until("READY=1").empty());

  d->signal(SIGTERM);
  const std::string stopping = sock.until("STOPPING=1");
  EXPECT_FALSE(stopping.empty());
  EXPECT_EQ(exit_code(d->wait(10s)), 0);
  EXPECT_EQ(s.logs().find(kToken), std::string::npos);
}

TEST(Service, SigtermLeavesPredictionsRunningAndTheNextStartResumesThem) {
  Daemon s;
  // Videos of ~300 s at 100x: about 3 s each; the catalog's expectation scaled alike.
  auto sim = start_sim(s.dir.path().string(), {"--token", kToken, "--profile", "realistic", "--time-scale", "100",
                                               "--seed", "5", "--failure-rate", "0", "--cold-start-rate", "0"});
  s.write_config("http://127.0.0.1:" + std::to_string(sim.port),
                 R"({"minimax/video-01": {"price_usd": "0.50", "per": "run", "expected_s": 3}})");
  auto store = Store::open(s.db);
  std::vector<int64_t> ids;
  for (int i = 0; i < 6; ++i)
    ids.push_back(store->insert({.model = "minimax/video-01", .input = R"({"prompt":"waves )" + std::to_string(i) + "\"}"}));

  auto d = s.start();
  ASSERT_TRUE(wait_until([&] {
    for (auto id : ids)
      if (!store->get(id)->prediction_id) return false;
    return true;
  })) << s.logs();
  d->signal(SIGTERM);
  ASSERT_EQ(exit_code(d->wait(10s)), 0) << s.logs();

  std::map<int64_t, std::string> predictions;
  for (auto id : ids) {
    auto row = store->get(id).value();
    EXPECT_TRUE(row.status == JobStatus::starting || row.status == JobStatus::processing)
        << "job " << id << " is " << to_string(row.status);
    predictions[id] = row.prediction_id.value();
  }

  d = s.start();
  ASSERT_TRUE(wait_until([&] {
    for (auto id : ids)
      if (!is_terminal(store->get(id)->status)) return false;
    return true;
  }, 30s)) << s.logs();
  for (auto id : ids) {
    auto row = store->get(id).value();
    EXPECT_EQ(row.status, JobStatus::succeeded) << row.error.value_or("");
    EXPECT_EQ(row.prediction_id, predictions[id]);  // resumed, never created again
    EXPECT_EQ(row.attempts, 1);
    EXPECT_EQ(row.cost_credits, 12500);
  }
  d->signal(SIGTERM);
  EXPECT_EQ(exit_code(d->wait(10s)), 0);
  EXPECT_EQ(s.logs().find(kToken), std::string::npos);
}

TEST(Service, SighupReloadsTheCatalogAndLogLevelReopensTheLogAndKeepsTheOldConfigWhenTheNewIsInvalid) {
  Daemon s;
  auto sim = start_sim(s.dir.path().string(), {"--token", kToken, "--profile", "instant"});
  const std::string base = "http://127.0.0.1:" + std::to_string(sim.port);
  const std::string schnell = R"("black-forest-labs/flux-schnell": {"price_usd": "0.003", "per": "image"})";
  s.write_config(base, "{" + schnell + "}");
  auto store = Store::open(s.db);
  auto d = s.start();
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(s.log) && read_file(s.log).find("startup") != std::string::npos; }));

  auto finished = [&](int64_t id) {
    std::optional<JobRow> row;
    EXPECT_TRUE(wait_until([&] { return is_terminal((row = store->get(id))->status); })) << s.logs();
    return *row;
  };
  const int64_t before = store->insert({.model = "stability-ai/sdxl", .input = R"({"prompt":"a"})"});
  EXPECT_EQ(finished(before).status, JobStatus::failed);

  // logrotate moves the file away, the config gains sdxl and the debug level, then SIGHUP.
  std::filesystem::rename(s.log, s.log + ".1");
  s.write_config(base, "{" + schnell + R"(, "stability-ai/sdxl": {"price_usd": "0.0063", "per": "image"}})", "debug");
  write_file(s.config, std::regex_replace(read_file(s.config), std::regex("\"api\": \\{"),
                                          R"("api": {"max_connections": 3, )"));
  d->signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] {
    return std::filesystem::exists(s.log) && read_file(s.log).find("config_reloaded ok=1") != std::string::npos;
  })) << s.logs();
  EXPECT_NE(read_file(s.log).find("log_level=debug"), std::string::npos);
  EXPECT_NE(read_file(s.log).find("config_reloaded api_changed=1"), std::string::npos);
  const int64_t after = store->insert({.model = "stability-ai/sdxl", .input = R"({"prompt":"b"})"});
  auto row = finished(after);
  EXPECT_EQ(row.status, JobStatus::succeeded) << row.error.value_or("");
  EXPECT_EQ(row.cost_credits, 158);

  // An invalid config is refused with the reason; the running one stays.
  write_file(s.config, R"({"limits": {"max_in_flight": 0}})");
  d->signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return read_file(s.log).find("config_reloaded ok=0") != std::string::npos; }));
  EXPECT_NE(read_file(s.log).find("limits.max_in_flight: must be between 1 and 1000000"), std::string::npos);
  const int64_t kept = store->insert({.model = "stability-ai/sdxl", .input = R"({"prompt":"c"})"});
  EXPECT_EQ(finished(kept).status, JobStatus::succeeded);
  EXPECT_TRUE(d->running());

  d->signal(SIGTERM);
  EXPECT_EQ(exit_code(d->wait(10s)), 0);
  EXPECT_EQ(s.logs().find(kToken), std::string::npos);
}

// The remote API as an in-process simulator on a clock that moves only when
// the test says: predictions stay `starting` until advance(), and a stall
// (every request left unanswered) lasts until the test lifts it.
std::unique_ptr<sim::Server> start_manual_sim(double stall = 0) {
  auto sim = std::make_unique<sim::Server>(sim::Options{.token = kToken,
                                                        .profile = sim::Profile::realistic,
                                                        .manual_clock = true,
                                                        .cold_start_rate = 0,
                                                        .failure_rate = 0,
                                                        .faults = {.stall = stall, .stall_s = 3600}});
  sim->start();
  return sim;
}

int64_t stalls(sim::Server& sim) {
  const auto f = sim.stats().faults;
  const auto it = f.find("stall");
  return it == f.end() ? 0 : it->second;
}

// SIGTERM while requests hang: the drain waits up to 5 s for them, then predictd
// exits 0 without waiting for an answer that never comes.
void expect_prompt_clean_exit(Daemon& s, std::unique_ptr<Process>& d) {
  const auto sent = std::chrono::steady_clock::now();
  d->signal(SIGTERM);
  EXPECT_EQ(exit_code(d->wait(15s)), 0) << s.logs();
  EXPECT_LT(std::chrono::steady_clock::now() - sent, 9s);
  EXPECT_NE(s.logs().find("shutdown done=1"), std::string::npos) << s.logs();
}

TEST(Service, SigtermWhileACreateHangsExitsPromptlyAndTheNextStartSubmitsTheJob) {
  Daemon s;
  auto sim = start_manual_sim(/*stall=*/1);
  s.write_config("http://127.0.0.1:" + std::to_string(sim->port()));
  auto store = Store::open(s.db);
  const int64_t id = store->insert({.model = "black-forest-labs/flux-schnell", .input = R"({"prompt":"stalled"})"});

  auto d = s.start();
  // The create reached the simulator, which holds it unanswered.
  ASSERT_TRUE(wait_until([&] { return stalls(*sim) >= 1; })) << s.logs();
  EXPECT_EQ(store->get(id)->status, JobStatus::submitting);
  expect_prompt_clean_exit(s, d);
  auto row = store->get(id).value();
  EXPECT_EQ(row.status, JobStatus::submitting);  // ambiguous: kept for reconciliation, neither lost nor failed
  EXPECT_FALSE(row.prediction_id);

  sim->set_faults({});
  d = s.start();
  ASSERT_TRUE(wait_until([&] { return store->get(id)->prediction_id.has_value(); })) << s.logs();
  sim->advance(600s);
  ASSERT_TRUE(wait_until([&] { return is_terminal(store->get(id)->status); })) << s.logs();
  row = store->get(id).value();
  EXPECT_EQ(row.status, JobStatus::succeeded) << row.error.value_or("");
  EXPECT_EQ(row.cost_credits, 75);
  EXPECT_EQ(sim->stats().creates, 1);  // the stalled create made no prediction; the retry made one
  d->signal(SIGTERM);
  EXPECT_EQ(exit_code(d->wait(10s)), 0);
}

TEST(Service, SigtermWhileAPollHangsExitsPromptlyAndTheNextStartResumesThePrediction) {
  Daemon s;
  auto sim = start_manual_sim();
  s.write_config("http://127.0.0.1:" + std::to_string(sim->port()));
  auto store = Store::open(s.db);
  const int64_t id = store->insert({.model = "black-forest-labs/flux-schnell", .input = R"({"prompt":"polled"})"});

  auto d = s.start();
  ASSERT_TRUE(wait_until([&] { return store->get(id)->prediction_id.has_value(); })) << s.logs();
  const std::string prediction = *store->get(id)->prediction_id;
  sim->set_faults({.stall = 1, .stall_s = 3600});
  ASSERT_TRUE(wait_until([&] { return stalls(*sim) >= 1; })) << s.logs();  // a poll hangs
  expect_prompt_clean_exit(s, d);
  auto row = store->get(id).value();
  EXPECT_EQ(row.status, JobStatus::starting);
  EXPECT_EQ(row.prediction_id, prediction);

  sim->set_faults({});
  sim->advance(600s);
  d = s.start();
  ASSERT_TRUE(wait_until([&] { return is_terminal(store->get(id)->status); })) << s.logs();
  row = store->get(id).value();
  EXPECT_EQ(row.status, JobStatus::succeeded) << row.error.value_or("");
  EXPECT_EQ(row.prediction_id, prediction);  // resumed, not created again
  EXPECT_EQ(row.attempts, 1);
  EXPECT_EQ(sim->stats().creates, 1);
  d->signal(SIGTERM);
  EXPECT_EQ(exit_code(d->wait(10s)), 0);
}

TEST(Service, SighupReloadedLimitsAndPricesTakeEffect) {
  Daemon s;
  auto sim = start_manual_sim();
  const std::string base = "http://127.0.0.1:" + std::to_string(sim->port());
  auto config = [&](const std::string& price, int max_in_flight) {
    s.write_config(base,
                   R"({"black-forest-labs/flux-schnell": {"price_usd": ")" + price +
                       R"(", "per": "image", "expected_s": 1}})",
                   "info", R"("limits": {"max_in_flight": )" + std::to_string(max_in_flight) + "},");
  };
  config("0.003", 1);
  auto store = Store::open(s.db);
  auto insert = [&](const char* prompt) {
    return store->insert({.model = "black-forest-labs/flux-schnell", .input = std::string(R"({"prompt":")") + prompt + "\"}"});
  };
  auto submitted = [&](int64_t id) { return store->get(id)->prediction_id.has_value(); };
  auto finished = [&](int64_t id) {
    std::optional<JobRow> row;
    EXPECT_TRUE(wait_until([&] { return is_terminal((row = store->get(id))->status); })) << s.logs();
    return *row;
  };

  auto d = s.start();
  const int64_t before = insert("before");
  ASSERT_TRUE(wait_until([&] { return submitted(before); })) << s.logs();
  sim->advance(600s);
  EXPECT_EQ(finished(before).cost_credits, 75);  // 0.003 USD x 2.5 x 10000

  // max_in_flight 1: the second job waits while the first runs (the claim
  // timer comes round every 250 ms; a second's worth of chances to break it).
  const int64_t first = insert("first"), second = insert("second");
  ASSERT_TRUE(wait_until([&] { return submitted(first); })) << s.logs();
  EXPECT_FALSE(wait_until([&] { return store->get(second)->status != JobStatus::queued; }, 1s));

  config("0.006", 2);
  d->signal(SIGHUP);
  ASSERT_TRUE(wait_until([&] { return read_file(s.log).find("config_reloaded ok=1") != std::string::npos; }))
      << s.logs();
  EXPECT_TRUE(wait_until([&] { return submitted(second); })) << "max_in_flight 2 not applied: " << s.logs();
  sim->advance(600s);
  // Priced at completion: both finished after the reload, at the new price.
  for (int64_t id : {first, second}) {
    const JobRow row = finished(id);
    EXPECT_EQ(row.status, JobStatus::succeeded) << row.error.value_or("");
    EXPECT_EQ(row.units, 1);
    EXPECT_EQ(row.cost_credits, 150) << "job " << id;  // 0.006 USD x 2.5 x 10000
  }
  EXPECT_EQ(store->get(before)->cost_credits, 75);
  d->signal(SIGTERM);
  EXPECT_EQ(exit_code(d->wait(10s)), 0);
}

}  // namespace
