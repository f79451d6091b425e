// Suite 3, bad rows: each one is refused at insert with a clear message or
// ends `failed` with a clear `error`, without a request, while good rows run.
#include <gtest/gtest.h>

#include <iostream>

#include "engine_rig.h"
#include "sim_server.h"

using namespace predictd;
using namespace std::chrono_literals;

namespace {

constexpr const char* kSchnell = "black-forest-labs/flux-schnell";
constexpr const char* kSdxlVersion = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc";

struct SimRig : test::EngineRig {
  std::unique_ptr<sim::Server> sim;
  explicit SimRig(sim::Options so = {}) {
    so.profile = sim::Profile::instant;
    so.tls_cert_pem = pem.cert_pem;
    so.tls_key_pem = pem.key_pem;
    so.prefix = "/replicate";
    so.token = test::kRigToken;
    sim = std::make_unique<sim::Server>(so);
    point_at(sim->start(), "/replicate");
  }
  ~SimRig() {
    engine.reset();
    http.reset();
    sim->stop();
  }
  int64_t good(int n) {
    return insert(std::string("INSERT INTO jobs(model, input) VALUES ('") + kSchnell + "', '{\"prompt\":\"good " +
                  std::to_string(n) + "\"}')");
  }
};

// The message SQLite gives a feeder for an INSERT the schema refuses.
std::string refusal(test::EngineRig& rig, const std::string& sql) {
  try {
    rig.feeder->exec(sql);
  } catch (const DbError& e) {
    return e.what();
  }
  return "accepted";
}

}  // namespace

TEST(BadRows, RefusedAtInsertWithTheConstraintNamed) {
  SimRig rig;
  const std::string ins = "INSERT INTO jobs(model, input, priority, not_before, timeout_s) VALUES ('" +
                          std::string(kSchnell) + "', ";
  struct Case {
    const char* kind;
    std::string values;
    const char* constraint;
  };
  const std::vector<Case> cases = {
      {"input not JSON", "'{prompt: a cat}', 0, NULL, NULL)", "input_must_be_valid_json"},
      {"input truncated", "'{\"prompt\":\"a ca', 0, NULL, NULL)", "input_must_be_valid_json"},
      {"input NULL", "NULL, 0, NULL, NULL)", "NOT NULL constraint failed: jobs.input"},
      {"priority not an integer", "'{}', 'high', NULL, NULL)", "priority_must_be_an_integer"},
      {"negative timeout_s", "'{}', 0, NULL, -5)", "timeout_s_must_be_a_positive_integer"},
      {"zero timeout_s", "'{}', 0, NULL, 0)", "timeout_s_must_be_a_positive_integer"},
      {"timeout_s as text", "'{}', 0, NULL, 'soon')", "timeout_s_must_be_a_positive_integer"},
      {"not_before not a time", "'{}', 0, 'tomorrow', NULL)", "not_before_must_be_a_utc_time"},
      {"not_before out of range", "'{}', 0, '2026-13-45T99:00:00Z', NULL)", "not_before_must_be_a_utc_time"},
  };
  for (const Case& c : cases) {
    const std::string msg = refusal(rig, ins + c.values);
    EXPECT_NE(msg.find(c.constraint), std::string::npos) << c.kind << ": " << msg;
  }
  EXPECT_NE(refusal(rig, "INSERT INTO jobs(model, input, cancel_requested) VALUES ('x', '{}', 2)")
                .find("cancel_requested_must_be_0_or_1"),
            std::string::npos);
  // No row got in.
  Stmt n(*rig.feeder, "SELECT count(*) FROM jobs");
  n.step();
  EXPECT_EQ(n.get_int(0), 0);
}

TEST(BadRows, EachFailsWithAClearErrorWithoutARequestWhileGoodRowsRun) {
  SimRig rig;
  rig.config.jobs.max_input_bytes = 4096;
  std::vector<int64_t> goods;
  std::vector<std::pair<int64_t, std::string>> bad;  // id, expected error
  auto add_bad = [&](const std::string& sql, const std::string& error) {
    goods.push_back(rig.good(static_cast<int>(goods.size())));
    bad.emplace_back(rig.insert(sql), error);
  };
  const std::string m = kSchnell;
  add_bad("INSERT INTO jobs(model, input) VALUES ('" + m + "', '[\"a cat\"]')",
          "input must be a JSON object, got array");
  add_bad("INSERT INTO jobs(model, input) VALUES ('" + m + "', '\"a cat\"')", "input must be a JSON object, got string");
  add_bad("INSERT INTO jobs(model, input) VALUES ('" + m + "', '42')", "input must be a JSON object, got int64");
  add_bad("INSERT INTO jobs(model, input) VALUES ('" + m + "', 'null')", "input must be a JSON object, got null");
  add_bad("INSERT INTO jobs(input) VALUES ('{}')", "neither model nor version is set");
  add_bad("INSERT INTO jobs(model, version, input) VALUES ('', '', '{}')", "neither model nor version is set");
  add_bad("INSERT INTO jobs(model, input) VALUES ('nobody/nothing', '{}')", "model nobody/nothing is not in the catalog");
  add_bad("INSERT INTO jobs(model, input) VALUES ('black-forest-labs/flux-schnell ', '{}')",
          "model black-forest-labs/flux-schnell  is not in the catalog");
  add_bad("INSERT INTO jobs(version, input) VALUES ('" + std::string(64, 'f') + "', '{}')",
          "version " + std::string(64, 'f') + " is not in the catalog");
  add_bad("INSERT INTO jobs(version, input) VALUES ('stability-ai/sdxl:" + std::string(kSdxlVersion) + "', '{}')",
          "version stability-ai/sdxl:" + std::string(kSdxlVersion) + " is not in the catalog");
  add_bad("INSERT INTO jobs(model, version, input) VALUES ('" + m + "', '" + kSdxlVersion + "', '{}')",
          "model " + m + " does not match version " + kSdxlVersion + " (stability-ai/sdxl)");
  add_bad("INSERT INTO jobs(model, input) VALUES ('" + m + "', '{\"prompt\":\"" + std::string(5000, 'x') + "\"}')",
          "input is 5013 bytes, over jobs.max_input_bytes (4096)");
  add_bad("INSERT INTO jobs(model, input, timeout_s) VALUES ('" + m + "', '{}', 9000000000)",
          "timeout_s 9000000000 is outside 1..604800");
  // Valid JSON to SQLite but not UTF-8: nothing may send it.
  add_bad("INSERT INTO jobs(model, input) VALUES ('" + m + "', CAST(X'7B2270223A22FF227D' AS TEXT))",
          "input is not valid JSON");
  goods.push_back(rig.good(1000));

  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.all_terminal(); }));
  for (const auto& [id, error] : bad) {
    const JobRow r = rig.row(id);
    EXPECT_EQ(r.status, JobStatus::failed) << "job " << id;
    EXPECT_EQ(r.error.value_or("").substr(0, error.size()), error) << "job " << id;
    EXPECT_EQ(r.cost_credits.value_or(-1), 0);
    EXPECT_EQ(r.attempts, 0);
    EXPECT_FALSE(r.prediction_id);
    EXPECT_EQ(rig.logs.find({"job_failed", "job=" + std::to_string(id) + " "}).size(), 1u) << "job " << id;
  }
  for (int64_t id : goods) EXPECT_EQ(rig.row(id).status, JobStatus::succeeded) << "job " << id;
  EXPECT_EQ(rig.sim->stats().creates, static_cast<int64_t>(goods.size()));
}

TEST(BadRows, CancelOfAFinishedJobChangesNothing) {
  SimRig rig;
  const int64_t id = rig.good(1);
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.all_terminal(); }));
  const JobRow before = rig.row(id);
  ASSERT_EQ(before.status, JobStatus::succeeded);
  EXPECT_FALSE(rig.store->request_cancel(id));  // predictctl cancel says so
  rig.feeder->exec("UPDATE jobs SET cancel_requested = 1 WHERE id = " + std::to_string(id));  // a raw feeder
  const int64_t after_id = rig.good(2);  // something to wait for: the engine saw the commit
  ASSERT_TRUE(rig.run_until([&] { return rig.all_terminal(); }));
  const JobRow after = rig.row(id);
  EXPECT_EQ(after.status, JobStatus::succeeded);
  EXPECT_EQ(after.cost_credits, before.cost_credits);
  EXPECT_EQ(after.output, before.output);
  EXPECT_EQ(after.completed_at, before.completed_at);
  EXPECT_EQ(rig.row(after_id).status, JobStatus::succeeded);
  EXPECT_EQ(rig.sim->stats().cancels, 0);
}

TEST(BadRows, RowDeletedInFlightIsLoggedAndOthersFinish) {
  sim::Options so;
  SimRig rig(so);
  rig.sim->configure([](sim::Options& o) { o.profile = sim::Profile::realistic; o.cold_start_rate = 0; o.failure_rate = 0; });
  rig.sim->set_time_scale(100);  // video-01: ~3 s
  std::vector<ModelEntry> models = Catalog::defaults().entries();
  for (auto& m : models) m.expected_s /= 100;
  rig.config.models = Catalog(models);
  const int64_t doomed =
      rig.insert("INSERT INTO jobs(model, input) VALUES ('minimax/video-01', '{\"prompt\":\"doomed\"}')");
  const int64_t other =
      rig.insert("INSERT INTO jobs(model, input) VALUES ('minimax/video-01', '{\"prompt\":\"other\"}')");
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.row(doomed).prediction_id.has_value(); }));
  rig.feeder->exec("DELETE FROM jobs WHERE id = " + std::to_string(doomed));
  const bool done = rig.run_until([&] { return rig.all_terminal() && rig.engine->in_flight() == 0; }, 30s);
  if (!done)
    for (const auto& l : rig.logs.lines()) std::cout << l << "\n";
  ASSERT_TRUE(done) << "in flight: " << rig.engine->in_flight() << ", other: " << to_string(rig.row(other).status);
  EXPECT_FALSE(rig.store->get(doomed));
  EXPECT_EQ(rig.row(other).status, JobStatus::succeeded);
  EXPECT_EQ(rig.logs.find({"job_lost", "job=" + std::to_string(doomed) + " "}).size(), 1u);
}
