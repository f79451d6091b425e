#include "sqlite.h"

#include <sqlite3.h>

namespace predictd {

namespace {
bool is_busy(int rc) {
  const int primary = rc & 0xff;
  return primary == SQLITE_BUSY || primary == SQLITE_LOCKED;
}
}  // namespace

Db::Db(const std::string& path, int busy_timeout_ms, bool create) {
  const int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX;
  int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    sqlite3_close(db_);
    db_ = nullptr;
    throw DbError("cannot open " + path + ": " + msg, rc);
  }
  sqlite3_extended_result_codes(db_, 1);
  set_busy_timeout(busy_timeout_ms);
  try {
    // Switching a new file to WAL takes an exclusive lock: this may be busy.
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=NORMAL");
    exec("PRAGMA foreign_keys=ON");
  } catch (...) {
    sqlite3_close(db_);  // the destructor does not run for a throwing constructor
    throw;
  }
}

Db::~Db() {
  cache_.clear();
  sqlite3_close(db_);
}

void Db::fail(int rc, std::string_view what) const {
  std::string msg = std::string(what) + ": " + sqlite3_errmsg(db_);
  if (is_busy(rc)) throw BusyError(msg, rc);
  throw DbError(msg, rc);
}

void Db::exec(std::string_view sql) {
  std::string s(sql);
  char* err = nullptr;
  int rc = sqlite3_exec(db_, s.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    if (is_busy(rc)) throw BusyError(msg, rc);
    throw DbError(msg, rc);
  }
}

CachedStmt Db::cached(std::string_view sql) {
  auto it = cache_.find(sql);
  if (it == cache_.end()) it = cache_.emplace(std::string(sql), std::make_unique<Stmt>(*this, sql)).first;
  it->second->reset();
  return CachedStmt(*it->second);
}

void Db::set_busy_timeout(int ms) { sqlite3_busy_timeout(db_, ms); }
int64_t Db::changes() const { return sqlite3_changes64(db_); }
int64_t Db::last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }

Stmt::Stmt(Db& db, std::string_view sql) : db_(db) {
  int rc = sqlite3_prepare_v3(db.handle(), sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                              &stmt_, nullptr);
  if (rc != SQLITE_OK) db_.fail(rc, "prepare");
}

Stmt::~Stmt() { sqlite3_finalize(stmt_); }

Stmt& Stmt::bind(int index, int64_t v) {
  if (int rc = sqlite3_bind_int64(stmt_, index, v); rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}
Stmt& Stmt::bind(int index, double v) {
  if (int rc = sqlite3_bind_double(stmt_, index, v); rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}
Stmt& Stmt::bind(int index, std::string_view v) {
  if (int rc = sqlite3_bind_text64(stmt_, index, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8); rc != SQLITE_OK)
    db_.fail(rc, "bind");
  return *this;
}
Stmt& Stmt::bind_null(int index) {
  if (int rc = sqlite3_bind_null(stmt_, index); rc != SQLITE_OK) db_.fail(rc, "bind");
  return *this;
}

int Stmt::param(std::string_view name) const {
  const int i = sqlite3_bind_parameter_index(stmt_, std::string(name).c_str());
  if (i == 0) throw DbError("no parameter " + std::string(name) + " in " + sqlite3_sql(stmt_), SQLITE_RANGE);
  return i;
}

bool Stmt::step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  sqlite3_reset(stmt_);
  db_.fail(rc, "step");
}

void Stmt::reset() noexcept {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

bool Stmt::is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
int64_t Stmt::get_int(int col) const { return sqlite3_column_int64(stmt_, col); }
double Stmt::get_double(int col) const { return sqlite3_column_double(stmt_, col); }
std::string Stmt::get_text(int col) const {
  auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
  return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
}
std::optional<int64_t> Stmt::opt_int(int col) const {
  return is_null(col) ? std::nullopt : std::optional<int64_t>(get_int(col));
}
std::optional<double> Stmt::opt_double(int col) const {
  return is_null(col) ? std::nullopt : std::optional<double>(get_double(col));
}
std::optional<std::string> Stmt::opt_text(int col) const {
  return is_null(col) ? std::nullopt : std::optional<std::string>(get_text(col));
}

Tx::Tx(Db& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }

Tx::~Tx() {
  if (done_) return;
  sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
}

void Tx::commit() {
  db_.exec("COMMIT");
  done_ = true;
}

}  // namespace predictd
