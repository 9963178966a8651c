-- Per day between :first_date and :last_date: the companies at churn risk, and those whose risk is not
-- known (NULL: fewer than 7 days of their window loaded); for `python -m pipeline status`.
SELECT
    activity_date,
    SUM(CASE WHEN is_churn_risk = TRUE THEN 1 ELSE 0 END) AS at_risk,
    SUM(CASE WHEN is_churn_risk IS NULL THEN 1 ELSE 0 END) AS unknown
FROM {analytics}.company_daily_activity
WHERE activity_date BETWEEN :first_date AND :last_date
GROUP BY activity_date
