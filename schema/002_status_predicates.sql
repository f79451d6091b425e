-- Status predicates without IN lists. SQLite builds an ephemeral B-tree (a
-- page cache of its own, ~87 KB) for `status IN (three or more constants)`
-- each time a statement evaluates it; the status CHECK and the partial
-- indexes of 001 did so five times in every UPDATE of a row's status, which
-- cost more than the update itself. OR chains are evaluated in place.
-- Same columns, same constraint names and messages; the table is rebuilt
-- because SQLite cannot alter a CHECK constraint.
CREATE TABLE jobs_new (
  id               INTEGER PRIMARY KEY,
  model            TEXT,
  version          TEXT,
  input            TEXT NOT NULL
                   CONSTRAINT input_must_be_valid_json CHECK (json_valid(input)),
  priority         INTEGER NOT NULL DEFAULT 0
                   CONSTRAINT priority_must_be_an_integer CHECK (typeof(priority) = 'integer'),
  not_before       TEXT
                   CONSTRAINT not_before_must_be_a_utc_time CHECK (not_before IS NULL OR julianday(not_before) IS NOT NULL),
  timeout_s        INTEGER
                   CONSTRAINT timeout_s_must_be_a_positive_integer
                   CHECK (timeout_s IS NULL OR (typeof(timeout_s) = 'integer' AND timeout_s > 0)),
  cancel_requested INTEGER NOT NULL DEFAULT 0
                   CONSTRAINT cancel_requested_must_be_0_or_1 CHECK (cancel_requested = 0 OR cancel_requested = 1),
  status           TEXT NOT NULL DEFAULT 'queued'
                   CONSTRAINT status_must_be_a_known_state
                   CHECK (status = 'queued' OR status = 'submitting' OR status = 'starting' OR status = 'processing'
                          OR status = 'succeeded' OR status = 'failed' OR status = 'canceled'),
  prediction_id    TEXT,
  output           TEXT,
  error            TEXT,
  attempts         INTEGER NOT NULL DEFAULT 0,
  units            INTEGER,
  cost_credits     INTEGER,
  predict_time_s   REAL,
  files            TEXT,
  archive_error    TEXT,
  created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  submitted_at     TEXT,
  started_at       TEXT,
  completed_at     TEXT,
  updated_at       TEXT,
  -- internal: a job waiting for a retry is not claimed before this time
  next_attempt_at  TEXT
);
INSERT INTO jobs_new SELECT id, model, version, input, priority, not_before, timeout_s, cancel_requested, status,
  prediction_id, output, error, attempts, units, cost_credits, predict_time_s, files, archive_error, created_at,
  submitted_at, started_at, completed_at, updated_at, next_attempt_at FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;

-- Queued rows by priority, then id (counts by status, stats).
CREATE INDEX jobs_claim ON jobs(status, priority DESC, id);
-- Claiming splits queued rows in two, so that rows waiting for a time
-- (not_before, a retry's next_attempt_at) never lie in the way of ready ones:
-- rows ready at once, by priority then id ...
CREATE INDEX jobs_claim_now ON jobs(priority DESC, id)
  WHERE status = 'queued' AND cancel_requested = 0 AND not_before IS NULL AND next_attempt_at IS NULL;
-- ... and rows with a time, by the moment they become ready.
CREATE INDEX jobs_ready_at ON jobs(max(COALESCE(julianday(not_before), 0), COALESCE(julianday(next_attempt_at), 0)))
  WHERE status = 'queued' AND cancel_requested = 0 AND (not_before IS NOT NULL OR next_attempt_at IS NOT NULL);
-- Resuming at start: rows with a prediction in flight (few among many finished).
-- Queries repeat the predicate word for word so that the planner can use it.
CREATE INDEX jobs_active ON jobs(id)
  WHERE status = 'submitting' OR status = 'starting' OR status = 'processing';
-- Cancel requests on rows that are not finished yet.
CREATE INDEX jobs_cancel ON jobs(id)
  WHERE cancel_requested = 1
    AND (status = 'queued' OR status = 'submitting' OR status = 'starting' OR status = 'processing');
-- Queued again after a create that did not happen (throttled, refused, not
-- sent): few rows, whose timeout keeps counting from their first submission.
CREATE INDEX jobs_requeued ON jobs(id) WHERE status = 'queued' AND submitted_at IS NOT NULL;
-- predictctl stats: credits per day.
CREATE INDEX jobs_completed ON jobs(completed_at) WHERE cost_credits > 0;
