#include "store.h"

#include <chrono>
#include <thread>

#include "schema.h"
#include "sqlite.h"
#include "timefmt.h"

namespace predictd {

namespace {

constexpr const char* kColumns =
    "id, model, version, input, priority, not_before, timeout_s, cancel_requested, status, prediction_id, output, "
    "error, attempts, units, cost_credits, predict_time_s, files, archive_error, created_at, submitted_at, "
    "started_at, completed_at, updated_at";

JobRow read_row(const Stmt& s) {
  JobRow r;
  r.id = s.get_int(0);
  r.model = s.opt_text(1);
  r.version = s.opt_text(2);
  r.input = s.get_text(3);
  r.priority = s.get_int(4);
  r.not_before = s.opt_text(5);
  r.timeout_s = s.opt_int(6);
  r.cancel_requested = s.get_int(7) != 0;
  r.status = parse_job_status(s.get_text(8)).value_or(JobStatus::failed);
  r.prediction_id = s.opt_text(9);
  r.output = s.opt_text(10);
  r.error = s.opt_text(11);
  r.attempts = s.get_int(12);
  r.units = s.opt_int(13);
  r.cost_credits = s.opt_int(14);
  r.predict_time_s = s.opt_double(15);
  r.files = s.opt_text(16);
  r.archive_error = s.opt_text(17);
  r.created_at = s.get_text(18);
  r.submitted_at = s.opt_text(19);
  r.started_at = s.opt_text(20);
  r.completed_at = s.opt_text(21);
  r.updated_at = s.opt_text(22);
  return r;
}

std::string select(std::string_view rest) { return std::string("SELECT ") + kColumns + " FROM jobs " + std::string(rest); }

std::string now_utc() { return format_utc(std::chrono::system_clock::now()); }

int user_version(Db& db) {
  auto s = db.cached("PRAGMA user_version");
  s->step();
  return static_cast<int>(s->get_int(0));
}

// Applies schema files newer than user_version. Checking first keeps an
// up-to-date open free of write locks; the check is repeated inside BEGIN
// IMMEDIATE so that two processes racing to migrate apply each file once.
void migrate(Db& db) {
  const auto files = schema_files();
  if (files.empty() || user_version(db) >= files.back().version) return;
  Tx tx(db);
  const int current = user_version(db);
  int latest = current;
  for (const SchemaFile& f : files) {
    if (f.version <= current) continue;
    db.exec(f.sql);
    latest = f.version;
  }
  if (latest != current) db.exec("PRAGMA user_version = " + std::to_string(latest));
  tx.commit();
}

}  // namespace

std::string_view to_string(JobStatus s) {
  switch (s) {
    case JobStatus::queued: return "queued";
    case JobStatus::submitting: return "submitting";
    case JobStatus::starting: return "starting";
    case JobStatus::processing: return "processing";
    case JobStatus::succeeded: return "succeeded";
    case JobStatus::failed: return "failed";
    case JobStatus::canceled: return "canceled";
  }
  return "?";
}

std::optional<JobStatus> parse_job_status(std::string_view s) {
  for (auto st : {JobStatus::queued, JobStatus::submitting, JobStatus::starting, JobStatus::processing,
                  JobStatus::succeeded, JobStatus::failed, JobStatus::canceled})
    if (to_string(st) == s) return st;
  return std::nullopt;
}

bool is_terminal(JobStatus s) {
  return s == JobStatus::succeeded || s == JobStatus::failed || s == JobStatus::canceled;
}

Store::Store(std::unique_ptr<Db> db) : db_(std::move(db)) {}
Store::~Store() = default;

std::unique_ptr<Store> Store::open(const std::string& path, bool create) {
  // Before the event loop runs, waiting for another writer is fine: up to ~5 s.
  // Opening itself may be busy too (a new file's switch to WAL), so retry both.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    try {
      auto db = std::make_unique<Db>(path, 5, create);
      migrate(*db);
      return std::unique_ptr<Store>(new Store(std::move(db)));
    } catch (const BusyError&) {
      if (std::chrono::steady_clock::now() >= deadline) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

int Store::schema_version() { return user_version(*db_); }

bool Store::changed_by_others() {
  auto s = db_->cached("PRAGMA data_version");
  s->step();
  const int64_t v = s->get_int(0);
  const bool changed = v != data_version_;
  data_version_ = v;
  return changed;
}

namespace {
// The predicates of the partial indexes jobs_active and jobs_cancel
// (schema 002), repeated word for word: a query names its index (INDEXED BY),
// which SQLite refuses unless the predicate matches. Without statistics the
// planner would rather search another index and sort.
constexpr const char* kActive = "(status = 'submitting' OR status = 'starting' OR status = 'processing')";
constexpr const char* kUnfinished =
    "(status = 'queued' OR status = 'submitting' OR status = 'starting' OR status = 'processing')";
// Ready rows come from two partial indexes (schema 002), their predicates word
// for word: jobs_claim_now (no time to wait for) in claim order, and
// jobs_ready_at (not_before or next_attempt_at) by the moment they are due.
constexpr const char* kNow =
    "FROM jobs INDEXED BY jobs_claim_now WHERE status = 'queued' AND cancel_requested = 0 AND not_before IS NULL "
    "AND next_attempt_at IS NULL ";
constexpr const char* kTimed =
    "FROM jobs INDEXED BY jobs_ready_at WHERE status = 'queued' AND cancel_requested = 0 "
    "AND (not_before IS NOT NULL OR next_attempt_at IS NOT NULL) ";
constexpr const char* kReadyAt = "max(COALESCE(julianday(not_before), 0), COALESCE(julianday(next_attempt_at), 0))";

std::string select_from(std::string_view from_where) {
  return std::string("SELECT ") + kColumns + " " + std::string(from_where);
}
}  // namespace

bool Store::any_ready_now() {
  static const std::string kAny = std::string("SELECT 1 ") + kNow + "LIMIT 1";
  return db_->cached(kAny)->step();
}

bool Store::any_timed_due(std::string_view now) {
  static const std::string kAny = std::string("SELECT 1 ") + kTimed + "AND " + kReadyAt + " <= julianday(?1) LIMIT 1";
  auto any = db_->cached(kAny);
  any->bind(1, now);
  return any->step();
}

bool Store::any_ready(std::string_view now) { return any_ready_now() || any_timed_due(now); }

ClaimResult Store::claim_in_tx(std::string_view now, int limit, const RowValidator& validate) {
  // Each index gives its best `limit` rows (the timed one sorts only the rows
  // due now); merged, the best `limit` of both in priority, then id order.
  std::vector<JobRow> candidates;
  {
    static const std::string kPick = select_from(std::string(kNow) + "ORDER BY priority DESC, id LIMIT ?2");
    auto s = db_->cached(kPick);
    s->bind(2, limit);
    while (s->step()) candidates.push_back(read_row(*s));
  }
  if (any_timed_due(now)) {
    static const std::string kPick =
        select_from(std::string(kTimed) + "AND " + kReadyAt + " <= julianday(?1) ORDER BY priority DESC, id LIMIT ?2");
    auto s = db_->cached(kPick);
    s->bind(1, now).bind(2, limit);
    while (s->step()) candidates.push_back(read_row(*s));
    std::sort(candidates.begin(), candidates.end(), [](const JobRow& a, const JobRow& b) {
      return a.priority != b.priority ? a.priority > b.priority : a.id < b.id;
    });
    if (candidates.size() > static_cast<std::size_t>(limit)) candidates.resize(static_cast<std::size_t>(limit));
  }
  // Inside BEGIN IMMEDIATE nobody else can move these rows, so each update matches.
  ClaimResult out;
  auto to_submitting = db_->cached(
      "UPDATE jobs SET status = 'submitting', submitted_at = COALESCE(submitted_at, ?2), updated_at = ?2, "
      "next_attempt_at = NULL WHERE id = ?1 AND status = 'queued'");
  auto to_failed = db_->cached(
      "UPDATE jobs SET status = 'failed', error = ?3, cost_credits = 0, completed_at = ?2, updated_at = ?2, "
      "next_attempt_at = NULL WHERE id = ?1 AND status = 'queued'");
  for (JobRow& row : candidates) {
    if (auto err = validate(row)) {
      to_failed->reset();
      to_failed->bind(1, row.id).bind(2, now).bind(3, *err).step();
      row.status = JobStatus::failed;
      row.error = std::move(err);
      row.cost_credits = 0;
      row.completed_at = std::string(now);
      row.updated_at = std::string(now);
      out.rejected.push_back(std::move(row));
    } else {
      to_submitting->reset();
      to_submitting->bind(1, row.id).bind(2, now).step();
      row.status = JobStatus::submitting;
      if (!row.submitted_at) row.submitted_at = std::string(now);
      row.updated_at = std::string(now);
      out.claimed.push_back(std::move(row));
    }
  }
  return out;
}

DbResult<ClaimResult> Store::claim(std::string_view now, int limit, const RowValidator& validate) {
  auto r = commit({}, now, limit, validate);
  return {r.busy, std::move(r.value.claim)};
}

DbResult<CommitResult> Store::commit(std::span<const Transition> transitions, std::string_view now, int claim_limit,
                                     const RowValidator& validate) {
  try {
    // Reading first keeps the common case (nothing ready) free of write locks.
    if (claim_limit > 0 && !any_ready(now)) claim_limit = 0;
    if (transitions.empty() && claim_limit <= 0) return {};
    Tx tx(*db_);
    CommitResult out;
    if (!transitions.empty()) out.applied = apply_in_tx(transitions);
    if (claim_limit > 0) out.claim = claim_in_tx(now, claim_limit, validate);
    tx.commit();
    return {false, std::move(out)};
  } catch (const BusyError&) {
    return {true, {}};
  }
}

DbResult<std::vector<int64_t>> Store::cancel_queued(std::string_view reason) {
  try {
    {
      // Reading first keeps the common case (nothing to cancel) free of write locks.
      static const std::string kAny =
          std::string("SELECT 1 FROM jobs INDEXED BY jobs_cancel WHERE cancel_requested = 1 AND ") + kUnfinished + " AND status = 'queued' LIMIT 1";
      auto any = db_->cached(kAny);
      if (!any->step()) return {};
    }
    Tx tx(*db_);
    const std::string now = now_utc();
    std::vector<int64_t> ids;
    {
      auto s = db_->cached(
          "UPDATE jobs SET status = 'canceled', error = ?1, cost_credits = 0, completed_at = ?2, updated_at = ?2, "
          "next_attempt_at = NULL WHERE status = 'queued' AND cancel_requested = 1 RETURNING id");
      s->bind(1, reason).bind(2, now);
      while (s->step()) ids.push_back(s->get_int(0));
    }
    tx.commit();
    return {false, std::move(ids)};
  } catch (const BusyError&) {
    return {true, {}};
  }
}

std::vector<int64_t> Store::active_cancel_requests() {
  static const std::string kSql =
      std::string("SELECT id FROM jobs INDEXED BY jobs_cancel WHERE cancel_requested = 1 AND ") + kUnfinished + " AND status != 'queued' ORDER BY id";
  auto s = db_->cached(kSql);
  std::vector<int64_t> ids;
  while (s->step()) ids.push_back(s->get_int(0));
  return ids;
}

namespace {
// jobs_requeued's predicate, word for word (schema 002), and a row's deadline.
constexpr const char* kRequeued = "status = 'queued' AND submitted_at IS NOT NULL";
constexpr const char* kExpiry = "julianday(submitted_at) + COALESCE(timeout_s, ?2) / 86400.0";
}  // namespace

DbResult<std::vector<std::pair<int64_t, std::string>>> Store::expire_queued(std::string_view now, int64_t default_timeout_s) {
  try {
    static const std::string kAny = std::string("SELECT 1 FROM jobs INDEXED BY jobs_requeued WHERE ") + kRequeued +
                                    " AND " + kExpiry + " <= julianday(?1) LIMIT 1";
    {
      auto any = db_->cached(kAny);
      any->bind(1, now).bind(2, default_timeout_s);
      if (!any->step()) return {};
    }
    Tx tx(*db_);
    static const std::string kSql =
        std::string("UPDATE jobs INDEXED BY jobs_requeued SET status = 'canceled', ") +
        "error = 'timed out after ' || COALESCE(timeout_s, ?2) || ' s', cost_credits = 0, completed_at = ?1, "
        "updated_at = ?1, next_attempt_at = NULL WHERE " + kRequeued + " AND " + kExpiry + " <= julianday(?1) RETURNING id, error";
    std::vector<std::pair<int64_t, std::string>> ids;
    {
      auto s = db_->cached(kSql);
      s->bind(1, now).bind(2, default_timeout_s);
      while (s->step()) ids.emplace_back(s->get_int(0), s->get_text(1));
    }
    tx.commit();
    return {false, std::move(ids)};
  } catch (const BusyError&) {
    return {true, {}};
  }
}

std::optional<std::string> Store::next_queued_expiry(int64_t default_timeout_s) {
  static const std::string kSql = std::string("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', MIN(") + kExpiry +
                                  ")) FROM jobs INDEXED BY jobs_requeued WHERE " + kRequeued;
  auto s = db_->cached(kSql);
  s->bind(2, default_timeout_s);
  if (!s->step()) return std::nullopt;
  return s->opt_text(0);
}

int64_t Store::count_queued() {
  // Queued rows are in exactly one of three partial indexes: ready now, timed,
  // or with a cancel request (jobs_cancel). No scan of the table.
  static const std::string kSql = std::string("SELECT (SELECT count(*) ") + kNow + ") + (SELECT count(*) " + kTimed +
                                  ") + (SELECT count(*) FROM jobs INDEXED BY jobs_cancel WHERE cancel_requested = 1 AND " +
                                  kUnfinished + " AND status = 'queued')";
  auto s = db_->cached(kSql);
  s->step();
  return s->get_int(0);
}

std::vector<JobRow> Store::active_jobs() {
  static const std::string kSql = select(std::string("INDEXED BY jobs_active WHERE ") + kActive + " ORDER BY id");
  auto s = db_->cached(kSql);
  std::vector<JobRow> rows;
  while (s->step()) rows.push_back(read_row(*s));
  return rows;
}

std::vector<bool> Store::apply_in_tx(std::span<const Transition> transitions) {
  const std::string now = now_utc();
  std::vector<bool> applied;
  applied.reserve(transitions.size());
  auto s = db_->cached(
      "UPDATE jobs SET status = ?3, "
      "prediction_id = COALESCE(?4, prediction_id), output = COALESCE(?5, output), error = COALESCE(?6, error), "
      "units = COALESCE(?7, units), cost_credits = COALESCE(?8, cost_credits), "
      "predict_time_s = COALESCE(?9, predict_time_s), attempts = attempts + ?10, next_attempt_at = ?11, "
      "submitted_at = CASE WHEN ?3 = 'submitting' THEN COALESCE(submitted_at, ?12) ELSE submitted_at END, "
      "started_at = CASE WHEN ?13 THEN COALESCE(started_at, ?12) ELSE started_at END, "
      "completed_at = CASE WHEN ?14 THEN ?12 ELSE completed_at END, "
      "updated_at = ?12 "
      "WHERE id = ?1 AND status = ?2");
  for (const Transition& t : transitions) {
    s->reset();
    std::optional<int64_t> cost = t.cost_credits;
    if (!cost && (t.to == JobStatus::failed || t.to == JobStatus::canceled)) cost = 0;
    s->bind(1, t.job_id)
        .bind(2, to_string(t.from))
        .bind(3, to_string(t.to))
        .bind(4, t.prediction_id)
        .bind(5, t.output)
        .bind(6, t.error)
        .bind(7, t.units)
        .bind(8, cost)
        .bind(9, t.predict_time_s)
        .bind(10, t.count_attempt ? 1 : 0)
        .bind(11, t.to == JobStatus::queued ? t.next_attempt_at : std::nullopt)
        .bind(12, now)
        .bind(13, int64_t{t.to == JobStatus::processing || t.to == JobStatus::succeeded})
        .bind(14, int64_t{is_terminal(t.to)});
    s->step();
    applied.push_back(db_->changes() == 1);
  }
  return applied;
}

DbResult<std::vector<bool>> Store::apply(std::span<const Transition> transitions) {
  auto r = commit(transitions, "", 0, {});
  return {r.busy, std::move(r.value.applied)};
}

std::vector<JobRow> Store::pending_archives() {
  static const std::string kSql = select(
      "WHERE status = 'succeeded' AND output IS NOT NULL AND files IS NULL AND archive_error IS NULL ORDER BY id");
  auto s = db_->cached(kSql);
  std::vector<JobRow> rows;
  while (s->step()) rows.push_back(read_row(*s));
  return rows;
}

DbResult<bool> Store::set_archive_result(int64_t id, const std::optional<std::string>& files,
                                         const std::optional<std::string>& error) {
  try {
    Tx tx(*db_);
    auto s = db_->cached(
        "UPDATE jobs SET files = ?2, archive_error = ?3, updated_at = ?4 "
        "WHERE id = ?1 AND status = 'succeeded' AND files IS NULL AND archive_error IS NULL");
    s->bind(1, id).bind(2, files).bind(3, error).bind(4, now_utc());
    s->step();
    const bool matched = db_->changes() == 1;
    tx.commit();
    return {false, matched};
  } catch (const BusyError&) {
    return {true, false};
  }
}

std::optional<JobRow> Store::get(int64_t id) {
  static const std::string kSql = select("WHERE id = ?1");
  auto s = db_->cached(kSql);
  s->bind(1, id);
  if (!s->step()) return std::nullopt;
  return read_row(*s);
}

std::optional<std::string> Store::next_wakeup(std::string_view now) {
  // A row is ready at the later of its not_before and next_attempt_at: the
  // first entry of jobs_ready_at after `now`.
  static const std::string kSql = std::string("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', MIN(") + kReadyAt + ")) " +
                                  kTimed + "AND " + kReadyAt + " > julianday(?1)";
  auto s = db_->cached(kSql);
  s->bind(1, now);
  if (!s->step()) return std::nullopt;
  return s->opt_text(0);
}

int64_t Store::insert(const NewJob& job) {
  auto s = db_->cached(
      "INSERT INTO jobs(model, version, input, priority, not_before, timeout_s) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  s->bind(1, job.model).bind(2, job.version).bind(3, job.input).bind(4, job.priority).bind(5, job.not_before);
  s->bind(6, job.timeout_s);
  s->step();
  return db_->last_insert_rowid();
}

bool Store::request_cancel(int64_t id) {
  static const std::string kSql = std::string("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND ") + kUnfinished;
  auto s = db_->cached(kSql);
  s->bind(1, id);
  s->step();
  return db_->changes() == 1;
}

std::vector<JobRow> Store::list(std::optional<JobStatus> status, int limit) {
  static const std::string kSql = select("WHERE (?1 IS NULL OR status = ?1) ORDER BY id DESC LIMIT ?2");
  auto s = db_->cached(kSql);
  s->bind(1, status ? std::optional<std::string_view>(to_string(*status)) : std::nullopt).bind(2, limit);
  std::vector<JobRow> rows;
  while (s->step()) rows.push_back(read_row(*s));
  return rows;
}

StoreStats Store::stats(std::string_view now) {
  StoreStats st;
  {
    auto s = db_->cached("SELECT status, count(*) FROM jobs GROUP BY status");
    while (s->step())
      if (auto k = parse_job_status(s->get_text(0))) st.by_status[static_cast<int>(*k)] = s->get_int(1);
  }
  {
    auto s = db_->cached(
        "SELECT COALESCE(SUM(cost_credits), 0), "
        "COALESCE(SUM(CASE WHEN substr(completed_at, 1, 10) = substr(?1, 1, 10) THEN cost_credits END), 0) "
        "FROM jobs WHERE cost_credits > 0");
    s->bind(1, now);
    s->step();
    st.credits_all_time = s->get_int(0);
    st.credits_today = s->get_int(1);
  }
  {
    auto s = db_->cached(
        "SELECT (julianday(?1) - julianday(MIN(created_at))) * 86400.0 FROM jobs WHERE status = 'queued'");
    s->bind(1, now);
    s->step();
    st.oldest_queued_age_s = s->opt_double(0);
  }
  {
    auto s = db_->cached(
        "SELECT COALESCE(SUM(files IS NULL AND archive_error IS NULL AND output IS NOT NULL), 0), "
        "COALESCE(SUM(archive_error IS NOT NULL), 0), "
        "COALESCE(SUM(json_array_length(files)), 0), "
        "COALESCE(SUM((SELECT SUM(json_extract(f.value, '$.bytes')) FROM json_each(jobs.files) AS f)), 0) "
        "FROM jobs WHERE status = 'succeeded'");
    s->step();
    st.archive_pending = s->get_int(0);
    st.archive_failed = s->get_int(1);
    st.archived_files = s->get_int(2);
    st.archived_bytes = s->get_int(3);
  }
  return st;
}

}  // namespace predictd
