// predictd-bench: the figures of issue 7 in one table.
//
// predictd-sim runs in this process, pinned with it to one core (--sim-cpu);
// predictd and the official client's peer script run as child processes pinned
// to the other (--daemon-cpu), so each side has a core of its own. Rows go into
// the daemon's SQLite file exactly as any feeder's would. Every scenario checks
// that each job reached a terminal row (or the peer's terminal answer); a
// failed check makes the exit status 1, which is what the ctest smoke asserts.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <boost/program_options.hpp>

#include "http_client.h"
#include "sim_server.h"
#include "timefmt.h"
#include "tls_cert.h"

extern char** environ;

namespace fs = std::filesystem;
namespace json = boost::json;
namespace po = boost::program_options;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using predictd::sim::Profile;

namespace {

constexpr const char* kToken = "bench-token";
constexpr const char* kImage = "black-forest-labs/flux-schnell";
constexpr const char* kVideo = "minimax/video-01";

struct Settings {
  fs::path predictd;
  fs::path peer_script;
  std::string node = "node";
  fs::path work;
  int daemon_cpu = 0;
  int sim_cpu = 1;
  std::vector<std::string> scenarios;
  int jobs = 50000;
  int concurrency = 1000;
  int connections = 32;    // (1): api.max_connections, the default
  int footprint_small = 10000;
  int footprint_large = 100000;
  int pickup_rows = 200;
  int idle_s = 60;
  int poll_images = 200;   // flux-schnell; half as many flux-dev and sdxl
  int poll_videos = 20;
  int rate_jobs = 10000;
  double rate_scale = 20;  // sim time and both rate limits run this much faster
  double cold_start_rate = 0.03;  // (5)(6): the sim's realistic default
  bool failed = false;
};

double secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size()))) - 1;
  return v[std::min(i, v.size() - 1)];
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

void check(Settings& s, bool ok, const std::string& what) {
  if (ok) return;
  s.failed = true;
  std::cerr << "CHECK FAILED: " << what << "\n";
}

bool wait_until(const std::function<bool()>& cond, std::chrono::seconds limit, Clock::duration every = 20ms) {
  const auto deadline = Clock::now() + limit;
  while (!cond()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(every);
  }
  return true;
}

void pin_self(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) std::cerr << "warning: cannot pin to cpu " << cpu << "\n";
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// ---- child processes ----------------------------------------------------

class Child {
 public:
  // argv[0] is looked up in PATH; stdout and stderr go to files.
  Child(std::vector<std::string> argv, const std::vector<std::string>& env_extra, const fs::path& out,
        const fs::path& err) {
    // env_extra replaces inherited variables of the same name (NODE_EXTRA_CA_CERTS may be set already).
    std::vector<std::string> env = env_extra;
    for (char** e = environ; *e; ++e) {
      const std::string_view v(*e);
      const bool replaced = std::any_of(env_extra.begin(), env_extra.end(), [&](const std::string& x) {
        return v.substr(0, v.find('=') + 1) == std::string_view(x).substr(0, x.find('=') + 1);
      });
      if (!replaced) env.emplace_back(*e);
    }
    std::vector<char*> a, en;
    for (auto& s : argv) a.push_back(s.data());
    a.push_back(nullptr);
    for (auto& s : env) en.push_back(s.data());
    en.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int rc = posix_spawnp(&pid_, a[0], &fa, nullptr, a.data(), en.data());
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait();
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  bool running() {
    if (pid_ <= 0) return false;
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = st;
      pid_ = -1;
      return false;
    }
    return true;
  }
  int wait() {
    if (pid_ > 0) {
      int st = 0;
      ::waitpid(pid_, &st, 0);
      status_ = st;
      pid_ = -1;
    }
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
  }
  void terminate() {
    if (pid_ > 0) ::kill(pid_, SIGTERM);
  }

  // CPU time of all its threads, in seconds (schedstat: nanoseconds).
  double cpu_s() const {
    double total = 0;
    std::error_code ec;
    for (const auto& t : fs::directory_iterator("/proc/" + std::to_string(pid_) + "/task", ec)) {
      std::ifstream in(t.path() / "schedstat");
      double ns = 0;
      if (in >> ns) total += ns / 1e9;
    }
    return total;
  }
  // A field of /proc/PID/status in bytes ("VmRSS", "VmHWM").
  int64_t status_bytes(const std::string& field) const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(in, line))
      if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
    return -1;
  }

 private:
  pid_t pid_ = -1;
  int status_ = 0;
};

// ---- the jobs database, as a feeder sees it ----------------------------

class Db {
 public:
  explicit Db(const fs::path& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK)
      throw std::runtime_error("cannot open " + path.string());
    sqlite3_busy_timeout(db_, 10000);
  }
  ~Db() { sqlite3_close_v2(db_); }
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  void exec(const std::string& sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "?";
      sqlite3_free(err);
      throw std::runtime_error(sql + ": " + msg);
    }
  }

  // Rows (model, input) in transactions of `batch`.
  void insert(const std::vector<std::pair<std::string, std::string>>& rows, std::size_t batch = 1000) {
    sqlite3_stmt* st = prepare("INSERT INTO jobs(model, input) VALUES (?1, ?2)");
    for (std::size_t i = 0; i < rows.size(); i += batch) {
      exec("BEGIN IMMEDIATE");
      for (std::size_t j = i; j < std::min(rows.size(), i + batch); ++j) {
        sqlite3_bind_text(st, 1, rows[j].first.c_str(), -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, rows[j].second.c_str(), -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) != SQLITE_DONE) throw std::runtime_error(sqlite3_errmsg(db_));
        sqlite3_reset(st);
      }
      exec("COMMIT");
    }
    sqlite3_finalize(st);
  }

  int64_t count(const std::string& where) {
    sqlite3_stmt* st = prepare("SELECT count(*) FROM jobs WHERE " + where);
    int64_t n = -1;
    if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
  }
  int64_t unfinished() { return count("status IN ('queued', 'submitting', 'starting', 'processing')"); }

  std::vector<std::vector<std::string>> rows(const std::string& sql) {
    sqlite3_stmt* st = prepare(sql);
    std::vector<std::vector<std::string>> out;
    while (sqlite3_step(st) == SQLITE_ROW) {
      auto& r = out.emplace_back();
      for (int c = 0; c < sqlite3_column_count(st); ++c) {
        const auto* t = sqlite3_column_text(st, c);
        r.emplace_back(t ? reinterpret_cast<const char*>(t) : "");
      }
    }
    sqlite3_finalize(st);
    return out;
  }

 private:
  sqlite3_stmt* prepare(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) != SQLITE_OK)
      throw std::runtime_error(sql + ": " + sqlite3_errmsg(db_));
    return st;
  }
  sqlite3* db_ = nullptr;
};

std::vector<std::pair<std::string, std::string>> make_rows(const std::string& model, int n, const std::string& tag) {
  std::vector<std::pair<std::string, std::string>> rows;
  rows.reserve(n);
  for (int i = 0; i < n; ++i)
    rows.emplace_back(model, json::serialize(json::object{{"prompt", tag + " " + std::to_string(i)}}));
  return rows;
}

// ---- the environment: simulator + one daemon per scenario ----------------

struct Env {
  Settings& s;
  fs::path cert;
  std::unique_ptr<predictd::sim::Server> sim;
  std::string base;

  explicit Env(Settings& settings) : s(settings) {
    fs::create_directories(s.work);
    auto pem = predictd::make_self_signed({"localhost"}, {"127.0.0.1"});
    cert = s.work / "sim-cert.pem";
    std::ofstream(cert) << pem.cert_pem;
    predictd::sim::Options o;
    o.tls_cert_pem = pem.cert_pem;
    o.tls_key_pem = pem.key_pem;
    o.token = kToken;
    o.profile = Profile::instant;
    pin_self(s.sim_cpu);  // the sim's thread inherits this
    sim = std::make_unique<predictd::sim::Server>(o);
    base = "https://127.0.0.1:" + std::to_string(sim->start());
  }

  void reset_sim(Profile profile, double scale = 1, double cold = 0.03, double failure = 0.02, double creates = 0,
                 double requests = 0) {
    sim->configure([&](predictd::sim::Options& o) {
      o.profile = profile;
      o.cold_start_rate = cold;
      o.failure_rate = failure;
      o.creates_per_minute = creates;
      o.requests_per_minute = requests;
    });
    sim->set_time_scale(scale);
    sim->reset();
  }

  struct Daemon {
    fs::path dir;
    std::unique_ptr<Child> proc;
    std::unique_ptr<Db> db;
  };

  // A fresh database and a daemon on it, ready to claim.
  Daemon start_daemon(const std::string& name, json::object limits, json::value models = nullptr,
                      int connections = 32) {
    Daemon d;
    d.dir = s.work / name;
    fs::remove_all(d.dir);
    fs::create_directories(d.dir);
    json::object cfg{
        {"db", {{"path", (d.dir / "jobs.db").string()}}},
        {"api", {{"base_url", base}, {"ca_file", cert.string()}, {"max_connections", connections}}},
        {"limits", std::move(limits)},
        {"jobs", {{"default_timeout_s", 3600}}},
        {"log", {{"level", "info"}}},
    };
    if (!models.is_null()) cfg["models"] = std::move(models);
    std::ofstream(d.dir / "predictd.json") << json::serialize(cfg);
    d.proc = std::make_unique<Child>(
        std::vector<std::string>{"taskset", "-c", std::to_string(s.daemon_cpu), s.predictd.string(), "--config",
                                 (d.dir / "predictd.json").string()},
        std::vector<std::string>{std::string("PREDICTD_API_TOKEN=") + kToken}, d.dir / "stdout.log",
        d.dir / "predictd.log");
    const bool up = wait_until(
        [&] { return !d.proc->running() || slurp(d.dir / "predictd.log").find("startup") != std::string::npos; },
        30s);
    if (!up || !d.proc->running()) throw std::runtime_error("predictd did not start: " + slurp(d.dir / "predictd.log"));
    d.db = std::make_unique<Db>(d.dir / "jobs.db");
    return d;
  }

  void stop_daemon(Daemon& d) {
    d.db.reset();
    d.proc->terminate();
    const int rc = d.proc->wait();
    check(s, rc == 0, "predictd exits 0 on SIGTERM (exit " + std::to_string(rc) + ")");
  }

  // The peer script; returns its JSON answer.
  json::value run_peer(const std::vector<std::string>& args, const std::string& name) {
    std::vector<std::string> argv{"taskset", "-c", std::to_string(s.daemon_cpu), s.node, s.peer_script.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    Child peer(argv, {"NODE_EXTRA_CA_CERTS=" + cert.string()}, s.work / (name + ".json"),
               s.work / (name + ".err"));
    const int rc = peer.wait();
    if (rc != 0) throw std::runtime_error("peer " + name + " exited " + std::to_string(rc) + ": " +
                                          slurp(s.work / (name + ".err")));
    return json::parse(slurp(s.work / (name + ".json")));
  }

  // Predictions as the API reports them (created_at, completed_at, status), by id.
  std::map<std::string, json::object> fetch_predictions(const std::vector<std::string>& ids) {
    boost::asio::io_context io;
    predictd::HttpClient http(io, {.base_url = base, .ca_file = cert.string(), .max_connections = 8});
    std::map<std::string, json::object> out;
    std::size_t answered = 0;
    for (const auto& id : ids) {
      http.send({.method = "GET", .path = "/v1/predictions/" + id,
                 .headers = {{"Authorization", std::string("Bearer ") + kToken}}},
                [&, id](predictd::HttpResponse r) {
                  if (r.failure == predictd::HttpFailure::none && r.status == 200)
                    out[id] = json::parse(r.body).as_object();
                  // Idle keep-alive connections would keep run() going.
                  if (++answered == ids.size()) http.shutdown();
                });
    }
    if (!ids.empty()) io.run();
    return out;
  }
};

int64_t parse_ms(std::string_view utc) {
  auto t = predictd::parse_utc(utc);
  if (!t) return INT64_MIN;
  return std::chrono::duration_cast<std::chrono::milliseconds>(t->time_since_epoch()).count();
}

json::object unlimited(int in_flight) {
  return {{"max_in_flight", in_flight}, {"creates_per_minute", 100000000}, {"requests_per_minute", 100000000}};
}

// ---- the table ------------------------------------------------------------

struct Row {
  std::string scenario, figure, value, target, verdict;
};

struct Table {
  std::vector<Row> rows;
  void add(std::string scenario, std::string figure, std::string value, std::string target = "",
           std::optional<bool> met = std::nullopt) {
    rows.push_back({std::move(scenario), std::move(figure), std::move(value), std::move(target),
                    met ? (*met ? "met" : "MISSED") : ""});
  }
  std::string markdown() const {
    std::string out = "| # | figure | value | target | |\n|---|---|---|---|---|\n";
    for (const auto& r : rows)
      out += "| " + r.scenario + " | " + r.figure + " | " + r.value + " | " + r.target + " | " + r.verdict + " |\n";
    return out;
  }
};

// ---- scenarios ------------------------------------------------------------

struct ThroughputResult {
  double wall_s = 0, cpu_per_job = 0;
};

ThroughputResult throughput(Env& env, Table& t) {
  Settings& s = env.s;
  env.reset_sim(Profile::instant);
  // The catalog tells predictd what the instant profile is: a model that is
  // done at once, so the first poll goes out after PollPolicy's minimum (0.1 s).
  json::object models{{kImage, {{"price_usd", "0.003"}, {"per", "image"}, {"expected_s", 0.05}}}};
  auto d = env.start_daemon("throughput", unlimited(s.concurrency), models, s.connections);
  const auto rows = make_rows(kImage, s.jobs, "bench");
  const double cpu0 = d.proc->cpu_s();
  const auto t0 = std::chrono::system_clock::now();
  d.db->insert(rows);
  // Checked seldom (counting unfinished rows is work on the sim's core); the
  // end is the last row's completed_at, not the moment this loop saw it.
  const bool done = wait_until([&] { return d.db->unfinished() == 0; }, 600s, 100ms);
  const double cpu = d.proc->cpu_s() - cpu0;
  const auto last = d.db->rows("SELECT MAX(completed_at) FROM jobs");
  const double wall =
      (parse_ms(last.at(0).at(0)) -
       std::chrono::duration_cast<std::chrono::milliseconds>(t0.time_since_epoch()).count()) / 1000.0;
  const int64_t hwm = d.proc->status_bytes("VmHWM");
  const int64_t ok = d.db->count("status = 'succeeded'");
  check(s, done && ok == s.jobs, "throughput: " + std::to_string(ok) + " of " + std::to_string(s.jobs) + " succeeded");
  env.stop_daemon(d);
  const double rate = s.jobs / wall;
  t.add("1", "throughput, " + std::to_string(s.jobs) + " jobs (first insert → last terminal row)",
        fmt("%.0f jobs/s", rate), "≥ 5,000 jobs/s", rate >= 5000);
  t.add("1", "CPU per job (predictd)", fmt("%.1f µs", cpu / s.jobs * 1e6));
  t.add("1", "peak RSS (predictd)", fmt("%.1f MiB", hwm / 1048576.0));
  return {wall, cpu / s.jobs};
}

void peer(Env& env, Table& t, const ThroughputResult& ours) {
  Settings& s = env.s;
  for (int interval : {500, 1}) {
    env.reset_sim(Profile::instant);
    auto r = env.run_peer({"throughput", env.base, kToken, std::to_string(s.jobs), std::to_string(s.concurrency),
                           std::to_string(interval)},
                          "peer-" + std::to_string(interval))
                 .as_object();
    const double wall = r.at("wall_s").to_number<double>();
    const double cpu = r.at("cpu_s").to_number<double>();
    const auto ok = r.at("succeeded").to_number<int64_t>();
    check(s, ok == s.jobs, "peer: " + std::to_string(ok) + " of " + std::to_string(s.jobs) + " succeeded");
    const std::string who = "replicate@1.4.0, interval " + std::to_string(interval) + " ms";
    t.add("2", who + ": wall time / CPU per job", fmt("%.2f s", wall) + " / " + fmt("%.1f µs", cpu / s.jobs * 1e6));
    const double cpu_ratio = ours.cpu_per_job / (cpu / s.jobs);
    t.add("2", "predictd / peer (" + std::to_string(interval) + " ms): wall, CPU per job",
          fmt("%.3f", ours.wall_s / wall) + ", " + fmt("%.3f", cpu_ratio), "CPU ≤ 0.1", cpu_ratio <= 0.1);
  }
}

void footprint(Env& env, Table& t) {
  Settings& s = env.s;
  env.reset_sim(Profile::realistic, 1, 0, 0);
  auto d = env.start_daemon("footprint", unlimited(s.footprint_large));
  const std::string live = "status IN ('starting', 'processing')";
  auto settle = [&](int n) {
    const bool ok = wait_until([&] { return d.db->count(live) == n; }, 600s, 50ms);
    check(s, ok, "footprint: " + std::to_string(n) + " jobs in flight");
    std::this_thread::sleep_for(500ms);  // the last responses' buffers are released
    return d.proc->status_bytes("VmRSS");
  };
  const int64_t base_rss = d.proc->status_bytes("VmRSS");
  d.db->insert(make_rows(kVideo, s.footprint_small, "small"));
  const int64_t small = settle(s.footprint_small);
  d.db->insert(make_rows(kVideo, s.footprint_large - s.footprint_small, "large"));
  const int64_t large = settle(s.footprint_large);
  env.stop_daemon(d);
  const double per_job = double(large - small) / (s.footprint_large - s.footprint_small);
  t.add("3", "RSS idle / " + std::to_string(s.footprint_small) + " / " + std::to_string(s.footprint_large) +
                 " jobs in flight",
        fmt("%.1f", base_rss / 1048576.0) + " / " + fmt("%.1f", small / 1048576.0) + " / " +
            fmt("%.1f MiB", large / 1048576.0));
  t.add("3", "bytes per in-flight job (difference)", fmt("%.0f B", per_job), "≤ 4096 B", per_job <= 4096);
}

void pickup(Env& env, Table& t) {
  Settings& s = env.s;
  env.reset_sim(Profile::instant);
  auto d = env.start_daemon("pickup", unlimited(256));
  std::this_thread::sleep_for(1s);  // past the start-up claim
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int> gap_ms(10, 200);
  std::vector<double> lat_ms;
  int64_t creates = env.sim->stats().creates;
  for (int i = 0; i < s.pickup_rows; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(gap_ms(rng)));
    d.db->insert(make_rows(kImage, 1, "pickup " + std::to_string(i)));
    const auto committed = Clock::now();
    // The sim counts the create on its loop; ask it until it has. The pause
    // between asks leaves the shared core to the sim's thread.
    const bool seen = wait_until([&] { return env.sim->stats().creates > creates; }, 5s, 200us);
    check(s, seen, "pickup: the create of row " + std::to_string(i) + " arrived");
    lat_ms.push_back(secs(Clock::now() - committed) * 1000);
    creates = env.sim->stats().creates;
  }
  const bool done = wait_until([&] { return d.db->unfinished() == 0; }, 60s);
  check(s, done && d.db->count("status = 'succeeded'") == s.pickup_rows, "pickup: every row succeeded");
  std::this_thread::sleep_for(1s);
  const double cpu0 = d.proc->cpu_s();
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(s.idle_s));
  const double idle_pct = (d.proc->cpu_s() - cpu0) / secs(Clock::now() - t0) * 100;
  env.stop_daemon(d);
  const double p50 = percentile(lat_ms, 0.5), p99 = percentile(lat_ms, 0.99);
  t.add("4", "pickup, commit → create at the sim, p50 / p99 (" + std::to_string(s.pickup_rows) + " rows)",
        fmt("%.2f", p50) + " / " + fmt("%.2f ms", p99), "≤ 5 / ≤ 25 ms", p50 <= 5 && p99 <= 25);
  t.add("4", "idle daemon CPU over " + std::to_string(s.idle_s) + " s", fmt("%.3f %%", idle_pct), "≤ 0.5 %",
        idle_pct <= 0.5);
}

struct ModelFigures {
  std::vector<double> polls, lag_ms;
};

void poll_efficiency(Env& env, Table& t) {
  Settings& s = env.s;
  env.reset_sim(Profile::realistic, 1, s.cold_start_rate);  // real time
  const std::vector<std::pair<std::string, int>> mix{{kImage, s.poll_images},
                                                     {"black-forest-labs/flux-dev", s.poll_images / 2},
                                                     {"stability-ai/sdxl", s.poll_images / 2},
                                                     {kVideo, s.poll_videos}};
  auto d = env.start_daemon("poll", unlimited(10000));
  std::vector<std::pair<std::string, std::string>> ours;
  json::array theirs;
  for (const auto& [model, n] : mix) {
    for (auto& r : make_rows(model, n, "ours")) ours.push_back(std::move(r));
    for (auto& r : make_rows(model, n, "peer")) theirs.push_back(json::object{{"model", model}, {"input", json::parse(r.second)}});
  }
  std::ofstream(s.work / "poll-jobs.json") << json::serialize(theirs);
  d.db->insert(ours);
  // The peer runs the same jobs at the same time, on the daemon's core.
  auto peer = env.run_peer({"jobs", env.base, kToken, (s.work / "poll-jobs.json").string(), "500"}, "peer-poll");
  const bool done = wait_until([&] { return d.db->unfinished() == 0; }, 1200s, 100ms);
  check(s, done, "poll: every predictd job terminal");
  const auto rows = d.db->rows("SELECT model, prediction_id, completed_at FROM jobs WHERE prediction_id IS NOT NULL");
  check(s, static_cast<int64_t>(rows.size()) == d.db->count("1"), "poll: every job has a prediction");
  env.stop_daemon(d);
  const auto stats = env.sim->stats();  // before our own GETs add to the poll counts

  std::vector<std::string> ids;
  for (const auto& r : rows) ids.push_back(r[1]);
  const auto& results = peer.at("results").as_array();
  for (const auto& r : results) ids.push_back(json::value_to<std::string>(r.at("id")));
  const auto remote = env.fetch_predictions(ids);

  auto polls_of = [&](const std::string& id) {
    auto it = stats.polls_by_prediction.find(id);
    return it == stats.polls_by_prediction.end() ? 0.0 : double(it->second);
  };
  auto remote_done_ms = [&](const std::string& id) -> std::optional<int64_t> {
    auto it = remote.find(id);
    if (it == remote.end() || !it->second.contains("completed_at") || !it->second.at("completed_at").is_string())
      return std::nullopt;
    return parse_ms(it->second.at("completed_at").as_string());
  };
  std::map<std::string, ModelFigures> ours_by, theirs_by;
  for (const auto& r : rows) {
    auto end = remote_done_ms(r[1]);
    check(s, end.has_value(), "poll: prediction " + r[1] + " ended at the sim");
    if (!end) continue;
    ours_by[r[0]].polls.push_back(polls_of(r[1]));
    ours_by[r[0]].lag_ms.push_back(double(parse_ms(r[2]) - *end));
  }
  for (const auto& rv : results) {
    const auto& r = rv.as_object();
    const std::string id = json::value_to<std::string>(r.at("id"));
    auto end = remote_done_ms(id);
    check(s, end.has_value(), "poll: peer prediction " + id + " ended at the sim");
    if (!end) continue;
    const std::string model = json::value_to<std::string>(r.at("model"));
    theirs_by[model].polls.push_back(polls_of(id));
    theirs_by[model].lag_ms.push_back(double(r.at("done_ms").to_number<int64_t>() - *end));
  }
  for (const auto& [model, n] : mix) {
    const auto& o = ours_by[model];
    const auto& p = theirs_by[model];
    auto line = [](const ModelFigures& f) {
      return fmt("%.1f", percentile(f.polls, 0.5)) + "/" + fmt("%.0f", percentile(f.polls, 0.99)) + " polls, lag " +
             fmt("%.0f", percentile(f.lag_ms, 0.5)) + "/" + fmt("%.0f ms", percentile(f.lag_ms, 0.99));
    };
    std::string target;
    std::optional<bool> met;
    if (model == kVideo) {
      target = "≤ 30 polls, lag p50 ≤ 5 s";
      met = percentile(o.polls, 0.5) <= 30 && percentile(o.polls, 0.99) <= 30 && percentile(o.lag_ms, 0.5) <= 5000;
    } else if (model == kImage) {
      target = "lag p50 ≤ 250 ms";
      met = percentile(o.lag_ms, 0.5) <= 250;
    }
    t.add("5", model + " ×" + std::to_string(n) + ", p50/p99: predictd vs peer 500 ms",
          line(o) + " \\| " + line(p), target, met);
  }
}

void rate_budget(Env& env, Table& t) {
  Settings& s = env.s;
  const double k = s.rate_scale;
  env.reset_sim(Profile::realistic, k, s.cold_start_rate, 0.02, 600 * k, 3000 * k);
  // Time runs k times faster at the sim: so do the limits and the expected run time.
  json::object limits{{"max_in_flight", s.rate_jobs},
                      {"creates_per_minute", static_cast<int64_t>(600 * k)},
                      {"requests_per_minute", static_cast<int64_t>(3000 * k)}};
  json::object models{{kVideo, {{"price_usd", "0.50"}, {"per", "run"}, {"expected_s", 305 / k}}}};
  auto d = env.start_daemon("rate", limits, models);
  const auto t0 = Clock::now();
  d.db->insert(make_rows(kVideo, s.rate_jobs, "rate"));
  const bool done = wait_until([&] { return d.db->unfinished() == 0; }, 3600s, 100ms);
  const double wall = secs(Clock::now() - t0);
  check(s, done, "rate: every job terminal");
  const int64_t ok = d.db->count("status = 'succeeded'");
  env.stop_daemon(d);
  const auto st = env.sim->stats();
  t.add("6", std::to_string(s.rate_jobs) + " videos, limits 600/3000 per min ×" + fmt("%.0f", k) +
                 ": 429s received",
        std::to_string(st.throttled) + " (of " + std::to_string(st.requests) + " requests)", "0",
        st.throttled == 0);
  t.add("6", "completion (insert → last terminal row), succeeded",
        fmt("%.1f s", wall) + " (" + fmt("%.0f sim s", wall * k) + "), " + std::to_string(ok));
}

std::string machine() {
  std::string cpu;
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  return cpu + ", " + std::to_string(std::thread::hardware_concurrency()) + " CPUs";
}

std::string loadavg() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

}  // namespace

int main(int argc, char** argv) try {
  Settings s;
  std::string scenarios = "throughput,peer,footprint,pickup,poll,rate", out;
  bool smoke = false;
  po::options_description desc("Usage: predictd-bench --predictd PATH [options]\nOptions");
  desc.add_options()("help", "this help")("predictd", po::value<std::string>()->required(), "the daemon binary")(
      "peer-script", po::value<std::string>(), "bench/peer.js (default: next to this source)")(
      "node", po::value(&s.node), "node binary")("work", po::value<std::string>(), "scratch directory")(
      "daemon-cpu", po::value(&s.daemon_cpu), "core for predictd and the peer")(
      "sim-cpu", po::value(&s.sim_cpu), "core for the simulator and this driver")(
      "scenarios", po::value(&scenarios), "comma-separated: throughput,peer,footprint,pickup,poll,rate")(
      "jobs", po::value(&s.jobs), "(1)(2) jobs")("concurrency", po::value(&s.concurrency), "(1)(2) jobs in flight")(
      "connections", po::value(&s.connections), "(1) predictd's api.max_connections")(
      "footprint-small", po::value(&s.footprint_small), "(3)")("footprint-large", po::value(&s.footprint_large), "(3)")(
      "pickup-rows", po::value(&s.pickup_rows), "(4)")("idle-s", po::value(&s.idle_s), "(4)")(
      "poll-images", po::value(&s.poll_images), "(5) flux-schnell jobs; half as many flux-dev and sdxl")(
      "poll-videos", po::value(&s.poll_videos), "(5)")("rate-jobs", po::value(&s.rate_jobs), "(6)")(
      "rate-scale", po::value(&s.rate_scale), "(6) time scale of the sim and of both limits")(
      "smoke", po::bool_switch(&smoke), "tiny sizes: checks that everything runs, not the timing")(
      "out", po::value(&out), "also write the table (Markdown) here");
  if (std::find_if(argv, argv + argc, [](const char* a) { return std::string_view(a) == "--smoke"; }) != argv + argc) {
    // Sizes first, so options given explicitly still override them.
    s.jobs = 300, s.concurrency = 50, s.footprint_small = 50, s.footprint_large = 200, s.pickup_rows = 10;
    s.idle_s = 1, s.poll_images = 6, s.poll_videos = 0, s.rate_jobs = 50, s.rate_scale = 300;
    s.cold_start_rate = 0;  // a 20–60 s cold start would dominate the smoke's run time
  }
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, desc), vm);
  if (vm.count("help")) {
    std::cout << desc;
    return 0;
  }
  po::notify(vm);
  s.predictd = fs::absolute(vm["predictd"].as<std::string>());
  s.peer_script = vm.count("peer-script") ? fs::path(vm["peer-script"].as<std::string>())
                                          : fs::path(PREDICTD_BENCH_DIR) / "peer.js";
  s.work = vm.count("work") ? fs::path(vm["work"].as<std::string>())
                            : fs::temp_directory_path() / ("predictd-bench-" + std::to_string(::getpid()));
  std::stringstream ss(scenarios);
  for (std::string x; std::getline(ss, x, ',');) s.scenarios.push_back(x);
  auto want = [&](const char* n) { return std::find(s.scenarios.begin(), s.scenarios.end(), n) != s.scenarios.end(); };

  ::signal(SIGPIPE, SIG_IGN);
  Env env(s);
  Table table;
  const std::string started = predictd::format_utc(std::chrono::system_clock::now());
  const std::string load_before = loadavg();
  ThroughputResult ours;
  auto step = [&](const char* name, const std::function<void()>& f) {
    if (!want(name)) return;
    std::cerr << "bench: " << name << " ...\n";
    const auto t0 = Clock::now();
    f();
    std::cerr << "bench: " << name << " done in " << fmt("%.1f s", secs(Clock::now() - t0)) << "\n";
  };
  step("throughput", [&] { ours = throughput(env, table); });
  step("peer", [&] {
    if (ours.wall_s == 0) ours = throughput(env, table);
    peer(env, table, ours);
  });
  step("footprint", [&] { footprint(env, table); });
  step("pickup", [&] { pickup(env, table); });
  step("poll", [&] { poll_efficiency(env, table); });
  step("rate", [&] { rate_budget(env, table); });
  env.sim->stop();

  std::string cmd;
  for (int i = 0; i < argc; ++i) cmd += (i ? " " : "") + std::string(i ? argv[i] : "predictd-bench");
  std::string report = "Run " + started + " on " + machine() + "; load average " + load_before + " before, " +
                       loadavg() + " after. predictd pinned to CPU " + std::to_string(s.daemon_cpu) +
                       ", predictd-sim to CPU " + std::to_string(s.sim_cpu) + ".\n`" + cmd + "`\n\n" + table.markdown();
  std::cout << report;
  if (!out.empty()) std::ofstream(out) << report;
  if (!s.failed && !vm.count("work")) fs::remove_all(s.work);  // an explicit --work is kept for its logs
  return s.failed ? 1 : 0;
} catch (const std::exception& e) {
  std::cerr << "predictd-bench: " << e.what() << "\n";
  return 2;
}
