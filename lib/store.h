// The jobs table (SPEC §1, §2): every read and write predictd makes.
//
// Writes run in BEGIN IMMEDIATE with a busy timeout of a few milliseconds;
// a database held by another writer yields a `busy` result that the caller
// retries later (the event loop never waits on it). Other SQLite errors throw
// DbError.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace predictd {

class Db;
class Stmt;

enum class JobStatus { queued, submitting, starting, processing, succeeded, failed, canceled };

std::string_view to_string(JobStatus s);
std::optional<JobStatus> parse_job_status(std::string_view s);
bool is_terminal(JobStatus s);

// `busy` when the database was locked by another connection: nothing was
// written, try again later.
template <class T>
struct DbResult {
  bool busy = false;
  T value{};
  explicit operator bool() const { return !busy; }
};

struct JobRow {
  int64_t id = 0;
  std::optional<std::string> model;
  std::optional<std::string> version;
  std::string input;
  int64_t priority = 0;
  std::optional<std::string> not_before;
  std::optional<int64_t> timeout_s;
  bool cancel_requested = false;
  JobStatus status = JobStatus::queued;
  std::optional<std::string> prediction_id;
  std::optional<std::string> output;
  std::optional<std::string> error;
  int64_t attempts = 0;
  std::optional<int64_t> units;
  std::optional<int64_t> cost_credits;
  std::optional<double> predict_time_s;
  std::optional<std::string> files;
  std::optional<std::string> archive_error;
  std::string created_at;
  std::optional<std::string> submitted_at;
  std::optional<std::string> started_at;
  std::optional<std::string> completed_at;
  std::optional<std::string> updated_at;
};

// One state change, applied only if the row is still in `from`
// (compare-and-set). Unset optionals leave their column unchanged.
// The store stamps updated_at always, submitted_at on the first move to
// submitting, started_at on the first move to processing (or succeeded), and
// completed_at on a terminal `to`. A terminal failed/canceled with no
// cost_credits gets cost_credits = 0.
struct Transition {
  int64_t job_id = 0;
  JobStatus from = JobStatus::queued;
  JobStatus to = JobStatus::queued;
  std::optional<std::string> prediction_id;
  std::optional<std::string> output;  // JSON array text
  std::optional<std::string> error;
  std::optional<int64_t> units;
  std::optional<int64_t> cost_credits;
  std::optional<double> predict_time_s;
  bool count_attempt = false;                  // attempts = attempts + 1
  std::optional<std::string> next_attempt_at;  // with to == queued: retry not before this time
};

// Returns an error message when the row can never be submitted (SPEC §2);
// such a row goes straight to failed inside the claim.
using RowValidator = std::function<std::optional<std::string>(const JobRow&)>;

// A row as a feeder inserts it.
struct NewJob {
  std::optional<std::string> model;
  std::optional<std::string> version;
  std::string input;
  int64_t priority = 0;
  std::optional<std::string> not_before;
  std::optional<int64_t> timeout_s;
};

struct StoreStats {
  int64_t by_status[7] = {};  // indexed by JobStatus
  int64_t credits_today = 0;  // completed on the UTC day of `now`
  int64_t credits_all_time = 0;
  std::optional<double> oldest_queued_age_s;
  // Archiving (SPEC §9). Pending: succeeded with output, neither files nor archive_error.
  int64_t archived_files = 0;
  int64_t archived_bytes = 0;
  int64_t archive_pending = 0;
  int64_t archive_failed = 0;
};

struct ClaimResult {
  std::vector<JobRow> claimed;          // now in submitting, committed
  std::vector<JobRow> rejected;         // now failed; `error` holds the validator's message
};

struct CommitResult {
  std::vector<bool> applied;  // per transition: whether it matched its `from` state
  ClaimResult claim;
};

class Store final {
 public:
  // Opens (creating if needed) the database, sets WAL and synchronous=NORMAL,
  // applies pending schema files. Throws DbError on failure.
  // With create = false a missing file is an error.
  static std::unique_ptr<Store> open(const std::string& path, bool create = true);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Schema version after migration (PRAGMA user_version).
  int schema_version();

  // True when another connection committed since the last call (PRAGMA data_version).
  bool changed_by_others();

  // Queued rows with cancel_requested = 0, not_before and next attempt time
  // <= now, ordered by priority desc, id asc, at most `limit`; each valid one
  // moves queued -> submitting (compare-and-set), each invalid one -> failed.
  DbResult<ClaimResult> claim(std::string_view now, int limit, const RowValidator& validate);

  // Queued rows with cancel_requested = 1 -> canceled with `reason`; returns their ids.
  DbResult<std::vector<int64_t>> cancel_queued(std::string_view reason);

  // Queued rows that were submitted before (waiting for a retry) and whose
  // timeout, counted from submitted_at (timeout_s, else default_timeout_s),
  // has passed at `now` -> canceled "timed out after N s". Returns (id, error) of each.
  DbResult<std::vector<std::pair<int64_t, std::string>>> expire_queued(std::string_view now, int64_t default_timeout_s);
  // When the next such row's timeout passes (UTC), if any is waiting.
  std::optional<std::string> next_queued_expiry(int64_t default_timeout_s);

  // Ids of submitting/starting/processing rows with cancel_requested = 1.
  std::vector<int64_t> active_cancel_requests();

  // Rows waiting in `queued` (including those waiting for a retry).
  int64_t count_queued();

  // All rows in submitting, starting or processing, by id.
  std::vector<JobRow> active_jobs();

  // Applies all transitions in one transaction. value[i] tells whether
  // transitions[i] matched its `from` state (false: the row moved or was deleted).
  DbResult<std::vector<bool>> apply(std::span<const Transition> transitions);

  // apply() and claim() in one transaction (the engine's group commit): the
  // transitions first, then up to claim_limit ready rows (0: none). No
  // transaction at all when there is nothing to apply and nothing ready.
  DbResult<CommitResult> commit(std::span<const Transition> transitions, std::string_view now, int claim_limit,
                                const RowValidator& validate);

  // Succeeded rows with an output and neither files nor archive_error (SPEC §9), by id.
  std::vector<JobRow> pending_archives();
  // Writes the archive's outcome (exactly one of files, error) on a succeeded
  // row that has neither yet; value: whether the row matched.
  DbResult<bool> set_archive_result(int64_t id, const std::optional<std::string>& files,
                                    const std::optional<std::string>& error);

  std::optional<JobRow> get(int64_t id);
  // Earliest next attempt or not_before among queued rows that are not ready at `now`.
  std::optional<std::string> next_wakeup(std::string_view now);

  // For predictctl and tests. insert and request_cancel write outside any
  // transaction of ours, as a feeder would; they throw BusyError when locked.
  int64_t insert(const NewJob& job);
  bool request_cancel(int64_t id);  // false when the row is unknown or finished
  std::vector<JobRow> list(std::optional<JobStatus> status, int limit);  // newest first
  StoreStats stats(std::string_view now);

  Db& db() { return *db_; }

 private:
  explicit Store(std::unique_ptr<Db> db);
  bool any_ready(std::string_view now);
  bool any_ready_now();
  bool any_timed_due(std::string_view now);
  ClaimResult claim_in_tx(std::string_view now, int limit, const RowValidator& validate);
  std::vector<bool> apply_in_tx(std::span<const Transition> transitions);
  std::unique_ptr<Db> db_;
  int64_t data_version_ = -1;
};

}  // namespace predictd
