-- One day (:activity_date, D) of {analytics}.company_daily_activity, written once, rolling columns included.
-- Runs in the merge's transaction after D's rows were deleted and before D is recorded as loaded.
--   rows: every company of the CRM snapshot in effect for D (:crm_snapshot_date) with D's usage (0
--         without a row), plus every company with usage on D that this snapshot does not know (an
--         orphan: CRM columns NULL);
--   "7d_active_users": D's active_users plus the sum over D-6 .. D-1 (:window_start .. :previous_date)
--         of the rows already in the mart; a day without a row counts 0;
--   is_churn_risk: NULL when fewer than 6 of D-6 .. D-1 are loaded (with D, fewer than 7); TRUE when the
--         company has no usage on D nor on any day of D-6 .. D-1; FALSE otherwise.
-- Usage days are counted (active_users <> 0 OR events <> 0) rather than summed: the same for the
-- non-negative staged values, and no 32-bit overflow on PostgreSQL.
-- All date arithmetic is the caller's, so the text is the same on every backend.
INSERT INTO {analytics}.company_daily_activity (
    activity_date, company_id, company_name, country, industry_tag, last_contact_at,
    active_users, events, "7d_active_users", is_churn_risk, record_loaded_at
)
WITH
day_rows AS (
    -- every company of the snapshot in effect, with the day's usage (0 without a row) ...
    SELECT
        crm.company_id,
        crm.company_name,
        crm.country,
        crm.industry_tag,
        crm.last_contact_at,
        COALESCE(api.active_users, 0) AS active_users,
        COALESCE(api.events, 0) AS events
    FROM {stg}.crm_daily AS crm
    LEFT JOIN {stg}.product_usage_daily AS api
        ON api.activity_date = :activity_date
        AND api.company_id = crm.company_id
    WHERE crm.snapshot_date = :crm_snapshot_date

    UNION ALL

    -- ... and the orphans: usage on the day from companies this snapshot does not know (the NULLs take
    -- their types from the branch above)
    SELECT api.company_id, NULL, NULL, NULL, NULL, api.active_users, api.events
    FROM {stg}.product_usage_daily AS api
    WHERE api.activity_date = :activity_date
        AND NOT EXISTS (
            SELECT 1
            FROM {stg}.crm_daily AS crm
            WHERE crm.snapshot_date = :crm_snapshot_date
                AND crm.company_id = api.company_id
        )
),

previous_six_days AS (
    SELECT
        company_id,
        SUM(active_users) AS active_users_6d,
        SUM(CASE WHEN active_users <> 0 OR events <> 0 THEN 1 ELSE 0 END) AS usage_days_6d
    FROM {analytics}.company_daily_activity
    WHERE activity_date BETWEEN :window_start AND :previous_date
    GROUP BY company_id
),

loaded_before AS (
    SELECT COUNT(*) AS loaded_days
    FROM {analytics}.loaded_days
    WHERE activity_date BETWEEN :window_start AND :previous_date
)

SELECT
    :activity_date,
    day_rows.company_id,
    day_rows.company_name,
    day_rows.country,
    day_rows.industry_tag,
    day_rows.last_contact_at,
    day_rows.active_users,
    day_rows.events,
    day_rows.active_users + COALESCE(previous_six_days.active_users_6d, 0),
    CASE
        WHEN loaded_before.loaded_days < 6 THEN NULL
        WHEN day_rows.active_users = 0 AND day_rows.events = 0
            AND COALESCE(previous_six_days.usage_days_6d, 0) = 0 THEN TRUE
        ELSE FALSE
    END,
    :loaded_at
FROM day_rows
CROSS JOIN loaded_before
LEFT JOIN previous_six_days
    ON previous_six_days.company_id = day_rows.company_id
