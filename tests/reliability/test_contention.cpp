// Suite 5, contention: one process holds the write lock for 5 s while another
// inserts 10,000 rows in bursts. The loop keeps polling (its lag stays under
// 100 ms), nothing is lost, and `database is locked` never fails a job.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "engine_rig.h"
#include "process.h"
#include "sim_server.h"
#include "soak_common.h"

using namespace predictd;
using namespace std::chrono_literals;

namespace {
constexpr const char* kSqlite3 = "/usr/bin/sqlite3";
}

TEST(Contention, WriteLockHeldFiveSecondsWhileTenThousandRowsArriveInBursts) {
  if (!std::filesystem::exists(kSqlite3)) GTEST_SKIP() << "needs the sqlite3 command (apt install sqlite3)";
  const int rows = test::env_int("CONTENTION_ROWS", 10000);
  const int burst = 500;

  test::EngineRig rig;
  sim::Options so;
  so.profile = sim::Profile::realistic;
  so.cold_start_rate = 0;
  so.failure_rate = 0;
  so.time_scale = 20;  // video-01: ~15 s, so its polls span the lock
  so.tls_cert_pem = rig.pem.cert_pem;
  so.tls_key_pem = rig.pem.key_pem;
  sim::Server sim(so);
  rig.point_at(sim.start());
  rig.config.limits = {.max_in_flight = 256, .creates_per_minute = 1000000, .requests_per_minute = 1000000};
  rig.config.api.max_connections = 16;
  rig.http_settings.max_connections = 16;
  std::vector<ModelEntry> models = Catalog::defaults().entries();
  for (auto& m : models) m.expected_s /= so.time_scale;
  rig.config.models = Catalog(models);
  for (int i = 0; i < 20; ++i)
    rig.insert("INSERT INTO jobs(model, input) VALUES ('minimax/video-01', '{\"prompt\":\"long " + std::to_string(i) +
               "\"}')");
  rig.start();
  ASSERT_TRUE(rig.run_until([&] { return rig.engine->counters().polls_sent > 0; }, 30s));

  const double lag_before = rig.engine->counters().max_loop_lag_ms;
  // The marker appears once BEGIN IMMEDIATE holds the lock (the CLI's own
  // output is buffered until it exits).
  const std::string marker = rig.dir.file("lock.held");
  test::Process holder({kSqlite3, rig.db_path, ".timeout 5000", "BEGIN IMMEDIATE", ".shell touch " + marker,
                        ".shell sleep 5", "COMMIT"},
                       {}, rig.dir.file("lock.out"));
  ASSERT_TRUE(rig.run_until([&] { return std::filesystem::exists(marker); }, 10s));
  const auto locked_at = std::chrono::steady_clock::now();
  const auto polls_before = rig.engine->counters().polls_sent;

  // The second feeder waits for the lock, then inserts in bursts.
  std::vector<std::string> args = {kSqlite3, rig.db_path, ".timeout 30000"};
  for (int done = 0; done < rows; done += burst) {
    std::ostringstream sql;
    sql << "WITH RECURSIVE n(x) AS (SELECT " << done + 1 << " UNION ALL SELECT x + 1 FROM n WHERE x < "
        << std::min(rows, done + burst) << ") INSERT INTO jobs(model, input) "
        << "SELECT 'black-forest-labs/flux-schnell', json_object('prompt', 'burst ' || x) FROM n";
    args.push_back(sql.str());
    args.push_back(".shell sleep 0.1");
  }
  test::Process inserter(args, {}, rig.dir.file("insert.out"));

  // Cheap conditions only: the lag timer must measure the engine, not the test.
  ASSERT_TRUE(rig.run_until([&] { return !holder.running(); }, 15s));
  const auto held = std::chrono::steady_clock::now() - locked_at;
  const auto polls_during_lock = rig.engine->counters().polls_sent - polls_before;
  const auto busy_during_lock = rig.engine->counters().db_busy;
  const double lag_lock = rig.engine->counters().max_loop_lag_ms;
  ASSERT_TRUE(rig.run_until([&] { return !inserter.running(); }, 60s));
  EXPECT_EQ(inserter.wait(1s).value_or(-1), 0) << test::read_file(rig.dir.file("insert.out"));
  int64_t unfinished = -1;
  auto last_check = std::chrono::steady_clock::now();
  ASSERT_TRUE(rig.run_until(
      [&] {
        if (std::chrono::steady_clock::now() - last_check < 500ms) return false;
        last_check = std::chrono::steady_clock::now();
        Stmt s(*rig.feeder, "SELECT count(*) FROM jobs WHERE status NOT IN ('succeeded', 'failed', 'canceled')");
        s.step();
        unfinished = s.get_int(0);
        return unfinished == 0;
      },
      180s))
      << unfinished << " unfinished";

  const auto c = rig.engine->counters();
  Stmt count(*rig.feeder,
             "SELECT count(*), sum(status = 'succeeded'), sum(error LIKE '%locked%' OR error LIKE '%busy%') FROM jobs");
  count.step();
  EXPECT_EQ(count.get_int(0), rows + 20);
  EXPECT_EQ(count.get_int(1), rows + 20);  // nothing failed: no `database is locked` escaped
  EXPECT_EQ(count.get_int(2), 0);
  EXPECT_GE(std::chrono::duration_cast<std::chrono::milliseconds>(held).count(), 4500);
  EXPECT_GT(polls_during_lock, 0u) << "the loop stopped polling while the database was locked";
  EXPECT_GT(busy_during_lock, 0u) << "the engine never met the lock: the test proved nothing";
  // 100 ms is the target, met on a quiet machine (RELIABILITY_FULL=1 asserts it).
  // On a loaded CI runner the scheduler alone can delay a thread that long, so
  // the short form asserts only what a loop blocked by the lock would break.
  const double lag_bound = test::full_length() ? 100.0 : 1000.0;
  EXPECT_LE(c.max_loop_lag_ms, lag_bound);
  EXPECT_EQ(sim.stats().duplicate_creates, 0);
  std::cout << "figures: rows=" << rows + 20 << " lock_held_ms="
            << std::chrono::duration_cast<std::chrono::milliseconds>(held).count()
            << " polls_during_lock=" << polls_during_lock << " db_busy=" << c.db_busy
            << " max_loop_lag_ms=" << c.max_loop_lag_ms << " (before the lock " << lag_before
            << ", until it ended " << lag_lock << ")\n";
  sim.stop();
}
