-- One day's rows of analytics.company_daily_activity, built from staging:
--   * every company of the CRM snapshot in effect for the day, with the day's usage (0 without a row);
--   * every company with usage that day that this snapshot does not know (an orphan: CRM columns NULL).
-- The rolling columns start empty; update_rolling_activity.sql fills them in the same transaction.
INSERT INTO analytics.company_daily_activity (
    activity_date, company_id, company_name, country, industry_tag, last_contact_at,
    active_users, events, "7d_active_users", is_churn_risk, record_loaded_at
)
SELECT
    :activity_date,
    crm.company_id,
    crm.company_name,
    crm.country,
    crm.industry_tag,
    crm.last_contact_at,
    COALESCE(api.active_users, 0),
    COALESCE(api.events, 0),
    CAST(NULL AS INTEGER),
    CAST(NULL AS BOOLEAN),
    :loaded_at
FROM stg.crm_daily AS crm
LEFT JOIN stg.product_usage_daily AS api
    ON api.activity_date = :activity_date
    AND api.company_id = crm.company_id
WHERE crm.snapshot_date = :crm_snapshot_date

UNION ALL

SELECT
    :activity_date,
    api.company_id,
    NULL,
    NULL,
    NULL,
    NULL,
    api.active_users,
    api.events,
    CAST(NULL AS INTEGER),
    CAST(NULL AS BOOLEAN),
    :loaded_at
FROM stg.product_usage_daily AS api
WHERE api.activity_date = :activity_date
    AND NOT EXISTS (
        SELECT 1
        FROM stg.crm_daily AS crm
        WHERE crm.snapshot_date = :crm_snapshot_date
            AND crm.company_id = api.company_id
    )
