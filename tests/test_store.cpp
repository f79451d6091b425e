#include <gtest/gtest.h>

#include <sqlite3.h>

#include <chrono>
#include <thread>

#include "schema.h"
#include "sqlite.h"
#include "store.h"
#include "test_util.h"
#include "timefmt.h"

using namespace predictd;

namespace {

std::string now() { return format_utc(std::chrono::system_clock::now()); }
std::string in(int seconds) { return format_utc(std::chrono::system_clock::now() + std::chrono::seconds(seconds)); }

RowValidator accept_all() {
  return [](const JobRow&) { return std::nullopt; };
}

// Another process: a plain connection as a feeder would open it.
struct Feeder {
  explicit Feeder(const std::string& path) : db(path, 2000) {}
  int64_t insert(const std::string& sql) {
    db.exec(sql);
    return db.last_insert_rowid();
  }
  Db db;
};

struct StoreTest : ::testing::Test {
  test::TempDir dir;
  std::string path = dir.file("jobs.db");
  std::unique_ptr<Store> store = Store::open(path);
  Feeder feeder{path};
};

}  // namespace

TEST_F(StoreTest, MigratesOnceAndRecordsTheVersion) {
  EXPECT_EQ(store->schema_version(), schema_files().back().version);
  auto again = Store::open(path);  // idempotent
  EXPECT_EQ(again->schema_version(), schema_files().back().version);
}

TEST(StoreOpen, MigratesAVersion1DatabaseKeepingRowsAndConstraints) {
  test::TempDir dir;
  const std::string path = dir.file("jobs.db");
  {
    Db old(path, 5);
    old.exec(schema_files().front().sql);
    old.exec("PRAGMA user_version = 1");
    old.exec("INSERT INTO jobs(model, input, priority, status, prediction_id, cost_credits, next_attempt_at) "
             "VALUES ('m/a', '{\"x\":1}', 3, 'processing', 'p1', NULL, '2026-01-01T00:00:00.000Z')");
  }
  auto store = Store::open(path);
  EXPECT_EQ(store->schema_version(), schema_files().back().version);
  auto row = store->get(1);
  ASSERT_TRUE(row);
  EXPECT_EQ(row->status, JobStatus::processing);
  EXPECT_EQ(row->prediction_id.value_or(""), "p1");
  EXPECT_EQ(row->priority, 3);
  EXPECT_EQ(store->active_jobs().size(), 1u);
  try {
    store->db().exec("INSERT INTO jobs(model, input, status) VALUES ('m/a', '{}', 'done')");
    ADD_FAILURE() << "an unknown status was accepted";
  } catch (const DbError& e) {
    EXPECT_NE(std::string(e.what()).find("status_must_be_a_known_state"), std::string::npos) << e.what();
  }
}

// SQLite builds a temporary B-tree (and a page cache for it) for each
// `IN (3+ constants)` it evaluates; in the status CHECK and the partial
// indexes that was five per status update, most of the CPU of a job.
TEST_F(StoreTest, AStatusUpdateBuildsNoEphemeralTable) {
  for (const char* sql : {"UPDATE jobs SET status = 'submitting' WHERE id = 1 AND status = 'queued'",
                          "UPDATE jobs SET status = ?2, cancel_requested = 1 WHERE id = ?1",
                          "INSERT INTO jobs(model, input) VALUES ('m/a', '{}')"}) {
    auto s = store->db().cached(std::string("EXPLAIN ") + sql);
    int ephemeral = 0;
    while (s->step()) ephemeral += s->get_text(1) == "OpenEphemeral";
    EXPECT_EQ(ephemeral, 0) << sql;
  }
}

TEST_F(StoreTest, ActiveAndCancelQueriesUseTheirPartialIndexesWithoutSorting) {
  feeder.insert("INSERT INTO jobs(model, input, status, cancel_requested) VALUES ('m/a', '{}', 'processing', 1)");
  feeder.insert("INSERT INTO jobs(model, input, status) VALUES ('m/a', '{}', 'starting')");
  feeder.insert("INSERT INTO jobs(model, input, status, cancel_requested) VALUES ('m/a', '{}', 'succeeded', 1)");
  // Both name their index; SQLite refuses to prepare them if its predicate did not match.
  EXPECT_EQ(store->active_jobs().size(), 2u);
  EXPECT_EQ(store->active_cancel_requests(), std::vector<int64_t>{1});
  auto plan = store->db().cached(
      "EXPLAIN QUERY PLAN SELECT id FROM jobs INDEXED BY jobs_active WHERE (status = 'submitting' OR "
      "status = 'starting' OR status = 'processing') ORDER BY id");
  std::string out;
  while (plan->step()) out += plan->get_text(3) + "\n";
  EXPECT_EQ(out.find("TEMP B-TREE"), std::string::npos) << out;
}

// Queued rows lie in three partial indexes (ready now, timed, cancel
// requested): the count adds them without scanning the table, and no index
// holds every row any more (schema 003).
TEST_F(StoreTest, CountQueuedAddsTheThreeQueuedIndexesOnce) {
  feeder.insert("INSERT INTO jobs(model, input) VALUES ('m/a', '{}')");
  feeder.insert("INSERT INTO jobs(model, input, not_before) VALUES ('m/a', '{}', '2099-01-01T00:00:00Z')");
  feeder.insert("INSERT INTO jobs(model, input, next_attempt_at) VALUES ('m/a', '{}', '2020-01-01T00:00:00Z')");
  feeder.insert("INSERT INTO jobs(model, input, cancel_requested) VALUES ('m/a', '{}', 1)");
  feeder.insert("INSERT INTO jobs(model, input, not_before, cancel_requested) VALUES ('m/a', '{}', "
                "'2099-01-01T00:00:00Z', 1)");
  feeder.insert("INSERT INTO jobs(model, input, status) VALUES ('m/a', '{}', 'processing')");
  feeder.insert("INSERT INTO jobs(model, input, status, cancel_requested) VALUES ('m/a', '{}', 'starting', 1)");
  feeder.insert("INSERT INTO jobs(model, input, status, cancel_requested) VALUES ('m/a', '{}', 'failed', 1)");
  // Each part names its index (INDEXED BY): SQLite would refuse a predicate that does not match.
  EXPECT_EQ(store->count_queued(), 5);
  EXPECT_EQ(store->stats(now()).by_status[static_cast<int>(JobStatus::queued)], 5);
  auto idx = store->db().cached("SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name = 'jobs_claim'");
  ASSERT_TRUE(idx->step());
  EXPECT_EQ(idx->get_int(0), 0);
}

// Rows back in the queue after a create that did not happen keep their
// timeout, counted from submitted_at; fresh rows (never submitted) have none yet.
TEST_F(StoreTest, QueuedRowsPastTheirTimeoutSinceSubmissionExpire) {
  const std::string long_ago = format_utc(std::chrono::system_clock::now() - std::chrono::seconds(100));
  const int64_t expired = feeder.insert("INSERT INTO jobs(model, input, timeout_s, submitted_at) VALUES ('m/a', '{}', 60, '" +
                                        long_ago + "')");
  const int64_t by_default = feeder.insert("INSERT INTO jobs(model, input, submitted_at) VALUES ('m/a', '{}', '" +
                                           long_ago + "')");
  const int64_t waiting = feeder.insert("INSERT INTO jobs(model, input, timeout_s, submitted_at) VALUES ('m/a', '{}', "
                                        "600, '" + long_ago + "')");
  const int64_t fresh = feeder.insert("INSERT INTO jobs(model, input, timeout_s) VALUES ('m/a', '{}', 1)");
  auto r = store->expire_queued(now(), 90);
  ASSERT_TRUE(r);
  ASSERT_EQ(r.value.size(), 2u);
  EXPECT_EQ(r.value[0], std::make_pair(expired, std::string("timed out after 60 s")));
  EXPECT_EQ(r.value[1], std::make_pair(by_default, std::string("timed out after 90 s")));
  EXPECT_EQ(store->get(expired)->status, JobStatus::canceled);
  EXPECT_EQ(store->get(expired)->cost_credits.value_or(-1), 0);
  EXPECT_EQ(store->get(waiting)->status, JobStatus::queued);
  EXPECT_EQ(store->get(fresh)->status, JobStatus::queued);
  // The next one: `waiting`, 600 s after its submission.
  auto next = store->next_queued_expiry(90);
  ASSERT_TRUE(next);
  auto when = parse_utc(*next);
  ASSERT_TRUE(when);
  const auto expected = *parse_utc(long_ago) + std::chrono::seconds(600);
  EXPECT_LT(std::chrono::abs(*when - expected), std::chrono::milliseconds(5)) << *next;
}

// Rows ready at once and rows whose time has come are claimed together, in
// priority then id order; rows still waiting for their time are not.
TEST_F(StoreTest, ClaimMergesReadyAndDueRowsByPriorityThenId) {
  const std::string past = format_utc(std::chrono::system_clock::now() - std::chrono::seconds(60));
  const int64_t a = feeder.insert("INSERT INTO jobs(model, input) VALUES ('m/a', '{}')");
  const int64_t b = feeder.insert("INSERT INTO jobs(model, input, priority) VALUES ('m/a', '{}', 5)");
  const int64_t c = feeder.insert("INSERT INTO jobs(model, input, priority, not_before) VALUES ('m/a', '{}', 3, '" +
                                  past + "')");
  const int64_t d = feeder.insert("INSERT INTO jobs(model, input, priority, not_before) VALUES ('m/a', '{}', 5, '" +
                                  past + "')");
  const int64_t e = feeder.insert("INSERT INTO jobs(model, input, priority, not_before) VALUES ('m/a', '{}', 9, '" +
                                  in(3600) + "')");
  auto first = store->claim(now(), 3, accept_all());
  ASSERT_TRUE(first);
  std::vector<int64_t> ids;
  for (const auto& r : first.value.claimed) ids.push_back(r.id);
  EXPECT_EQ(ids, (std::vector<int64_t>{b, d, c}));
  auto second = store->claim(now(), 10, accept_all());
  ASSERT_EQ(second.value.claimed.size(), 1u);
  EXPECT_EQ(second.value.claimed[0].id, a);
  EXPECT_EQ(store->get(e)->status, JobStatus::queued);
  EXPECT_EQ(store->next_wakeup(now()).value().substr(0, 16), in(3600).substr(0, 16));
}

// Rows waiting for a time lie in no ready row's way: with 20,000 of them ahead
// (lower ids), finding and claiming the one ready row costs a few hundred
// SQLite instructions, not a scan (counted by the progress handler).
TEST_F(StoreTest, RowsWaitingForTheirTimeCostTheClaimNothing) {
  feeder.db.exec("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 20000) "
                 "INSERT INTO jobs(model, input, not_before) SELECT 'm/a', '{}', '" + in(86400) + "' FROM n");
  const int64_t ready = feeder.insert("INSERT INTO jobs(model, input) VALUES ('m/a', '{}')");
  int64_t ticks = 0;  // one per 100 virtual-machine instructions
  sqlite3_progress_handler(
      store->db().handle(), 100,
      [](void* p) {
        ++*static_cast<int64_t*>(p);
        return 0;
      },
      &ticks);
  auto r = store->claim(now(), 64, accept_all());
  auto next = store->next_wakeup(now());
  sqlite3_progress_handler(store->db().handle(), 0, nullptr, nullptr);
  ASSERT_EQ(r.value.claimed.size(), 1u);
  EXPECT_EQ(r.value.claimed[0].id, ready);
  EXPECT_TRUE(next);
  EXPECT_LT(ticks, 100) << "claim + next_wakeup ran " << ticks * 100 << "+ instructions";
}

TEST_F(StoreTest, PlainInsertWithModelAndInputIsAValidClaimableRow) {
  // A feeder using the bare sqlite3 API with its defaults: no pragmas, no busy timeout.
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &raw), SQLITE_OK);
  char* err = nullptr;
  const int rc = sqlite3_exec(
      raw, "INSERT INTO jobs(model, input) VALUES ('black-forest-labs/flux-schnell', '{\"prompt\":\"a cat\"}')",
      nullptr, nullptr, &err);
  EXPECT_EQ(rc, SQLITE_OK) << (err ? err : "");
  sqlite3_free(err);
  const int64_t id = sqlite3_last_insert_rowid(raw);
  sqlite3_close(raw);

  auto row = store->get(id);
  ASSERT_TRUE(row);
  EXPECT_EQ(row->status, JobStatus::queued);
  EXPECT_EQ(row->model.value(), "black-forest-labs/flux-schnell");
  EXPECT_EQ(row->input, R"({"prompt":"a cat"})");
  EXPECT_EQ(row->priority, 0);
  EXPECT_EQ(row->attempts, 0);
  EXPECT_FALSE(row->cancel_requested);
  EXPECT_FALSE(row->version || row->not_before || row->timeout_s || row->cost_credits || row->updated_at);
  ASSERT_TRUE(parse_utc(row->created_at)) << row->created_at;
  EXPECT_EQ(row->created_at.size(), 24u);
  EXPECT_EQ(row->created_at.back(), 'Z');
  EXPECT_LT(std::chrono::abs(*parse_utc(row->created_at) - std::chrono::system_clock::now()), std::chrono::minutes(1));

  auto claimed = store->claim(now(), 10, accept_all());
  ASSERT_TRUE(claimed);
  ASSERT_EQ(claimed.value.claimed.size(), 1u);
  EXPECT_EQ(claimed.value.claimed[0].status, JobStatus::submitting);
  EXPECT_EQ(store->get(id)->status, JobStatus::submitting);
  EXPECT_TRUE(store->get(id)->submitted_at);
}

TEST_F(StoreTest, CheckConstraintsGiveTheFeederAClearError) {
  auto expect_refused = [&](const std::string& sql, const std::string& constraint) {
    try {
      feeder.insert(sql);
      FAIL() << "accepted: " << sql;
    } catch (const DbError& e) {
      EXPECT_NE(std::string(e.what()).find("CHECK constraint failed: " + constraint), std::string::npos) << e.what();
    }
  };
  expect_refused("INSERT INTO jobs(model, input) VALUES ('m/x', 'not json')", "input_must_be_valid_json");
  expect_refused("INSERT INTO jobs(model, input, priority) VALUES ('m/x', '{}', 'high')", "priority_must_be_an_integer");
  expect_refused("INSERT INTO jobs(model, input, status) VALUES ('m/x', '{}', 'done')", "status_must_be_a_known_state");
  expect_refused("INSERT INTO jobs(model, input, timeout_s) VALUES ('m/x', '{}', -5)",
                 "timeout_s_must_be_a_positive_integer");
  expect_refused("INSERT INTO jobs(model, input, not_before) VALUES ('m/x', '{}', 'tomorrow')",
                 "not_before_must_be_a_utc_time");
  expect_refused("INSERT INTO jobs(model, input, cancel_requested) VALUES ('m/x', '{}', 2)",
                 "cancel_requested_must_be_0_or_1");
  expect_refused("INSERT INTO jobs(model, input, timeout_s) VALUES ('m/x', '{}', 1.5)",
                 "timeout_s_must_be_a_positive_integer");
  EXPECT_THROW(feeder.insert("INSERT INTO jobs(model) VALUES ('m/x')"), DbError);  // input NOT NULL
  // Not refused here: SPEC §2 has the daemon fail these rows with a clear error.
  feeder.insert("INSERT INTO jobs(input) VALUES ('[1]')");
  feeder.insert("INSERT INTO jobs(model, input, not_before, priority) VALUES ('m/x', '{}', '2026-11-25T10:00:00Z', -3)");
}

TEST_F(StoreTest, ClaimsByPriorityThenIdAndHonoursNotBeforeAndRetryTime) {
  int64_t a = feeder.insert("INSERT INTO jobs(model, input) VALUES ('m/a', '{}')");
  int64_t b = feeder.insert("INSERT INTO jobs(model, input, priority) VALUES ('m/b', '{}', 5)");
  int64_t c = feeder.insert("INSERT INTO jobs(model, input) VALUES ('m/c', '{}')");
  int64_t later = feeder.insert("INSERT INTO jobs(model, input, not_before) VALUES ('m/d', '{}', '" + in(3600) + "')");
  auto r = store->claim(now(), 2, accept_all());
  ASSERT_EQ(r.value.claimed.size(), 2u);
  EXPECT_EQ(r.value.claimed[0].id, b);
  EXPECT_EQ(r.value.claimed[1].id, a);
  r = store->claim(now(), 10, accept_all());
  ASSERT_EQ(r.value.claimed.size(), 1u);
  EXPECT_EQ(r.value.claimed[0].id, c);
  EXPECT_EQ(store->next_wakeup(now()).value().substr(0, 16), in(3600).substr(0, 16));
  EXPECT_TRUE(store->claim(in(3601), 10, accept_all()).value.claimed.size() == 1);
  EXPECT_EQ(store->get(later)->status, JobStatus::submitting);

  // A retry waits for its next attempt time.
  Transition back{.job_id = c, .from = JobStatus::submitting, .to = JobStatus::queued, .next_attempt_at = in(60)};
  ASSERT_TRUE(store->apply(std::span(&back, 1)).value[0]);
  EXPECT_TRUE(store->claim(now(), 10, accept_all()).value.claimed.empty());
  EXPECT_EQ(store->claim(in(61), 10, accept_all()).value.claimed.size(), 1u);
}

TEST_F(StoreTest, InvalidRowsGoStraightToFailedInsideTheClaim) {
  int64_t bad = feeder.insert("INSERT INTO jobs(model, input) VALUES ('nobody/nothing', '{}')");
  int64_t good = feeder.insert("INSERT INTO jobs(model, input) VALUES ('m/ok', '{}')");
  auto r = store->claim(now(), 10, [](const JobRow& row) -> std::optional<std::string> {
    if (row.model == "nobody/nothing") return "model nobody/nothing is not in the catalog";
    return std::nullopt;
  });
  ASSERT_EQ(r.value.rejected.size(), 1u);
  ASSERT_EQ(r.value.claimed.size(), 1u);
  auto row = store->get(bad);
  EXPECT_EQ(row->status, JobStatus::failed);
  EXPECT_EQ(row->error.value(), "model nobody/nothing is not in the catalog");
  EXPECT_EQ(row->cost_credits.value(), 0);
  EXPECT_TRUE(row->completed_at);
  EXPECT_EQ(store->get(good)->status, JobStatus::submitting);
}

TEST_F(StoreTest, TransitionsAreCompareAndSetAndStampTimes) {
  int64_t id = feeder.insert("INSERT INTO jobs(model, input) VALUES ('m/a', '{}')");
  store->claim(now(), 1, accept_all());
  std::vector<Transition> batch{
      {.job_id = id, .from = JobStatus::submitting, .to = JobStatus::starting, .prediction_id = "p1",
       .count_attempt = true},
      {.job_id = id, .from = JobStatus::starting, .to = JobStatus::processing},
      {.job_id = id, .from = JobStatus::processing, .to = JobStatus::succeeded, .output = R"(["u"])", .units = 1,
       .cost_credits = 75, .predict_time_s = 0.8},
  };
  auto r = store->apply(batch);
  ASSERT_TRUE(r);
  EXPECT_EQ(r.value, (std::vector<bool>{true, true, true}));
  auto row = store->get(id).value();
  EXPECT_EQ(row.status, JobStatus::succeeded);
  EXPECT_EQ(row.prediction_id.value(), "p1");
  EXPECT_EQ(row.output.value(), R"(["u"])");
  EXPECT_EQ(row.cost_credits.value(), 75);
  EXPECT_EQ(row.attempts, 1);
  EXPECT_DOUBLE_EQ(row.predict_time_s.value(), 0.8);
  EXPECT_TRUE(row.started_at && row.completed_at && row.updated_at);

  // The terminal state is written once: a second terminal transition does not match.
  Transition again{.job_id = id, .from = JobStatus::processing, .to = JobStatus::failed, .error = "late"};
  EXPECT_FALSE(store->apply(std::span(&again, 1)).value[0]);
  EXPECT_EQ(store->get(id)->status, JobStatus::succeeded);
  // A deleted row does not match either.
  Transition gone{.job_id = 999, .from = JobStatus::processing, .to = JobStatus::failed};
  EXPECT_FALSE(store->apply(std::span(&gone, 1)).value[0]);
}

TEST_F(StoreTest, FailedAndCanceledAreNotBilled) {
  int64_t id = feeder.insert("INSERT INTO jobs(model, input) VALUES ('m/a', '{}')");
  store->claim(now(), 1, accept_all());
  Transition t{.job_id = id, .from = JobStatus::submitting, .to = JobStatus::canceled, .error = "timed out"};
  store->apply(std::span(&t, 1));
  EXPECT_EQ(store->get(id)->cost_credits.value(), 0);
}

TEST_F(StoreTest, CancelRequestsFromAnotherProcess) {
  int64_t queued = feeder.insert("INSERT INTO jobs(model, input) VALUES ('m/a', '{}')");
  int64_t active = feeder.insert("INSERT INTO jobs(model, input) VALUES ('m/b', '{}')");
  store->changed_by_others();
  store->claim(now(), 1, [&](const JobRow&) { return std::nullopt; });  // claims `queued` (lower id)
  // Swap roles: cancel the claimed one and the still-queued one.
  feeder.db.exec("UPDATE jobs SET cancel_requested = 1");
  EXPECT_TRUE(store->changed_by_others());
  EXPECT_FALSE(store->changed_by_others());
  auto canceled = store->cancel_queued("canceled on request before submission");
  ASSERT_TRUE(canceled);
  EXPECT_EQ(canceled.value, std::vector<int64_t>{active});
  EXPECT_EQ(store->get(active)->status, JobStatus::canceled);
  EXPECT_EQ(store->get(active)->error.value(), "canceled on request before submission");
  EXPECT_EQ(store->active_cancel_requests(), std::vector<int64_t>{queued});
  EXPECT_EQ(store->active_jobs().size(), 1u);
  EXPECT_TRUE(store->claim(now(), 10, accept_all()).value.claimed.empty());
}

TEST_F(StoreTest, ABusyDatabaseIsReportedNotWaitedFor) {
  feeder.insert("INSERT INTO jobs(model, input) VALUES ('m/a', '{}')");
  const int64_t doomed = feeder.insert("INSERT INTO jobs(model, input, cancel_requested) VALUES ('m/a', '{}', 1)");
  feeder.db.exec("BEGIN IMMEDIATE");
  const auto start = std::chrono::steady_clock::now();
  auto r = store->claim(now(), 10, accept_all());
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(r.busy);
  EXPECT_LT(took, std::chrono::milliseconds(200));
  Transition t{.job_id = 1, .from = JobStatus::queued, .to = JobStatus::failed};
  EXPECT_TRUE(store->apply(std::span(&t, 1)).busy);
  EXPECT_TRUE(store->cancel_queued("canceled").busy);
  EXPECT_THROW(store->insert({.model = "m/b", .input = "{}"}), BusyError);
  EXPECT_THROW(store->request_cancel(1), BusyError);
  // Reads still work while another process writes.
  EXPECT_EQ(store->get(1)->status, JobStatus::queued);
  feeder.db.exec("COMMIT");
  r = store->claim(now(), 10, accept_all());
  ASSERT_FALSE(r.busy);
  EXPECT_EQ(r.value.claimed.size(), 1u);  // nothing was lost
  EXPECT_EQ(store->cancel_queued("canceled").value, std::vector<int64_t>{doomed});
}

TEST_F(StoreTest, ClaimsWhileAnotherProcessInsertsAndCancels) {
  int claimed = 0, canceled = 0;
  int64_t inserted = 0;
  for (int round = 0; round < 50; ++round) {
    for (int i = 0; i < 7; ++i) {
      feeder.insert("INSERT INTO jobs(model, input, priority) VALUES ('m/a', '{}', " + std::to_string(i % 3) + ")");
      ++inserted;
    }
    feeder.db.exec("UPDATE jobs SET cancel_requested = 1 WHERE id % 5 = 0 AND status = 'queued'");
    auto c = store->cancel_queued("canceled");
    canceled += static_cast<int>(c.value.size());
    auto r = store->claim(now(), 4, accept_all());
    claimed += static_cast<int>(r.value.claimed.size());
  }
  for (;;) {
    auto r = store->claim(now(), 100, accept_all());
    if (r.value.claimed.empty()) break;
    claimed += static_cast<int>(r.value.claimed.size());
  }
  canceled += static_cast<int>(store->cancel_queued("canceled").value.size());
  auto st = store->stats(now());
  EXPECT_EQ(claimed + canceled, inserted);
  EXPECT_EQ(st.by_status[static_cast<int>(JobStatus::queued)], 0);
  EXPECT_EQ(st.by_status[static_cast<int>(JobStatus::submitting)], claimed);
}

TEST_F(StoreTest, StatsCountCreditsTodayAndAllTime) {
  int64_t id = feeder.insert("INSERT INTO jobs(model, input) VALUES ('m/a', '{}')");
  feeder.insert("INSERT INTO jobs(model, input) VALUES ('m/a', '{}')");
  store->claim(now(), 1, accept_all());
  Transition t{.job_id = id, .from = JobStatus::submitting, .to = JobStatus::succeeded, .output = "[]", .units = 2,
               .cost_credits = 150};
  store->apply(std::span(&t, 1));
  feeder.db.exec("INSERT INTO jobs(model, input, status, cost_credits, completed_at) "
                 "VALUES ('m/a', '{}', 'succeeded', 1000, '2020-01-01T00:00:00.000Z')");
  auto st = store->stats(now());
  EXPECT_EQ(st.credits_today, 150);
  EXPECT_EQ(st.credits_all_time, 1150);
  EXPECT_EQ(st.by_status[static_cast<int>(JobStatus::succeeded)], 2);
  EXPECT_TRUE(st.oldest_queued_age_s);
}

TEST_F(StoreTest, ReadingTheSchemaVersionDoesNotPinAStaleSnapshot) {
  // Regression: predictd logs schema_version() at start; a statement left on
  // its row made every later claim busy once a feeder committed.
  EXPECT_EQ(store->schema_version(), schema_files().back().version);
  feeder.insert("INSERT INTO jobs(model, input) VALUES ('m/a', '{}')");
  auto r = store->claim(now(), 10, accept_all());
  EXPECT_FALSE(r.busy);
  EXPECT_EQ(r.value.claimed.size(), 1u);
  EXPECT_TRUE(store->get(1));
  feeder.insert("INSERT INTO jobs(model, input) VALUES ('m/a', '{}')");
  EXPECT_FALSE(store->claim(now(), 10, accept_all()).busy);
}

TEST_F(StoreTest, AStaleTransitionIsRefusedAndChangesNothing) {
  int64_t id = feeder.insert("INSERT INTO jobs(model, input) VALUES ('m/a', '{}')");
  store->claim(now(), 1, accept_all());
  Transition start{.job_id = id, .from = JobStatus::submitting, .to = JobStatus::processing, .prediction_id = "p1"};
  ASSERT_TRUE(store->apply(std::span(&start, 1)).value[0]);
  const auto before = store->get(id).value();
  // Written by someone who still believes the row is submitting.
  std::vector<Transition> stale{
      {.job_id = id, .from = JobStatus::submitting, .to = JobStatus::failed, .error = "stale", .cost_credits = 9},
      {.job_id = id, .from = JobStatus::processing, .to = JobStatus::succeeded, .output = R"(["u"])", .units = 1,
       .cost_credits = 75},
  };
  auto r = store->apply(stale);
  ASSERT_TRUE(r);
  EXPECT_EQ(r.value, (std::vector<bool>{false, true}));  // one batch: the stale one alone is skipped
  auto row = store->get(id).value();
  EXPECT_EQ(row.status, JobStatus::succeeded);
  EXPECT_FALSE(row.error);
  EXPECT_EQ(row.cost_credits.value(), 75);
  EXPECT_EQ(row.started_at, before.started_at);  // stamped once, on processing
}

TEST_F(StoreTest, ARowDeletedInFlightYieldsFalse) {
  int64_t id = feeder.insert("INSERT INTO jobs(model, input) VALUES ('m/a', '{}')");
  ASSERT_EQ(store->claim(now(), 1, accept_all()).value.claimed.size(), 1u);
  feeder.db.exec("DELETE FROM jobs WHERE id = " + std::to_string(id));
  Transition t{.job_id = id, .from = JobStatus::submitting, .to = JobStatus::starting, .prediction_id = "p"};
  auto r = store->apply(std::span(&t, 1));
  ASSERT_TRUE(r);
  EXPECT_EQ(r.value, std::vector<bool>{false});
  EXPECT_FALSE(store->get(id));
  EXPECT_TRUE(store->active_jobs().empty());
}

TEST_F(StoreTest, RetryGoesBackToQueuedAndCountsAttempts) {
  int64_t id = feeder.insert("INSERT INTO jobs(model, input) VALUES ('m/a', '{}')");
  store->claim(now(), 1, accept_all());
  Transition retry{.job_id = id, .from = JobStatus::submitting, .to = JobStatus::queued, .error = "HTTP 503",
                   .count_attempt = true, .next_attempt_at = in(30)};
  ASSERT_TRUE(store->apply(std::span(&retry, 1)).value[0]);
  auto row = store->get(id).value();
  EXPECT_EQ(row.status, JobStatus::queued);
  EXPECT_EQ(row.attempts, 1);
  EXPECT_FALSE(row.completed_at);
  EXPECT_EQ(store->next_wakeup(now()).value(), retry.next_attempt_at.value());
  EXPECT_TRUE(store->claim(now(), 10, accept_all()).value.claimed.empty());
  auto again = store->claim(in(31), 10, accept_all());
  ASSERT_EQ(again.value.claimed.size(), 1u);
  EXPECT_EQ(again.value.claimed[0].submitted_at, row.submitted_at);  // the first submission's time stays
  EXPECT_FALSE(store->next_wakeup(in(31)));
}

TEST_F(StoreTest, OwnWritesAreNotChangesByOthers) {
  store->changed_by_others();
  EXPECT_FALSE(store->changed_by_others());
  store->insert({.model = "m/a", .input = "{}"});
  store->claim(now(), 10, accept_all());
  EXPECT_FALSE(store->changed_by_others());
  feeder.insert("INSERT INTO jobs(model, input) VALUES ('m/a', '{}')");
  EXPECT_TRUE(store->changed_by_others());
}

TEST_F(StoreTest, InsertListRequestCancelAndGet) {
  int64_t a = store->insert({.model = "m/a", .input = R"({"p":1})", .priority = 2, .timeout_s = 60});
  int64_t b = store->insert({.version = std::string(64, 'a'), .input = "{}", .not_before = "2026-11-25T10:00:00Z"});
  int64_t c = store->insert({.model = "m/c", .input = "{}"});
  auto row = store->get(b).value();
  EXPECT_EQ(row.version.value(), std::string(64, 'a'));
  EXPECT_FALSE(row.model);
  EXPECT_EQ(row.not_before.value(), "2026-11-25T10:00:00Z");
  EXPECT_EQ(store->get(a)->timeout_s.value(), 60);
  EXPECT_FALSE(store->get(999));

  auto rows = store->list(std::nullopt, 2);  // newest first
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].id, c);
  EXPECT_EQ(rows[1].id, b);

  EXPECT_TRUE(store->request_cancel(c));
  EXPECT_TRUE(store->get(c)->cancel_requested);
  EXPECT_FALSE(store->request_cancel(999));  // unknown
  store->cancel_queued("canceled");
  EXPECT_FALSE(store->request_cancel(c));  // finished
  rows = store->list(JobStatus::canceled, 10);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].id, c);
  EXPECT_EQ(store->list(JobStatus::queued, 10).size(), 2u);
  EXPECT_THROW(store->insert({.model = "m/a", .input = "nope"}), DbError);
}

TEST(StoreOpen, AMissingFileIsAnErrorWithoutCreate) {
  test::TempDir dir;
  EXPECT_THROW(Store::open(dir.file("missing.db"), false), DbError);
  EXPECT_FALSE(std::filesystem::exists(dir.file("missing.db")));
}

TEST(StoreOpen, TwoProcessesRacingToCreateAndMigrateBothSucceed) {
  // predictctl init and predictd start at once on a new file.
  for (int round = 0; round < 10; ++round) {
    test::TempDir dir;
    const std::string path = dir.file("jobs.db");
    std::vector<std::string> errors(4);
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < errors.size(); ++i)
      threads.emplace_back([&, i] {
        try {
          auto s = Store::open(path);
          if (s->schema_version() != schema_files().back().version) errors[i] = "wrong version";
        } catch (const std::exception& e) {
          errors[i] = e.what();
        }
      });
    for (auto& t : threads) t.join();
    for (const auto& e : errors) EXPECT_EQ(e, "");
    Db db(path);
    Stmt s(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'jobs'");
    ASSERT_TRUE(s.step());
    EXPECT_EQ(s.get_int(0), 1);
  }
}

TEST(StoreOpen, WaitsForAWriterAtStartInsteadOfFailing) {
  test::TempDir dir;
  const std::string path = dir.file("jobs.db");
  Store::open(path);
  Db other(path, 5);
  other.exec("PRAGMA user_version = 0");  // forces a migration on the next open
  other.exec("BEGIN IMMEDIATE");
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    other.exec("COMMIT");
  });
  auto s = Store::open(path);
  release.join();
  EXPECT_EQ(s->schema_version(), schema_files().back().version);
}
