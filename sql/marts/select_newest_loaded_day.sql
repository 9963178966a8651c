-- The newest loaded day (NULL when none is): what the freshness of the table is measured by.
SELECT MAX(activity_date) AS activity_date
FROM {analytics}.loaded_days
