-- Forget the validation verdict of one dataset/date pair (it is recorded again in the same transaction).
DELETE FROM {analytics}.day_validations WHERE activity_date = :activity_date AND dataset = :dataset
