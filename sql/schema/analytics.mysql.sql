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
