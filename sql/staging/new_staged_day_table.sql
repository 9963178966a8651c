-- PostgreSQL only: step 1 of staging one date into a partitioned staged table: its previous partition
-- dropped, an empty unkeyed table like the parent created; returns the table's qualified name
-- (the function: sql/schema/stg.postgresql.sql).
SELECT {stg}.new_staged_day_table(CAST(:parent AS regclass), :date_column, :day) AS day_table
