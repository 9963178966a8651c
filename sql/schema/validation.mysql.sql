-- MySQL / MariaDB variant of validation.sql: DATETIME(6) for TIMESTAMP, InnoDB, utf8mb4_bin (see
-- stg.mysql.sql); the BOOLEAN columns are TINYINT(1), read back as TRUE/FALSE by the SQL runner.

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
    validated_at       DATETIME(6)   NOT NULL,
    PRIMARY KEY (activity_date, dataset)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
