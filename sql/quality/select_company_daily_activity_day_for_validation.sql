-- One day of the mart, for the output checks (run inside the merge's transaction, before commit).
SELECT company_id, active_users, events, "7d_active_users", is_churn_risk
FROM {analytics}.company_daily_activity
WHERE activity_date = :activity_date
