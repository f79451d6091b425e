-- jobs_claim (status, priority DESC, id) held every row and moved at each of
-- a job's three status changes: a delete and an insert in a B-tree as large
-- as the table, each time (callgrind, 5,000 jobs: 8 % of the daemon's
-- instructions). Claims use jobs_claim_now and jobs_ready_at; the count of
-- queued rows the daemon logs comes from those and jobs_cancel. Only
-- predictctl stats counts by status over the whole table now, a scan, as its
-- archive figures already were.
DROP INDEX IF EXISTS jobs_claim;
