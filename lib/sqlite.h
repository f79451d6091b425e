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
class CachedStmt;

class Db final {
 public:
  // Opens (creating if needed) with WAL, synchronous=NORMAL, foreign keys on,
  // and a busy timeout of `busy_timeout_ms`.
  explicit Db(const std::string& path, int busy_timeout_ms = 5, bool create = true);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  void exec(std::string_view sql);
  // A statement prepared once for the connection's lifetime, handed out reset.
  CachedStmt cached(std::string_view sql);
  void set_busy_timeout(int ms);
  int64_t changes() const;
  int64_t last_insert_rowid() const;
  sqlite3* handle() { return db_; }
  [[noreturn]] void fail(int rc, std::string_view what) const;

 private:
  // Transparent, so lookups by string_view do not allocate.
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  sqlite3* db_ = nullptr;
  std::unordered_map<std::string, std::unique_ptr<Stmt>, Hash, std::equal_to<>> cache_;
};

class Stmt final {
 public:
  Stmt(Db& db, std::string_view sql);
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& bind(int index, int64_t v);
  Stmt& bind(int index, int v) { return bind(index, static_cast<int64_t>(v)); }
  Stmt& bind(int index, bool v) { return bind(index, static_cast<int64_t>(v)); }
  Stmt& bind(int index, double v);
  Stmt& bind(int index, std::string_view v);
  Stmt& bind(int index, const char* v) { return bind(index, std::string_view(v)); }
  Stmt& bind(int index, const std::string& v) { return bind(index, std::string_view(v)); }
  Stmt& bind_null(int index);
  template <class T>
  Stmt& bind(int index, const std::optional<T>& v) {
    return v ? bind(index, *v) : bind_null(index);
  }
  // By name, e.g. bind(":id", 7). Throws DbError when the statement has no such parameter.
  int param(std::string_view name) const;
  template <class T>
  Stmt& bind(std::string_view name, const T& v) {
    return bind(param(name), v);
  }
  Stmt& bind_null(std::string_view name) { return bind_null(param(name)); }

  // True while a row is available; false when done.
  bool step();
  // Ends the statement (releasing its read snapshot) and clears bindings. Never throws.
  void reset() noexcept;

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

// A cached statement in use. It is reset when this handle goes out of scope:
// a statement left on a row would pin a stale WAL snapshot, and every later
// BEGIN IMMEDIATE on the connection would then fail with SQLITE_BUSY_SNAPSHOT.
class CachedStmt final {
 public:
  explicit CachedStmt(Stmt& s) : s_(s) {}
  ~CachedStmt() { s_.reset(); }
  CachedStmt(const CachedStmt&) = delete;
  CachedStmt& operator=(const CachedStmt&) = delete;
  Stmt* operator->() const { return &s_; }
  Stmt& operator*() const { return s_; }

 private:
  Stmt& s_;
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
