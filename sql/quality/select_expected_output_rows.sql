-- How many rows one day of the mart must hold, counted from staging independently of the merge's SQL:
-- the companies of the effective CRM snapshot plus the companies with usage that snapshot does not know.
SELECT
    (SELECT COUNT(*) FROM {stg}.crm_daily WHERE snapshot_date = :crm_snapshot_date) AS crm_companies,
    (
        SELECT COUNT(*)
        FROM {stg}.product_usage_daily AS api
        WHERE api.activity_date = :activity_date
            AND api.company_id NOT IN (
                SELECT crm.company_id FROM {stg}.crm_daily AS crm WHERE crm.snapshot_date = :crm_snapshot_date
            )
    ) AS orphans
