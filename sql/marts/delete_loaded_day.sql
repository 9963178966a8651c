-- Forget that a day is loaded (it is recorded again in the same transaction).
DELETE FROM {analytics}.loaded_days WHERE activity_date = :activity_date
