-- The daily churn report: the load records of :first_date .. :last_date (which days are loaded, from
-- which CRM snapshot, with how many orphans), for the history notes and the data-quality section.
SELECT activity_date, crm_snapshot_date, crm_rows, usage_rows, orphan_rows, output_rows, loaded_at
FROM {analytics}.loaded_days
WHERE activity_date BETWEEN :first_date AND :last_date
ORDER BY activity_date
