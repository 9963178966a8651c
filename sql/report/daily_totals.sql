-- The daily churn report: totals of {analytics}.company_daily_activity per loaded day, for the
-- headline numbers (D, D-1, D-7) and the 30-day trends. One row per day that has rows in
-- :first_date .. :last_date. churn_known_companies counts rows whose is_churn_risk is not NULL
-- (zero: churn risk is not known for the day, fewer than 7 days of history were loaded).
SELECT
    activity_date,
    COUNT(*) AS companies,
    COUNT(CASE WHEN active_users > 0 THEN 1 END) AS active_companies,
    COALESCE(SUM(active_users), 0) AS active_users,
    COALESCE(SUM(events), 0) AS events,
    COUNT(CASE WHEN is_churn_risk = TRUE THEN 1 END) AS churn_risk_companies,
    COUNT(is_churn_risk) AS churn_known_companies
FROM {analytics}.company_daily_activity
WHERE activity_date BETWEEN :first_date AND :last_date
GROUP BY activity_date
ORDER BY activity_date
