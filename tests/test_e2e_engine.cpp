// The engine end to end: rows in a real SQLite file, predictd-sim in-process
// over TLS, the HTTPS client on the test's io_context.
#include <gtest/gtest.h>

#include <map>

#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>

#include "config.h"
#include "engine.h"
#include "http_client.h"
#include "pricing.h"
#include "sim_server.h"
#include "sqlite.h"
#include "store.h"
#include "test_util.h"
#include "tls_cert.h"

using namespace predictd;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

constexpr const char* kToken = "r8_test_token_0123456789";

struct Harness {
  test::TempDir dir;
  std::string db_path = dir.file("jobs.db");
  PemPair pem = make_self_signed({"localhost"}, {"127.0.0.1"});
  std::unique_ptr<sim::Server> sim;
  Config config;
  std::unique_ptr<Store> store;
  std::unique_ptr<Db> feeder;
  boost::asio::io_context io{1};
  std::unique_ptr<HttpClient> http;
  std::unique_ptr<Engine> engine;
  bool trust_cert = true;
  std::string token = kToken;

  sim::Options sim_options;

  explicit Harness(sim::Options so = {}, double time_scale = 50) {
    test::write_file(dir.file("ca.pem"), pem.cert_pem);
    so.tls_cert_pem = pem.cert_pem;
    so.tls_key_pem = pem.key_pem;
    so.prefix = "/replicate";
    so.token = kToken;
    so.time_scale = time_scale;
    so.cold_start_rate = 0;
    so.failure_rate = 0;
    sim_options = so;
    sim = std::make_unique<sim::Server>(so);
    const uint16_t port = sim->start();
    config.db_path = db_path;
    config.api.base_url = "https://localhost:" + std::to_string(port) + "/replicate";
    config.api.ca_file = dir.file("ca.pem");
    config.api.max_connections = 4;
    config.retry = {.max_attempts = 3, .base_ms = 20, .max_ms = 200};
    // Expected run times shrink with the simulator's clock.
    std::vector<ModelEntry> models = Catalog::defaults().entries();
    for (auto& m : models) m.expected_s /= time_scale;
    config.models = Catalog(models);
    store = Store::open(db_path);
    feeder = std::make_unique<Db>(db_path, 2000);
  }

  // Replaces the simulator (before start()) with one whose options `change` edits.
  void stop_sim_and_restart(const std::function<void(sim::Options&)>& change) {
    sim->stop();
    sim.reset();
    change(sim_options);
    sim = std::make_unique<sim::Server>(sim_options);
    config.api.base_url = "https://localhost:" + std::to_string(sim->start()) + "/replicate";
  }

  ~Harness() {
    engine.reset();
    http.reset();
    sim->stop();
  }

  void start() {
    HttpClientSettings hs;
    hs.base_url = config.api.base_url;
    if (trust_cert) hs.ca_file = config.api.ca_file;
    hs.max_connections = config.api.max_connections;
    hs.request_timeout = 5s;
    hs.connect_timeout = 2s;
    hs.user_agent = "predictd/test";
    http = std::make_unique<HttpClient>(io, hs);
    EngineOptions eo;
    eo.db_path = db_path;
    eo.db_check_interval = 20ms;
    eo.auth_retry = 1s;
    engine = std::make_unique<Engine>(io, *store, *http, config, token, eo);
    engine->start();
  }

  // Stops the engine the way SIGTERM does.
  void stop() {
    bool done = false;
    engine->stop([&] { done = true; });
    run_until([&] { return done; }, 10s);
    engine.reset();
    http.reset();
  }

  int64_t insert(const std::string& model, const std::string& input, const std::string& extra_cols = "",
                 const std::string& extra_vals = "") {
    feeder->exec("INSERT INTO jobs(model, input" + extra_cols + ") VALUES ('" + model + "', '" + input + "'" +
                 extra_vals + ")");
    return feeder->last_insert_rowid();
  }

  bool run_until(const std::function<bool()>& cond, std::chrono::milliseconds deadline = 20s) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < end) {
      if (cond()) return true;
      io.run_for(5ms);
      if (io.stopped()) io.restart();
    }
    return cond();
  }

  bool all_terminal() {
    for (const auto& r : store->list(std::nullopt, 100000))
      if (!is_terminal(r.status)) return false;
    return true;
  }

  JobRow row(int64_t id) { return store->get(id).value(); }
  json::object stats() { return json::parse(sim->stats_json()).as_object(); }
  int64_t stat(const char* key) { return stats().at(key).as_int64(); }
};

}  // namespace

TEST(EngineE2E, EveryCatalogModelThroughItsFormWithExactCredits) {
  Harness h;
  const Catalog catalog = Catalog::defaults();
  std::map<int64_t, const ModelEntry*> jobs;
  for (const auto& m : catalog.entries()) {
    if (m.version)  // version rows use the version column only
      h.feeder->exec("INSERT INTO jobs(version, input) VALUES ('" + *m.version +
                     "', '{\"prompt\":\"a lighthouse\",\"num_outputs\":2}')");
    else
      h.insert(m.name, R"({"prompt":"a lighthouse","num_outputs":2})");
    jobs[h.feeder->last_insert_rowid()] = &m;
  }
  h.start();
  ASSERT_TRUE(h.run_until([&] { return h.all_terminal(); }, 30s));
  for (const auto& [id, m] : jobs) {
    JobRow r = h.row(id);
    ASSERT_EQ(r.status, JobStatus::succeeded) << m->name << ": " << r.error.value_or("");
    json::array out = json::parse(r.output.value()).as_array();
    const bool array_model = m->name.find("flux-schnell") != std::string::npos ||
                             m->name.find("flux-dev") != std::string::npos ||
                             m->name.find("stable-diffusion") != std::string::npos ||
                             m->name.find("sdxl") != std::string::npos;
    const int64_t expected_outputs = array_model ? 2 : 1;
    EXPECT_EQ(static_cast<int64_t>(out.size()), expected_outputs) << m->name;
    EXPECT_TRUE(out[0].is_string());
    const int64_t units = m->per == BillingUnit::run ? 1 : expected_outputs;
    EXPECT_EQ(r.units.value(), units) << m->name;
    EXPECT_EQ(r.cost_credits.value(), cost_credits(*m, units, h.config.billing)) << m->name;
    EXPECT_EQ(r.attempts, 1);
    EXPECT_TRUE(r.prediction_id && r.submitted_at && r.completed_at && r.predict_time_s);
  }
  EXPECT_EQ(h.stat("creates"), 14);
  EXPECT_EQ(h.stat("duplicate_creates"), 0);
  // Keep-alive: a handful of connections served every request.
  EXPECT_LE(h.stat("connections"), h.config.api.max_connections);
  EXPECT_GT(h.stat("requests"), h.stat("connections"));
}

TEST(EngineE2E, InvalidRowsFailWithoutARequestAndOthersRun) {
  Harness h;
  int64_t not_object = h.insert("black-forest-labs/flux-schnell", "[1,2]");
  int64_t unknown = h.insert("nobody/nothing", "{}");
  h.feeder->exec("INSERT INTO jobs(input) VALUES ('{}')");
  int64_t neither = h.feeder->last_insert_rowid();
  h.feeder->exec("INSERT INTO jobs(version, input) VALUES ('" + std::string(64, 'a') + "', '{}')");
  int64_t bad_version = h.feeder->last_insert_rowid();
  int64_t big = h.insert("black-forest-labs/flux-schnell", "{\"p\":\"" + std::string(2000, 'x') + "\"}");
  h.config.jobs.max_input_bytes = 1000;
  int64_t good = h.insert("black-forest-labs/flux-schnell", R"({"prompt":"ok"})");
  h.start();
  ASSERT_TRUE(h.run_until([&] { return h.all_terminal(); }));
  EXPECT_EQ(h.row(not_object).error.value(), "input must be a JSON object, got array");
  EXPECT_EQ(h.row(unknown).error.value(), "model nobody/nothing is not in the catalog");
  EXPECT_EQ(h.row(neither).error.value(), "neither model nor version is set");
  EXPECT_EQ(h.row(bad_version).error.value(), "version " + std::string(64, 'a') + " is not in the catalog");
  EXPECT_EQ(h.row(big).error.value(), "input is 2008 bytes, over jobs.max_input_bytes (1000)");
  for (int64_t id : {not_object, unknown, neither, bad_version, big}) {
    EXPECT_EQ(h.row(id).status, JobStatus::failed);
    EXPECT_EQ(h.row(id).cost_credits.value(), 0);
  }
  EXPECT_EQ(h.row(good).status, JobStatus::succeeded);
  EXPECT_EQ(h.stat("creates"), 1);
}

TEST(EngineE2E, CancelBeforeAndAfterSubmission) {
  Harness h({}, 1);
  int64_t later = h.insert("black-forest-labs/flux-schnell", "{}", ", not_before", ", '2099-01-01T00:00:00Z'");
  int64_t video = h.insert("minimax/video-01", R"({"prompt":"waves"})");
  h.start();
  ASSERT_TRUE(h.run_until([&] { return h.row(video).status == JobStatus::starting ||
                                       h.row(video).status == JobStatus::processing; }));
  h.feeder->exec("UPDATE jobs SET cancel_requested = 1");
  ASSERT_TRUE(h.run_until([&] { return h.all_terminal(); }));
  EXPECT_EQ(h.row(later).status, JobStatus::canceled);
  EXPECT_EQ(h.row(later).error.value(), "canceled on request before submission");
  EXPECT_EQ(h.row(video).status, JobStatus::canceled);
  EXPECT_EQ(h.row(video).error.value(), "canceled on request");
  EXPECT_EQ(h.row(video).cost_credits.value(), 0);
  EXPECT_EQ(h.stat("creates"), 1);
  EXPECT_EQ(h.stat("cancels"), 1);
}

TEST(EngineE2E, AmbiguousCreateIsAdoptedNotDuplicated) {
  sim::Options so;
  so.faults.reset_after_create = 1.0;
  Harness h(so);
  int64_t id = h.insert("black-forest-labs/flux-dev", R"({"prompt":"a fox"})");
  h.start();
  ASSERT_TRUE(h.run_until([&] { return h.stat("creates") >= 1; }));
  h.sim->set_faults({});
  ASSERT_TRUE(h.run_until([&] { return h.all_terminal(); }));
  EXPECT_EQ(h.row(id).status, JobStatus::succeeded);
  EXPECT_EQ(h.stat("creates"), 1);
  EXPECT_EQ(h.stat("duplicate_creates"), 0);
  EXPECT_GE(h.stat("lists"), 1);
  EXPECT_EQ(h.engine->counters().adopted, 1u);
}

TEST(EngineE2E, ThrottledCreatesWaitForRetryAfter) {
  sim::Options so;
  so.faults.throttle = 1.0;
  so.faults.retry_after_s = 1;
  Harness h(so);
  int64_t id = h.insert("black-forest-labs/flux-schnell", R"({"prompt":"x"})");
  h.start();
  ASSERT_TRUE(h.run_until([&] { return h.stat("throttled") >= 1; }));
  h.sim->set_faults({});
  ASSERT_TRUE(h.run_until([&] { return h.all_terminal(); }));
  EXPECT_EQ(h.row(id).status, JobStatus::succeeded);
  EXPECT_EQ(h.row(id).attempts, 1);  // a throttled create is not an attempt
  EXPECT_EQ(h.stat("retry_after_violations"), 0);
}

// 5xx on every request, lists included: see EngineFaults (an outage holds
// new jobs; 5xx on creates alone are retried up to retry.max_attempts).

TEST(EngineE2E, UnauthorizedPausesWithoutFailingJobs) {
  Harness h;
  h.token = "r8_wrong";
  int64_t id = h.insert("black-forest-labs/flux-schnell", R"({"prompt":"x"})");
  h.start();
  ASSERT_TRUE(h.run_until([&] { return h.stat("unauthorized") >= 1; }));
  h.run_until([] { return false; }, 300ms);
  EXPECT_TRUE(h.engine->auth_paused());
  EXPECT_EQ(h.row(id).status, JobStatus::queued);
  EXPECT_EQ(h.row(id).attempts, 0);
  EXPECT_EQ(h.stat("unauthorized"), 1);  // paused: no hammering
}

TEST(EngineE2E, RestartResumesPollingWithoutResubmitting) {
  Harness h({}, 20);
  int64_t id = h.insert("black-forest-labs/flux-pro", R"({"prompt":"x"})");
  h.start();
  ASSERT_TRUE(h.run_until([&] { return h.row(id).status == JobStatus::starting ||
                                       h.row(id).status == JobStatus::processing; }));
  h.stop();
  EXPECT_FALSE(is_terminal(h.row(id).status));
  h.start();
  ASSERT_TRUE(h.run_until([&] { return h.all_terminal(); }));
  EXPECT_EQ(h.row(id).status, JobStatus::succeeded);
  EXPECT_EQ(h.stat("creates"), 1);
}

TEST(EngineE2E, SubmittingRowFoundAtStartIsReconciled) {
  Harness h;
  int64_t id = h.insert("black-forest-labs/flux-schnell", R"({"prompt":"crash"})");
  // A previous run committed `submitting` and died before the create left.
  h.feeder->exec("UPDATE jobs SET status = 'submitting', submitted_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')");
  h.start();
  ASSERT_TRUE(h.run_until([&] { return h.all_terminal(); }));
  EXPECT_EQ(h.row(id).status, JobStatus::succeeded);
  EXPECT_EQ(h.stat("lists"), 1);
  EXPECT_EQ(h.stat("creates"), 1);
}

TEST(EngineE2E, TimeoutIsSentAsCancelAfterAndRecorded) {
  Harness h({}, 1);
  int64_t id = h.insert("minimax/video-01", R"({"prompt":"x"})", ", timeout_s", ", 5");
  h.start();
  ASSERT_TRUE(h.run_until([&] { return h.all_terminal(); }, 20s));
  EXPECT_EQ(h.row(id).status, JobStatus::canceled);
  EXPECT_EQ(h.row(id).error.value(), "timed out after 5 s");
}

TEST(EngineE2E, UntrustedCertificateIsRefusedWithoutSpendingAttempts) {
  Harness h;
  h.trust_cert = false;
  int64_t id = h.insert("black-forest-labs/flux-schnell", R"({"prompt":"x"})");
  h.start();
  // The handshake failed and the job went back to the queue without an attempt.
  ASSERT_TRUE(h.run_until([&] { return h.engine->counters().retries >= 1 && h.row(id).status == JobStatus::queued; },
                          20s));
  EXPECT_EQ(h.row(id).status, JobStatus::queued);
  EXPECT_EQ(h.row(id).attempts, 0);
  EXPECT_EQ(h.stat("creates"), 0);
  EXPECT_EQ(h.stat("requests"), 0);
}

TEST(EngineE2E, RemoteFailureAndAbortedAreRecorded) {
  sim::Options so;
  Harness h(so, 10);
  h.stop_sim_and_restart([](sim::Options& o) { o.failure_rate = 1.0; });
  int64_t id = h.insert("black-forest-labs/flux-schnell", R"({"prompt":"x"})");
  h.start();
  ASSERT_TRUE(h.run_until([&] { return h.all_terminal(); }));
  EXPECT_EQ(h.row(id).status, JobStatus::failed);
  EXPECT_EQ(h.row(id).error.value(), "CUDA out of memory. Tried to allocate 2.00 GiB");
  EXPECT_EQ(h.row(id).cost_credits.value(), 0);
}

TEST(EngineE2E, AbortedBeforeStartEndsCanceledWithTheReason) {
  sim::Options so;
  Harness h(so, 10);
  h.stop_sim_and_restart([](sim::Options& o) { o.cold_start_rate = 1.0; });
  int64_t id = h.insert("black-forest-labs/flux-schnell", R"({"prompt":"x"})", ", timeout_s", ", 5");
  h.start();
  ASSERT_TRUE(h.run_until([&] { return h.all_terminal(); }));
  EXPECT_EQ(h.row(id).status, JobStatus::canceled);
  EXPECT_EQ(h.row(id).error.value(), "aborted: Prediction deadline exceeded before it started");
}

TEST(EngineE2E, TheSimulatorReceivedEachRowsInputUnchanged) {
  Harness h;
  const std::string input = R"({"prompt":"a \"quoted\" cat ✓","num_outputs":1,"guidance":3.5,"seed":12345678901})";
  int64_t id = h.insert("black-forest-labs/flux-dev", input);
  h.config.models = Catalog([&] {
    auto models = h.config.models.entries();
    for (auto& m : models)
      if (m.name == "black-forest-labs/flux-dev") m.prefer_wait_s = 5;  // and the sync mode on the way
    return models;
  }());
  h.start();
  ASSERT_TRUE(h.run_until([&] { return h.all_terminal(); }));
  ASSERT_EQ(h.row(id).status, JobStatus::succeeded);
  EXPECT_EQ(h.stat("polls"), 0);  // Prefer: wait brought the result with the create
  std::optional<HttpResponse> got;
  h.http->send({.method = "GET", .path = "/v1/predictions/" + h.row(id).prediction_id.value(),
                .headers = {{"Authorization", std::string("Bearer ") + kToken}}},
               [&](HttpResponse r) { got = std::move(r); });
  ASSERT_TRUE(h.run_until([&] { return got.has_value(); }));
  EXPECT_EQ(json::parse(got->body).at("input"), json::parse(input));
}

TEST(EngineE2E, IdleAfterAJobRunsOnlyItsPeriodicTimers) {
  Harness h;
  h.start();
  const int64_t id = h.insert("black-forest-labs/flux-schnell", R"({"prompt":"a cat"})");
  ASSERT_TRUE(h.run_until([&] { return h.row(id).status == JobStatus::succeeded; }));
  // Two waits on the poll timer used to cancel each other forever: a busy
  // loop of thousands of handlers per second once a job had been scheduled.
  std::size_t handlers = 0;
  const auto end = std::chrono::steady_clock::now() + 300ms;
  while (std::chrono::steady_clock::now() < end) {
    handlers += h.io.run_for(10ms);
    if (h.io.stopped()) h.io.restart();
  }
  EXPECT_LT(handlers, 200u);  // db checks every 20 ms, loop-lag probes every 100 ms
  h.stop();
}
