-- Record the validation verdict of one dataset/date pair, with the row-drop figures and any override.
INSERT INTO {analytics}.day_validations (
    activity_date, dataset, success, row_count, previous_date, previous_row_count, min_row_count,
    accept_row_drop, row_drop_accepted, failed_checks, warning_count, landing_id, results_path, validated_at
)
VALUES (
    :activity_date, :dataset, :success, :row_count, :previous_date, :previous_row_count, :min_row_count,
    :accept_row_drop, :row_drop_accepted, :failed_checks, :warning_count, :landing_id, :results_path,
    :validated_at
)
