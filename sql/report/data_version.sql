-- The daily churn report: which version of day :activity_date's data a report was built from. The
-- merge's landings and time, and the latest record_loaded_at of the day's rows, which also moves when
-- a reload of an earlier day recomputes this day's rolling columns. No row: the day is not loaded.
SELECT
    loaded.crm_landing_id,
    loaded.usage_landing_id,
    loaded.loaded_at,
    (
        SELECT MAX(activity.record_loaded_at)
        FROM {analytics}.company_daily_activity AS activity
        WHERE activity.activity_date = :activity_date
    ) AS rows_loaded_at
FROM {analytics}.loaded_days AS loaded
WHERE loaded.activity_date = :activity_date
