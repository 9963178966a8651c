-- MySQL / MariaDB variant of stg.sql (chosen for the dialect family "mysql": MySQL and MariaDB). The same
-- tables; what differs, each checked on MariaDB 10.11 (docs/mysql.md):
--   * DATETIME(6) instead of TIMESTAMP: a MySQL TIMESTAMP converts by the session time zone and ends in
--     2038; DATETIME stores the UTC value as given, and (6) keeps microseconds like PostgreSQL (plain
--     DATETIME drops them on MariaDB and rounds them on MySQL).
--   * ENGINE=InnoDB (transactions, row locks) and utf8mb4 with the binary collation utf8mb4_bin: any
--     Unicode, and company ids compared and sorted by code point as on PostgreSQL ("C") and SQLite;
--     the servers' default collations would make 'acme' and 'ACME' the same primary key.
-- CHECK constraints are enforced by MariaDB 10.2.1+ and MySQL 8.0.16+.

CREATE TABLE IF NOT EXISTS {stg}.crm_daily (
    snapshot_date   DATE         NOT NULL,
    company_id      VARCHAR(64)  NOT NULL,
    company_name    VARCHAR(512),
    country         VARCHAR(64),
    industry_tag    VARCHAR(128),
    last_contact_at DATETIME(6),
    PRIMARY KEY (snapshot_date, company_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS {stg}.product_usage_daily (
    activity_date DATE        NOT NULL,
    company_id    VARCHAR(64) NOT NULL,
    active_users  INTEGER     NOT NULL CHECK (active_users >= 0),
    events        INTEGER     NOT NULL CHECK (events >= 0),
    PRIMARY KEY (activity_date, company_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS {stg}.loads (
    dataset    VARCHAR(32)   NOT NULL,
    load_date  DATE          NOT NULL,
    row_count  INTEGER       NOT NULL,
    source     VARCHAR(2048) NOT NULL,
    landing_id VARCHAR(64)   NOT NULL,
    loaded_at  DATETIME(6)   NOT NULL,
    PRIMARY KEY (dataset, load_date)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
