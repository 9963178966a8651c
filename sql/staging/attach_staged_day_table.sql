-- PostgreSQL only: step 2 of staging one date: the loaded table becomes the date's partition (its key
-- built in bulk, every row checked to be of that date) and is sampled for the planner
-- (the function: sql/schema/stg.postgresql.sql).
SELECT {stg}.attach_staged_day_table(CAST(:parent AS regclass), CAST(:day_table AS regclass), :day)
