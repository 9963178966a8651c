-- The daily churn report: day :activity_date broken down by country (NULL: not set in the CRM, or an
-- orphan without a CRM record). The groups add up to the headline totals of the day.
SELECT
    country AS segment,
    COUNT(*) AS companies,
    COUNT(CASE WHEN active_users > 0 THEN 1 END) AS active_companies,
    COALESCE(SUM(active_users), 0) AS active_users,
    COALESCE(SUM(events), 0) AS events,
    COUNT(CASE WHEN is_churn_risk = TRUE THEN 1 END) AS churn_risk_companies
FROM {analytics}.company_daily_activity
WHERE activity_date = :activity_date
GROUP BY country
