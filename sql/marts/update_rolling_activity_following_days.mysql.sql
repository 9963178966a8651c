-- MySQL / MariaDB variant of update_rolling_activity_following_days.sql (same rows, same binds): neither
-- server has UPDATE ... FROM, and MariaDB allows no WITH before UPDATE. The three CTEs of the common file
-- become derived tables of a multi-table UPDATE ... JOIN. Reading the target table in window_usage is
-- allowed because a derived table with GROUP BY is materialised before the update (the MySQL manual's
-- answer to error 1093). target_days casts its binds to DATE so that the join on the primary key
-- (activity_date, company_id) compares dates with dates. In a multi-table UPDATE the order of the SET
-- assignments is not defined; none of them reads a column another one writes.
UPDATE {analytics}.company_daily_activity AS target
JOIN (
    SELECT CAST(:day1 AS DATE) AS target_date
    UNION ALL SELECT CAST(:day2 AS DATE)
    UNION ALL SELECT CAST(:day3 AS DATE)
    UNION ALL SELECT CAST(:day4 AS DATE)
    UNION ALL SELECT CAST(:day5 AS DATE)
    UNION ALL SELECT CAST(:day6 AS DATE)
) AS target_days
    ON target.activity_date = target_days.target_date
JOIN (
    SELECT
        company_id,
        SUM(CASE WHEN activity_date BETWEEN :from1 AND :day1 THEN active_users ELSE 0 END) AS active_users_1,
        SUM(CASE WHEN activity_date BETWEEN :from2 AND :day2 THEN active_users ELSE 0 END) AS active_users_2,
        SUM(CASE WHEN activity_date BETWEEN :from3 AND :day3 THEN active_users ELSE 0 END) AS active_users_3,
        SUM(CASE WHEN activity_date BETWEEN :from4 AND :day4 THEN active_users ELSE 0 END) AS active_users_4,
        SUM(CASE WHEN activity_date BETWEEN :from5 AND :day5 THEN active_users ELSE 0 END) AS active_users_5,
        SUM(CASE WHEN activity_date BETWEEN :from6 AND :day6 THEN active_users ELSE 0 END) AS active_users_6,
        SUM(CASE WHEN activity_date BETWEEN :from1 AND :day1
            AND (active_users <> 0 OR events <> 0) THEN 1 ELSE 0 END) AS usage_days_1,
        SUM(CASE WHEN activity_date BETWEEN :from2 AND :day2
            AND (active_users <> 0 OR events <> 0) THEN 1 ELSE 0 END) AS usage_days_2,
        SUM(CASE WHEN activity_date BETWEEN :from3 AND :day3
            AND (active_users <> 0 OR events <> 0) THEN 1 ELSE 0 END) AS usage_days_3,
        SUM(CASE WHEN activity_date BETWEEN :from4 AND :day4
            AND (active_users <> 0 OR events <> 0) THEN 1 ELSE 0 END) AS usage_days_4,
        SUM(CASE WHEN activity_date BETWEEN :from5 AND :day5
            AND (active_users <> 0 OR events <> 0) THEN 1 ELSE 0 END) AS usage_days_5,
        SUM(CASE WHEN activity_date BETWEEN :from6 AND :day6
            AND (active_users <> 0 OR events <> 0) THEN 1 ELSE 0 END) AS usage_days_6
    FROM {analytics}.company_daily_activity
    WHERE activity_date BETWEEN :scan_from AND :scan_to
    GROUP BY company_id
) AS window_usage
    ON target.company_id = window_usage.company_id
CROSS JOIN (
    SELECT
        SUM(CASE WHEN activity_date BETWEEN :from1 AND :day1 THEN 1 ELSE 0 END) AS loaded_days_1,
        SUM(CASE WHEN activity_date BETWEEN :from2 AND :day2 THEN 1 ELSE 0 END) AS loaded_days_2,
        SUM(CASE WHEN activity_date BETWEEN :from3 AND :day3 THEN 1 ELSE 0 END) AS loaded_days_3,
        SUM(CASE WHEN activity_date BETWEEN :from4 AND :day4 THEN 1 ELSE 0 END) AS loaded_days_4,
        SUM(CASE WHEN activity_date BETWEEN :from5 AND :day5 THEN 1 ELSE 0 END) AS loaded_days_5,
        SUM(CASE WHEN activity_date BETWEEN :from6 AND :day6 THEN 1 ELSE 0 END) AS loaded_days_6
    FROM {analytics}.loaded_days
    WHERE activity_date BETWEEN :from1 AND :day6
) AS loaded_in_window
SET
    target.`7d_active_users` = CASE target.activity_date
        WHEN :day1 THEN window_usage.active_users_1
        WHEN :day2 THEN window_usage.active_users_2
        WHEN :day3 THEN window_usage.active_users_3
        WHEN :day4 THEN window_usage.active_users_4
        WHEN :day5 THEN window_usage.active_users_5
        WHEN :day6 THEN window_usage.active_users_6
    END,
    target.is_churn_risk = CASE
        WHEN CASE target.activity_date
            WHEN :day1 THEN loaded_in_window.loaded_days_1
            WHEN :day2 THEN loaded_in_window.loaded_days_2
            WHEN :day3 THEN loaded_in_window.loaded_days_3
            WHEN :day4 THEN loaded_in_window.loaded_days_4
            WHEN :day5 THEN loaded_in_window.loaded_days_5
            WHEN :day6 THEN loaded_in_window.loaded_days_6
        END < 7 THEN NULL
        WHEN CASE target.activity_date
            WHEN :day1 THEN window_usage.usage_days_1
            WHEN :day2 THEN window_usage.usage_days_2
            WHEN :day3 THEN window_usage.usage_days_3
            WHEN :day4 THEN window_usage.usage_days_4
            WHEN :day5 THEN window_usage.usage_days_5
            WHEN :day6 THEN window_usage.usage_days_6
        END = 0 THEN TRUE
        ELSE FALSE
    END,
    target.record_loaded_at = :loaded_at
