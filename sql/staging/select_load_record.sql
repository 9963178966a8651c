-- The staging record of one dataset/date pair (no row: not staged).
SELECT dataset, load_date, row_count, source, landing_id, loaded_at
FROM {stg}.loads
WHERE dataset = :dataset AND load_date = :load_date
