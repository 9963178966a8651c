-- The number of rows one day of the mart holds.
SELECT COUNT(*) AS output_rows
FROM {analytics}.company_daily_activity
WHERE activity_date = :activity_date
