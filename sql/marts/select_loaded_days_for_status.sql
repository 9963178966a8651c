-- The loaded days between :first_date and :last_date (inclusive) with their counts, landings and load
-- time: one row per day of `python -m pipeline status`.
SELECT activity_date, crm_snapshot_date, crm_rows, usage_rows, orphan_rows, output_rows, crm_landing_id,
    usage_landing_id, loaded_at
FROM {analytics}.loaded_days
WHERE activity_date BETWEEN :first_date AND :last_date
ORDER BY activity_date
