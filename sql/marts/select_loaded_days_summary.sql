-- Loaded days between :first_date and :last_date with their row counts; for run summaries.
SELECT activity_date, output_rows, orphan_rows, crm_rows, usage_rows, loaded_at
FROM {analytics}.loaded_days
WHERE activity_date BETWEEN :first_date AND :last_date
ORDER BY activity_date
