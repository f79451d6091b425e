#include <gtest/gtest.h>

#include <sqlite3.h>

#include <chrono>

#include "sqlite.h"
#include "test_util.h"

using namespace predictd;

namespace {

struct SqliteTest : ::testing::Test {
  test::TempDir dir;
  std::string path = dir.file("t.db");
  Db db{path};
  void SetUp() override { db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER, x REAL, s TEXT)"); }

  std::string pragma(const std::string& name) {
    Stmt s(db, "PRAGMA " + name);
    EXPECT_TRUE(s.step());
    return s.get_text(0);
  }
};

}  // namespace

TEST_F(SqliteTest, OpensInWalWithNormalSyncAndForeignKeys) {
  EXPECT_EQ(pragma("journal_mode"), "wal");
  EXPECT_EQ(pragma("synchronous"), "1");  // NORMAL
  EXPECT_EQ(pragma("foreign_keys"), "1");
}

TEST_F(SqliteTest, BindsAndReadsEveryTypeIncludingNull) {
  Stmt ins(db, "INSERT INTO t(n, x, s) VALUES (?1, ?2, ?3)");
  ins.bind(1, int64_t{1} << 40).bind(2, 2.5).bind(3, std::string("héllo"));
  EXPECT_FALSE(ins.step());
  ins.reset();
  ins.bind(1, std::optional<int64_t>()).bind(2, std::optional<double>()).bind(3, std::optional<std::string>());
  EXPECT_FALSE(ins.step());
  EXPECT_EQ(db.last_insert_rowid(), 2);
  EXPECT_EQ(db.changes(), 1);

  Stmt sel(db, "SELECT n, x, s FROM t ORDER BY id");
  ASSERT_TRUE(sel.step());
  EXPECT_EQ(sel.get_int(0), int64_t{1} << 40);
  EXPECT_DOUBLE_EQ(sel.get_double(1), 2.5);
  EXPECT_EQ(sel.get_text(2), "héllo");
  EXPECT_EQ(sel.opt_int(0), std::optional<int64_t>(int64_t{1} << 40));
  ASSERT_TRUE(sel.step());
  EXPECT_TRUE(sel.is_null(0));
  EXPECT_EQ(sel.opt_int(0), std::nullopt);
  EXPECT_EQ(sel.opt_double(1), std::nullopt);
  EXPECT_EQ(sel.opt_text(2), std::nullopt);
  EXPECT_FALSE(sel.step());
}

TEST_F(SqliteTest, TextWithEmbeddedNulSurvives) {
  Stmt ins(db, "INSERT INTO t(s) VALUES (?1)");
  ins.bind(1, std::string_view("a\0b", 3)).step();
  Stmt sel(db, "SELECT s FROM t");
  ASSERT_TRUE(sel.step());
  EXPECT_EQ(sel.get_text(0), std::string("a\0b", 3));
}

TEST_F(SqliteTest, BindsByName) {
  Stmt ins(db, "INSERT INTO t(n, s) VALUES (:n, :s)");
  ins.bind(":n", 7).bind(":s", "seven").step();
  Stmt sel(db, "SELECT s FROM t WHERE n = :n");
  sel.bind(":n", int64_t{7});
  ASSERT_TRUE(sel.step());
  EXPECT_EQ(sel.get_text(0), "seven");
  try {
    sel.bind(":nope", 1);
    FAIL();
  } catch (const DbError& e) {
    EXPECT_EQ(e.code(), SQLITE_RANGE);
    EXPECT_EQ(std::string(e.what()), "no parameter :nope in SELECT s FROM t WHERE n = :n");
  }
}

TEST_F(SqliteTest, CachedStatementsAreReusedAndResetWhenTheHandleGoesAway) {
  db.exec("INSERT INTO t(n) VALUES (1), (2)");
  Stmt* first = nullptr;
  {
    auto s = db.cached("SELECT n FROM t ORDER BY n");
    first = &*s;
    ASSERT_TRUE(s->step());  // left on a row on purpose
  }
  // Had the statement stayed on its row, its WAL snapshot would now be stale
  // and BEGIN IMMEDIATE would fail with SQLITE_BUSY_SNAPSHOT.
  Db other(path, 5);
  other.exec("INSERT INTO t(n) VALUES (3)");
  Tx tx(db);
  tx.commit();

  auto again = db.cached("SELECT n FROM t ORDER BY n");
  EXPECT_EQ(&*again, first);
  ASSERT_TRUE(again->step());
  EXPECT_EQ(again->get_int(0), 1);
}

TEST_F(SqliteTest, ErrorsCarryTheExtendedCode) {
  db.exec("CREATE TABLE c(v INTEGER CONSTRAINT v_positive CHECK (v > 0))");
  try {
    Stmt(db, "INSERT INTO c VALUES (-1)").step();
    FAIL();
  } catch (const DbError& e) {
    EXPECT_EQ(e.code(), SQLITE_CONSTRAINT_CHECK);
    EXPECT_EQ(std::string(e.what()), "step: CHECK constraint failed: v_positive");
  }
  try {
    db.exec("SELEKT 1");
    FAIL();
  } catch (const DbError& e) {
    EXPECT_EQ(e.code(), SQLITE_ERROR);
    EXPECT_EQ(std::string(e.what()), "near \"SELEKT\": syntax error");
  }
  EXPECT_THROW(Stmt(db, "SELECT nope FROM t"), DbError);
}

TEST_F(SqliteTest, MissingFileWithoutCreateIsAnError) {
  try {
    Db missing(dir.file("missing.db"), 5, false);
    FAIL();
  } catch (const DbError& e) {
    EXPECT_EQ(e.code() & 0xff, SQLITE_CANTOPEN);
  }
}

TEST_F(SqliteTest, TxRollsBackUnlessCommitted) {
  {
    Tx tx(db);
    db.exec("INSERT INTO t(n) VALUES (1)");
  }
  {
    Tx tx(db);
    db.exec("INSERT INTO t(n) VALUES (2)");
    tx.commit();
  }
  try {
    Tx tx(db);
    db.exec("INSERT INTO t(n) VALUES (3)");
    throw std::runtime_error("boom");
  } catch (const std::runtime_error&) {
  }
  Stmt s(db, "SELECT group_concat(n) FROM t");
  ASSERT_TRUE(s.step());
  EXPECT_EQ(s.get_text(0), "2");
}

TEST_F(SqliteTest, ALockedDatabaseIsBusyQuicklyAndNothingIsWritten) {
  Db other(path, 5);
  other.exec("BEGIN IMMEDIATE");
  const auto start = std::chrono::steady_clock::now();
  try {
    Tx tx(db);
    FAIL() << "BEGIN IMMEDIATE succeeded while another connection holds the write lock";
  } catch (const BusyError& e) {
    EXPECT_EQ(e.code(), SQLITE_BUSY);
  }
  EXPECT_THROW(db.exec("INSERT INTO t(n) VALUES (1)"), BusyError);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(200));
  other.exec("COMMIT");
  Tx tx(db);  // free again
  tx.commit();
  Stmt s(db, "SELECT count(*) FROM t");
  ASSERT_TRUE(s.step());
  EXPECT_EQ(s.get_int(0), 0);
}
