-- One staged day of product usage, for its validation.
SELECT company_id, active_users, events
FROM {stg}.product_usage_daily
WHERE activity_date = :activity_date
