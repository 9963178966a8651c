-- The daily churn report: companies that recovered on :activity_date (D): at churn risk on
-- :previous_date (D-1) and not at risk on D (usage again). Most active users on D first.
SELECT
    today.company_id,
    today.company_name,
    today.country,
    today.industry_tag,
    today.active_users,
    today.events,
    today."7d_active_users" AS active_users_7d
FROM {analytics}.company_daily_activity AS today
JOIN {analytics}.company_daily_activity AS previous
    ON previous.activity_date = :previous_date
    AND previous.company_id = today.company_id
WHERE today.activity_date = :activity_date
    AND today.is_churn_risk = FALSE
    AND previous.is_churn_risk = TRUE
ORDER BY today.active_users DESC, today.events DESC, today.company_id
