-- PostgreSQL only: refresh the planner's statistics of the staged usage after a day was loaded (see
-- refresh_staged_crm_statistics.sql).
ANALYZE {stg}.product_usage_daily
