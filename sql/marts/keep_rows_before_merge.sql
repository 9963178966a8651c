-- Before a loaded day D is merged again: keep the rows of D .. D+6 as they are (:first_date ..
-- :last_date) in the scratch table, in the merge's transaction, to say afterwards what it changed.
INSERT INTO {analytics}.rows_before_merge (
    activity_date, company_id, company_name, country, industry_tag, last_contact_at,
    active_users, events, "7d_active_users", is_churn_risk
)
SELECT
    activity_date, company_id, company_name, country, industry_tag, last_contact_at,
    active_users, events, "7d_active_users", is_churn_risk
FROM {analytics}.company_daily_activity
WHERE activity_date BETWEEN :first_date AND :last_date
