-- The validation verdicts recorded for the days between :first_date and :last_date, one row per day and
-- dataset; for `python -m pipeline status`.
SELECT activity_date, dataset, success, row_count, failed_checks, warning_count, row_drop_accepted,
    results_path, validated_at
FROM {analytics}.day_validations
WHERE activity_date BETWEEN :first_date AND :last_date
ORDER BY activity_date, dataset
