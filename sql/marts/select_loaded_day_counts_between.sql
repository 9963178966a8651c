-- The loaded days between :first_date and :last_date (inclusive) with their row counts, newest first: the
-- candidates of the same_weekday row-drop check ([validation] row_drop_baseline).
SELECT activity_date, crm_rows, usage_rows, output_rows
FROM {analytics}.loaded_days
WHERE activity_date BETWEEN :first_date AND :last_date
ORDER BY activity_date DESC
