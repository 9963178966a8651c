-- How many companies are at churn risk on one day (:activity_date); for run summaries.
SELECT COUNT(*) AS companies_at_risk
FROM {analytics}.company_daily_activity
WHERE activity_date = :activity_date
    AND is_churn_risk = TRUE
