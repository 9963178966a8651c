-- Empty the scratch copy of the rows a re-merge starts from. A table of the schema (created with it)
-- rather than a temporary one: plain DML, transactional on every backend; merges take the write lock,
-- so only one uses it at a time.
DELETE FROM {analytics}.rows_before_merge
