-- Remove one day's rows before the day is built again (a re-run replaces the day, it never appends).
DELETE FROM {analytics}.company_daily_activity WHERE activity_date = :activity_date
