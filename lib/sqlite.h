// A thin RAII wrapper over SQLite in the SQLiteCpp shape: Db, Stmt, Tx.
// SQLITE_BUSY/SQLITE_LOCKED surface as BusyError so callers can retry later
// instead of blocking; every other failure is a DbError with the extended code.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>

struct sqlite3;
struct sqlite3_stmt;

namespace predictd {

class DbError : public std::runtime_error {
 public:
  DbError(const std::string& what, int code) : std::runtime_error(what), code_(code) {}
  int code() const { return code_; }  // extended result code

 private:
  int code_;
};

// The database is locked by another connection: nothing happened, try again later.
class BusyError : public DbError {
 public:
  using DbError::DbError;
};

class Stmt;

class Db final {
 public:
  // Opens (creating if needed) with WAL, synchronous=NORMAL, foreign keys on,
  // and a busy timeout of `busy_timeout_ms`.
  explicit Db(const std::string& path, int busy_timeout_ms = 5, bool create = true);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  void exec(std::string_view sql);
  // A statement prepared once and kept for the connection's lifetime; reset before it is returned.
  Stmt& cached(std::string_view sql);
  void set_busy_timeout(int ms);
  int64_t changes() const;
  int64_t last_insert_rowid() const;
  sqlite3* handle() { return db_; }
  [[noreturn]] void fail(int rc, std::string_view what) const;

 private:
  sqlite3* db_ = nullptr;
  std::unordered_map<std::string, std::unique_ptr<Stmt>> cache_;
};

class Stmt final {
 public:
  Stmt(Db& db, std::string_view sql);
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& bind(int index, int64_t v);
  Stmt& bind(int index, int v) { return bind(index, static_cast<int64_t>(v)); }
  Stmt& bind(int index, double v);
  Stmt& bind(int index, std::string_view v);
  Stmt& bind(int index, const char* v) { return bind(index, std::string_view(v)); }
  Stmt& bind(int index, const std::string& v) { return bind(index, std::string_view(v)); }
  Stmt& bind_null(int index);
  template <class T>
  Stmt& bind(int index, const std::optional<T>& v) {
    return v ? bind(index, *v) : bind_null(index);
  }

  // True while a row is available; false when done.
  bool step();
  void reset();  // also clears bindings

  bool is_null(int col) const;
  int64_t get_int(int col) const;
  double get_double(int col) const;
  std::string get_text(int col) const;
  std::optional<int64_t> opt_int(int col) const;
  std::optional<double> opt_double(int col) const;
  std::optional<std::string> opt_text(int col) const;

 private:
  Db& db_;
  sqlite3_stmt* stmt_ = nullptr;
};

// BEGIN IMMEDIATE ... COMMIT; rolls back in its destructor unless committed.
class Tx final {
 public:
  explicit Tx(Db& db);
  ~Tx();
  Tx(const Tx&) = delete;
  Tx& operator=(const Tx&) = delete;
  void commit();

 private:
  Db& db_;
  bool done_ = false;
};

}  // namespace predictd
