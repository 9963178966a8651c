-- One staged CRM snapshot, for its validation.
SELECT company_id, company_name, country, industry_tag, last_contact_at
FROM {stg}.crm_daily
WHERE snapshot_date = :snapshot_date
