-- What the merge changed in D .. D+6 (:first_date .. :last_date), one row per day that has rows before
-- or after: rows added and removed (by company_id), and for the rows on both sides, how many changed
-- in each column (NULL against a value counts as a change), with the day's headline numbers before and
-- after (companies, active users, companies at churn risk).
WITH
rows_after AS (
    SELECT
        activity_date, company_id, company_name, country, industry_tag, last_contact_at,
        active_users, events, "7d_active_users", is_churn_risk
    FROM {analytics}.company_daily_activity
    WHERE activity_date BETWEEN :first_date AND :last_date
),

compared AS (
    SELECT
        after_merge.activity_date,
        CASE WHEN after_merge.company_name <> before_merge.company_name
            OR (after_merge.company_name IS NULL) <> (before_merge.company_name IS NULL)
            THEN 1 ELSE 0 END AS company_name,
        CASE WHEN after_merge.country <> before_merge.country
            OR (after_merge.country IS NULL) <> (before_merge.country IS NULL)
            THEN 1 ELSE 0 END AS country,
        CASE WHEN after_merge.industry_tag <> before_merge.industry_tag
            OR (after_merge.industry_tag IS NULL) <> (before_merge.industry_tag IS NULL)
            THEN 1 ELSE 0 END AS industry_tag,
        CASE WHEN after_merge.last_contact_at <> before_merge.last_contact_at
            OR (after_merge.last_contact_at IS NULL) <> (before_merge.last_contact_at IS NULL)
            THEN 1 ELSE 0 END AS last_contact_at,
        CASE WHEN after_merge.active_users <> before_merge.active_users THEN 1 ELSE 0 END AS active_users,
        CASE WHEN after_merge.events <> before_merge.events THEN 1 ELSE 0 END AS events,
        CASE WHEN after_merge."7d_active_users" <> before_merge."7d_active_users"
            OR (after_merge."7d_active_users" IS NULL) <> (before_merge."7d_active_users" IS NULL)
            THEN 1 ELSE 0 END AS active_users_7d,
        CASE WHEN after_merge.is_churn_risk <> before_merge.is_churn_risk
            OR (after_merge.is_churn_risk IS NULL) <> (before_merge.is_churn_risk IS NULL)
            THEN 1 ELSE 0 END AS is_churn_risk
    FROM rows_after AS after_merge
    JOIN {analytics}.rows_before_merge AS before_merge
        ON before_merge.activity_date = after_merge.activity_date
        AND before_merge.company_id = after_merge.company_id
),

changed_per_day AS (
    SELECT
        activity_date,
        SUM(CASE WHEN company_name + country + industry_tag + last_contact_at + active_users + events
            + active_users_7d + is_churn_risk > 0 THEN 1 ELSE 0 END) AS rows_changed,
        SUM(company_name) AS company_name,
        SUM(country) AS country,
        SUM(industry_tag) AS industry_tag,
        SUM(last_contact_at) AS last_contact_at,
        SUM(active_users) AS active_users,
        SUM(events) AS events,
        SUM(active_users_7d) AS active_users_7d,
        SUM(is_churn_risk) AS is_churn_risk
    FROM compared
    GROUP BY activity_date
),

added_per_day AS (
    SELECT after_merge.activity_date, COUNT(*) AS rows_added
    FROM rows_after AS after_merge
    LEFT JOIN {analytics}.rows_before_merge AS before_merge
        ON before_merge.activity_date = after_merge.activity_date
        AND before_merge.company_id = after_merge.company_id
    WHERE before_merge.company_id IS NULL
    GROUP BY after_merge.activity_date
),

removed_per_day AS (
    SELECT before_merge.activity_date, COUNT(*) AS rows_removed
    FROM {analytics}.rows_before_merge AS before_merge
    LEFT JOIN rows_after AS after_merge
        ON after_merge.activity_date = before_merge.activity_date
        AND after_merge.company_id = before_merge.company_id
    WHERE after_merge.company_id IS NULL
    GROUP BY before_merge.activity_date
),

totals_before AS (
    SELECT
        activity_date,
        COUNT(*) AS companies,
        SUM(active_users) AS active_users,
        SUM(CASE WHEN is_churn_risk = TRUE THEN 1 ELSE 0 END) AS churn_risk
    FROM {analytics}.rows_before_merge
    GROUP BY activity_date
),

totals_after AS (
    SELECT
        activity_date,
        COUNT(*) AS companies,
        SUM(active_users) AS active_users,
        SUM(CASE WHEN is_churn_risk = TRUE THEN 1 ELSE 0 END) AS churn_risk
    FROM rows_after
    GROUP BY activity_date
),

days AS (
    SELECT activity_date FROM totals_before
    UNION
    SELECT activity_date FROM totals_after
)

SELECT
    days.activity_date,
    COALESCE(added_per_day.rows_added, 0) AS rows_added,
    COALESCE(removed_per_day.rows_removed, 0) AS rows_removed,
    COALESCE(changed_per_day.rows_changed, 0) AS rows_changed,
    COALESCE(changed_per_day.company_name, 0) AS company_name,
    COALESCE(changed_per_day.country, 0) AS country,
    COALESCE(changed_per_day.industry_tag, 0) AS industry_tag,
    COALESCE(changed_per_day.last_contact_at, 0) AS last_contact_at,
    COALESCE(changed_per_day.active_users, 0) AS active_users,
    COALESCE(changed_per_day.events, 0) AS events,
    COALESCE(changed_per_day.active_users_7d, 0) AS active_users_7d,
    COALESCE(changed_per_day.is_churn_risk, 0) AS is_churn_risk,
    COALESCE(totals_before.companies, 0) AS companies_before,
    COALESCE(totals_after.companies, 0) AS companies_after,
    COALESCE(totals_before.active_users, 0) AS active_users_before,
    COALESCE(totals_after.active_users, 0) AS active_users_after,
    COALESCE(totals_before.churn_risk, 0) AS churn_risk_before,
    COALESCE(totals_after.churn_risk, 0) AS churn_risk_after
FROM days
LEFT JOIN added_per_day ON added_per_day.activity_date = days.activity_date
LEFT JOIN removed_per_day ON removed_per_day.activity_date = days.activity_date
LEFT JOIN changed_per_day ON changed_per_day.activity_date = days.activity_date
LEFT JOIN totals_before ON totals_before.activity_date = days.activity_date
LEFT JOIN totals_after ON totals_after.activity_date = days.activity_date
ORDER BY days.activity_date
