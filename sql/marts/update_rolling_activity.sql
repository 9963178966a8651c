-- Recompute the rolling columns of one loaded day (:target_date) from the rows of its 7-day window
-- (:window_start = :target_date - 6 .. :target_date):
--   "7d_active_users": sum of active_users over the window; a day without a row counts 0.
--   is_churn_risk: NULL while fewer than 7 days of the window are loaded; otherwise TRUE when the
--                  company had no active users and no events on every day of the window, else FALSE.
-- record_loaded_at becomes :loaded_at: the row was rewritten by this merge.
-- The window reads at most 7 days of rows: the cost follows the number of companies, not history.
UPDATE analytics.company_daily_activity AS target
SET
    "7d_active_users" = window_usage.active_users_7d,
    record_loaded_at = :loaded_at,
    is_churn_risk = CASE
        WHEN (
            SELECT COUNT(*)
            FROM analytics.loaded_days AS loaded
            WHERE loaded.activity_date BETWEEN :window_start AND :target_date
        ) < 7 THEN NULL
        WHEN window_usage.usage_7d = 0 THEN TRUE
        ELSE FALSE
    END
FROM (
    SELECT
        company_id,
        SUM(active_users) AS active_users_7d,
        SUM(active_users + events) AS usage_7d
    FROM analytics.company_daily_activity
    WHERE activity_date BETWEEN :window_start AND :target_date
    GROUP BY company_id
) AS window_usage
WHERE target.activity_date = :target_date
    AND target.company_id = window_usage.company_id
