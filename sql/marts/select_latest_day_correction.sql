-- The latest recorded correction of one day (:activity_date), whichever merge made it (no row: none).
SELECT
    activity_date, merged_date, corrected_at, rows_added, rows_removed, rows_changed, changed_columns,
    companies_before, companies_after, active_users_before, active_users_after,
    churn_risk_before, churn_risk_after
FROM {analytics}.day_corrections
WHERE activity_date = :activity_date
ORDER BY corrected_at DESC, merged_date DESC
LIMIT 1
