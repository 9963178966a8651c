-- The load record of one day (no row: the day is not loaded).
SELECT activity_date, crm_snapshot_date, crm_rows, usage_rows, orphan_rows, output_rows,
    crm_landing_id, usage_landing_id, loaded_at
FROM {analytics}.loaded_days
WHERE activity_date = :activity_date
