-- Record what a re-merge changed on one day (in the merge's transaction).
INSERT INTO {analytics}.day_corrections (
    activity_date, merged_date, corrected_at, rows_added, rows_removed, rows_changed, changed_columns,
    companies_before, companies_after, active_users_before, active_users_after,
    churn_risk_before, churn_risk_after
)
VALUES (
    :activity_date, :merged_date, :corrected_at, :rows_added, :rows_removed, :rows_changed, :changed_columns,
    :companies_before, :companies_after, :active_users_before, :active_users_after,
    :churn_risk_before, :churn_risk_after
)
