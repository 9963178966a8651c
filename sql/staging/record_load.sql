-- Record that one dataset/date pair is staged: its row count, where it came from, which landing.
INSERT INTO {stg}.loads (dataset, load_date, row_count, source, landing_id, loaded_at)
VALUES (:dataset, :load_date, :row_count, :source, :landing_id, :loaded_at)
