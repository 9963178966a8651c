-- Remove one CRM snapshot date from staging before it is loaded again (re-staging replaces D only).
DELETE FROM {stg}.crm_daily WHERE snapshot_date = :snapshot_date
