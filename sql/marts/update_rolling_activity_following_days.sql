-- The rolling columns of the loaded days D+1 .. D+6 (:day1 .. :day6) recomputed in one statement, after
-- day D was rewritten: each of their 7-day windows holds D (late or corrected data). The merge runs it
-- in its transaction after D is recorded as loaded, and only when one of those days is loaded.
--   window_usage: one pass over the rows of :scan_from .. :scan_to (at most D-5 .. D+6), grouped by
--         company, gives each company's six window sums at once: for target day k the sum over
--         :from<k> .. :day<k> (= D+k-6 .. D+k); a day without a row counts 0;
--   loaded_in_window: for each target day, how many days of its window are loaded (7: churn is known);
--   target_days: the six dates as rows, so that every backend finds each target row by its primary
--         key (activity_date, company_id) instead of scanning a date range.
-- Each target row takes the sums of its own day; record_loaded_at becomes :loaded_at.
WITH
window_usage AS (
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
),

loaded_in_window AS (
    SELECT
        SUM(CASE WHEN activity_date BETWEEN :from1 AND :day1 THEN 1 ELSE 0 END) AS loaded_days_1,
        SUM(CASE WHEN activity_date BETWEEN :from2 AND :day2 THEN 1 ELSE 0 END) AS loaded_days_2,
        SUM(CASE WHEN activity_date BETWEEN :from3 AND :day3 THEN 1 ELSE 0 END) AS loaded_days_3,
        SUM(CASE WHEN activity_date BETWEEN :from4 AND :day4 THEN 1 ELSE 0 END) AS loaded_days_4,
        SUM(CASE WHEN activity_date BETWEEN :from5 AND :day5 THEN 1 ELSE 0 END) AS loaded_days_5,
        SUM(CASE WHEN activity_date BETWEEN :from6 AND :day6 THEN 1 ELSE 0 END) AS loaded_days_6
    FROM {analytics}.loaded_days
    WHERE activity_date BETWEEN :from1 AND :day6
),

target_days AS (
    SELECT :day1 AS target_date
    UNION ALL SELECT :day2
    UNION ALL SELECT :day3
    UNION ALL SELECT :day4
    UNION ALL SELECT :day5
    UNION ALL SELECT :day6
)

UPDATE {analytics}.company_daily_activity AS target
SET
    "7d_active_users" = CASE target.activity_date
        WHEN :day1 THEN window_usage.active_users_1
        WHEN :day2 THEN window_usage.active_users_2
        WHEN :day3 THEN window_usage.active_users_3
        WHEN :day4 THEN window_usage.active_users_4
        WHEN :day5 THEN window_usage.active_users_5
        WHEN :day6 THEN window_usage.active_users_6
    END,
    is_churn_risk = CASE
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
    record_loaded_at = :loaded_at
FROM window_usage
CROSS JOIN loaded_in_window
CROSS JOIN target_days
WHERE target.activity_date = target_days.target_date
    AND target.company_id = window_usage.company_id
