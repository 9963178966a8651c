-- PostgreSQL only: refresh the planner's statistics of the staged CRM snapshots after a day was loaded.
-- Without it the planner sees the new snapshot_date as absent (autovacuum analyzes later, if at all within
-- the run) and joins a million staged rows by a million index lookups; ANALYZE samples, ~0.1 s.
ANALYZE {stg}.crm_daily
