-- The loaded days between two dates (inclusive), oldest first.
SELECT activity_date
FROM {analytics}.loaded_days
WHERE activity_date BETWEEN :first_date AND :last_date
ORDER BY activity_date
