-- Record that a day is loaded, with the counts an operator and the row-drop check need.
INSERT INTO {analytics}.loaded_days (
    activity_date, crm_snapshot_date, crm_rows, usage_rows, orphan_rows, output_rows,
    crm_landing_id, usage_landing_id, loaded_at
)
VALUES (
    :activity_date, :crm_snapshot_date, :crm_rows, :usage_rows, :orphan_rows, :output_rows,
    :crm_landing_id, :usage_landing_id, :loaded_at
)
