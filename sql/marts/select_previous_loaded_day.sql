-- The latest loaded day before :activity_date with its row counts: the baseline of the row-drop checks.
-- Only days that were merged (so passed every check, or were accepted by an operator) count.
SELECT activity_date, crm_rows, usage_rows, output_rows
FROM {analytics}.loaded_days
WHERE activity_date < :activity_date
ORDER BY activity_date DESC
LIMIT 1
