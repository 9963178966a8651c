-- The analytics mart and the record of which days it holds.
-- {analytics}.loaded_days is written in the same transaction as a day's rows: it is the merge's
-- completion marker (with the landings it merged, so a re-staged source makes the day due again)
-- and the "was this day loaded?" fact behind is_churn_risk being NULL.

CREATE TABLE IF NOT EXISTS {analytics}.company_daily_activity (
    activity_date     DATE        NOT NULL,
    company_id        VARCHAR(64) NOT NULL,
    company_name      VARCHAR(512),
    country           VARCHAR(64),
    industry_tag      VARCHAR(128),
    last_contact_at   TIMESTAMP,
    active_users      INTEGER     NOT NULL,
    events            INTEGER     NOT NULL,
    "7d_active_users" INTEGER,
    is_churn_risk     BOOLEAN,
    record_loaded_at  TIMESTAMP   NOT NULL,
    PRIMARY KEY (activity_date, company_id)
);

CREATE TABLE IF NOT EXISTS {analytics}.loaded_days (
    activity_date     DATE      NOT NULL PRIMARY KEY,
    crm_snapshot_date DATE      NOT NULL,
    crm_rows          INTEGER   NOT NULL,
    usage_rows        INTEGER   NOT NULL,
    orphan_rows       INTEGER   NOT NULL,
    output_rows       INTEGER   NOT NULL,
    crm_landing_id    VARCHAR(64) NOT NULL,
    usage_landing_id  VARCHAR(64) NOT NULL,
    loaded_at         TIMESTAMP NOT NULL
);

-- What a re-merge of a loaded day changed (a --refresh, a late correction), written in the merge's own
-- transaction: one row per affected day of D .. D+6 that changed, for the correction mail and status.
-- changed_columns is JSON: {"column": rows whose value changed, ...}.
CREATE TABLE IF NOT EXISTS {analytics}.day_corrections (
    activity_date       DATE          NOT NULL,
    merged_date         DATE          NOT NULL,
    corrected_at        TIMESTAMP     NOT NULL,
    rows_added          INTEGER       NOT NULL,
    rows_removed        INTEGER       NOT NULL,
    rows_changed        INTEGER       NOT NULL,
    changed_columns     VARCHAR(2048) NOT NULL,
    companies_before    INTEGER       NOT NULL,
    companies_after     INTEGER       NOT NULL,
    active_users_before INTEGER       NOT NULL,
    active_users_after  INTEGER       NOT NULL,
    churn_risk_before   INTEGER       NOT NULL,
    churn_risk_after    INTEGER       NOT NULL,
    PRIMARY KEY (activity_date, corrected_at, merged_date)
);

-- The merge's scratch copy of the rows of D .. D+6 before a re-merge (see sql/marts/keep_rows_before_merge.sql):
-- empty outside a merge's transaction.
CREATE TABLE IF NOT EXISTS {analytics}.rows_before_merge (
    activity_date     DATE        NOT NULL,
    company_id        VARCHAR(64) NOT NULL,
    company_name      VARCHAR(512),
    country           VARCHAR(64),
    industry_tag      VARCHAR(128),
    last_contact_at   TIMESTAMP,
    active_users      INTEGER     NOT NULL,
    events            INTEGER     NOT NULL,
    "7d_active_users" INTEGER,
    is_churn_risk     BOOLEAN,
    PRIMARY KEY (activity_date, company_id)
);
