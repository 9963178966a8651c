-- The daily churn report: companies newly at churn risk on :activity_date (D), i.e. at risk on D and
-- not at risk on :previous_date (D-1: FALSE, NULL or no row), with their CRM details, the previous
-- day's "7d_active_users", and their last day with usage in :lookback_start .. D-1 (NULL: none).
-- Largest previous 7-day usage first: the biggest losses lead the list.
--
-- When D-1 is known not at risk (FALSE) the last active day is :week_before (D-7): D-1's window
-- D-7 .. D-1 had usage and D's window D-6 .. D has none. The others (D-1's churn risk unknown: the
-- first days of the history, or no row on D-1) are looked up day by day over the loaded days, one
-- primary-key probe per company and day, never a scan of the whole lookback window.
WITH newly AS (
    SELECT
        today.company_id,
        today.company_name,
        today.country,
        today.industry_tag,
        today.last_contact_at,
        previous."7d_active_users" AS previous_7d_active_users,
        previous.is_churn_risk AS previous_churn_risk
    FROM {analytics}.company_daily_activity AS today
    LEFT JOIN {analytics}.company_daily_activity AS previous
        ON previous.activity_date = :previous_date
        AND previous.company_id = today.company_id
    WHERE today.activity_date = :activity_date
        AND today.is_churn_risk = TRUE
        AND (previous.is_churn_risk IS NULL OR previous.is_churn_risk = FALSE)
)
SELECT
    newly.company_id,
    newly.company_name,
    newly.country,
    newly.industry_tag,
    newly.last_contact_at,
    CASE
        WHEN newly.previous_churn_risk = FALSE THEN :week_before
        ELSE (
            SELECT MAX(loaded.activity_date)
            FROM {analytics}.loaded_days AS loaded
            WHERE loaded.activity_date >= :lookback_start
                AND loaded.activity_date < :activity_date
                AND EXISTS (
                    SELECT 1
                    FROM {analytics}.company_daily_activity AS activity
                    WHERE activity.activity_date = loaded.activity_date
                        AND activity.company_id = newly.company_id
                        AND (activity.active_users > 0 OR activity.events > 0)
                )
        )
    END AS last_active_date,
    newly.previous_7d_active_users
FROM newly
ORDER BY COALESCE(newly.previous_7d_active_users, -1) DESC, newly.company_id
