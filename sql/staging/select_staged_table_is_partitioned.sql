-- PostgreSQL only: whether a staged table (its qualified name) is partitioned by date, as
-- sql/schema/stg.postgresql.sql creates it, or an unpartitioned table of an older warehouse (staged by
-- DELETE and COPY).
SELECT class.relkind = 'p' AS partitioned
FROM pg_class AS class
WHERE class.oid = CAST(:table_name AS regclass)
    AND class.oid IN (CAST('{stg}.crm_daily' AS regclass), CAST('{stg}.product_usage_daily' AS regclass))
