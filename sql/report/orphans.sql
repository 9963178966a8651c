-- The daily churn report: the orphans of :activity_date (D), companies with product usage that the
-- CRM snapshot merged for D ({analytics}.loaded_days.crm_snapshot_date) does not know. Most usage first.
SELECT activity.company_id, activity.active_users, activity.events
FROM {analytics}.company_daily_activity AS activity
JOIN {analytics}.loaded_days AS loaded
    ON loaded.activity_date = activity.activity_date
WHERE activity.activity_date = :activity_date
    AND NOT EXISTS (
        SELECT 1
        FROM {stg}.crm_daily AS crm
        WHERE crm.snapshot_date = loaded.crm_snapshot_date
            AND crm.company_id = activity.company_id
    )
ORDER BY activity.active_users DESC, activity.events DESC, activity.company_id
