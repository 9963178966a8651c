-- The CRM snapshot in effect for a day: the latest staged snapshot dated on or before it.
SELECT MAX(load_date) AS snapshot_date
FROM {stg}.loads
WHERE dataset = 'crm' AND load_date <= :activity_date
