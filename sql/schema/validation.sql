-- The data-quality verdict of each day, one row per dataset and date (the latest validation of it).
-- The inputs (crm, product_usage) are recorded by their validation task, passed or failed. The output
-- (company_daily_activity) is recorded inside the merge's transaction: its row exists only for a
-- committed day. accept_row_drop says the day was run with --accept-row-drop; row_drop_accepted says
-- that a row-drop (or empty-day) check actually failed and was accepted by that override.

CREATE TABLE IF NOT EXISTS {analytics}.day_validations (
    activity_date      DATE          NOT NULL,
    dataset            VARCHAR(32)   NOT NULL,
    success            BOOLEAN       NOT NULL,
    row_count          INTEGER       NOT NULL,
    previous_date      DATE,
    previous_row_count INTEGER,
    min_row_count      INTEGER       NOT NULL,
    accept_row_drop    BOOLEAN       NOT NULL,
    row_drop_accepted  BOOLEAN       NOT NULL,
    failed_checks      INTEGER       NOT NULL,
    warning_count      INTEGER       NOT NULL,
    landing_id         VARCHAR(200),
    results_path       VARCHAR(2048) NOT NULL,
    validated_at       TIMESTAMP     NOT NULL,
    PRIMARY KEY (activity_date, dataset)
);
