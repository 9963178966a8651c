-- The validation verdicts recorded for one day, one row per dataset.
SELECT activity_date, dataset, success, row_count, previous_date, previous_row_count, min_row_count,
    accept_row_drop, row_drop_accepted, failed_checks, warning_count, landing_id, results_path, validated_at
FROM {analytics}.day_validations
WHERE activity_date = :activity_date
ORDER BY dataset
