-- Forget the copy of the rows a re-merge started from (a session's temporary table).
DROP TABLE IF EXISTS rows_before_merge
