-- MySQL / MariaDB variant of analytics.sql: DATETIME(6) for TIMESTAMP, InnoDB, utf8mb4_bin (see
-- stg.mysql.sql). BOOLEAN is TINYINT(1) there: the SQL runner reads it back as TRUE/FALSE/NULL.
-- `7d_active_users` is quoted with backticks, right whatever the sql_mode (the pipeline's sessions add
-- ANSI_QUOTES, under which the other files' "7d_active_users" means the column too).

CREATE TABLE IF NOT EXISTS {analytics}.company_daily_activity (
    activity_date     DATE        NOT NULL,
    company_id        VARCHAR(64) NOT NULL,
    company_name      VARCHAR(512),
    country           VARCHAR(64),
    industry_tag      VARCHAR(128),
    last_contact_at   DATETIME(6),
    active_users      INTEGER     NOT NULL,
    events            INTEGER     NOT NULL,
    `7d_active_users` INTEGER,
    is_churn_risk     BOOLEAN,
    record_loaded_at  DATETIME(6) NOT NULL,
    PRIMARY KEY (activity_date, company_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS {analytics}.loaded_days (
    activity_date     DATE        NOT NULL PRIMARY KEY,
    crm_snapshot_date DATE        NOT NULL,
    crm_rows          INTEGER     NOT NULL,
    usage_rows        INTEGER     NOT NULL,
    orphan_rows       INTEGER     NOT NULL,
    output_rows       INTEGER     NOT NULL,
    crm_landing_id    VARCHAR(64) NOT NULL,
    usage_landing_id  VARCHAR(64) NOT NULL,
    loaded_at         DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- What a re-merge of a loaded day changed (see schema/analytics.sql); DATETIME(6) as above.
CREATE TABLE IF NOT EXISTS {analytics}.day_corrections (
    activity_date       DATE          NOT NULL,
    merged_date         DATE          NOT NULL,
    corrected_at        DATETIME(6)   NOT NULL,
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
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The merge's scratch copy of the rows of D .. D+6 before a re-merge (see sql/marts/keep_rows_before_merge.sql):
-- empty outside a merge's transaction.
CREATE TABLE IF NOT EXISTS {analytics}.rows_before_merge (
    activity_date     DATE        NOT NULL,
    company_id        VARCHAR(64) NOT NULL,
    company_name      VARCHAR(512),
    country           VARCHAR(64),
    industry_tag      VARCHAR(128),
    last_contact_at   DATETIME(6),
    active_users      INTEGER     NOT NULL,
    events            INTEGER     NOT NULL,
    `7d_active_users` INTEGER,
    is_churn_risk     BOOLEAN,
    PRIMARY KEY (activity_date, company_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
