-- Remove one day of product usage from staging before it is loaded again (re-staging replaces D only).
DELETE FROM {stg}.product_usage_daily WHERE activity_date = :activity_date
