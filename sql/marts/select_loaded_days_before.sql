-- The :day_count latest loaded days before :activity_date with their row counts, newest first: the
-- baseline of the trailing_median row-drop check ([validation] row_drop_baseline).
SELECT activity_date, crm_rows, usage_rows, output_rows
FROM {analytics}.loaded_days
WHERE activity_date < :activity_date
ORDER BY activity_date DESC
LIMIT :day_count
