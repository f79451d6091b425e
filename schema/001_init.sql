-- predictd's jobs table (SPEC §1). Feeders insert `model`/`version`, `input`
-- and optionally `priority`, `not_before`, `timeout_s`; they may set
-- `cancel_requested`. Everything else is predictd's.
CREATE TABLE IF NOT EXISTS jobs (
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
                   CONSTRAINT cancel_requested_must_be_0_or_1 CHECK (cancel_requested IN (0, 1)),
  status           TEXT NOT NULL DEFAULT 'queued'
                   CONSTRAINT status_must_be_a_known_state
                   CHECK (status IN ('queued', 'submitting', 'starting', 'processing', 'succeeded', 'failed', 'canceled')),
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

-- Claiming: queued rows by priority, then id.
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs(status, priority DESC, id);
-- Resuming at start: rows with a prediction in flight (few among many finished).
CREATE INDEX IF NOT EXISTS jobs_active ON jobs(id)
  WHERE status IN ('submitting', 'starting', 'processing');
-- Cancel requests on rows that are not finished yet.
CREATE INDEX IF NOT EXISTS jobs_cancel ON jobs(id)
  WHERE cancel_requested = 1 AND status IN ('queued', 'submitting', 'starting', 'processing');
-- predictctl stats: credits per day.
CREATE INDEX IF NOT EXISTS jobs_completed ON jobs(completed_at) WHERE cost_credits > 0;
