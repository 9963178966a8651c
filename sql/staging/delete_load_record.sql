-- Forget that one dataset/date pair was staged (it is recorded again in the same transaction).
DELETE FROM {stg}.loads WHERE dataset = :dataset AND load_date = :load_date
