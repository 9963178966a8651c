-- Staging tables: the sources as loaded, one set of rows per source date.
-- Every loaded date is kept; re-staging a date replaces that date only. {stg}.loads records which
-- dataset/date pairs are staged, from which raw landing (landing_id): the staging tasks' completion
-- marker, and what the merge records so that a re-staged day is merged again.

CREATE TABLE IF NOT EXISTS {stg}.crm_daily (
    snapshot_date   DATE         NOT NULL,
    company_id      VARCHAR(64)  NOT NULL,
    company_name    VARCHAR(512),
    country         VARCHAR(64),
    industry_tag    VARCHAR(128),
    last_contact_at TIMESTAMP,
    PRIMARY KEY (snapshot_date, company_id)
);

CREATE TABLE IF NOT EXISTS {stg}.product_usage_daily (
    activity_date DATE        NOT NULL,
    company_id    VARCHAR(64) NOT NULL,
    active_users  INTEGER     NOT NULL CHECK (active_users >= 0),
    events        INTEGER     NOT NULL CHECK (events >= 0),
    PRIMARY KEY (activity_date, company_id)
);

CREATE TABLE IF NOT EXISTS {stg}.loads (
    dataset    VARCHAR(32)   NOT NULL,
    load_date  DATE          NOT NULL,
    row_count  INTEGER       NOT NULL,
    source     VARCHAR(2048) NOT NULL,
    landing_id VARCHAR(64)   NOT NULL,
    loaded_at  TIMESTAMP     NOT NULL,
    PRIMARY KEY (dataset, load_date)
);
